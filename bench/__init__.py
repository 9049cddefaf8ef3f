"""Refrain's benchmarks: scripts run from the repository root as ``python -m bench.<name>``.

Shared helpers, which scripts import (scripts never import each other):

- this module: where things are (:data:`DATA` is ``../shared/data`` next to the repository unless
  ``$REFRAIN_DATA`` names another folder, e.g. from a git worktree; :data:`CACHE` is
  ``bench/.cache/``, not committed; :data:`RESULTS` is ``bench/results/``) and :func:`write_json` for
  a result file; standard library only, so that servers a benchmark starts can import it cheaply;
- :mod:`bench.corpus`: the corpus, its tree and labels, the FMA tree, cached features, CQT patches;
- :mod:`bench.simulation`: the active-learning simulator and its corpus runs;
- :mod:`bench.oos`: out-of-sample probabilities for the label-quality benchmarks;
- :mod:`bench.cnn_configs`: the ``LogMelCNN`` configurations the CNN benchmarks share.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("REFRAIN_DATA") or ROOT.parent / "shared" / "data")
CORPUS = DATA / "corpus"
FMA = DATA / "fma" / "genres.csv"
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "bench" / "results"


def write_json(path: Path, payload: Any, *, indent: int = 2, default: Any = None) -> None:
    """Write a result file (parent folders created, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=indent, default=default) + "\n")
