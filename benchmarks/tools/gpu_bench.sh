#!/usr/bin/env bash
# Speed on a CUDA GPU: training steps/s per method (mixed precision, the engine's default on CUDA)
# and whole-volume inference with 8 MC-dropout passes on colin27 (181x217x181).
# Usage: benchmarks/tools/gpu_bench.sh [DATA_DIR]   (default ../shared/data); prints a Markdown table.
# DRY_RUN=1 runs the same code on any device with tiny budgets (a check of the script, not a measurement).
set -euo pipefail
DATA_DIR="$(realpath "${1:-../shared/data}")"
cd "$(dirname "$0")/../.."   # the repository root: benchmarks.tools is imported from there
python - "$DATA_DIR" <<'PY'
import os, sys, time, torch
from napari_sslseg.bench.datasets import crop_to_labels
from benchmarks.tools import speed
from benchmarks.tools.config import ProbeConfig as BenchConfig
from benchmarks.tools.presets import load_preset

dry = os.environ.get("DRY_RUN") == "1"
assert dry or torch.cuda.is_available(), "no CUDA GPU visible"
cuda = torch.cuda.is_available()
full = load_preset("colin27", sys.argv[1])
ds = crop_to_labels(full, BenchConfig().margin)
cfg = BenchConfig(speed_steps=200, overlay_limit_s=60.0)  # long enough that launch overheads average out
if dry:
    cfg = BenchConfig(speed_steps=3, overlay_check_every=5, overlay_limit_s=5.0, inference_slices=4, inference_all_slices=2)
card = torch.cuda.get_device_name(0) if cuda else "no GPU (dry run)"
print(f"GPU: {card}; torch {torch.__version__}; mixed precision {'on' if cuda else 'off'}\n")
print("| method | steps/s | one step holds |\n|---|---|---|")
for r in speed.step_rates(ds, cfg, axis=0):
    print(f"| {r.method} | {r.steps_per_second:.1f} | {r.holds} |")
overlay, trainer = speed.first_overlay(ds, cfg, axis=0)
print(f"\nfirst useful overlay ({overlay.method}, k={overlay.k}): "
      + (f"{overlay.seconds:.1f} s at step {overlay.steps}" if overlay.seconds is not None else f"not reached in {cfg.overlay_limit_s:.0f} s"))
speed.inference_time(trainer, full.image, full.spacing, 0, cfg)  # warm-up (cuDNN autotuning, allocations)
inf = speed.inference_time(trainer, full.image, full.spacing, 0, cfg)
print(f"inference, {inf.mc_passes} MC passes, {'x'.join(map(str, inf.shape))}: {inf.seconds:.2f} s over the last block, "
      f"{inf.seconds_all_blocks:.2f} s over every block ({inf.slices_all_blocks} slices timed, scaled)")
if cuda:
    print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
PY
