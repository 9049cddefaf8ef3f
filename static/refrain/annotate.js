/* The annotator page: take a task, play it, pick genres, submit idempotently, and have the next
   clip's audio already downloaded. All state changes go through the REST API. */
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("annotate-config").textContent);
  const nodes = JSON.parse(document.getElementById("taxonomy-nodes").textContent);
  const csrf = document.getElementById("csrf").value;
  const $ = (id) => document.getElementById(id);

  const picker = new window.TaxonomyPicker({
    nodes, search: $("picker-search"), results: $("results"), tree: $("tree"), chips: $("chips"),
    implied: $("implied"), recent: $("recent"), recentKey: "refrain.recent." + cfg.versionId,
    onChange: () => setStatus(""),
  });
  const player = new window.Player({
    audio: "audio", lanes: "lanes", wave: "wave", spec: "spec", playhead: "playhead",
    region: "loopregion", time: "time", play: "play", loop: "loop",
  });

  let current = null;      // {task, src, visual}
  let upcoming = null;     // a promise of the prefetched {task, src, visual} or null
  let busy = false;
  let shownAt = 0, spent = 0;

  function uuid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "k" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }
  function setStatus(text, kind) { const s = $("status"); s.textContent = text; s.className = "status-line " + (kind || ""); }

  async function api(method, url, body) {
    const r = await fetch(url, {
      method, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (r.status !== 204) { try { data = await r.json(); } catch (e) { data = null; } }
    return { status: r.status, data };
  }

  function message(res) {
    const d = res.data && res.data.detail;
    if (Array.isArray(d)) return d.map((x) => (x.loc || []).slice(-1)[0] + ": " + x.msg).join("; ");
    return d || "unexpected answer (" + res.status + ")";
  }

  /* Take a task and download its audio and picture before it is needed. */
  async function take(exclude) {
    const qs = exclude.length ? "?" + exclude.map((id) => "exclude=" + id).join("&") : "";
    const res = await api("POST", cfg.nextUrl + qs);
    if (res.status === 204) return null;
    if (res.status !== 200) throw new Error(message(res));
    const task = res.data;
    let src = task.clip.audio_url;
    try {
      const audio = await fetch(src, { credentials: "same-origin" });
      if (audio.ok) src = URL.createObjectURL(await audio.blob());
    } catch (e) { /* stream it instead */ }
    const visual = fetch("/api/v1/clips/" + task.clip.id + "/visual", { credentials: "same-origin" })
      .then((r) => (r.status === 200 ? r.json() : (r.status === 202 ? "pending" : null))).catch(() => null);
    const img = new Image(); img.src = task.clip.spectrogram_url;
    return { task, src, visual };
  }

  function prefetch() {
    if (!current) return;
    $("prefetch-state").textContent = "Preparing next clip…";
    upcoming = take([current.task.task_id]).catch(() => null);
    upcoming.then((n) => { $("prefetch-state").textContent = n ? "Next clip ready" : "No further clip queued"; });
  }

  function show(item) {
    if (current && current.src.startsWith("blob:")) URL.revokeObjectURL(current.src);
    current = item;
    if (!item) {
      $("workspace").hidden = true; $("empty").hidden = false; document.body.dataset.taskId = "";
      return;
    }
    const t = item.task;
    $("workspace").hidden = false; $("empty").hidden = true;
    document.body.dataset.taskId = String(t.task_id);
    $("clip-title").textContent = t.clip.name;
    $("clip-meta").textContent = "Task " + t.task_id + " · " + (t.clip.duration_s ? window.formatTime(t.clip.duration_s) : "") +
      " · lease until " + new Date(t.lease_expires_at).toLocaleTimeString();
    const badges = $("clip-badges"); badges.innerHTML = "";
    const kind = document.createElement("span"); kind.className = "badge " + (t.kind === "relabel" ? "warn" : "annotator");
    kind.textContent = t.kind === "relabel" ? "Second opinion" : "Label"; badges.appendChild(kind);
    if (t.reason && t.reason !== "import") {
      const r = document.createElement("span"); r.className = "badge"; r.textContent = t.reason; badges.appendChild(r);
    }
    const others = $("others-card");
    if (t.others && t.others.length) {
      others.hidden = false;
      $("others").textContent = t.others.map((o) => o.labels.join(", ") + (o.unsure ? " (unsure)" : "")).join(" · ");
    } else others.hidden = true;
    picker.clear(); $("note").value = ""; $("unsure").checked = false; setStatus("");
    item.key = sessionStorage.getItem("refrain.key." + t.task_id) || uuid();
    sessionStorage.setItem("refrain.key." + t.task_id, item.key);
    player.load(t.clip, item.src, item.visual);
    spent = 0; shownAt = document.hidden ? 0 : performance.now();
  }

  function timeSpent() { return Math.round(spent + (shownAt ? performance.now() - shownAt : 0)); }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) { if (shownAt) spent += performance.now() - shownAt; shownAt = 0; }
    else shownAt = performance.now();
  });

  async function advance() {
    let next = upcoming ? await upcoming : null;
    upcoming = null;
    if (!next) next = await take([]);
    show(next);
    prefetch();
  }

  async function submit() {
    if (!current || busy) return;
    const labels = picker.labels();
    if (!labels.length) { setStatus("Pick at least one genre first.", "error"); $("picker-search").focus(); return; }
    busy = true; $("submit").disabled = true; setStatus("Saving…");
    const t = current.task;
    const body = {
      labels, unsure: $("unsure").checked, note: $("note").value, idempotency_key: current.key,
      time_spent_ms: timeSpent(), taxonomy_version: t.taxonomy_version.id,
    };
    let res = null;
    // Network errors are retried with the same key: the server stores the annotation once.
    for (let attempt = 0; attempt < 4; attempt++) {
      try { res = await api("POST", t.submit_url, body); break; }
      catch (e) { setStatus("Connection lost, retrying…", "error"); await new Promise((r) => setTimeout(r, 500 * 2 ** attempt)); }
    }
    busy = false; $("submit").disabled = false;
    if (!res) { setStatus("Could not reach the server. Your labels are kept; press submit again.", "error"); return; }
    if (res.status === 200 || res.status === 201) {
      picker.remember(labels);
      sessionStorage.removeItem("refrain.key." + t.task_id);
      setStatus("Saved.", "ok");
      document.body.dataset.submitted = String(Number(document.body.dataset.submitted || 0) + 1);
      await advance();
      setStatus("Saved. Next clip.", "ok");
    } else if (res.data && (res.data.code === "lease_expired" || res.data.code === "not_held")) {
      setStatus(message(res) + " Loading another clip.", "error");
      upcoming = null; await advance();
    } else setStatus(message(res), "error");
  }

  async function skip() {
    if (!current || busy) return;
    busy = true;
    await api("POST", "/api/v1/tasks/" + current.task.task_id + "/skip");
    busy = false;
    await advance();
    setStatus("Skipped.", "");
  }

  // Keep the leases of the clip on screen and the prefetched one alive while the page is open.
  setInterval(async () => {
    if (current) api("POST", "/api/v1/tasks/" + current.task.task_id + "/lease").catch(() => {});
    const n = upcoming ? await upcoming : null;
    if (n) api("POST", "/api/v1/tasks/" + n.task.task_id + "/lease").catch(() => {});
  }, Math.max(15, Math.min(120, cfg.leaseSeconds / 3)) * 1000);

  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("back").addEventListener("click", () => player.seek(-5));
  $("fwd").addEventListener("click", () => player.seek(5));
  $("expand-all").addEventListener("click", (e) => { e.preventDefault(); picker.expandAll(); });
  $("collapse-all").addEventListener("click", (e) => { e.preventDefault(); picker.collapseAll(); });

  document.addEventListener("keydown", (ev) => {
    const inText = ev.target.matches && ev.target.matches("input[type=search], input[type=text], textarea");
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "Enter") { ev.preventDefault(); submit(); return; }
    if ((ev.ctrlKey || ev.metaKey) && ev.key === "ArrowRight") { ev.preventDefault(); skip(); return; }
    if (inText) { if (ev.key === "Escape") ev.target.blur(); return; }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    switch (ev.key) {
      case " ": ev.preventDefault(); player.toggle(); break;
      case "ArrowLeft": ev.preventDefault(); player.seek(ev.shiftKey ? -1 : -5); break;
      case "ArrowRight": ev.preventDefault(); player.seek(ev.shiftKey ? 1 : 5); break;
      case "l": case "L": player.toggleLoop(); break;
      case "/": ev.preventDefault(); $("picker-search").focus(); break;
      case "u": case "U": $("unsure").checked = !$("unsure").checked; break;
      case "n": case "N": ev.preventDefault(); $("note").focus(); break;
    }
  });

  // A clicked button keeps focus, and Space would press it again: hand Space to the player.
  for (const b of document.querySelectorAll("button")) b.addEventListener("mouseup", () => b.blur());

  advance().catch((e) => setStatus(String(e.message || e), "error"));
})();
