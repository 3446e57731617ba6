"""Does self-supervised pre-training pay? Fine-tuning with and without it on the whole Colin27 head.

    python -m benchmarks.pretrain_gain pretrain OBJECTIVE STEPS OUT_DIR
    python -m benchmarks.pretrain_gain finetune INIT|none METHOD STEPS SEED K RESULTS.jsonl

The protocol is the benchmark's (napari_sslseg.bench.protocol): k annotated slices evenly spaced
through the labelled extent along axis 0, every unannotated slice of the volume scored (Dice).
Each call appends one JSON line, so stages can run one at a time on a loaded machine. The lines of
the run in README.md (Pre-training) are in benchmarks/results/pretrain_gain_colin27*.jsonl.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_sslseg import pretrain
from benchmarks.tools.presets import load_preset
from napari_sslseg.bench.datasets import labelled_extent
from napari_sslseg.bench.protocol import evenly_spaced, predict, score, scored_slices, training_volume
from napari_sslseg.config import TrainConfig
from napari_sslseg.data import Volume
from napari_sslseg.training import Trainer

AXIS = 0
DATA = Path("/work/shared/data")


def run_pretrain(objective: str, steps: int, out: str) -> None:
    ds = load_preset("colin27", DATA)
    pre = pretrain.Pretrainer([Volume(ds.image, ds.spacing, axis=AXIS, name=ds.name)],
                              pretrain.PretrainConfig(objective=objective, steps=steps, threads=1))
    t0 = time.perf_counter()
    for _ in pre.run(out):
        pass
    losses = pre.losses
    print(json.dumps({"stage": "pretrain", "objective": objective, "steps": pre.step, "train_seconds": round(pre.train_seconds, 1),
                      "wall_seconds": round(time.perf_counter() - t0, 1), "loss_first20": round(float(np.mean(losses[:20])), 4),
                      "loss_last20": round(float(np.mean(losses[-20:])), 4), "load": open("/proc/loadavg").read().split()[:3]}), flush=True)


def run_finetune(init: str, method: str, steps: int, seed: int, k: int, results: str) -> None:
    ds = load_preset("colin27", DATA)
    extent = labelled_extent(ds.labels, AXIS)
    annotated = evenly_spaced(extent, k)
    cfg = TrainConfig(steps=steps, seed=seed, threads=1, eval_every=0, preview_every=0)
    t0 = time.perf_counter()
    trainer = Trainer([training_volume(ds, annotated, AXIS)], method=method, config=cfg, class_names=ds.class_names,
                      init=None if init == "none" else init)
    setup = time.perf_counter() - t0
    for _ in trainer.run():
        pass
    scored = scored_slices(ds.labels.shape[AXIS], annotated)
    s = score(predict(trainer).labels, ds.labels, ds.class_names, ds.spacing, AXIS, scored, hausdorff=False)
    row = {"stage": "finetune", "init": init, "method": method, "steps": steps, "seed": seed, "k": k,
           "mean_dice": round(s.mean_dice, 4), "dice": {c: round(v, 3) for c, v in s.dice.items()},
           "train_seconds": round(trainer.train_seconds, 1), "setup_seconds": round(setup, 1),
           "load": open("/proc/loadavg").read().split()[:3]}
    print(json.dumps(row), flush=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    stage, *args = sys.argv[1:]
    if stage == "pretrain":
        run_pretrain(args[0], int(args[1]), args[2])
    else:
        run_finetune(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), args[5])
