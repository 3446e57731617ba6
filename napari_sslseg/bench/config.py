"""Benchmark settings: one dataclass, with the budgets of the default and --quick runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass
class BenchConfig:
    """What one ``napari-sslseg bench`` run does."""

    methods: list[str] = field(default_factory=lambda: ["supervised", "mean_teacher", "ua_mt", "adversarial", "entropy_min"])  # rows of the table
    ks: list[int] = field(default_factory=lambda: [2, 4, 8])  # annotated slices, columns of the table
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # every (method, k) trains once per seed; spread over these
    steps: int = 120  # optimiser steps per training, the same for every method (a fair, fixed budget; what fits 30 min on 2 cores)
    ceiling: bool = True  # also train on every slice (supervised): the upper bound
    score_stride: int = 1  # score every n-th unannotated slice of the extent (1 = all; --quick: 3, prediction is most of its cost)
    margin: int = 8  # voxels kept around the labelled extent when cropping (speed; the task is inside the extent)
    threads: int = 0  # torch CPU threads of each training; 0 = the cores shared out among the workers
    workers: int = 2  # trainings of the accuracy part run at once, a process each (1.3x the work of one on 2 cores); 1 = in this process
    # annotation guidance
    guidance: bool = True  # run the suggested-vs-uniform-vs-random simulation
    guidance_method: str = "supervised"  # the method trained in each round (cheapest, so rounds stay affordable)
    guidance_start: int = 2  # slices annotated before the first suggestion
    guidance_max: int = 8  # the uniform curve goes up to this many slices (the Dice to reach)
    guidance_budget: int = 6  # suggested and random choices go up to this many slices
    guidance_mc_passes: int = 8  # MC-dropout passes behind the suggestions, as in the app
    # speed and memory
    speed: bool = True  # measure steps/s, first overlay, inference, memory and viewer latency
    speed_steps: int = 30  # timed steps per method (after warm-up steps)
    overlay_k: int = 4  # annotated slices for the time-to-first-useful-overlay
    overlay_method: str = "mean_teacher"  # what the panel trains by default
    overlay_dice: float = 0.7  # "useful": mean Dice on the unannotated slices at least this
    overlay_check_every: int = 25  # steps between checks (the clock stops while checking)
    overlay_limit_s: float = 90.0  # give up after this much training time (1.5 times the 60 s target)
    overlay_slice_stride: int = 2  # the checks score every n-th unannotated slice (they cost no training time, but wall time)
    inference_mc_passes: int = 8  # MC-dropout passes for the whole-volume timing
    inference_slices: int = 0  # slices timed on the 181x217x181 volume; 0 = all, else extrapolated
    inference_all_slices: int = 16  # slices timed with dropout after every convolution, sampled everywhere (`--mc-scope all`), scaled; 0 = not timed
    memory_shape: tuple[int, int, int] = (300, 512, 512)  # (z, y, x) volume for peak memory
    memory_steps: int = 5  # training steps in the memory probe
    latency_seconds: float = 20.0  # probe time per phase (idle, training) in the viewer

    def quick(self) -> "BenchConfig":
        """The <= 5 minute variant: fewer k, steps and checks; timings partly extrapolated."""
        return replace(
            self,
            ks=[2, 4],
            seeds=self.seeds[:1],
            steps=20,
            score_stride=3,
            guidance_max=4,
            guidance_budget=3,
            guidance_mc_passes=4,
            speed_steps=8,
            overlay_limit_s=20.0,
            overlay_check_every=15,
            inference_slices=12,
            inference_all_slices=0,
            memory_steps=2,
            latency_seconds=10.0,
        )
