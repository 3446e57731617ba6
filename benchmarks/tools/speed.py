"""Speed in the process itself: steps per second, time to a useful overlay, inference time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from napari_sslseg.config import TrainConfig
from napari_sslseg.data import Volume
from napari_sslseg.events import StepEvent
from napari_sslseg.inference import predict_volume
from napari_sslseg.methods import METHODS
from napari_sslseg.networks import student_network
from napari_sslseg.training import Trainer
from napari_sslseg.bench.config import method_settings
from napari_sslseg.bench.datasets import Dataset
from napari_sslseg.bench.datasets import labelled_extent
from napari_sslseg.bench.protocol import evenly_spaced, predict, score, scored_slices, trainer_for

from .config import ProbeConfig

#: Steps left out of every timing: the first ones pay for allocations and MONAI set-up.
WARMUP_STEPS = 3


@dataclass
class StepRate:
    method: str
    steps_per_second: float
    holds: str  # what one step processes


@dataclass
class Overlay:
    method: str
    k: int
    seconds: float | None  # training time until mean Dice >= target; None = not reached
    steps: int | None
    checks: list[tuple[int, float, float]] = field(default_factory=list)  # (step, training s, mean Dice)
    limit_s: float = 0.0
    target: float = 0.7


@dataclass
class InferenceTime:
    shape: tuple[int, int, int]
    mc_passes: int
    seconds: float  # for the whole volume (extrapolated when ``slices_timed`` < all)
    slices_timed: int
    slices_total: int
    seconds_all_blocks: float = float("nan")  # the same weights with dropout everywhere, sampled everywhere (scaled from a subset); NaN = not timed
    slices_all_blocks: int = 0


def step_description(method: str, cfg: TrainConfig) -> str:
    u = cfg.batch_unlabelled if METHODS[method_settings(method)[0]].uses_unlabelled else 0
    return f"{cfg.batch_labelled}+{u} slices of {cfg.patch}x{cfg.patch}"


def steps_per_second(marks: list[float]) -> float:
    """Steps per second from the times at which steps ended, first to last."""
    return (len(marks) - 1) / (marks[-1] - marks[0])


def timed_steps(trainer: Trainer, steps: int) -> float:
    """Steps per second of ``trainer`` over ``steps`` steps after the warm-up ones."""
    marks = []
    for event in trainer.run():
        if isinstance(event, StepEvent):
            marks.append(time.perf_counter())
            if len(marks) > WARMUP_STEPS + steps:
                break
    return steps_per_second(marks[WARMUP_STEPS:])


def step_rates(ds: Dataset, cfg: ProbeConfig, axis: int, tick=lambda: None) -> list[StepRate]:
    annotated = evenly_spaced(labelled_extent(ds.labels, axis), cfg.overlay_k)
    out = []
    for method in cfg.methods:
        trainer = trainer_for(ds, annotated, axis, method, cfg.threads, steps=WARMUP_STEPS + cfg.speed_steps + 1)
        out.append(StepRate(method, timed_steps(trainer, cfg.speed_steps), step_description(method, trainer.config)))
        tick()
    return out


def first_overlay(ds: Dataset, cfg: ProbeConfig, axis: int) -> tuple[Overlay, Trainer]:
    """Train as the app would (its default step count, so its learning-rate schedule) and stop the
    clock at each check; the first check with mean Dice >= target gives the time."""
    extent = labelled_extent(ds.labels, axis)
    annotated = evenly_spaced(extent, cfg.overlay_k)
    scored = scored_slices(ds.labels.shape[axis], annotated, cfg.overlay_slice_stride)
    trainer = trainer_for(ds, annotated, axis, cfg.overlay_method, cfg.threads)
    result = Overlay(cfg.overlay_method, cfg.overlay_k, None, None, limit_s=cfg.overlay_limit_s, target=cfg.overlay_dice)
    clock, started = 0.0, time.perf_counter()
    for event in trainer.run():
        if not isinstance(event, StepEvent) or event.step % cfg.overlay_check_every:
            continue
        clock += time.perf_counter() - started
        pred = predict(trainer, slices=scored)
        dice = score(pred.labels, ds.labels, ds.class_names, ds.spacing, axis, scored, hausdorff=False).mean_dice
        result.checks.append((event.step, clock, dice))
        if dice >= cfg.overlay_dice:
            result.seconds, result.steps = clock, event.step
            break
        if clock >= cfg.overlay_limit_s:
            break
        started = time.perf_counter()
    return result, trainer


def inference_time(trainer: Trainer, image: np.ndarray, spacing, axis: int, cfg: ProbeConfig) -> InferenceTime:
    """Whole-volume prediction with MC dropout; with ``inference_slices`` set, a spread subset is
    timed and the time scaled to every slice (the cost per slice is constant)."""
    volume = Volume(image, spacing, axis=axis, name="inference")
    n = volume.num_slices
    model = trainer.segmentation_model()

    def whole_volume_seconds(seg_model, count: int, scope: str) -> tuple[float, int]:
        """Time ``count`` spread slices (all when 0 or >= n), scaled to the whole volume."""
        subset = np.linspace(0, n - 1, count).round().astype(int).tolist() if 0 < count < n else None
        t0 = time.perf_counter()
        predict_volume(seg_model, volume, mc_passes=cfg.inference_mc_passes, slices=subset, mc_scope=scope)
        timed = n if subset is None else len(subset)
        return (time.perf_counter() - t0) * n / timed, timed

    seconds, timed = whole_volume_seconds(model, cfg.inference_slices, "last")
    every, timed_every = float("nan"), 0
    if cfg.inference_all_slices:
        # the same weights with dropout after every convolution: what `--mc-scope all` samples in a
        # network trained with dropout_scope="all" (a default network has only the last block's)
        everywhere = student_network(replace(trainer.config, dropout_scope="all"), model.num_classes).to(trainer.device)
        everywhere.load_state_dict(model.student.state_dict())
        model_all = replace(model, student=everywhere, method=None)
        every, timed_every = whole_volume_seconds(model_all, cfg.inference_all_slices, "all")
    return InferenceTime(tuple(image.shape), cfg.inference_mc_passes, seconds, timed, n, every, timed_every)
