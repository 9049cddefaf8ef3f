"""Cache clip features of ``../shared/data/corpus`` for the acquisition benchmarks.

Uses ``active_learning.core.features.get_backend("logmel-stats")`` when that module is importable,
otherwise a small librosa log-mel-statistics fallback (named ``fallback-logmel``). The matrix is
cached under ``bench/.cache/`` (not committed) keyed by backend name and version.

Usage::

    .venv/bin/python bench/acq_features.py            # extract (or load) and print the shape
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
CACHE = ROOT / "bench" / ".cache"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def read_manifest(corpus: Path = CORPUS) -> list[dict[str, str]]:
    """Rows of ``manifest.csv`` in file order."""
    with open(corpus / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def taxonomy_paths(corpus: Path = CORPUS) -> list[str]:
    """Every node of ``taxonomy.json`` as a ``/``-joined path, parents before children."""
    tree = json.loads((corpus / "taxonomy.json").read_text())
    out: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for child in node.get("children", []):
            path = f"{prefix}/{child['name']}" if prefix else child["name"]
            out.append(path)
            walk(child, path)

    walk(tree, "")
    return out


def _backend() -> tuple[str, object]:
    try:
        from active_learning.core.features import get_backend

        backend = get_backend("logmel-stats")
        return f"{backend.name}-v{getattr(backend, 'version', '0')}", backend
    except ImportError:
        return "fallback-logmel-v1", None


def _fallback_embed(path: Path) -> np.ndarray:
    import librosa

    y, sr = librosa.load(path, sr=22050, mono=True)
    mel = np.log(1e-6 + librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64))
    d1 = np.diff(mel, axis=1)
    chroma = librosa.feature.chroma_stft(y=y, sr=sr).mean(axis=1)
    return np.concatenate([mel.mean(1), mel.std(1), np.abs(d1).mean(1), d1.std(1), chroma]).astype(
        np.float32
    )


def load_features(corpus: Path = CORPUS, *, verbose: bool = True) -> tuple[np.ndarray, str]:
    """(N, D) float32 features in manifest order, and the backend key they came from."""
    key, backend = _backend()
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"corpus_{key}.npy"
    rows = read_manifest(corpus)
    if target.exists():
        x = np.load(target)
        if x.shape[0] == len(rows):
            return x, key
    t0 = time.perf_counter()
    feats = []
    for i, row in enumerate(rows):
        path = corpus / row["path"]
        if backend is None:
            feats.append(_fallback_embed(path))
        else:
            from active_learning.core.features import decode_audio

            audio, sr = decode_audio(path)
            feats.append(np.asarray(backend.embed(audio, sr), dtype=np.float32))  # type: ignore[attr-defined]
        if verbose and (i + 1) % 250 == 0:
            print(f"  {i + 1}/{len(rows)} clips, {time.perf_counter() - t0:.0f} s", flush=True)
    x = np.stack(feats)
    np.save(target, x)
    return x, key


if __name__ == "__main__":
    t = time.perf_counter()
    feats, name = load_features()
    print(f"{name}: {feats.shape} in {time.perf_counter() - t:.1f} s")
