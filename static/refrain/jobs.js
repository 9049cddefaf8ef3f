// The jobs page: fetch its tables again every few seconds (progress bars move without a reload),
// and send an admin's retry / cancel as a POST with the page's CSRF token, showing the answer.
// Plain JS, no library: nothing is loaded from outside the server.
(function () {
  "use strict";
  var live = document.getElementById("jobs-live");
  if (!live) return;
  var status = document.getElementById("jobs-status");
  var url = live.dataset.rowsUrl;
  var every = parseInt(live.dataset.refreshMs, 10) || 3000;
  var busy = false;
  var stopped = false;
  var note = ""; // the answer to the last retry / cancel, kept across refreshes
  var lastHtml = null; // the rows as the server last sent them (an opened log changes innerHTML)
  var noteBad = false;

  function say(text, bad) {
    if (!status) return;
    status.textContent = text;
    status.classList.toggle("bad", !!bad);
  }

  function refresh() {
    if (busy || stopped || document.hidden) return Promise.resolve();
    busy = true;
    return fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (r) {
        if (r.redirected || r.status === 401 || r.status === 403 || r.status === 404) {
          stopped = true; // signed out or no longer allowed: stop asking
          say("Live updates stopped (" + (r.redirected ? "signed out" : r.status) + "): reload the page.", true);
          return;
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text().then(function (html) {
          if (html !== lastHtml) {
            // Logs the admin opened stay open across the refresh.
            var open = {};
            live.querySelectorAll("tr[data-id] details.job-log[open]").forEach(function (d) {
              var tr = d.closest("tr");
              open[tr.dataset.kind + ":" + tr.dataset.id] = true;
            });
            live.innerHTML = html;
            lastHtml = html;
            live.querySelectorAll("tr[data-id] details.job-log").forEach(function (d) {
              var tr = d.closest("tr");
              if (open[tr.dataset.kind + ":" + tr.dataset.id]) d.open = true;
            });
          }
          live.dataset.refreshedAt = String(Date.now());
          say((note ? note + " " : "") + "Updated " + new Date().toLocaleTimeString() + ".", noteBad);
        });
      })
      .catch(function (e) { say("Could not refresh (" + e.message + "); trying again.", true); })
      .then(function () { busy = false; });
  }

  live.addEventListener("submit", function (ev) {
    var form = ev.target.closest("form.job-action");
    if (!form) return;
    ev.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    var token = form.querySelector("input[name=csrfmiddlewaretoken]");
    var button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": token ? token.value : "", "X-Requested-With": "fetch" },
    })
      .then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, body: body }; },
                             function () { return { ok: r.ok, body: { detail: "HTTP " + r.status } }; });
      })
      .then(function (a) {
        note = a.ok ? a.body.kind + " " + a.body.id + ": " + a.body.status + "." : a.body.detail;
        noteBad = !a.ok;
        say(note, noteBad);
        return refresh();
      })
      .catch(function (e) { say("Request failed: " + e.message, true); })
      .then(function () { if (button) button.disabled = false; });
  });

  setInterval(refresh, every);
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });
})();
