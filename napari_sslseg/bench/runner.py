"""The accuracy part: the method x k table over seeds, the ceiling, the guidance curves, the
baselines without training, and the time axis.

Every training of the step-budget table is a job. With ``workers`` > 1 the jobs run in that many
processes side by side, each with its share of the CPU threads: on 2 cores two one-thread trainings
do 1.3x the work of one two-thread training, and nothing in a score depends on the clock. The time
axis depends on the clock: its trainings run one at a time, in this process, with every core.

Every model (and baseline) is scored on every unannotated slice of the volume (``scored_slices``),
not only inside the labelled extent: a structure painted where none exists is a false positive.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from .baselines import BaselineResult, run_baselines
from .config import BenchConfig
from .datasets import Dataset
from .guidance import STRATEGIES, Curve, chain, trainings_needed
from .datasets import labelled_extent
from .protocol import Scores, evenly_spaced, predict, score, scored_slices, train
from .timeaxis import TimeRun, train_for

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
    guidance_seconds: float = 0.0  # training + prediction time of the guidance jobs, summed
    workers: int = 1  # trainings that ran at once
    threads: int = 0  # torch threads of each
    num_slices: int = 0  # slices of the volume along the axis (every unannotated one is scored)
    baselines: list[BaselineResult] = field(default_factory=list)  # no training; every k of both tables
    baseline_info: dict = field(default_factory=dict)  # e.g. ITK's one-off library load, s


@dataclass
class TimeResults:
    """The time axis: every timed method at every k and time seed, scored at ``times`` s of training."""

    times: list[float]
    annotated: dict[int, list[int]]  # k -> the annotated slices
    threads: int  # torch threads of each training (one at a time)
    runs: list[TimeRun] = field(default_factory=list)


def trainings_planned(cfg: BenchConfig) -> int:
    """Trainings of the step-budget table and the guidance (what the worker pool runs)."""
    n = len(cfg.methods) * len(cfg.ks) * len(cfg.seeds) + (len(cfg.seeds) if cfg.ceiling else 0)
    if cfg.guidance:
        n += trainings_needed(cfg.guidance_start, cfg.guidance_budget, cfg.guidance_max)
    return n


def time_trainings_planned(cfg: BenchConfig) -> int:
    return len(cfg.timed_methods()) * len(cfg.time_ks) * len(cfg.timed_seeds()) if cfg.time_axis else 0


def baseline_ks(cfg: BenchConfig) -> list[int]:
    """Every k a table shows: the step-budget table's and the time axis's."""
    return sorted(set(cfg.ks) | (set(cfg.time_ks) if cfg.time_axis else set()))


def worker_threads(cfg: BenchConfig) -> int:
    """Torch threads of each job: as asked, else the cores shared out among the workers."""
    if cfg.threads > 0:
        return cfg.threads
    return max(1, (os.cpu_count() or 1) // max(1, cfg.workers))


# ----- the jobs; they run in a worker process (or in this one), on the data set by _setup -----
_JOB: dict = {}


def _setup(ds: Dataset, cfg: BenchConfig, axis: int, extent: tuple[int, int], threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)
    _JOB.update(ds=ds, cfg=cfg, axis=axis, extent=extent, threads=threads)


def _score(trainer, annotated: list[int], hausdorff: bool = True, mc_passes: int = 0, suggest: bool = False):
    """Scores on the unannotated slices of the volume; ``suggest``: predict every slice, since the
    suggestions rank them all."""
    ds, axis = _JOB["ds"], _JOB["axis"]
    stride = _JOB["cfg"].score_stride
    scored = scored_slices(ds.labels.shape[axis], annotated, stride)
    # every slice when all are scored anyway: the prediction is then cleaned of stray pieces in 3D,
    # as the user's is; a prediction of some slices only is scored as it comes
    pred = predict(trainer, mc_passes=mc_passes, slices=None if suggest or stride == 1 else scored)
    s = score(pred.labels, ds.labels, ds.class_names, ds.spacing, axis, scored, hausdorff, stride)
    return s, pred


def _train(annotated: list[int], method: str, seed: int, steps: int | None = None, **settings):
    """One training of the job's dataset; ``steps`` default: the table's budget."""
    cfg = _JOB["cfg"]
    return train(_JOB["ds"], annotated, _JOB["axis"], method, cfg.steps if steps is None else steps, seed,
                 _JOB["threads"], **settings)


def _grid_job(method: str, k: int, seed: int) -> list[RunResult]:
    annotated = evenly_spaced(_JOB["extent"], k)
    t0 = time.perf_counter()
    trainer = _train(annotated, method, seed)
    seconds = time.perf_counter() - t0
    return [RunResult(method, k, seed, _score(trainer, annotated)[0], seconds)]


def _ceiling_job(ks: list[int], seed: int) -> list[RunResult]:
    """Supervised on every slice: one model, scored on each column's unannotated slices. Without the
    propagation prior: with every slice annotated it is the ground truth itself, which would score 1."""
    t0 = time.perf_counter()
    trainer = _train(list(range(_JOB["ds"].labels.shape[_JOB["axis"]])), "supervised", seed,
                     steps=_JOB["cfg"].ceiling_steps, prior_input=False, prior_weight=0.0)
    seconds = time.perf_counter() - t0
    return [RunResult(CEILING, k, seed, _score(trainer, evenly_spaced(_JOB["extent"], k))[0], seconds) for k in ks]


def _guidance_train_eval(annotated: list[int], suggest: bool = True):
    """Mean Dice of a model trained on ``annotated``, and its suggestions when ``suggest`` (all a chain
    needs). The labels, so the Dice, come from the network's deterministic pass either way; only the
    suggestions need the MC-dropout passes over every slice."""
    cfg = _JOB["cfg"]
    trainer = _train(annotated, cfg.guidance_method, cfg.seeds[0])
    if not suggest:
        return _score(trainer, annotated, hausdorff=False)[0].mean_dice, None
    s, pred = _score(trainer, annotated, hausdorff=False, mc_passes=cfg.guidance_mc_passes, suggest=True)
    return s.mean_dice, SimpleNamespace(suggestions=pred.suggestions, slice_scores=pred.slice_scores)


def _guidance_first_job():
    t0 = time.perf_counter()
    first = evenly_spaced(_JOB["extent"], _JOB["cfg"].guidance_start)
    dice, pred = _guidance_train_eval(first)
    return first, dice, pred, time.perf_counter() - t0


def _guidance_chain_job(strategy: str, first: list[int], dice: float, pred):
    cfg, t0 = _JOB["cfg"], time.perf_counter()
    curve = chain(strategy, _JOB["extent"], first, dice, pred, cfg.guidance_budget, cfg.guidance_max,
                  _guidance_train_eval, cfg.seeds[0])
    return curve, time.perf_counter() - t0


class _InProcess:
    """The executor of one worker: each job runs at once, here."""

    def submit(self, fn, *args) -> Future:
        f = Future()
        f.set_result(fn(*args))
        return f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def run_accuracy(ds: Dataset, cfg: BenchConfig, axis: int = 0, tick=lambda n=1: None) -> AccuracyResults:
    """Train every method at every k and seed, the ceiling and the guidance chains; ``tick(n)`` after
    each job, ``n`` its trainings."""
    extent = labelled_extent(ds.labels, axis)
    # one training has nothing to run beside it: in this process, without starting a worker (seconds each)
    workers = max(1, cfg.workers) if trainings_planned(cfg) > 1 else 1
    threads = worker_threads(cfg) if workers > 1 else cfg.threads
    res = AccuracyResults(axis, extent, {k: evenly_spaced(extent, k) for k in cfg.ks},
                          workers=workers, threads=threads, num_slices=ds.labels.shape[axis])
    todo: deque = deque()
    if cfg.guidance:  # first, so that its chains (the longest jobs) start early
        todo.append(("first", _guidance_first_job, ()))
    for seed in cfg.seeds:
        todo.extend(("run", _grid_job, (m, k, seed)) for m in cfg.methods for k in cfg.ks)
        if cfg.ceiling:
            todo.append(("run", _ceiling_job, (list(cfg.ks), seed)))

    if workers > 1:
        executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_setup, initargs=(ds, cfg, axis, extent, threads))
    else:
        _setup(ds, cfg, axis, extent, threads)
        executor = _InProcess()
    running: dict = {}
    with executor:
        while todo or running:
            while todo and len(running) < workers:
                kind, fn, args = todo.popleft()
                running[executor.submit(fn, *args)] = kind
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in done:
                kind, out = running.pop(f), f.result()
                if kind == "run":
                    res.runs.extend(out)
                    tick(1)
                elif kind == "first":
                    first, dice, pred, seconds = out
                    res.guidance_seconds += seconds
                    todo.extendleft(("chain", _guidance_chain_job, (s, first, dice, pred)) for s in STRATEGIES)
                    tick(1)
                else:
                    curve, seconds = out
                    res.curves[curve.strategy] = curve
                    res.guidance_seconds += seconds
                    tick(len(curve.points) - 1)
    order = {m: i for i, m in enumerate(list(cfg.methods) + [CEILING])}
    res.runs.sort(key=lambda r: (r.seed, order[r.method], r.k))
    res.curves = {s: res.curves[s] for s in STRATEGIES if s in res.curves}
    return res


def run_baseline_rows(ds: Dataset, cfg: BenchConfig, axis: int = 0) -> tuple[list[BaselineResult], dict]:
    """The baselines at every k of both tables, scored as the models are (on their own, before any
    training, so that their seconds are not shared with one)."""
    extent = labelled_extent(ds.labels, axis)
    n = ds.labels.shape[axis]

    def scorer(pred, annotated):
        return score(pred, ds.labels, ds.class_names, ds.spacing, axis, scored_slices(n, annotated, cfg.score_stride),
                     True, cfg.score_stride)

    return run_baselines(ds.labels, ds.spacing, axis, len(ds.class_names),
                         {k: evenly_spaced(extent, k) for k in baseline_ks(cfg)}, scorer, cfg.itk_slices, image=ds.image)


def run_time_axis(ds: Dataset, cfg: BenchConfig, axis: int = 0, threads: int = 0, tick=lambda n=1: None) -> TimeResults:
    """Every timed method at every time k, one at a time in this process with ``threads`` torch threads
    (0 = torch's default, every core), scored at ``cfg.times`` s of training; ``tick(1)`` after each."""
    extent = labelled_extent(ds.labels, axis)
    _setup(ds, cfg, axis, extent, threads)
    out = TimeResults(sorted(cfg.times), {k: evenly_spaced(extent, k) for k in cfg.time_ks}, threads or torch.get_num_threads())

    def scorer(trainer, annotated):
        return _score(trainer, annotated)[0]

    for k, annotated in out.annotated.items():
        for method in cfg.timed_methods():
            for seed in cfg.timed_seeds():
                out.runs.append(train_for(ds, annotated, axis, method, cfg.times, seed, threads, scorer))
                tick(1)
    return out


def mean_sd(values) -> tuple[float, float]:
    """Mean and standard deviation over seeds of the finite values (NaN, NaN without any)."""
    vals = np.asarray(list(values), float)
    finite = vals[np.isfinite(vals)]
    return (float(finite.mean()), float(finite.std())) if finite.size else (float("nan"), float("nan"))


def summarise(res: AccuracyResults, metric: str = "dice") -> dict[tuple[str, int], tuple[float, float]]:
    """(method, k) -> (mean, spread) over seeds of the class-mean Dice (or HD95)."""
    out = {}
    for key in {(r.method, r.k) for r in res.runs}:
        out[key] = mean_sd(getattr(r.scores, f"mean_{'dice' if metric == 'dice' else 'hd95'}")
                           for r in res.runs if (r.method, r.k) == key)
    return out
