"""Feature cache for the quality benchmarks: one (N, D) matrix for ``../shared/data/corpus``.

Uses the project's own ``active_learning.core.features.LogMelStatsBackend`` when it imports; otherwise a
clearly labelled stand-in (librosa log-mel / chroma / MFCC statistics). The matrix is cached under
``bench/.cache/`` (not committed) with the backend's name and version in the file name.

Run directly to (re)build the cache: ``.venv/bin/python bench/quality_features.py``.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
CACHE = ROOT / "bench" / ".cache"


def read_manifest() -> list[dict[str, str]]:
    with open(CORPUS / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _standin_embed(path: Path) -> np.ndarray:
    import librosa

    y, sr = librosa.load(path, sr=22050, mono=True)
    mel = np.log(librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64) + 1e-6)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr)
    mfcc = librosa.feature.mfcc(S=mel, n_mfcc=20)
    d1 = np.diff(mel, axis=1)
    return np.concatenate(
        [
            mel.mean(1),
            mel.std(1),
            np.abs(d1).mean(1),
            chroma.mean(1),
            chroma.std(1),
            mfcc.mean(1),
            mfcc.std(1),
        ]
    ).astype(np.float32)


def load_store_features(backend: str) -> tuple[np.ndarray, str] | None:
    """Features of one backend from the FeatureStore that ``bench/al_features_cache.py`` writes
    (``bench/.cache/features/corpus-<backend>.npy`` + sidecar), in manifest order; None if absent."""
    import json

    rows = read_manifest()
    store = CACHE / "features" / f"corpus-{backend}.npy"
    if not (store.exists() and store.with_suffix(".json").exists()):
        return None
    meta = json.loads(store.with_suffix(".json").read_text())
    index = {c: i for i, c in enumerate(meta["clip_ids"])}
    if not all(r["clip_id"] in index for r in rows):
        return None
    x = np.load(store)[[index[r["clip_id"]] for r in rows]].astype(np.float32)
    return x, f"project:active_learning.core.features.{meta['backend']}-v{meta['version']}"


def load_feature_set(name: str, *, verbose: bool = True) -> tuple[np.ndarray, str]:
    """``"logmel-stats"`` or backends joined by ``+`` (e.g. ``"logmel-stats+musicnn-msd"``):
    the per-backend matrices concatenated column-wise, and a label naming each part."""
    parts = name.split("+")
    if parts == ["logmel-stats"]:
        return load_features(verbose=verbose)
    mats: list[np.ndarray] = []
    labels: list[str] = []
    for part in parts:
        got = (
            load_features(verbose=verbose) if part == "logmel-stats" else load_store_features(part)
        )
        if got is None:
            raise SystemExit(
                f"features {part!r} are not cached; run .venv/bin/python bench/al_features_cache.py {part}"
            )
        mats.append(got[0])
        labels.append(f"{got[1]} ({got[0].shape[1]}-d)")
    return np.concatenate(mats, axis=1), " + ".join(labels)


def load_features(*, verbose: bool = True) -> tuple[np.ndarray, str]:
    """(N, D) float32 features for the manifest's clips (in manifest order) and a backend label."""
    rows = read_manifest()
    store = (
        CACHE / "features" / "corpus-logmel-stats.npy"
    )  # FeatureStore written by bench/al_features_cache.py
    if store.exists() and store.with_suffix(".json").exists():
        import json

        meta = json.loads(store.with_suffix(".json").read_text())
        index = {c: i for i, c in enumerate(meta["clip_ids"])}
        if all(r["clip_id"] in index for r in rows):
            x = np.load(store)[[index[r["clip_id"]] for r in rows]]
            return x, f"project:active_learning.core.features.{meta['backend']}-v{meta['version']}"
    try:
        sys.path.insert(0, str(ROOT))
        from active_learning.core.features import LogMelStatsBackend, decode_audio

        backend = LogMelStatsBackend()
        label = f"project:active_learning.core.features.{backend.name}-v{backend.version}"

        def embed(path: Path) -> np.ndarray:
            audio, sr = decode_audio(path)
            return np.asarray(backend.embed(audio, sr), dtype=np.float32)

        fname = f"quality_corpus_{backend.name}-v{backend.version}.npy"
    except Exception as exc:
        if verbose:
            print(f"project features unavailable ({exc!r}); using the librosa stand-in")
        label = "stand-in:librosa mel/chroma/mfcc statistics"
        embed = _standin_embed
        fname = "quality_corpus_standin-librosa-v1.npy"
    path = CACHE / fname
    if path.exists():
        x = np.load(path)
        if x.shape[0] == len(rows):
            return x, label
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    feats = []
    for i, row in enumerate(rows):
        feats.append(embed(CORPUS / row["path"]))
        if verbose and (i + 1) % 250 == 0:
            print(f"  {i + 1}/{len(rows)} clips, {time.perf_counter() - t0:.0f} s", flush=True)
    x = np.stack(feats)
    np.save(path, x)
    return x, label


if __name__ == "__main__":
    x, label = load_features()
    print(label, x.shape)
