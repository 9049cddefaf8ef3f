"""The data every benchmark reads, loaded one way: the corpus, its tree and labels, cached features.

Paths come from :mod:`bench` (``../shared/data``, or ``$REFRAIN_DATA``); features are cached in
``bench/.cache/features/`` (not committed).

- :func:`read_manifest`, :func:`taxonomy_paths`, :func:`corpus_tree`, :func:`corpus_labels` and
  :func:`load_corpus`: ``corpus/manifest.csv`` and ``corpus/taxonomy.json`` as rows, tree and
  ancestor-closed label matrix;
- :func:`fma_tree`: the FMA genre tree (``fma/genres.csv``) as a :class:`Hierarchy`;
- :func:`extract` / :func:`features` / :func:`load_feature_set`: corpus features of the project's
  backends (``active_learning.core.features``), extracted once into a :class:`FeatureStore` under
  ``bench/.cache/features/`` and read back in any clip order;
- :func:`load_patches`: the CQT-patch file that ``python -m bench.corpus_patches`` writes.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from active_learning.core.features import AudioDecodeError, FeatureStore, decode_audio, get_backend
from bench import CACHE, CORPUS, FMA, ROOT
from taxonomy.hierarchy import Hierarchy

FEATURE_CACHE = CACHE / "features"
#: Clips per FeatureStore chunk (the unit of resumption) in :func:`extract`.
CHUNK = 64


def read_manifest(corpus: Path = CORPUS) -> list[dict[str, str]]:
    """Rows of ``manifest.csv`` in file order."""
    with open(corpus / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def taxonomy_paths(corpus: Path = CORPUS) -> list[str]:
    """Every node of ``taxonomy.json`` as a ``/``-joined path, parents before children."""
    tree = json.loads((corpus / "taxonomy.json").read_text())
    out: list[str] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        for child in node.get("children", []):
            path = f"{prefix}/{child['name']}" if prefix else child["name"]
            out.append(path)
            walk(child, path)

    walk(tree, "")
    return out


def corpus_tree(corpus: Path = CORPUS) -> Hierarchy:
    """The corpus taxonomy as a :class:`Hierarchy` named by paths."""
    return Hierarchy.from_paths(taxonomy_paths(corpus))


def corpus_labels(h: Hierarchy, labels: list[str]) -> np.ndarray:
    """(N, K) int8 ancestor-closed labels from manifest ``labels`` strings (paths joined by ``|``)."""
    index = {name: i for i, name in enumerate(h.names or ())}
    y = np.zeros((len(labels), h.n_nodes), dtype=np.int8)
    for r, joined in enumerate(labels):
        for path in joined.split("|"):
            y[r, index[path.strip()]] = 1
    return h.ancestor_close(y)


def load_corpus(corpus: Path = CORPUS) -> tuple[pd.DataFrame, Hierarchy, np.ndarray, np.ndarray]:
    """The manifest, the tree, (N, K) ancestor-closed labels and each clip's primary node."""
    manifest = pd.read_csv(corpus / "manifest.csv")
    h = corpus_tree(corpus)
    index = {name: i for i, name in enumerate(h.names or ())}
    y = corpus_labels(h, list(manifest["labels"]))
    primary = np.asarray([index[p.strip()] for p in manifest["primary_label"]], dtype=np.int64)
    return manifest, h, y, primary


def fma_tree(path: Path = FMA) -> Hierarchy:
    """The FMA genre tree (``genre_id``, ``parent`` with 0 = root) as a :class:`Hierarchy` of titles."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    index = {int(r["genre_id"]): i for i, r in enumerate(rows)}
    parents = [index[int(r["parent"])] if int(r["parent"]) else -1 for r in rows]
    return Hierarchy(np.asarray(parents, dtype=np.int64), tuple(r["title"] for r in rows))


def backend_options(name: str) -> dict[str, object]:
    """Constructor options of a feature backend on this checkout (musicnn: the fetched weights)."""
    if name.startswith("musicnn"):
        return {"weights_dir": str(ROOT / "var" / "models" / "musicnn")}
    return {}


def extract(name: str, *, limit: int | None = None, verbose: bool = True) -> dict[str, float]:
    """Extract backend ``name`` over the corpus into ``bench/.cache/features/corpus-<name>``.

    Single-threaded (torch threads 1), in resumable chunks of :data:`CHUNK` clips; returns the
    throughput (clip-seconds of audio per process-CPU-second, decode + resample + embed), which the
    store's sidecar keeps (an existing store is not re-extracted: its recorded throughput comes back).
    """
    import torch

    torch.set_num_threads(1)
    manifest = pd.read_csv(CORPUS / "manifest.csv")
    if limit:
        manifest = manifest.iloc[:limit]
    store = FeatureStore(FEATURE_CACHE)
    set_name = f"corpus-{name}" + (f"-{limit}" if limit else "")
    if store.exists(set_name):
        return dict(store.load(set_name).meta.get("throughput", {}))
    backend = get_backend(name, **backend_options(name))
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
        if verbose:
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


def features(
    backends: str, clip_ids: list[str], *, verbose: bool = True
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of ``backends`` (names joined by ``+``, concatenated column-wise) for ``clip_ids``
    in that order, extracted on first use; and each backend's throughput record."""
    store = FeatureStore(FEATURE_CACHE)
    mats, tps = [], {}
    for b in backends.split("+"):
        tps[b] = extract(b, verbose=verbose)
        fs = store.load(f"corpus-{b}")
        mats.append(np.asarray(fs.X)[fs.rows_for(clip_ids)])
    return np.concatenate(mats, axis=1), tps


def feature_key(backend: str) -> str:
    """``<name>-v<version>`` of a cached corpus feature set, as its backend records them."""
    meta = FeatureStore(FEATURE_CACHE).load(f"corpus-{backend}").meta
    return f"{meta['backend']}-v{meta['version']}"


def feature_label(backend: str) -> str:
    """``project:active_learning.core.features.<name>-v<version>`` of a cached corpus feature set."""
    return f"project:active_learning.core.features.{feature_key(backend)}"


def load_feature_set(name: str, *, verbose: bool = True) -> tuple[np.ndarray, str]:
    """(N, D) float32 features of ``name`` (backends joined by ``+``) in manifest order, and a label
    naming each part (with its width when there are several)."""
    clip_ids = [r["clip_id"] for r in read_manifest()]
    mats: list[np.ndarray] = []
    labels: list[str] = []
    for part in name.split("+"):
        x, _ = features(part, clip_ids, verbose=verbose)
        mats.append(x.astype(np.float32))
        labels.append(feature_label(part))
    if len(mats) == 1:
        return mats[0], labels[0]
    label = " + ".join(f"{lab} ({x.shape[1]}-d)" for lab, x in zip(labels, mats, strict=True))
    return np.concatenate(mats, axis=1), label


def load_patches(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a file written by ``python -m bench.corpus_patches``; ``X`` comes back as float32 dB."""
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["X"] = out["X"].astype(np.float32) * (80.0 / 255.0) - 80.0
    out["meta"] = json.loads(str(out["meta"]))
    return out
