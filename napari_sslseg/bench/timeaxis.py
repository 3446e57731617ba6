"""The time axis: what a model gives after T seconds of training, as a user waiting at a laptop sees it.

Each method trains once per k, one training at a time with every core (a user's laptop runs one
training), for a wall-clock budget: the largest checkpoint time. At each checkpoint the clock
stops, the model is scored on the protocol's slices, and the clock starts again. The clock starts
before the trainer is built (it normalises the volume and builds the networks: part of what a user
waits for). The number of steps is set far beyond what the time allows, so that the step count
never ends the run; ``TrainConfig.time_budget`` (seconds of training steps) is set to the budget
less the trainer's build time, so that the engine's schedules (learning rate, ramps), planned by
time, end when the last checkpoint comes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from ..events import StepEvent
from ..training import Trainer
from .datasets import Dataset
from .protocol import Scores, trainer_for

#: Steps per second no device reaches with the default patch and batch: ``steps`` = budget x this.
MAX_STEPS_PER_SECOND = 200


@dataclass
class TimePoint:
    """A model scored after ``target`` s of training (``seconds``: the training time actually spent,
    the end of the first step past ``target``)."""

    target: float
    seconds: float
    step: int
    scores: Scores


@dataclass
class TimeRun:
    """One method at one k trained against the clock."""

    method: str
    k: int
    seed: int
    points: list[TimePoint] = field(default_factory=list)
    ended: str = ""  # why training ended before the last checkpoint, if it did (the rest were scored at its end)
    score_seconds: float = 0.0  # wall time spent scoring (outside the training clock)

    @property
    def steps_per_second(self) -> float:
        last = self.points[-1] if self.points else None
        return last.step / last.seconds if last and last.seconds > 0 else math.nan


def train_settings(budget: float, seed: int) -> dict:
    """The trainer's settings for a ``budget`` s run: steps that never end it, and the engine's time budget."""
    # the engine plans its schedules by time (set again once the trainer is built)
    return {"steps": int(math.ceil(budget * MAX_STEPS_PER_SECOND)) + 1, "seed": seed, "time_budget": float(budget)}


def schedule_note() -> str:
    """How the time axis sets the engine's schedule, for the report."""
    return ("TrainConfig.time_budget = the largest time less the trainer's build time (the engine's schedules "
            f"by time), steps only a ceiling ({MAX_STEPS_PER_SECOND}/s)")


#: ``scorer(trainer, annotated) -> Scores`` of the trainer's current model on the protocol's slices.
TrainerScorer = Callable[[Trainer, list[int]], Scores]


def train_for(ds: Dataset, annotated: list[int], axis: int, method: str, times: list[float], seed: int, threads: int,
              scorer: TrainerScorer, clock=time.perf_counter) -> TimeRun:
    """Train ``method`` on ``annotated`` and score it at each of ``times`` (s of training)."""
    pending = sorted(float(t) for t in times)
    if not pending or pending[0] <= 0:
        raise ValueError(f"Checkpoint times must be positive seconds, not {times}.")
    run = TimeRun(method, len(annotated), seed)
    spent, started = 0.0, clock()
    trainer = trainer_for(ds, annotated, axis, method, threads, **train_settings(pending[-1], seed))
    # the engine counts its training steps only: what is left of the budget once the trainer is built
    trainer.config = replace(trainer.config, time_budget=max(pending[-1] - (clock() - started), 1e-3))

    def checkpoint(upto: float) -> None:
        """Score the current model for every pending checkpoint up to ``upto`` s (once for them all)."""
        t0 = clock()
        scores = scorer(trainer, annotated)
        run.score_seconds += clock() - t0
        while pending and pending[0] <= upto:
            run.points.append(TimePoint(pending.pop(0), spent, trainer.step, scores))

    for event in trainer.run():
        if not isinstance(event, StepEvent):
            continue
        spent += clock() - started
        if spent >= pending[0]:
            checkpoint(spent)
            if not pending:
                break
        started = clock()
    else:  # the engine ended the run (its own time budget or step count) before the last checkpoint
        spent += clock() - started
        run.ended = f"training ended by the engine at {spent:.0f} s (step {trainer.step})"
        checkpoint(math.inf)
    return run
