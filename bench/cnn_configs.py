"""The ``LogMelCNN`` configurations the CNN benchmarks compare (``bench.al_corpus_cnn``) and reuse
(``bench.quality_oos_gpu``): ``COMMON`` parameters, overridden per named configuration."""

from __future__ import annotations

from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"channels": (16, 32, 64, 64), "freq_shift": 0},
    "base": {"channels": (32, 64, 128, 128), "freq_shift": 0},
    "base-shift3": {"channels": (32, 64, 128, 128), "freq_shift": 3},
    "wide-shift3": {"channels": (64, 128, 256, 256), "freq_shift": 3},
    "base-shift3-flat": {"channels": (32, 64, 128, 128), "freq_shift": 3, "method": "flat"},
    "base-shift6-long": {"channels": (32, 64, 128, 128), "freq_shift": 6, "max_epochs": 120},
    "base-shift3-long": {"channels": (32, 64, 128, 128), "freq_shift": 3, "max_epochs": 150},
    "base-shift3-stretch": {"channels": (32, 64, 128, 128), "freq_shift": 3, "time_stretch": 0.15},
    "base-shift3-stretch-long": {
        "channels": (32, 64, 128, 128),
        "freq_shift": 3,
        "time_stretch": 0.15,
        "max_epochs": 150,
    },
}
COMMON = {
    "input": "logmel",
    "crop_frames": 160,
    "dropout": 0.3,
    "lr": 3e-3,
    "weight_decay": 1e-3,
    "batch_size": 64,
    "max_epochs": 60,
    "min_steps": 50,
    "max_steps": 100_000,
}
