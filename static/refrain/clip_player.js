/* The quality clip page's player: the annotate page's waveform-over-spectrogram player (player.js)
   on one clip, with the same transport keys (Space, arrows, L). */
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("clip-player-config").textContent);
  const $ = (id) => document.getElementById(id);
  const player = new window.Player({
    audio: "audio", lanes: "lanes", wave: "wave", spec: "spec", playhead: "playhead",
    region: "loopregion", time: "time", play: "play", loop: "loop",
  });
  player.audio.preload = "metadata";
  player.load(cfg.clip, cfg.audio_url);
  $("back").addEventListener("click", () => player.seek(-5));
  $("fwd").addEventListener("click", () => player.seek(5));
  document.addEventListener("keydown", (ev) => {
    if (ev.target.matches && ev.target.matches("input, textarea, select")) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    switch (ev.key) {
      case " ": ev.preventDefault(); player.toggle(); break;
      case "ArrowLeft": ev.preventDefault(); player.seek(ev.shiftKey ? -1 : -5); break;
      case "ArrowRight": ev.preventDefault(); player.seek(ev.shiftKey ? 1 : 5); break;
      case "l": case "L": player.toggleLoop(); break;
    }
  });
  for (const b of document.querySelectorAll(".transport button")) b.addEventListener("mouseup", () => b.blur());
})();
