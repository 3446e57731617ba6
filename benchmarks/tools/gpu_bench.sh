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

# Data-parallel scaling: the same training under torchrun with 1 and N processes (one GPU each, NCCL;
# on CPU, gloo), on the colin27 crop of tests/data with 4 annotated slices. Each rank trains on its
# own batch, so N processes see N times the slices a step: slices/s is what scales.
# NPROC (default: every GPU, or 2 on CPU) and DIST_STEPS (default 200; dry run 4) change it.
DIST_DIR="$(mktemp -d)"
trap 'rm -rf "$DIST_DIR"' EXIT
python - "$DIST_DIR" <<'PY'
import sys
from pathlib import Path
import numpy as np
from napari_sslseg.io import read_volume, write_volume
data = Path("tests/data")
labels, geom = read_volume(data / "colin27_crop_labels.nii.gz")
sparse = np.zeros_like(labels)
sparse[[14, 26, 38, 50]] = labels[[14, 26, 38, 50]]
write_volume(sparse, geom, Path(sys.argv[1]) / "labels.nii.gz")
PY
if python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    DEVICE=cuda; NPROC="${NPROC:-$(python -c 'import torch; print(torch.cuda.device_count())')}"
else
    DEVICE=cpu; NPROC="${NPROC:-2}"
fi
STEPS="${DIST_STEPS:-$([ "${DRY_RUN:-0}" = 1 ] && echo 4 || echo 200)}"
BATCH=4
echo
echo "| processes ($DEVICE) | steps/s | slices/s | scaling |"
echo "|---|---|---|---|"
BASE=""
for N in 1 $([ "$NPROC" -gt 1 ] && echo "$NPROC"); do
    OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / N > 0 ? $(nproc) / N : 1 ))}" \
    python -m torch.distributed.run --standalone --nproc_per_node "$N" -m napari_sslseg train \
        tests/data/colin27_crop_t1.nii.gz "$DIST_DIR/labels.nii.gz" --out "$DIST_DIR/run$N" \
        --steps "$STEPS" --batch "$BATCH" --eval-every 0 --device "$DEVICE" -q > "$DIST_DIR/log$N" 2>&1 \
        || { echo "torchrun with $N processes failed:"; tail -20 "$DIST_DIR/log$N"; exit 1; }
    SECONDS_TAKEN="$(sed -n 's/^completed after [0-9]* steps in \([0-9.]*\) s$/\1/p' "$DIST_DIR/log$N")"
    python - "$N" "$STEPS" "$BATCH" "$SECONDS_TAKEN" "$BASE" <<'PY'
import sys
n, steps, batch, seconds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
base = float(sys.argv[5]) if sys.argv[5] else None
rate = steps / seconds
slices = rate * batch * 2 * n  # labelled + unlabelled slices a step, on every rank
print(f"| {n} | {rate:.2f} | {slices:.1f} | {'1.00' if base is None else f'{slices / base:.2f}'} |")
PY
    [ -z "$BASE" ] && BASE="$(python -c "print($STEPS / $SECONDS_TAKEN * $BATCH * 2)")"
done
