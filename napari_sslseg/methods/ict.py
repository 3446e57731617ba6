"""Interpolation Consistency Training (Verma et al., IJCAI 2019).

MixUp consistency (:mod:`.mixup`) whose targets come from an EMA teacher: the student's
prediction on ``lam u_i + (1 - lam) u_j`` is pulled towards ``lam T(u_i) + (1 - lam) T(u_j)``,
``lam ~ Beta(0.2, 0.2)`` per slice, as in SSL4MIS's 2D medical version.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import setting
from .base import StepContext, disagreement_map, ema_teacher, ema_update, register
from .mixup import MixUp, MixUpConfig


@dataclass
class ICTConfig(MixUpConfig):
    ema_decay: float = setting(0.99, 0.0, 1.0)  # teacher EMA decay after warm-up (Verma et al. 2019 / SSL4MIS: 0.99)


@register
class ICT(MixUp):
    name = "ict"
    summary = "Interpolation consistency (Verma et al. 2019): an EMA teacher's mixed predictions guide the student on mixed slices."
    Config = ICTConfig

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        super().__init__(student, num_classes, config)
        self.teacher = ema_teacher(student)

    @torch.no_grad()
    def targets(self, ctx: StepContext) -> torch.Tensor:
        return torch.softmax(self.teacher(ctx.x_unlabelled).float(), dim=1)

    def after_step(self, ctx: StepContext) -> dict[str, float]:
        ema_update(self.teacher, self.student, ctx.step, self.config.ema_decay)
        return {}

    def maps(self, x: torch.Tensor, probabilities: torch.Tensor, costly: bool = False) -> dict[str, torch.Tensor]:
        return {"disagreement": disagreement_map(self.teacher, x, probabilities)} if costly else {}
