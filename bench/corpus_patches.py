"""Build a self-contained CQT-patch file of the corpus, for CNN training on any machine.

Usage::

    .venv/bin/python -m bench.corpus_patches [--out bench/.cache/corpus_cqt.npz] [--workers 2]

Decodes every clip of ``../shared/data/corpus`` and stores, in one ``.npz`` (about 30 MB, so it can
travel to a GPU worker that has no copy of the corpus):

* ``X``: (N, 72, 216) uint8 log-magnitude CQT (one bin per semitone from C2, hop 1024 at 22,050 Hz,
  dB in [-80, 0] quantised to 0..255; :func:`load_patches` turns it back into dB),
* ``E`` (N, D) float32, only with ``--add-embeddings a+b+c``: the named feature backends' cached
  corpus features (``bench.corpus.features``), concatenated, added to an existing file,
* ``Y`` (N, K) ancestor-closed labels, ``primary`` (N,) primary-leaf index, ``parents`` (K,),
  ``names`` (K,), ``split`` and ``source`` (N,) strings, ``clip_id`` (N,).

Extraction throughput (clip-seconds per CPU-second) is printed and stored in ``meta``.
:func:`bench.corpus.load_patches` reads the file back.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from active_learning.core.features import decode_audio
from active_learning.core.signal import cqt_patches
from bench import CACHE, CORPUS
from bench.corpus import features, load_corpus

CQT = {"sr": 22050, "hop_length": 1024, "n_bins": 72, "frames": 216}


def _work(paths: list[str]) -> tuple[np.ndarray, float, float]:
    t0 = time.process_time()
    clips = [decode_audio(p) for p in paths]
    audio_s = sum(a.shape[0] / sr for a, sr in clips)
    db = cqt_patches(clips, **CQT)
    q = np.round((db + 80.0) * (255.0 / 80.0)).clip(0, 255).astype(np.uint8)
    return q, audio_s, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(CACHE / "corpus_cqt.npz"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--add-embeddings", default=None, metavar="BACKEND[+BACKEND...]")
    args = ap.parse_args()

    if args.add_embeddings:
        with np.load(args.out, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        E, _ = features(args.add_embeddings, [str(c) for c in data["clip_id"]])
        data["E"] = E.astype(np.float32)
        meta = json.loads(str(data["meta"]))
        meta["embeddings"] = args.add_embeddings
        data["meta"] = np.asarray(json.dumps(meta))
        np.savez_compressed(args.out, **data)
        print(f"added E {E.shape} ({args.add_embeddings}) to {args.out}")
        return

    manifest, h, Y, primary = load_corpus()
    paths = [str(CORPUS / p) for p in manifest["path"]]
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    w0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        parts = list(pool.map(_work, chunks))
    wall = time.perf_counter() - w0
    X = np.concatenate([p[0] for p in parts])
    audio_s = sum(p[1] for p in parts)
    cpu_s = sum(p[2] for p in parts)
    meta = {
        "representation": "log-magnitude CQT, dB floored at -80, uint8",
        **CQT,
        "fmin_hz": 65.40639132514966,
        "audio_s": audio_s,
        "cpu_s": cpu_s,
        "wall_s": wall,
        "clip_s_per_core_s": audio_s / cpu_s,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    assert h.names is not None
    np.savez_compressed(
        args.out,
        X=X,
        Y=Y.astype(np.int8),
        primary=primary,
        parents=np.asarray(h.parents, dtype=np.int64),
        names=np.asarray(h.names),
        split=manifest["split"].to_numpy().astype(str),
        source=manifest["source"].to_numpy().astype(str),
        clip_id=manifest["clip_id"].to_numpy().astype(str),
        meta=json.dumps(meta),
    )
    size = Path(args.out).stat().st_size / 2**20
    print(f"{X.shape} -> {args.out} ({size:.1f} MiB); {json.dumps(meta)}")


if __name__ == "__main__":
    main()
