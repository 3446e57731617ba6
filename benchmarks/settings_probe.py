"""One training against the clock with some TrainConfig fields changed, scored as the app predicts.

    python -m benchmarks.settings_probe DATASET K METHOD SECONDS SEED RESULTS.jsonl [FIELD=VALUE ...]

The protocol is the benchmark's (napari_sslseg.bench.protocol): k annotated slices evenly spaced
through the labelled extent along axis 0 of the whole volume of ``DATASET`` (a preset of
benchmarks/tools/presets.py, from ../shared/data beside the checkout, or from ``$SSLSEG_DATA``).
The training runs SECONDS of wall-clock time with every core (``TrainConfig.time_budget``, as the
time axis), with each FIELD=VALUE (a Python literal) set in its TrainConfig; its prediction is the app's (the prior
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
from napari_sslseg.bench.datasets import Dataset, labelled_extent
from napari_sslseg.bench.protocol import evenly_spaced, score, scored_slices, trainer_for
from napari_sslseg.bench.timeaxis import train_settings
from napari_sslseg.inference import predict_volume

AXIS = 0


def train_against_the_clock(ds: Dataset, k: int, method: str, seconds: float, seed: int, **changes):
    """The protocol's ``k`` annotated slices of ``ds``, ``method`` trained for ``seconds`` of wall-clock
    time with every core and ``changes`` to its TrainConfig: (annotated slices, trainer, row), the row
    naming the run, its steps and its seconds (the trainer's build included)."""
    annotated = evenly_spaced(labelled_extent(ds.labels, AXIS), k)
    t0 = time.perf_counter()
    trainer = trainer_for(ds, annotated, AXIS, method, **{**train_settings(seconds, seed), **changes})
    for _ in trainer.run():
        pass
    row = {"dataset": ds.name, "k": k, "method": method, "seconds": seconds, "seed": seed, "steps": trainer.step,
           "wall_seconds": round(time.perf_counter() - t0, 1)}
    return annotated, trainer, row


def append_row(row: dict, results: str) -> None:
    """Print ``row`` and append it to the JSON-lines file ``results``."""
    print(json.dumps(row), flush=True)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def main(dataset: str, k: int, method: str, seconds: float, seed: int, results: str, changes: dict) -> dict:
    root = os.environ.get("SSLSEG_DATA")
    ds = load_preset(dataset, Path(root) if root else None)
    annotated, trainer, row = train_against_the_clock(ds, k, method, seconds, seed, **changes)
    model = replace(trainer.segmentation_model(), method=None)
    pred = predict_volume(model, trainer.pool.volumes[0], mc_passes=0, prior=trainer.priors.get(0))
    s = score(pred.labels, ds.labels, ds.class_names, ds.spacing, AXIS, scored_slices(ds.labels.shape[AXIS], annotated))
    row = {**row, "changes": changes, "mean_dice": round(s.mean_dice, 4), "mean_hd95": round(s.mean_hd95, 2),
           "dice": {c: round(v, 3) for c, v in s.dice.items()}}
    append_row(row, results)
    return row


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), a[2], float(a[3]), int(a[4]), a[5],
         {kv.split("=", 1)[0]: ast.literal_eval(kv.split("=", 1)[1]) for kv in a[6:]})
