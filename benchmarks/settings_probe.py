"""One training against the clock with some TrainConfig fields changed, scored as the app predicts.

    python -m benchmarks.settings_probe DATASET K METHOD SECONDS SEED RESULTS.jsonl [FIELD=VALUE ...]

The protocol is the benchmark's (napari_sslseg.bench.protocol): k annotated slices evenly spaced
through the labelled extent along axis 0 of the whole volume of ``DATASET`` (a preset of
benchmarks/tools/presets.py, from ../shared/data beside the checkout, or from ``$SSLSEG_DATA``). The training runs SECONDS of
wall-clock time with every core (``TrainConfig.time_budget``, as the time axis), with each
FIELD=VALUE (a Python literal) set in its TrainConfig; its prediction is the app's (the prior
mixed in, small pieces removed, no MC-dropout) and is scored on every unannotated slice. Appends
one JSON line: the settings, the steps taken, mean Dice, mean 95% HD and Dice per class.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.tools.presets import load_preset
from napari_sslseg.bench.datasets import labelled_extent
from napari_sslseg.bench.protocol import evenly_spaced, score, scored_slices, trainer_for
from napari_sslseg.bench.timeaxis import train_settings
from napari_sslseg.inference import predict_volume

AXIS = 0


def main(dataset: str, k: int, method: str, seconds: float, seed: int, results: str, changes: dict) -> dict:
    root = os.environ.get("SSLSEG_DATA")
    ds = load_preset(dataset, Path(root) if root else None)
    annotated = evenly_spaced(labelled_extent(ds.labels, AXIS), k)
    t0 = time.perf_counter()
    trainer = trainer_for(ds, annotated, AXIS, method, **{**train_settings(seconds, seed), **changes})
    for _ in trainer.run():
        pass
    wall = time.perf_counter() - t0
    model = replace(trainer.segmentation_model(), method=None)
    pred = predict_volume(model, trainer.pool.volumes[0], mc_passes=0, prior=trainer.priors.get(0))
    s = score(pred.labels, ds.labels, ds.class_names, ds.spacing, AXIS, scored_slices(ds.labels.shape[AXIS], annotated))
    row = {"dataset": dataset, "k": k, "method": method, "seconds": seconds, "seed": seed, "changes": changes,
           "steps": trainer.step, "wall_seconds": round(wall, 1), "mean_dice": round(s.mean_dice, 4),
           "mean_hd95": round(s.mean_hd95, 2), "dice": {c: round(v, 3) for c, v in s.dice.items()}}
    print(json.dumps(row), flush=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), a[2], float(a[3]), int(a[4]), a[5],
         {kv.split("=", 1)[0]: ast.literal_eval(kv.split("=", 1)[1]) for kv in a[6:]})
