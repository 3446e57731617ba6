"""Benchmark settings: one dataclass, with the budgets of the default and --quick runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..config import DEFAULT_METHOD

#: The methods of the time axis in a --quick run (the fewest that still compare learning on
#: unannotated slices with the supervised baseline), where they are among the run's methods.
QUICK_TIME_METHODS = ("supervised", DEFAULT_METHOD)
#: Where ITK's interpolation takes its annotated slices from (``BenchConfig.itk_slices``); as
#: itk_worker.SLICES (that file imports nothing of this package).
ITK_SLICES = ("detected", "annotated")


#: Rows that are a registered method with other settings, by row name: (method, TrainConfig fields).
#: ``annotated_only`` is the supervised baseline of the literature, trained on the annotated slices
#: alone: without the propagation prior as input or as a target on unannotated slices (the registered
#: ``supervised`` has both, so it too learns from unannotated slices). What semi-supervision must beat.
VARIANTS: dict[str, tuple[str, dict]] = {
    "annotated_only": ("supervised", {"prior_input": False, "prior_weight": 0.0}),
}


def method_settings(row: str) -> tuple[str, dict]:
    """The registered method and the TrainConfig fields behind a row of the tables."""
    method, settings = VARIANTS.get(row, (row, {}))
    return method, dict(settings)


def registered_methods() -> list[str]:
    """The rows of the tables: the annotated-slices-only baseline, then every registered method,
    those that learn from annotated slices alone first (the baselines of the table)."""
    from ..methods import METHODS

    return list(VARIANTS) + sorted(METHODS, key=lambda name: (METHODS[name].uses_unlabelled, name))


@dataclass(frozen=True)
class BenchConfig:
    """What one ``napari-sslseg bench`` run does; frozen: a changed copy comes from ``dataclasses.replace``."""

    methods: list[str] = field(default_factory=registered_methods)  # rows of the table: annotated_only, then every registered method
    ks: list[int] = field(default_factory=lambda: [2, 4, 8])  # annotated slices, columns of the table
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # every (method, k) trains once per seed; spread over these
    steps: int = 120  # optimiser steps per training, the same for every method (a fair, fixed budget)
    ceiling: bool = True  # also train on every slice (supervised): the upper bound of converged trainings
    ceiling_steps: int = 2000  # steps of that training, from scratch and without the prior: on the whole Colin27 head 400 steps reach mean Dice 0.13 on its own slices
    crop: bool = False  # crop to the labelled box + margin (the old protocol; a user never has that box); default: the whole volume
    score_stride: int = 1  # score every n-th unannotated slice of the volume (1 = all; --quick: 3, prediction is most of its cost)
    stride_min_slices: int = 64  # a volume with fewer slices along the axis is scored on every one (a stride would leave too few)
    margin: int = 8  # voxels kept around the labelled box with ``crop``
    threads: int = 0  # torch CPU threads of each training; 0 = the cores shared out among the workers (the time axis: all of them)
    workers: int = 2  # trainings of the step-budget table run at once, a process each (1.3x the work of one on 2 cores); 1 = in this process
    # baselines without training, rows of every table
    baselines: bool = True  # the propagation prior and ITK's morphological contour interpolation
    itk_slices: str = "detected"  # ITK's annotated slices: "detected" by the filter (as 3D Slicer's Fill between slices), or "annotated" (all named, per class)
    # the time axis: each method trained one at a time with every core for a wall-clock budget, scored at fixed training times
    time_axis: bool = True
    times: list[float] = field(default_factory=lambda: [15.0, 30.0, 60.0, 120.0])  # s of training (the clock stops while scoring)
    time_ks: list[int] = field(default_factory=lambda: [4, 8])  # annotated slices of the time axis
    time_methods: list[str] | None = None  # None = every method of ``methods``
    time_seeds: list[int] | None = None  # seeds of the time axis, each a run of its own against the clock; None = the first of ``seeds``
    # annotation guidance (off by default since the whole-volume protocol: its rounds would not fit the default hour)
    guidance: bool = False  # run the suggested-vs-uniform-vs-random simulation
    guidance_method: str = "supervised"  # the method trained in each round (cheapest, so rounds stay affordable)
    guidance_start: int = 2  # slices annotated before the first suggestion
    guidance_max: int = 8  # the uniform curve goes up to this many slices (the Dice to reach)
    guidance_budget: int = 6  # suggested and random choices go up to this many slices
    guidance_mc_passes: int = 8  # MC-dropout passes behind the suggestions, as in the app

    def timed_methods(self) -> list[str]:
        """The methods of the time axis, in the order of ``methods``."""
        if self.time_methods is None:
            return list(self.methods)
        return list(self.time_methods)

    def timed_seeds(self) -> list[int]:
        """The seeds of the time axis."""
        return list(self.time_seeds) if self.time_seeds else list(self.seeds[:1])

    def quick(self) -> "BenchConfig":
        """The <= 10 minute variant: fewer k, steps, times and checks; timings partly extrapolated."""
        return replace(
            self,
            ks=self.ks[:2],
            seeds=self.seeds[:1],
            steps=20,
            ceiling=False,  # a ceiling needs thousands of steps from scratch: not in ten minutes
            score_stride=3,
            times=[15.0, 30.0, 60.0],
            time_ks=self.time_ks[:1],
            time_methods=[m for m in self.methods if m in QUICK_TIME_METHODS] or self.methods[:1],
            guidance_max=4,
            guidance_budget=3,
            guidance_mc_passes=4,
        )
