"""Benchmark the torch musicnn port: accuracy vs the TF reference, and extraction throughput.

Run from the repository root (needs ../shared/data and the fetched weights)::

    .venv/bin/python -m bench.musicnn_port [--clips 100] [--repeats 3]

Writes bench/results/musicnn_port.json. Throughput is clip-seconds of audio per CPU-second of
this process with torch.set_num_threads(1) (process CPU time, so other load on the machine does
not count), median over repeats; each stage (decode, resample, mel, network) is timed separately.

A roofline section asks whether the 150x-per-core goal is reachable by the exact network at all: the
network's FLOPs per clip (from the weights' shapes), one core's best fp32 matrix-product rate
(torch.mm, 2048^2), the rate the port achieves, and the real-time factor the clip would reach if the
network ran at that matrix-product peak (plus the measured decode/resample/mel time).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from active_learning.core.musicnn.backend import MusicnnBackend
from active_learning.core.musicnn.fetch import WHEEL_SHA256
from active_learning.core.musicnn.preprocess import (
    TorchMel,
    logmel_librosa,
    make_patches,
    resample_to_16k,
)
from bench import DATA, RESULTS, ROOT, write_json

REF = DATA / "musicnn_reference"
OUTPUTS = ("logits", "taggram", "penultimate", "mean_pool", "max_pool")


def accuracy(weights: Path) -> dict[str, dict[str, float]]:
    inputs = np.load(REF / "inputs.npz")
    res: dict[str, dict[str, float]] = {}
    for model in ("MTT_musicnn", "MSD_musicnn"):
        for mel in ("torch", "librosa"):
            be = MusicnnBackend(weights, model=model, mel=mel)
            for sig in ("clean", "noisy"):
                ref = np.load(REF / f"{model}__{sig}.npz")
                patches = be.patches(inputs[f"signal_{sig}"], 16000)
                row = {"mel_patches": float(np.abs(patches - ref["mel_patches"]).max())}
                for name, x in (("from_signal", patches), ("from_ref_patches", ref["mel_patches"])):
                    if name == "from_ref_patches" and mel == "librosa":
                        continue  # the network does not depend on the mel front end
                    out = be.run_patches(x)
                    for o in OUTPUTS:
                        row[f"{name}.{o}"] = float(np.abs(getattr(out, o).numpy() - ref[o]).max())
                res[f"{model}/{sig}/mel={mel}"] = row
    worst = {
        o: max(v for r in res.values() for k, v in r.items() if k.endswith("." + o))
        for o in OUTPUTS
    }
    res["worst"] = worst
    return res


def cpu() -> float:
    return time.process_time()


def throughput(weights: Path, files: list[Path], repeats: int, mel: str) -> dict[str, object]:
    be = MusicnnBackend(weights, model="MSD_musicnn", mel=mel)
    tmel = TorchMel()
    runs = []
    for _ in range(repeats):
        t = dict.fromkeys(("decode", "resample", "mel", "network", "pool"), 0.0)
        audio_s = 0.0
        patches = []
        counts = []
        for f in files:
            t0 = cpu()
            y, sr = sf.read(f, dtype="float32", always_2d=True)
            y = y.mean(axis=1) if y.shape[1] > 1 else y[:, 0]
            t1 = cpu()
            y16 = resample_to_16k(y, sr)
            t2 = cpu()
            lm = tmel(y16).numpy() if mel == "torch" else logmel_librosa(y16)
            p = make_patches(lm)
            t3 = cpu()
            t["decode"] += t1 - t0
            t["resample"] += t2 - t1
            t["mel"] += t3 - t2
            audio_s += len(y) / sr
            patches.append(p)
            counts.append(p.shape[0])
        t0 = cpu()
        out = be.run_patches(np.concatenate(patches))
        t1 = cpu()
        # clip pooling, as embed_many does
        idx = torch.repeat_interleave(torch.arange(len(files)), torch.tensor(counts))
        for part in be.parts:
            torch.zeros(len(files), getattr(out, part).shape[1]).index_add_(
                0, idx, getattr(out, part)
            )
        t2 = cpu()
        t["network"] += t1 - t0
        t["pool"] += t2 - t1
        total = sum(t.values())
        runs.append(
            {
                "clips": len(files),
                "patches": int(sum(counts)),
                "audio_s": audio_s,
                "cpu_s": total,
                "x_realtime_per_core": audio_s / total,
                "stage_cpu_s": t,
                "stage_ms_per_clip": {k: 1000 * v / len(files) for k, v in t.items()},
            }
        )
    med = statistics.median(r["x_realtime_per_core"] for r in runs)
    return {"mel": mel, "median_x_realtime_per_core": med, "runs": runs}


def network_flops(net: torch.nn.Module, frames: int = 187) -> dict[str, float]:
    """Multiply-adds x 2 of one patch, layer by layer, read off the loaded weights' shapes."""
    n_mel = 96
    out: dict[str, float] = {}
    for i in range(2):
        c, _, taps, width = getattr(net, f"tim{i}_w").shape
        out[f"timbral{i}"] = 2.0 * frames * (n_mel - width + 1) * c * taps * width
    for i in range(3):
        c, _, taps, _ = getattr(net, f"tem{i}_w").shape
        out[f"temporal{i}"] = 2.0 * frames * n_mel * c * taps
    for i in range(3):
        c_out, c_in, taps = getattr(net, f"mid{i}_w").shape
        out[f"midend{i}"] = 2.0 * frames * c_out * c_in * taps
    out["dense"] = 2.0 * (net.dense_w.numel() + net.out_w.numel())
    out["total"] = sum(out.values())
    return out


