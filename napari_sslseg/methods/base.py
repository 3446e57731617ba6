"""The strategy interface every method implements, and the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config import dataclass_from_dict, validate
from ..errors import InputError

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a method available by its ``name``."""
    METHODS[cls.name] = cls
    return cls


@dataclass
class StepContext:
    """What one training step hands to the method."""

    step: int  # current step, from 0
    total_steps: int  # steps of the whole run
    x_labelled: torch.Tensor  # (B, 1, H, W) annotated slices, augmented
    y_labelled: torch.Tensor  # (B, 1, H, W) their classes
    x_unlabelled: torch.Tensor | None  # (B, 1, H, W) unannotated slices, augmented
    logits_labelled: torch.Tensor  # student output on x_labelled
    logits_unlabelled: torch.Tensor | None  # student output on x_unlabelled
    num_classes: int

    @property
    def progress(self) -> float:
        return self.step / max(self.total_steps, 1)


@dataclass
class NoConfig:
    """This method has no options."""


class Method:
    """A semi-supervised method: the unlabelled loss, and any extra model it needs.

    The training loop owns sampling, the supervised loss, the optimiser, mixed
    precision, checkpoints and previews; a method only adds its terms.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for ``napari-sslseg methods`` and the panel
    Config: ClassVar[type] = NoConfig
    uses_unlabelled: ClassVar[bool] = True

    teacher: nn.Module | None = None  # EMA teacher, for methods that have one
    discriminator: nn.Module | None = None  # per-pixel discriminator, for adversarial methods

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        self.student = student
        self.num_classes = num_classes
        self.config = config if config is not None else self.Config()

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        """Loss terms as {name: (value, weight)}; the loop adds weight * value to the total."""
        return {}

    def after_step(self, ctx: StepContext) -> dict[str, float]:
        """Called after the student's optimiser step (EMA update, discriminator step).

        Returns extra numbers to log, e.g. the discriminator's loss.
        """
        return {}

    def to(self, device: torch.device) -> "Method":
        for m in self.extra_models().values():
            m.to(device)
        return self

    def extra_models(self) -> dict[str, nn.Module]:
        return {k: m for k, m in (("teacher", self.teacher), ("discriminator", self.discriminator)) if m is not None}

    def state_dict(self) -> dict:
        return {k: m.state_dict() for k, m in self.extra_models().items()}

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.extra_models().items():
            if k in state:
                m.load_state_dict(state[k])


def method_config(name: str, options: dict | None = None):
    """The config of the method ``name`` with ``options`` (a dict of its fields) set, each checked
    for its type and range; unknown methods and options are refused."""
    if name not in METHODS:
        raise InputError(f"Unknown method '{name}'. Known: {', '.join(sorted(METHODS))}.")
    cls = METHODS[name]
    unknown = set(options or {}) - set(cls.Config.__dataclass_fields__)
    if unknown:
        raise InputError(
            f"Method '{name}' has no option {', '.join(sorted(unknown))}; "
            f"its options: {', '.join(cls.Config.__dataclass_fields__) or 'none'}."
        )
    return validate(dataclass_from_dict(cls.Config, options or {}), prefix=f"{name} option ")


def create_method(name: str, student: nn.Module, num_classes: int, options: dict | None = None) -> Method:
    """Build a registered method by name, its options given as a dict of config fields."""
    return METHODS[name](student, num_classes, method_config(name, options))
