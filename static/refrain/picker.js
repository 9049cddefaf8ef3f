/* Taxonomy picker for deep trees: type-ahead over full paths, a lazily rendered tree,
   multi-select with implied ancestors, and recent choices. Plain JS, no dependencies. */
(function () {
  "use strict";

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function escapeHtml(s) {
    return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  class TaxonomyPicker {
    constructor(opts) {
      this.nodes = opts.nodes;
      this.search = opts.search; this.results = opts.results; this.tree = opts.tree;
      this.chips = opts.chips; this.implied = opts.implied; this.recentBox = opts.recent;
      this.recentKey = opts.recentKey; this.onChange = opts.onChange || function () {};
      this.byId = new Map(); this.byKey = new Map(); this.children = new Map(); this.roots = [];
      for (const n of this.nodes) {
        n.lpath = n.path.toLowerCase(); n.lname = n.name.toLowerCase();
        this.byId.set(n.id, n); this.byKey.set(n.key, n);
      }
      for (const n of this.nodes) {
        if (n.parent_id && this.byId.has(n.parent_id)) {
          if (!this.children.has(n.parent_id)) this.children.set(n.parent_id, []);
          this.children.get(n.parent_id).push(n);
        } else this.roots.push(n);
      }
      this.selected = new Set(); this.expanded = new Set(); this.hits = []; this.hl = 0;
      this.rowEls = new Map();
      this._bind(); this.renderTree(); this.renderRecent(); this.renderSelection();
    }

    ancestors(id) {
      const out = []; let n = this.byId.get(id);
      while (n && n.parent_id && this.byId.has(n.parent_id)) { out.push(n.parent_id); n = this.byId.get(n.parent_id); }
      return out;
    }

    /* --- search ----------------------------------------------------------------------------- */
    query(q) {
      const tokens = q.toLowerCase().split(/[\s/>›]+/).filter(Boolean);
      if (!tokens.length) return [];
      const scored = [];
      for (const n of this.nodes) {
        let ok = true;
        for (const t of tokens) if (!n.lpath.includes(t)) { ok = false; break; }
        if (!ok) continue;
        const last = tokens[tokens.length - 1];
        let s = 3;
        if (n.lname === last) s = 0; else if (n.lname.startsWith(last)) s = 1; else if (n.lname.includes(last)) s = 2;
        scored.push([s, n.depth, n.path.length, n]);
      }
      scored.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
      return scored.slice(0, 50).map((x) => x[3]);
    }

    highlight(text, tokens) {
      let html = escapeHtml(text);
      for (const t of tokens) {
        if (!t) continue;
        const re = new RegExp("(" + t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + ")", "ig");
        html = html.replace(re, "<mark>$1</mark>");
      }
      return html;
    }

    renderResults() {
      const q = this.search.value.trim();
      this.hits = this.query(q);
      this.results.innerHTML = "";
      if (!q) { this.results.classList.remove("open"); return; }
      this.results.classList.add("open");
      if (!this.hits.length) { this.results.appendChild(el("div", { class: "result muted" }, "No genre matches “" + q + "”")); return; }
      const tokens = q.toLowerCase().split(/[\s/>›]+/).filter(Boolean);
      this.hl = Math.min(this.hl, this.hits.length - 1);
      this.hits.forEach((n, i) => {
        const row = el("div", { class: "result" + (i === this.hl ? " hl" : ""), role: "option", "data-key": n.key });
        const name = el("span"); name.innerHTML = this.highlight(n.name, tokens) + (this.selected.has(n.id) ? " ✓" : "");
        const path = el("span", { class: "path" }); path.innerHTML = this.highlight(n.path.split("/").join(" › "), tokens);
        row.appendChild(name); row.appendChild(path);
        row.addEventListener("mousedown", (ev) => { ev.preventDefault(); this.toggle(n.id); this.clearSearch(); });
        this.results.appendChild(row);
      });
      const cur = this.results.children[this.hl]; if (cur && cur.scrollIntoView) cur.scrollIntoView({ block: "nearest" });
    }

    clearSearch() { this.search.value = ""; this.hl = 0; this.renderResults(); }

    _bind() {
      this.search.addEventListener("input", () => { this.hl = 0; this.renderResults(); });
      this.search.addEventListener("keydown", (ev) => {
        if (ev.key === "ArrowDown") { ev.preventDefault(); this.hl = Math.min(this.hl + 1, this.hits.length - 1); this.renderResults(); }
        else if (ev.key === "ArrowUp") { ev.preventDefault(); this.hl = Math.max(this.hl - 1, 0); this.renderResults(); }
        else if (ev.key === "Enter" && !(ev.ctrlKey || ev.metaKey)) {
          ev.preventDefault();
          const n = this.hits[this.hl]; if (n) { this.toggle(n.id); this.clearSearch(); }
        } else if (ev.key === "Escape") { ev.preventDefault(); this.clearSearch(); this.search.blur(); }
      });
      this.search.addEventListener("blur", () => setTimeout(() => this.results.classList.remove("open"), 150));
      this.search.addEventListener("focus", () => { if (this.search.value) this.renderResults(); });
    }

    /* --- tree ------------------------------------------------------------------------------- */
    renderTree() {
      this.tree.innerHTML = ""; this.rowEls.clear();
      this.tree.appendChild(this._branch(this.roots));
    }

    _branch(list) {
      const ul = el("ul");
      for (const n of list) {
        const li = el("li");
        const kids = this.children.get(n.id) || [];
        const row = el("div", { class: "node", "data-key": n.key, title: n.path });
        const tw = el("span", { class: "twisty" }, kids.length ? (this.expanded.has(n.id) ? "▾" : "▸") : "");
        tw.addEventListener("click", (ev) => { ev.stopPropagation(); if (kids.length) this.setExpanded(n.id, !this.expanded.has(n.id)); });
        row.appendChild(tw);
        row.appendChild(el("span", {}, n.name));
        if (kids.length) row.appendChild(el("span", { class: "count" }, String(kids.length)));
        row.addEventListener("click", () => this.toggle(n.id));
        li.appendChild(row);
        this.rowEls.set(n.id, row);
        if (kids.length && this.expanded.has(n.id)) li.appendChild(this._branch(kids));
        ul.appendChild(li);
      }
      return ul;
    }

    setExpanded(id, open) { if (open) this.expanded.add(id); else this.expanded.delete(id); this.renderTree(); this.renderSelection(); }
    expandAll() { for (const id of this.children.keys()) this.expanded.add(id); this.renderTree(); this.renderSelection(); }
    collapseAll() { this.expanded.clear(); this.renderTree(); this.renderSelection(); }

    reveal(id) {
      for (const a of this.ancestors(id)) this.expanded.add(a);
      this.renderTree();
      const row = this.rowEls.get(id); if (row && row.scrollIntoView) row.scrollIntoView({ block: "nearest" });
    }

    /* --- selection -------------------------------------------------------------------------- */
    toggle(id) {
      if (this.selected.has(id)) this.selected.delete(id);
      else {
        // A more specific choice replaces its explicitly chosen ancestors (they stay implied).
        for (const a of this.ancestors(id)) this.selected.delete(a);
        this.selected.add(id);
        this.reveal(id);
      }
      this.renderSelection(); this.onChange(this.labels());
    }

    impliedIds() {
      const out = new Set();
      for (const id of this.selected) for (const a of this.ancestors(id)) if (!this.selected.has(a)) out.add(a);
      return out;
    }

    renderSelection() {
      const implied = this.impliedIds();
      for (const [id, row] of this.rowEls) {
        row.classList.toggle("selected", this.selected.has(id));
        row.classList.toggle("implied", implied.has(id));
      }
      this.chips.innerHTML = "";
      if (!this.selected.size) this.chips.appendChild(el("span", { class: "small muted" }, "Nothing yet — search or browse below."));
      for (const id of this.selected) {
        const n = this.byId.get(id);
        const chip = el("span", { class: "chip", "data-key": n.key, title: n.path });
        const parts = n.path.split("/");
        if (parts.length > 1) chip.appendChild(el("span", { class: "anc" }, parts.slice(0, -1).join(" › ") + " ›"));
        chip.appendChild(el("span", {}, n.name));
        const x = el("button", { type: "button", "aria-label": "Remove " + n.name }, "×");
        x.addEventListener("click", () => this.toggle(id));
        chip.appendChild(x);
        this.chips.appendChild(chip);
      }
      this.implied.innerHTML = "";
      if (!implied.size) this.implied.appendChild(el("span", { class: "small muted" }, "—"));
      for (const id of implied) {
        const n = this.byId.get(id);
        this.implied.appendChild(el("span", { class: "chip implied", "data-key": n.key, title: n.path }, n.name));
      }
    }

    labels() { return Array.from(this.selected, (id) => this.byId.get(id).key); }
    setLabels(keys) {
      this.selected.clear();
      for (const k of keys) { const n = this.byKey.get(k); if (n) this.selected.add(n.id); }
      this.renderSelection();
    }
    clear() { this.selected.clear(); this.clearSearch(); this.renderSelection(); }

    /* --- recent ----------------------------------------------------------------------------- */
    recent() { try { return JSON.parse(localStorage.getItem(this.recentKey) || "[]"); } catch (e) { return []; } }
    remember(keys) {
      const list = this.recent().filter((k) => !keys.includes(k));
      try { localStorage.setItem(this.recentKey, JSON.stringify(keys.concat(list).slice(0, 10))); } catch (e) { /* private mode */ }
      this.renderRecent();
    }
    renderRecent() {
      const keys = this.recent().filter((k) => this.byKey.has(k));
      this.recentBox.innerHTML = "";
      if (!keys.length) { this.recentBox.appendChild(el("span", { class: "small muted" }, "Your recent choices appear here.")); return; }
      for (const k of keys) {
        const n = this.byKey.get(k);
        const chip = el("span", { class: "chip recent", title: n.path, "data-key": k }, n.name);
        chip.addEventListener("click", () => { if (!this.selected.has(n.id)) this.toggle(n.id); });
        this.recentBox.appendChild(chip);
      }
    }
  }

  window.TaxonomyPicker = TaxonomyPicker;
})();
