/* Review page: the player, and the picker for a correction (prefilled from an annotation). */
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const cfg = JSON.parse($("review-config").textContent);
  const clip = JSON.parse($("clip-data").textContent);
  const picker = new window.TaxonomyPicker({
    nodes: JSON.parse($("taxonomy-nodes").textContent), search: $("picker-search"), results: $("results"),
    tree: $("tree"), chips: $("chips"), implied: $("implied"), recent: $("recent"),
    recentKey: "refrain.recent." + cfg.versionId,
  });
  const player = new window.Player({
    audio: "audio", lanes: "lanes", wave: "wave", spec: "spec", playhead: "playhead",
    region: "loopregion", time: "time", play: "play", loop: "loop",
  });
  player.load(clip, clip.audio_url);
  for (const b of document.querySelectorAll(".start-from")) {
    b.addEventListener("click", () => {
      picker.setLabels(b.dataset.labels.split("\n").filter(Boolean));
      $("correct-annotation").value = b.dataset.annotation;
      $("picker-search").focus();
    });
  }
  $("correct-form").addEventListener("submit", (ev) => {
    const labels = picker.labels();
    if (!labels.length) { ev.preventDefault(); $("picker-search").focus(); return; }
    $("correct-labels").value = labels.join("\n");
    picker.remember(labels);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.matches && ev.target.matches("input, textarea, select")) return;
    if (ev.key === " ") { ev.preventDefault(); player.toggle(); }
    else if (ev.key === "l" || ev.key === "L") player.toggleLoop();
  });
  for (const b of document.querySelectorAll("button")) b.addEventListener("mouseup", () => b.blur());
})();
