/* Audio player: waveform (server-computed peaks) over a spectrogram image, click to seek,
   drag to loop a region, a smooth playhead. The <audio> element streams with HTTP ranges. */
(function () {
  "use strict";

  function fmt(t) {
    if (!isFinite(t)) t = 0;
    const m = Math.floor(t / 60), s = t - m * 60;
    return m + ":" + (s < 10 ? "0" : "") + s.toFixed(1);
  }

  class Player {
    constructor(ids) {
      this.audio = document.getElementById(ids.audio);
      this.lanes = document.getElementById(ids.lanes);
      this.wave = document.getElementById(ids.wave);
      this.spec = document.getElementById(ids.spec);
      this.head = document.getElementById(ids.playhead);
      this.region = document.getElementById(ids.region);
      this.time = document.getElementById(ids.time);
      this.playBtn = document.getElementById(ids.play);
      this.loopBtn = document.getElementById(ids.loop);
      this.peaks = []; this.loop = false; this.loopStart = null; this.loopEnd = null;
      this.offset = 0; this.length = null;
      this._bind(); this._tick();
    }

    load(clip, src, visual) {
      this.audio.pause();
      this.clipId = clip.id;
      this.offset = clip.segment_start_s || 0;
      this.length = clip.segment_end_s ? clip.segment_end_s - this.offset : (clip.duration_s || null);
      this.loopStart = this.loopEnd = null; this.region.style.display = "none";
      this.audio.src = src;
      this.audio.currentTime = this.offset;
      this.spec.src = clip.spectrogram_url;
      this.peaks = []; this.draw();
      this._visual(clip, visual, 0);
      this._updatePlay();
    }

    // A worker makes the waveform at import; 202 means it is still being made: ask again a few
    // times, then redraw the spectrogram too.
    _visual(clip, visual, attempt) {
      const url = "/api/v1/clips/" + clip.id + "/visual";
      (visual || fetch(url, { credentials: "same-origin" }).then((r) => r.status === 200 ? r.json() : (r.status === 202 ? "pending" : null)))
        .then((v) => {
          if (this.clipId !== clip.id) return;
          if (v === "pending") {
            if (attempt < 5) setTimeout(() => this._visual(clip, null, attempt + 1), 2000 * (attempt + 1));
            return;
          }
          if (v && v.peaks) {
            this.peaks = v.peaks; if (!this.length) this.length = v.duration_s; this.draw();
            if (attempt) this.spec.src = clip.spectrogram_url + (clip.spectrogram_url.includes("?") ? "&" : "?") + "r=" + attempt;
          }
        })
        .catch(() => {});
    }

    duration() { return this.length || (this.audio.duration - this.offset) || 0; }
    position() { return Math.max(0, this.audio.currentTime - this.offset); }

    draw() {
      const c = this.wave, ctx = c.getContext("2d");
      const w = c.width = c.clientWidth * (window.devicePixelRatio || 1) || 1200;
      const h = c.height = 96 * (window.devicePixelRatio || 1);
      ctx.fillStyle = "#0b1020"; ctx.fillRect(0, 0, w, h);
      ctx.strokeStyle = "rgba(148,163,184,.25)"; ctx.beginPath(); ctx.moveTo(0, h / 2); ctx.lineTo(w, h / 2); ctx.stroke();
      if (!this.peaks.length) return;
      const n = this.peaks.length, played = this.duration() ? this.position() / this.duration() : 0;
      for (let x = 0; x < w; x++) {
        const p = this.peaks[Math.min(n - 1, Math.floor((x / w) * n))];
        const y = Math.max(1, p * (h / 2 - 4));
        ctx.fillStyle = x / w < played ? "#a5b4fc" : "#6366f1";
        ctx.fillRect(x, h / 2 - y, 1, 2 * y);
      }
    }

    toggle() { if (this.audio.paused) this.play(); else this.audio.pause(); }
    play() {
      if (this.length && this.position() >= this.length - 0.05) this.audio.currentTime = this.offset;
      const p = this.audio.play(); if (p && p.catch) p.catch(() => {});
    }
    seek(delta) { this.seekTo(this.position() + delta); }
    seekTo(t) {
      const d = this.duration();
      this.audio.currentTime = this.offset + Math.max(0, d ? Math.min(t, d - 0.01) : t);
      this.draw();
    }
    toggleLoop() { this.loop = !this.loop; this.loopBtn.classList.toggle("on", this.loop); }

    _xToTime(clientX) {
      const r = this.lanes.getBoundingClientRect();
      return Math.max(0, Math.min(1, (clientX - r.left) / r.width)) * this.duration();
    }

    _bind() {
      let down = null;
      this.lanes.addEventListener("mousedown", (ev) => { down = this._xToTime(ev.clientX); });
      window.addEventListener("mouseup", (ev) => {
        if (down === null) return;
        const up = this._xToTime(ev.clientX);
        if (Math.abs(up - down) > 0.15) {
          this.loopStart = Math.min(up, down); this.loopEnd = Math.max(up, down);
          this.loop = true; this.loopBtn.classList.add("on"); this.seekTo(this.loopStart); this._drawRegion();
        } else this.seekTo(up);
        down = null;
      });
      this.playBtn.addEventListener("click", () => this.toggle());
      this.loopBtn.addEventListener("click", () => this.toggleLoop());
      this.audio.addEventListener("play", () => this._updatePlay());
      this.audio.addEventListener("pause", () => this._updatePlay());
      this.audio.addEventListener("ended", () => { if (this.loop) { this.seekTo(this.loopStart || 0); this.play(); } });
      window.addEventListener("resize", () => { this.draw(); this._drawRegion(); });
    }

    _drawRegion() {
      const d = this.duration();
      if (this.loopStart === null || !d) { this.region.style.display = "none"; return; }
      this.region.style.display = "block";
      this.region.style.left = (100 * this.loopStart / d) + "%";
      this.region.style.width = (100 * (this.loopEnd - this.loopStart) / d) + "%";
    }

    _updatePlay() {
      this.playBtn.innerHTML = (this.audio.paused ? "▶ Play" : "❚❚ Pause") + " <kbd>Space</kbd>";
      this.playBtn.dataset.state = this.audio.paused ? "paused" : "playing";
    }

    _tick() {
      const d = this.duration(), pos = this.position();
      if (this.loop && !this.audio.paused) {
        const end = this.loopEnd !== null ? this.loopEnd : d;
        if (pos >= end - 0.02) this.seekTo(this.loopStart || 0);
      } else if (!this.audio.paused && this.length && pos >= this.length) this.audio.pause();
      if (d) this.head.style.left = (100 * Math.min(pos, d) / d) + "%";
      this.time.textContent = fmt(pos) + " / " + fmt(d);
      if (!this.audio.paused && this.peaks.length) this.draw();
      requestAnimationFrame(() => this._tick());
    }
  }

  window.Player = Player;
  window.formatTime = fmt;
})();
