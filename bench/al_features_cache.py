"""Extract and cache corpus features for the benchmarks (bench/.cache/features/, not committed).

Usage: ``.venv/bin/python -m bench.al_features_cache logmel-stats [musicnn-msd ...]``

Each backend runs single-threaded (torch threads 1) over every clip of ``../shared/data/corpus`` in
chunks of 64, through the resumable :class:`FeatureStore` (:func:`bench.corpus.extract`); throughput
(clip-seconds of audio per process-CPU-second, decode + resample + embed) is stored in the sidecar.
Every benchmark extracts what it needs on first use; this only does it ahead of time.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from bench.corpus import extract

if __name__ == "__main__":
    for backend_name in sys.argv[1:] or ["logmel-stats"]:
        print(backend_name, extract(backend_name), flush=True)
