"""Extract and cache corpus features for the active-learning benchmarks (bench/.cache/, not committed).

Usage: ``.venv/bin/python bench/al_features_cache.py logmel-stats [musicnn-msd ...]``

Each backend runs single-threaded (torch threads 1) over every clip of ``../shared/data/corpus`` in
chunks of 64, through the resumable :class:`FeatureStore`; throughput (clip-seconds of audio per
process-CPU-second, decode + resample + embed) is stored in the sidecar.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from active_learning.core.features import (  # noqa: E402
    AudioDecodeError,
    FeatureStore,
    decode_audio,
    get_backend,
)

CORPUS = ROOT.parent / "shared" / "data" / "corpus"
CACHE = ROOT / "bench" / ".cache" / "features"
CHUNK = 64


def backend_options(name: str) -> dict[str, object]:
    if name.startswith("musicnn"):
        return {"weights_dir": str(ROOT / "var" / "models" / "musicnn")}
    return {}


def extract(name: str, *, limit: int | None = None) -> dict[str, float]:
    torch.set_num_threads(1)
    manifest = pd.read_csv(CORPUS / "manifest.csv")
    if limit:
        manifest = manifest.iloc[:limit]
    store = FeatureStore(CACHE)
    set_name = f"corpus-{name}" + (f"-{limit}" if limit else "")
    if store.exists(set_name):
        return dict(store.load(set_name).meta.get("throughput", {}))
    backend = get_backend(name, **backend_options(name))  # type: ignore[arg-type]
    backend.embed(np.zeros(22050, dtype=np.float32), 22050)  # warm-up (filters, JIT, weights)
    n_chunks = (len(manifest) + CHUNK - 1) // CHUNK
    audio_s = 0.0
    cpu_s = 0.0
    wall_s = 0.0
    for c in store.pending_chunks(set_name, n_chunks):
        part = manifest.iloc[c * CHUNK : (c + 1) * CHUNK]
        rows, ids, failures = [], [], {}
        t0, w0 = time.process_time(), time.perf_counter()
        for cid, rel in zip(part.clip_id, part.path, strict=True):
            try:
                audio, sr = decode_audio(CORPUS / rel)
            except AudioDecodeError as exc:
                failures[cid] = str(exc)
                continue
            rows.append(backend.embed(audio, sr))
            ids.append(cid)
            audio_s += audio.shape[0] / sr
        cpu_s += time.process_time() - t0
        wall_s += time.perf_counter() - w0
        store.write_chunk(
            set_name,
            c,
            np.stack(rows),
            ids,
            backend=backend.name,
            version=backend.version,
            failures=failures,
        )
        print(f"{name}: chunk {c + 1}/{n_chunks}", flush=True)
    fs = store.consolidate(set_name)
    tp = {
        "audio_s": audio_s,
        "cpu_s": cpu_s,
        "wall_s": wall_s,
        "clip_s_per_core_s": audio_s / max(cpu_s, 1e-9),
        "clip_s_per_wall_s": audio_s / max(wall_s, 1e-9),
        "resumed": False,
    }
    meta = dict(fs.meta)
    meta.pop("clip_ids")
    store.write(
        set_name,
        np.asarray(fs.X),
        fs.clip_ids,
        backend=fs.backend,
        version=fs.version,
        extra={
            k: v for k, v in meta.items() if k not in {"backend", "version", "dim", "n", "dtype"}
        }
        | {"throughput": tp},
    )
    return tp


if __name__ == "__main__":
    for backend_name in sys.argv[1:] or ["logmel-stats"]:
        print(backend_name, extract(backend_name), flush=True)
