"""The protocol: which slices are annotated, what a model is trained on, how it is scored."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from monai.metrics import compute_hausdorff_distance

from ..config import TrainConfig
from ..data import Volume, keep_slices
from ..errors import InputError
from ..events import StepEvent
from ..metrics import one_hot, one_hot_dice
from ..prior import clear_registrations
from ..training import Trainer
from .config import method_settings
from .datasets import Dataset


def evenly_spaced(extent: tuple[int, int], k: int) -> list[int]:
    """``k`` distinct slices spread evenly inside ``extent``, keeping away from its two ends.

    The ends of the extent hold only slivers of label, so the k slices sit at the
    centres of k equal parts of the extent (what a user paging through would pick).
    """
    lo, hi = extent
    n = hi - lo + 1
    if not 1 <= k <= n:
        raise InputError(f"Cannot pick {k} distinct slices from the {n} labelled ones.")
    picks = sorted({lo + int((i + 0.5) * n / k) for i in range(k)})
    return picks


def evaluation_slices(extent: tuple[int, int], annotated: list[int], stride: int = 1) -> list[int]:
    """The unannotated slices inside ``extent`` (inclusive), every ``stride``-th of them."""
    done = set(annotated)
    return [s for s in range(extent[0], extent[1] + 1) if s not in done][::max(1, stride)]


def scored_slices(num_slices: int, annotated: list[int], stride: int = 1) -> list[int]:
    """What is scored: every unannotated slice of the volume (every ``stride``-th of them), not only
    those of the labelled extent, so that a structure painted where none exists counts against a model."""
    return evaluation_slices((0, num_slices - 1), annotated, stride)


@dataclass
class Scores:
    """Per-class metrics of one prediction; NaN where a class is absent from the ground truth."""

    dice: dict[str, float]
    hd95: dict[str, float]  # mm; inf where the class was not predicted at all

    @property
    def mean_dice(self) -> float:
        return _nanmean(self.dice.values())

    @property
    def mean_hd95(self) -> float:
        return _nanmean(self.hd95.values())


def _nanmean(values) -> float:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    return float(v.mean()) if v.size else float("nan")


def score(pred: np.ndarray, truth: np.ndarray, class_names: list[str], spacing, axis: int, slices: list[int],
          hausdorff: bool = True, stride: int = 1) -> Scores:
    """Dice and 95% Hausdorff per class (MONAI) on ``slices`` along ``axis``.

    The scored slices are stacked into one sub-volume, so the Hausdorff distance
    treats slices on both sides of an annotated one as neighbours: a small bias,
    the same for every method. ``stride``: the slices are every n-th one, n times the
    spacing apart along the axis.
    """
    C = len(class_names)
    p = np.take(pred, slices, axis=axis)
    t = np.take(truth, slices, axis=axis)
    yp, yt = one_hot(p, C), one_hot(t, C)
    present = [bool(t.max() >= c and np.any(t == c)) for c in range(C)]
    d = one_hot_dice(yp, yt)
    with warnings.catch_warnings():  # MONAI warns about empty classes; they are NaN on purpose
        warnings.simplefilter("ignore")
        apart = [float(sp) * (stride if a == axis else 1) for a, sp in enumerate(spacing)]
        h = (compute_hausdorff_distance(yp, yt, include_background=False, percentile=95, spacing=apart)[0].numpy()
             if hausdorff else np.full(C - 1, np.nan))
    dice, hd = {}, {}
    for c in range(1, C):
        name = class_names[c]
        if not present[c]:
            dice[name] = hd[name] = float("nan")
            continue
        dice[name] = float(d[c - 1])
        # a class never predicted has no surface: MONAI gives inf/nan, which is reported as inf
        hd[name] = float(h[c - 1]) if np.any(p == c) else float("inf")
    return Scores(dice, hd)


def training_volume(ds: Dataset, annotated: list[int], axis: int) -> Volume:
    """A volume whose labels exist only on the annotated slices, so nothing else can leak in."""
    return Volume(ds.image, ds.spacing, labels=keep_slices(ds.labels, annotated, axis), annotated=list(annotated),
                  axis=axis, name=ds.name)


def trainer_for(ds: Dataset, annotated: list[int], axis: int, method: str, threads: int = 0, **settings) -> Trainer:
    """The one way the benchmark builds a training: ``method`` (a registered method or a row of
    ``config.VARIANTS``) on the ``annotated`` slices of ``ds``,
    no evaluations or previews of the loop's own (the benchmark scores); ``settings``: TrainConfig
    fields to change (steps, seed, time_budget ...)."""
    method, variant = method_settings(method)  # a row such as annotated_only: a method with other settings
    clear_registrations()  # each training pays for its prior's registration, as a user's first one does
    cfg = TrainConfig(threads=threads, eval_every=0, preview_every=0, **{**variant, **settings})
    return Trainer([training_volume(ds, annotated, axis)], method=method, config=cfg, class_names=ds.class_names)


def train(ds: Dataset, annotated: list[int], axis: int, method: str, steps: int, seed: int, threads: int = 0,
          on_step=None, **settings) -> Trainer:
    """Train one model on ``annotated`` slices of ``ds``; ``on_step()`` is called after each step;
    ``settings``: TrainConfig fields to change."""
    trainer = trainer_for(ds, annotated, axis, method, threads, steps=steps, seed=seed, **settings)
    for event in trainer.run():
        if on_step is not None and isinstance(event, StepEvent):
            on_step()
    return trainer


def predict(trainer: Trainer, mc_passes: int = 0, slices: list[int] | None = None):
    """The trained model's prediction of its (only) volume as a user gets it (with the prior of the
    annotated slices, small stray pieces removed when every slice is predicted); labels and
    uncertainty only (the teacher-student and discriminator maps would cost a network pass each
    and are not scored)."""
    return trainer.predict(0, mc_passes=mc_passes, slices=slices, extra_maps=False)
