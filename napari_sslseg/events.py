"""Plain events the training loop yields, and the commands it accepts.

The command line, the napari panel and the tests all consume the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class StepEvent:
    """After every optimiser step."""

    step: int  # steps done so far
    total: int  # steps of the run
    losses: dict[str, float]  # every loss term before weighting, plus "total"
    weights: dict[str, float]  # the weight each unlabelled term had at this step
    lr: float  # learning rate used
    steps_per_second: float  # recent training speed
    eta_seconds: float  # estimated time to the end


@dataclass
class EvalEvent:
    """Dice on the annotated slices (how well the model fits what the user painted)."""

    step: int
    dice: dict[str, float]  # per class name
    mean_dice: float


@dataclass
class PreviewEvent:
    """A prediction of one volume (or some of its slices) during training."""

    step: int
    volume_index: int
    prediction: Any  # inference.Prediction


@dataclass
class AnnotationsEvent:
    """New annotations were taken into the labelled pool."""

    step: int
    volume_index: int
    annotated: list[int]


@dataclass
class MessageEvent:
    """Something the user should read; training goes on."""

    step: int
    level: str  # "info" or "warning"
    text: str


@dataclass
class PausedEvent:
    step: int


@dataclass
class CheckpointEvent:
    """The training state was written (periodically, or at the end of the run)."""

    step: int
    path: str


@dataclass
class FinishedEvent:
    step: int
    reason: str  # "completed" or "stopped"
    seconds: float  # wall time of this run


# --- commands (send them with Trainer.submit or generator.send) ---


@dataclass
class Pause:
    pass


@dataclass
class Resume:
    pass


@dataclass
class Stop:
    pass


@dataclass
class UpdateLabels:
    """New labels for a volume: a copy of the whole label array, owned by the engine from now on."""

    volume_index: int
    labels: np.ndarray
    annotated: list[int] | None = None  # None = every slice that holds a label
    rejected: list[int] | None = None  # slices whose prediction the user rejected; None = as before
