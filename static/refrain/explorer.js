/* The clip explorer: a row opens its clip page, "check all" checks the page, the scope selector
   says how many rows are checked. Everything else is plain forms (GET filters, POST bulk actions). */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const checks = () => Array.from(document.querySelectorAll("input.row-check"));
  const scope = $("bulk-scope");
  function count() {
    const n = checks().filter((c) => c.checked).length;
    scope.options[0].textContent = "checked rows (" + n + ")";
    if (n && scope.value !== "selected") scope.value = "selected";
  }
  $("check-all").addEventListener("change", (ev) => {
    for (const c of checks()) c.checked = ev.target.checked;
    count();
  });
  for (const c of checks()) c.addEventListener("change", count);
  for (const tr of document.querySelectorAll("#explorer tbody tr[data-href]")) {
    tr.addEventListener("click", (ev) => {
      if (ev.target.closest("a, input, label, button")) return;
      window.location.href = tr.dataset.href;
    });
  }
  // Empty filters stay out of the URL, so a shared link says only what it filters.
  $("explorer-filters").addEventListener("submit", () => {
    for (const el of $("explorer-filters").elements) if (el.name && !el.value) el.disabled = true;
  });
  $("bulk-form").addEventListener("submit", (ev) => {
    if (scope.value === "selected" && !checks().some((c) => c.checked)) {
      ev.preventDefault();
      window.alert("Check some rows first, or choose all clips matching the filter.");
    }
  });
  count();
})();
