"""How much of the prediction should be the network's? One training, then its prediction mixed with
the propagation prior at several network shares, each scored on every unannotated slice.

    python -m benchmarks.mix_weight DATASET K METHOD SECONDS SEED RESULTS.jsonl [DATA_DIR]

The protocol is the benchmark's (napari_sslseg.bench.protocol): k annotated slices evenly spaced
through the labelled extent along axis 0, the whole volume. The training runs SECONDS of wall-clock
time with every core (as the time axis: ``TrainConfig.time_budget``); the prediction is
``predict_volume(..., prior, network_weight=w)`` for each w (0 = the prior alone, 1 = the network
alone; the app uses ``inference.NETWORK_WEIGHT``), small pieces removed as the app does. Appends
one JSON line per w.
"""

from __future__ import annotations

import json
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
WEIGHTS = (0.0, 0.15, 0.3, 0.5, 0.7, 0.85, 1.0)


def main(dataset: str, k: int, method: str, seconds: float, seed: int, results: str, data_dir: str) -> None:
    ds = load_preset(dataset, Path(data_dir))
    annotated = evenly_spaced(labelled_extent(ds.labels, AXIS), k)
    t0 = time.perf_counter()
    trainer = trainer_for(ds, annotated, AXIS, method, **train_settings(seconds, seed))
    for _ in trainer.run():
        pass
    wall = time.perf_counter() - t0
    model = replace(trainer.segmentation_model(), method=None)
    scored = scored_slices(ds.labels.shape[AXIS], annotated)
    for w in WEIGHTS:
        pred = predict_volume(model, trainer.pool.volumes[0], mc_passes=0, prior=trainer.priors.get(0), network_weight=w)
        s = score(pred.labels, ds.labels, ds.class_names, ds.spacing, AXIS, scored)
        row = {"dataset": dataset, "k": k, "method": method, "seconds": seconds, "seed": seed, "network_weight": w,
               "steps": trainer.step, "wall_seconds": round(wall, 1), "mean_dice": round(s.mean_dice, 4),
               "mean_hd95": round(s.mean_hd95, 2), "dice": {c: round(v, 3) for c, v in s.dice.items()}}
        print(json.dumps(row), flush=True)
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), a[2], float(a[3]), int(a[4]), a[5], a[6] if len(a) > 6 else "../shared/data")
