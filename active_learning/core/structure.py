"""Key-, tempo- and timbre-invariant "structure" statistics: melody, harmony-by-pitch-class, rhythm.

:class:`StructureStatsBackend` (registered as ``structure-stats``) summarises *what is played*
rather than *how it sounds*. Every block is built so that a transposition, a tempo change of about
±10 % or a change of instrument moves it little:

* pitch content comes from a semitone salience spectrum (log-compressed STFT magnitude pooled onto
  MIDI pitches), folded to chroma and then made shift-invariant (tonic-relative profiles, interval
  histograms, |DFT| of the profile, |2-D DFT| of chroma patches — the "2DFTM" cover-song feature);
* rhythm comes from an onset-strength envelope: its autocorrelation on a *log*-lag axis, the same
  autocorrelation at lags relative to the estimated beat period (so a tempo change cancels), meter
  evidence (duple vs triple at beat and sub-beat level), and inter-onset-interval histograms
  normalised by the beat period or by the previous interval;
* melodic contour comes from a harmonic-summation predominant-pitch track: interval histogram,
  step / leap / repeat ratios, range, direction changes.

numpy / scipy only (no librosa call on the hot path, so no numba JIT), about 30 ms per 10 s clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from active_learning.core.signal import resample

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Array = npt.NDArray[Any]

__all__ = ["StructureStatsBackend"]

# Krumhansl-Kessler key profiles (C major / C minor).
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

# Beat-relative lags (multiples of the beat period) at which the onset autocorrelation is read.
_BEAT_RATIOS = (1 / 4, 1 / 3, 1 / 2, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 2.0, 3.0, 4.0, 6.0)


def _frames(y: F32, n_fft: int, hop: int) -> F32:
    pad = n_fft // 2
    yp = np.pad(y, (pad, pad))
    n = 1 + (yp.size - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    out: F32 = yp[idx]
    return out  # (T, n_fft)


def _stft_mag(y: F32, n_fft: int, hop: int) -> F32:
    win = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    spec = np.fft.rfft(_frames(y, n_fft, hop) * win, axis=1)
    mag: F32 = np.abs(spec).astype(np.float32).T
    return mag  # (F, T)


def _hist(values: Array, edges: Array) -> F64:
    if values.size == 0:
        return np.zeros(len(edges) - 1)
    h, _ = np.histogram(np.clip(values, edges[0], edges[-1] - 1e-9), bins=edges)
    out: F64 = h / max(h.sum(), 1)
    return out


def _smooth_hist(values: Array, centers: Array, width: float) -> F64:
    """Soft histogram: each value spreads a Gaussian of ``width`` over ``centers`` (sums to 1)."""
    if values.size == 0:
        return np.zeros(len(centers))
    w = np.exp(-0.5 * ((values[:, None] - centers[None, :]) / width) ** 2)
    h = w.sum(axis=0)
    out: F64 = h / max(h.sum(), 1e-12)
    return out


class StructureStatsBackend:
    """Melody / pitch-class / rhythm statistics, invariant to key, tempo (±10 %) and instrument.

    The clip is resampled to ``sr`` (22,050 Hz). Two magnitude STFTs are taken: a long one
    (n_fft 4096, hop 1024, ~46 ms) for pitch, a short one (n_fft 1024, hop 256, ~12 ms) for onsets.

    Blocks, in order (``blocks`` maps each name to its slice):

    ===============  ====  =================================================================
    block            size  what
    ===============  ====  =================================================================
    ``pcp_tonic``    12    mean chroma, rotated so the estimated tonic (Krumhansl-Kessler
                           key-profile correlation, 24 keys) is first
    ``pcp_sorted``   12    mean chroma sorted descending
    ``pcp_dft``      6     |DFT| coefficients 1..6 of the mean chroma (shift-invariant)
    ``key``          2     best major and best minor key-profile correlation
    ``pc_trans``     144   transitions between successive (repeat-collapsed) dominant pitch
                           classes, both relative to the tonic, normalised to sum 1
    ``pc_interval``  12    histogram of those transitions' intervals mod 12
    ``ftm2d``        108   log |2-D DFT| (12 pitch x 9 time frequencies) of 16-frame chroma
                           patches (~3 s), median over patches — the 2DFTM feature
    ``mel_interval`` 25    histogram of melodic intervals -12..+12 semitones between successive
                           notes of the predominant-pitch track
    ``mel_stats``    12    step, leap (>= 5), repeat, ascending ratios; mean and std |interval|;
                           pitch range (p95 - p5) and std; voiced fraction; notes per second;
                           direction-change rate; mean log note duration
    ``poly``         3     active semitones per frame (mean, std); mean chroma entropy
    ``acf_loglag``   40    onset autocorrelation at 40 log-spaced lags 0.08 .. 4 s (smoothed)
    ``acf_beat``     25    the same at lags 2^k x beat period, k = -3 .. 3 in quarter octaves
    ``acf_ratio``    12    autocorrelation at musical fractions/multiples of the beat period
    ``meter``        4     log acf(2T)/acf(3T), log acf(4T)/acf(3T), log acf(T/2)/acf(T/3),
                           log acf(T)/acf(1.5T)
    ``tempo``        5     log2 beat period, pulse clarity, onsets per second, envelope cv, envelope
                           peakiness
    ``ioi_beat``     12    histogram of log2(inter-onset interval / beat period), -3.5 .. 1.5
    ``ioi_ratio``    13    histogram of log2(IOI_k+1 / IOI_k), -2 .. 2
    ===============  ====  =================================================================

    ``dim`` = **447**. Silence (or any degenerate input) gives finite values (zeros where undefined).
    """

    name = "structure-stats"
    version = "1"

    def __init__(self, *, sr: int = 22050) -> None:
        self.sr = sr
        self.pitch_fft, self.pitch_hop = 4096, 1024
        self.onset_fft, self.onset_hop = 1024, 256
        self.midi_lo, self.midi_hi = 40, 124  # salience bins (harmonics need the high ones)
        self.melody_lo, self.melody_hi = 43, 96  # where the predominant pitch may lie
        sizes = [
            ("pcp_tonic", 12),
            ("pcp_sorted", 12),
            ("pcp_dft", 6),
            ("key", 2),
            ("pc_trans", 144),
            ("pc_interval", 12),
            ("ftm2d", 108),
            ("mel_interval", 25),
            ("mel_stats", 12),
            ("poly", 3),
            ("acf_loglag", 40),
            ("acf_beat", 25),
            ("acf_ratio", len(_BEAT_RATIOS)),
            ("meter", 4),
            ("tempo", 5),
            ("ioi_beat", 12),
            ("ioi_ratio", 13),
        ]
        self.blocks: dict[str, slice] = {}
        start = 0
        for block, n in sizes:
            self.blocks[block] = slice(start, start + n)
            start += n
        self.dim = start
        self._semi_fb: F32 | None = None
        self._mel_fb: F32 | None = None

    # filters -------------------------------------------------------------------------------------
    def _filters(self) -> tuple[F32, F32]:
        if self._semi_fb is None or self._mel_fb is None:
            freqs = np.arange(self.pitch_fft // 2 + 1) * self.sr / self.pitch_fft
            with np.errstate(divide="ignore"):
                midi = 69.0 + 12.0 * np.log2(np.maximum(freqs, 1e-6) / 440.0)
            centers = np.arange(self.midi_lo, self.midi_hi)
            fb = np.exp(-0.5 * ((midi[None, :] - centers[:, None]) / 0.35) ** 2)
            fb[:, freqs < 60.0] = 0.0
            # Equalise rows: a semitone covers few FFT bins low down and many high up.
            fb /= np.maximum(fb.sum(axis=1, keepdims=True), 1e-9)
            self._semi_fb = fb.astype(np.float32)
            # A light triangular filterbank (~24 bands, log-spaced 60 Hz..8 kHz) for onsets.
            f = np.arange(self.onset_fft // 2 + 1) * self.sr / self.onset_fft
            edges = np.geomspace(60.0, 8000.0, 26)
            mf = np.zeros((24, f.size))
            for b in range(24):
                lo, c, hi = edges[b], edges[b + 1], edges[b + 2]
                mf[b] = np.clip(np.minimum((f - lo) / (c - lo), (hi - f) / (hi - c)), 0.0, None)
            self._mel_fb = mf.astype(np.float32)
        return self._semi_fb, self._mel_fb

    # pitch ---------------------------------------------------------------------------------------
    def _pitch_blocks(self, y: F32) -> dict[str, F64]:
        semi_fb, _ = self._filters()
        mag = _stft_mag(y, self.pitch_fft, self.pitch_hop)  # (F, T)
        sal = semi_fb @ mag  # (S, T) linear magnitude per semitone
        frame_e = sal.sum(axis=0)
        peak = float(frame_e.max()) if frame_e.size else 0.0
        T = sal.shape[1]
        out: dict[str, F64] = {}
        voiced = frame_e > max(peak * 10 ** (-30 / 20), 1e-8) if peak > 1e-8 else np.zeros(T, bool)
        # Log compression relative to the clip's loudest bin (gain-invariant).
        ref = max(float(sal.max()), 1e-10)
        comp = np.log1p(100.0 * sal / ref)

        # Chroma (per-frame sum-normalised), folded from the semitone spectrum.
        n_s = comp.shape[0]
        pcs = (np.arange(self.midi_lo, self.midi_lo + n_s)) % 12
        chroma: F64 = np.zeros((12, T))
        np.add.at(chroma, pcs, comp)
        csum = chroma.sum(axis=0)
        chroma = np.where(csum > 1e-9, chroma / np.maximum(csum, 1e-9), 0.0)
        v = voiced
        pcp = chroma[:, v].mean(axis=1) if v.any() else np.zeros(12)
        if pcp.sum() > 0:
            pcp = pcp / pcp.sum()
        # Key estimate.
        zp = pcp - pcp.mean()
        corr_maj = np.zeros(12)
        corr_min = np.zeros(12)
        if np.linalg.norm(zp) > 1e-9:
            for k in range(12):
                for prof, dst in ((_KK_MAJOR, corr_maj), (_KK_MINOR, corr_min)):
                    p = np.roll(prof, k)
                    p = p - p.mean()
                    dst[k] = float(zp @ p / (np.linalg.norm(zp) * np.linalg.norm(p)))
        if corr_maj.max() >= corr_min.max():
            tonic = int(np.argmax(corr_maj))
        else:
            tonic = int(np.argmax(corr_min))
        out["pcp_tonic"] = np.roll(pcp, -tonic)
        out["pcp_sorted"] = np.sort(pcp)[::-1]
        out["pcp_dft"] = np.abs(np.fft.fft(pcp))[1:7]
        out["key"] = np.array([corr_maj.max(), corr_min.max()])

        # Dominant pitch-class sequence (repeat-collapsed) -> transitions and intervals.
        dom = np.argmax(chroma, axis=0)[v]
        if dom.size:
            keep = np.r_[True, dom[1:] != dom[:-1]]
            dom = dom[keep]
        trans = np.zeros((12, 12))
        if dom.size > 1:
            a = (dom[:-1] - tonic) % 12
            b = (dom[1:] - tonic) % 12
            np.add.at(trans, (a, b), 1.0)
            trans /= trans.sum()
            out["pc_interval"] = np.bincount((dom[1:] - dom[:-1]) % 12, minlength=12) / (
                dom.size - 1
            )
        else:
            out["pc_interval"] = np.zeros(12)
        out["pc_trans"] = trans.reshape(-1)

        # 2DFTM on chroma pooled to ~186 ms frames, 16-frame patches hop 4.
        n4 = T // 4
        ftm = np.zeros((12, 9))
        if n4 >= 16:
            cpool = chroma[:, : n4 * 4].reshape(12, n4, 4).mean(axis=2)
            starts = np.arange(0, n4 - 16 + 1, 4)
            patches = np.stack([cpool[:, s : s + 16] for s in starts])  # (P, 12, 16)
            mags = np.abs(np.fft.fft(np.fft.rfft(patches, axis=2), axis=1))  # (P, 12, 9)
            ftm = np.median(mags, axis=0)
        out["ftm2d"] = np.log1p(10.0 * ftm).reshape(-1)

        # Predominant pitch by harmonic summation on the compressed salience.
        offsets = (0, 12, 19, 24, 28)
        m_lo = self.melody_lo - self.midi_lo
        m_hi = self.melody_hi - self.midi_lo
        hs = np.zeros((m_hi - m_lo, T))
        for h, off in enumerate(offsets):
            hs += 0.8**h * comp[m_lo + off : m_hi + off]
        f0 = np.argmax(hs, axis=0).astype(np.float64) + self.melody_lo
        act_thresh = 0.25 * comp.max(axis=0, keepdims=True)
        active = (comp > np.maximum(act_thresh, 1e-9)).sum(axis=0).astype(np.float64)
        ent = -(chroma * np.log(np.maximum(chroma, 1e-12))).sum(axis=0)
        out["poly"] = (
            np.array([active[v].mean(), active[v].std(), ent[v].mean()]) if v.any() else np.zeros(3)
        )

        seq = f0[v]
        mel_stats = np.zeros(12)
        interval_hist: F64 = np.zeros(25)
        if seq.size >= 3:
            # Notes: runs of equal pitch, keeping runs of >= 2 frames (drops one-frame glitches).
            change = np.r_[True, seq[1:] != seq[:-1]]
            starts_idx = np.flatnonzero(change)
            lengths = np.diff(np.r_[starts_idx, seq.size])
            notes = seq[starts_idx][lengths >= 2]
            durs = lengths[lengths >= 2]
            if notes.size >= 2:
                iv = np.diff(notes)
                iv = iv[iv != 0] if np.any(iv != 0) else iv
            else:
                iv = np.zeros(0)
            n_iv = max(iv.size, 1)
            interval_hist = _hist(iv, np.arange(-12.5, 13.5, 1.0))
            signs = np.sign(iv)
            dir_changes = np.sum(signs[1:] != signs[:-1]) / max(signs.size - 1, 1)
            # Repeats are measured on the raw (pre-merge) note list: same pitch re-attacked is not
            # visible in a pitch track, so this is "held-note" evidence only.
            raw_iv = np.diff(seq[starts_idx]) if starts_idx.size > 1 else np.zeros(0)
            duration_s = seq.size * self.pitch_hop / self.sr
            mel_stats = np.array(
                [
                    np.sum(np.abs(iv) <= 2) / n_iv,
                    np.sum(np.abs(iv) >= 5) / n_iv,
                    np.mean(lengths >= 4) if lengths.size else 0.0,
                    np.sum(iv > 0) / n_iv,
                    np.abs(iv).mean() if iv.size else 0.0,
                    np.abs(iv).std() if iv.size else 0.0,
                    np.percentile(seq, 95) - np.percentile(seq, 5),
                    seq.std(),
                    v.mean(),
                    notes.size / max(duration_s, 1e-3),
                    dir_changes,
                    np.log(durs.mean() * self.pitch_hop / self.sr) if durs.size else 0.0,
                ]
            )
            del raw_iv
        else:
            mel_stats[8] = v.mean() if v.size else 0.0
        out["mel_interval"] = interval_hist
        out["mel_stats"] = mel_stats
        return out

    # rhythm --------------------------------------------------------------------------------------
    def _rhythm_blocks(self, y: F32) -> dict[str, F64]:
        _, mel_fb = self._filters()
        fps = self.sr / self.onset_hop
        mag = _stft_mag(y, self.onset_fft, self.onset_hop)
        bands = mel_fb @ (mag**2)
        ref = max(float(bands.max()), 1e-12)
        # mu-law-like compression relative to the loudest bin: gain-invariant, and an accented
        # note still rises higher than a weak one (a plain log with a deep floor hides accents).
        logb = np.log1p(1000.0 * bands / ref)
        env = np.maximum(np.diff(logb, axis=1), 0.0).mean(axis=0)
        env = np.r_[0.0, env]
        out: dict[str, F64] = {}
        # Local-mean removal (~0.5 s) then half-wave rectification.
        k = max(round(0.5 * fps), 1)
        kern = np.ones(k) / k
        env_hp = np.maximum(env - np.convolve(env, kern, mode="same"), 0.0)
        n = env_hp.size
        max_lag = min(int(4.0 * fps), n - 1)
        acf = np.zeros(max(max_lag + 1, 2))
        if env_hp.std() > 1e-9 and max_lag > 4:
            z = env_hp - env_hp.mean()
            spec = np.fft.rfft(z, 2 * n)
            full = np.fft.irfft(np.abs(spec) ** 2)[: max_lag + 1]
            full = full / np.maximum(n - np.arange(max_lag + 1), 1)  # unbiased
            acf = full / max(full[0], 1e-12)
        lags = np.arange(acf.size) / fps

        def acf_at(sec: npt.NDArray[np.floating[Any]] | float) -> F64:
            return np.asarray(np.interp(sec, lags, acf, left=0.0, right=0.0), dtype=np.float64)

        # Log-lag ACF (smoothed over +-~6 % lag so a 10 % tempo change moves it about one bin).
        grid = np.geomspace(0.08, 4.0, 40)
        smooth = np.stack([acf_at(grid * r) for r in (0.94, 0.97, 1.0, 1.03, 1.06)]).mean(axis=0)
        out["acf_loglag"] = smooth

        # Beat period: ACF peak with a log-Gaussian prior around 0.5 s (120 bpm), 0.25 .. 1.5 s.
        cand = (lags >= 0.25) & (lags <= 1.5)
        beat = 0.5
        clarity = 0.0
        if cand.any() and acf.max() > 0:
            prior = np.exp(-0.5 * (np.log2(lags[cand] / 0.5) / 1.0) ** 2)
            score = np.maximum(acf[cand], 0.0) * prior
            i = int(np.argmax(score))
            idx = np.flatnonzero(cand)[i]
            if 0 < idx < acf.size - 1:  # parabolic refinement
                a, b, c = acf[idx - 1], acf[idx], acf[idx + 1]
                den = a - 2 * b + c
                shift = 0.5 * (a - c) / den if abs(den) > 1e-12 else 0.0
                beat = (idx + float(np.clip(shift, -0.5, 0.5))) / fps
            else:
                beat = idx / fps
            clarity = float(acf[idx])
        rel = 2.0 ** np.arange(-3, 3.25, 0.25)
        out["acf_beat"] = acf_at(beat * rel)
        ratios = np.asarray(_BEAT_RATIOS)
        # Max over a +-4 % neighbourhood: small beat errors do not drop the peak.
        wig = np.array([0.96, 0.98, 1.0, 1.02, 1.04])
        ar = np.stack([acf_at(beat * ratios * w) for w in wig]).max(axis=0)
        out["acf_ratio"] = ar

        def pos(x: float) -> float:
            return max(x, 0.0) + 0.02

        at = dict(zip(_BEAT_RATIOS, ar, strict=True))
        out["meter"] = np.array(
            [
                np.log(pos(at[2.0]) / pos(at[3.0])),
                np.log(pos(at[4.0]) / pos(at[3.0])),
                np.log(pos(at[1 / 2]) / pos(at[1 / 3])),
                np.log(pos(at[1.0]) / pos(at[3 / 2])),
            ]
        )

        # Onsets: peaks of the envelope above mean + 0.5 std, >= 50 ms apart.
        from scipy.signal import find_peaks

        onsets = np.zeros(0)
        if env_hp.std() > 1e-9:
            pk, _ = find_peaks(
                env_hp, height=env_hp.mean() + 0.5 * env_hp.std(), distance=max(int(0.05 * fps), 1)
            )
            onsets = pk / fps
        dur = n / fps
        cv = env.std() / env.mean() if env.mean() > 1e-12 else 0.0
        peaky = float(np.percentile(env_hp, 99) / (env_hp.mean() + 1e-9)) if n else 0.0
        out["tempo"] = np.array(
            [np.log2(beat), clarity, onsets.size / max(dur, 1e-3), cv, np.log1p(peaky)]
        )
        ioi = np.diff(onsets)
        ioi = ioi[ioi > 0]
        out["ioi_beat"] = _smooth_hist(
            np.log2(ioi / beat) if ioi.size else ioi, np.linspace(-3.5, 1.5, 12), 0.15
        )
        out["ioi_ratio"] = _smooth_hist(
            np.log2(ioi[1:] / ioi[:-1]) if ioi.size > 1 else np.zeros(0),
            np.linspace(-2.0, 2.0, 13),
            0.12,
        )
        return out

    # API -----------------------------------------------------------------------------------------
    def embed(self, audio: Array, sr: int) -> Array:
        """(samples,) float32 at ``sr`` -> (dim,) float32 structure statistics."""
        y = resample(np.asarray(audio, dtype=np.float32).reshape(-1), sr, self.sr)
        if y.size < self.sr:  # at least 1 s (the onset smoothing kernel is 0.5 s)
            y = np.pad(y, (0, self.sr - y.size))
        parts = self._pitch_blocks(y) | self._rhythm_blocks(y)
        feats = np.zeros(self.dim, dtype=np.float64)
        for block, sl in self.blocks.items():
            vals = np.asarray(parts[block], dtype=np.float64).reshape(-1)
            assert vals.size == sl.stop - sl.start, (block, vals.size)
            feats[sl] = vals
        out: F32 = np.nan_to_num(feats, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        return out

    def embed_many(self, clips: list[tuple[Array, int]]) -> Array:
        """List of (audio, sr) -> (n, dim) float32."""
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.embed(a, s) for a, s in clips]).astype(np.float32)