def sgemm_peak(repeats: int = 7) -> dict[str, float]:
    """One core's fp32 matrix-product rate (torch.mm, 1 thread, 2048^2): the best any conv gets."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = cpu()
        a @ b
        times.append(cpu() - t0)
    rates = sorted(2.0 * n**3 / t / 1e9 for t in times)
    return {"median_gflops": statistics.median(rates), "best_gflops": rates[-1], "n": n}


def roofline(weights: Path, throughput_run: dict[str, object]) -> dict[str, object]:
    """Is the 150x-per-core goal reachable by the exact network on this core at all?

    The fastest the network can run is its FLOPs at the core's best fp32 matrix-product rate; the
    measured decode + resample + mel time is added, since it is spent per clip whatever the network.
    """
    net = MusicnnBackend(weights, model="MSD_musicnn").net
    flops = network_flops(net)
    peak = sgemm_peak()
    runs = throughput_run["runs"]  # type: ignore[index]
    pre_ms = statistics.median(
        sum(v for k, v in r["stage_ms_per_clip"].items() if k != "network")  # type: ignore[index]
        for r in runs  # type: ignore[union-attr]
    )
    net_ms = statistics.median(r["stage_ms_per_clip"]["network"] for r in runs)  # type: ignore[index,union-attr]
    patches_per_clip = 3  # 10-s clips: three non-overlapping 187-frame patches
    clip_flops = patches_per_clip * flops["total"]
    floor_ms = 1000.0 * clip_flops / (peak["best_gflops"] * 1e9)
    goal_x = 150.0
    return {
        "gflop_per_patch": {k: round(v / 1e9, 4) for k, v in flops.items()},
        "gflop_per_10s_clip": round(clip_flops / 1e9, 3),
        "sgemm_one_core": peak,
        "network_ms_per_clip_measured": round(net_ms, 2),
        "network_gflops_achieved": round(clip_flops / (net_ms / 1000.0) / 1e9, 1),
        "network_ms_per_clip_at_sgemm_best": round(floor_ms, 2),
        "other_stages_ms_per_clip_measured": round(pre_ms, 2),
        "ceiling_x_realtime_per_core": round(10_000.0 / (floor_ms + pre_ms), 1),
        "gflops_needed_for_150x": round(clip_flops / 1e9 / (10.0 / goal_x - pre_ms / 1000.0), 1),
    }


def end_to_end_embed_many(weights: Path, files: list[Path]) -> dict[str, float]:
    """The public path (decode outside, embed_many inside), one pass, for a cross-check."""
    be = MusicnnBackend(weights, model="MSD_musicnn")
    t0 = cpu()
    clips = []
    for f in files:
        y, sr = sf.read(f, dtype="float32", always_2d=True)
        clips.append((y.mean(axis=1), sr))
    emb = be.embed_many(clips)
    dt = cpu() - t0
    audio_s = sum(len(y) / sr for y, sr in clips)
    return {"clips": len(files), "dim": int(emb.shape[1]), "x_realtime_per_core": audio_s / dt}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--weights", default=os.environ.get("MUSICNN_WEIGHTS_DIR", ROOT / "var/models/musicnn")
    )
    ap.add_argument("--skip-librosa", action="store_true", help="skip the librosa-mel throughput")
    args = ap.parse_args()
    torch.set_num_threads(1)
    weights = Path(args.weights)
    files = sorted((DATA / "corpus" / "audio").glob("*.ogg"))[: args.clips]
    if len(files) < args.clips:
        raise SystemExit(f"need {args.clips} clips in {DATA / 'corpus/audio'}, found {len(files)}")

    # warm-up (numba/librosa JIT, torch kernels) outside the timings
    MusicnnBackend(weights, mel="librosa").embed_many([(np.zeros(48000, np.float32), 16000)])

    result: dict[str, object] = {
        "wheel_sha256": WHEEL_SHA256,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "loadavg_at_start": os.getloadavg(),
        },
        "max_abs_error_vs_tf_reference": accuracy(weights),
        "throughput_torch_mel": throughput(weights, files, args.repeats, "torch"),
    }
    if not args.skip_librosa:
        result["throughput_librosa_mel"] = throughput(weights, files, 1, "librosa")
    result["embed_many_single_pass"] = end_to_end_embed_many(weights, files)
    result["roofline"] = roofline(weights, result["throughput_torch_mel"])  # type: ignore[arg-type]
    result["machine"]["loadavg_at_end"] = os.getloadavg()  # type: ignore[index]

    out = RESULTS / "musicnn_port.json"
    write_json(out, result)
    worst = result["max_abs_error_vs_tf_reference"]["worst"]  # type: ignore[index]
    print("max abs error vs TF reference (worst over models, signals, mel paths):")
    for k, v in worst.items():
        print(f"  {k:12s} {v:.2e}")
    for key in ("throughput_torch_mel", "throughput_librosa_mel"):
        if key in result:
            r = result[key]
            print(f"{key}: {r['median_x_realtime_per_core']:.1f}x real time per core")  # type: ignore[index]
            print(
                "  ms/clip:", {k: round(v, 2) for k, v in r["runs"][0]["stage_ms_per_clip"].items()}
            )  # type: ignore[index]
    print("embed_many single pass:", result["embed_many_single_pass"])
    rl = result["roofline"]
    print(
        f"roofline: {rl['gflop_per_10s_clip']} GFLOP per 10-s clip; one core's best sgemm "  # type: ignore[index]
        f"{rl['sgemm_one_core']['best_gflops']:.1f} GFLOP/s; network achieves "  # type: ignore[index]
        f"{rl['network_gflops_achieved']} GFLOP/s; 150x needs {rl['gflops_needed_for_150x']} GFLOP/s; "  # type: ignore[index]
        f"ceiling at sgemm peak {rl['ceiling_x_realtime_per_core']}x real time per core"  # type: ignore[index]
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
