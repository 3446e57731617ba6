"""How much of the prediction should be the network's? One training, then its prediction mixed with
the propagation prior at several network shares, each scored on every unannotated slice.

    python -m benchmarks.mix_weight DATASET K METHOD SECONDS SEED RESULTS.jsonl [DATA_DIR]

The protocol is the benchmark's (napari_sslseg.bench.protocol): k annotated slices evenly spaced
through the labelled extent along axis 0, the whole volume. The training runs SECONDS of wall-clock
time with every core (as the time axis: ``TrainConfig.time_budget``). The network's probabilities
(``predict_volume(..., network_weight=1)``) and the prior's (``Prior.volume``) are computed once, as
the app keeps them (x255 in uint8), and mixed as ``predict_volume`` mixes them: w x the network's
+ (1 - w) x the prior's, for each w (0 = the prior alone, 1 = the network alone; the app uses
``inference.NETWORK_WEIGHT``); one per-voxel rule besides, "confidence": the network's share is its
confidence over the sum of its and the prior's. Small pieces are removed as the app does. Appends
one JSON line per share.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks.settings_probe import append_row, train_against_the_clock
from benchmarks.tools.presets import load_preset
from napari_sslseg.bench.datasets import Dataset
from napari_sslseg.bench.protocol import score, scored_slices
from napari_sslseg.inference import KEEP_FRACTION, predict_volume, remove_small_components

AXIS = 0
WEIGHTS = (0.0, 0.15, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.85, 1.0)


def mixed(p: np.ndarray, q: np.ndarray, q_confidence: np.ndarray, share) -> np.ndarray:
    """(C, ...) probabilities: ``share`` x the network's ``p`` + the rest the prior's ``q``;
    ``share="confidence"``: per voxel, the network's confidence over its and the prior's."""
    if share == "confidence":
        c = p.max(0)
        share = c / (c + q_confidence + 1e-6)
    return share * p + (1 - share) * q


def score_shares(ds: Dataset, annotated: list[int], p: np.ndarray, q: np.ndarray, q_confidence: np.ndarray,
                 row: dict, results: str) -> None:
    """Score every share of the mix of ``p`` and ``q`` (uint8 x255, as the app keeps them); append a row each."""
    p, q = p.astype(np.float32) / 255, q.astype(np.float32) / 255
    scored = scored_slices(ds.labels.shape[AXIS], annotated)
    for w in (*WEIGHTS, "confidence"):
        labels = remove_small_components(mixed(p, q, q_confidence, w).argmax(0).astype(np.uint8), KEEP_FRACTION, ds.spacing)
        s = score(labels, ds.labels, ds.class_names, ds.spacing, AXIS, scored)
        out = {**row, "network_weight": w, "mean_dice": round(s.mean_dice, 4), "mean_hd95": round(s.mean_hd95, 2),
               "dice": {c: round(v, 3) for c, v in s.dice.items()}}
        append_row(out, results)


def main(dataset: str, k: int, method: str, seconds: float, seed: int, results: str, data_dir: str) -> None:
    ds = load_preset(dataset, Path(data_dir))
    annotated, trainer, row = train_against_the_clock(ds, k, method, seconds, seed)
    model = replace(trainer.segmentation_model(), method=None)
    prior = trainer.priors.get(0)
    network = predict_volume(model, trainer.pool.volumes[0], mc_passes=0, prior=prior, network_weight=1.0,
                             keep_probabilities=True, keep_fraction=0)
    _, q_confidence, q = prior.volume()
    score_shares(ds, annotated, network.probabilities, q, q_confidence, row, results)


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), a[2], float(a[3]), int(a[4]), a[5], a[6] if len(a) > 6 else "../shared/data")
