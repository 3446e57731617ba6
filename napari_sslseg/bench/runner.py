"""The accuracy part: the method x k table over seeds, the ceiling, and the guidance curves."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .config import BenchConfig
from .datasets import Dataset
from .guidance import Curve, simulate, trainings_needed
from .protocol import Scores, evaluation_slices, evenly_spaced, labelled_extent, predict, score, train

CEILING = "full supervision"


@dataclass
class RunResult:
    """One trained model scored on one set of unannotated slices."""

    method: str
    k: int
    seed: int
    scores: Scores
    train_seconds: float


@dataclass
class AccuracyResults:
    axis: int
    extent: tuple[int, int]
    annotated: dict[int, list[int]]  # k -> the annotated slices
    runs: list[RunResult] = field(default_factory=list)
    curves: dict[str, Curve] = field(default_factory=dict)
    guidance_seconds: float = 0.0


def trainings_planned(cfg: BenchConfig) -> int:
    n = len(cfg.methods) * len(cfg.ks) * len(cfg.seeds) + (len(cfg.seeds) if cfg.ceiling else 0)
    if cfg.guidance:
        n += trainings_needed(cfg.guidance_start, cfg.guidance_budget, cfg.guidance_max)
    return n


def run_accuracy(ds: Dataset, cfg: BenchConfig, axis: int = 0, tick=lambda: None) -> AccuracyResults:
    """Train every method at every k and seed; ``tick()`` after each training."""
    extent = labelled_extent(ds.labels, axis)
    res = AccuracyResults(axis, extent, {k: evenly_spaced(extent, k) for k in cfg.ks})

    def scored(trainer, k, seed, method, seconds):
        pred = predict(trainer)
        s = score(pred.labels, ds.labels, ds.class_names, ds.spacing, axis, evaluation_slices(extent, res.annotated[k]))
        res.runs.append(RunResult(method, k, seed, s, seconds))

    for seed in cfg.seeds:
        for method in cfg.methods:
            for k in cfg.ks:
                t0 = time.perf_counter()
                trainer = train(ds, res.annotated[k], axis, method, cfg.steps, seed, cfg.threads)
                scored(trainer, k, seed, method, time.perf_counter() - t0)
                tick()
        if cfg.ceiling:
            t0 = time.perf_counter()
            trainer = train(ds, list(range(ds.labels.shape[axis])), axis, "supervised", cfg.steps, seed, cfg.threads)
            seconds = time.perf_counter() - t0
            for k in cfg.ks:  # one model, scored on each column's slices
                scored(trainer, k, seed, CEILING, seconds)
            tick()

    if cfg.guidance:
        t0 = time.perf_counter()
        seed = cfg.seeds[0]

        def train_eval(annotated):
            trainer = train(ds, annotated, axis, cfg.guidance_method, cfg.steps, seed, cfg.threads)
            pred = predict(trainer, mc_passes=cfg.guidance_mc_passes)
            s = score(pred.labels, ds.labels, ds.class_names, ds.spacing, axis, evaluation_slices(extent, annotated),
                      hausdorff=False)
            return s.mean_dice, pred

        res.curves = simulate(extent, cfg.guidance_start, cfg.guidance_budget, cfg.guidance_max, train_eval, seed,
                              progress=tick)
        res.guidance_seconds = time.perf_counter() - t0
    return res


def summarise(res: AccuracyResults, metric: str = "dice") -> dict[tuple[str, int], tuple[float, float]]:
    """(method, k) -> (mean, spread) over seeds of the class-mean Dice (or HD95)."""
    out = {}
    for key in {(r.method, r.k) for r in res.runs}:
        vals = [getattr(r.scores, f"mean_{'dice' if metric == 'dice' else 'hd95'}") for r in res.runs if (r.method, r.k) == key]
        vals = np.asarray(vals, float)
        finite = vals[np.isfinite(vals)]
        out[key] = (float(finite.mean()), float(finite.std())) if finite.size else (float("nan"), float("nan"))
    return out
