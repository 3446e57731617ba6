"""Uncertainty-aware Mean Teacher (Yu et al., MICCAI 2019).

Mean Teacher whose consistency counts only where the teacher is sure: T noisy
MC-dropout passes of the teacher give a predictive entropy per pixel, and pixels
above a threshold that ramps from 0.75 to 1.0 times ln(C) are left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..networks import enable_dropout
from ..schedules import sigmoid_rampup
from .base import StepContext, register
from .mean_teacher import MeanTeacher, MeanTeacherConfig, _teacher_input


@dataclass
class UAMTConfig(MeanTeacherConfig):
    mc_passes: int = 8  # T, noisy teacher passes for the uncertainty (Yu et al. 2019)
    threshold_start: float = 0.75  # threshold at the start, as a fraction of ln(C) (Yu et al. 2019)
    threshold_end: float = 1.0  # threshold once ramped up, as a fraction of ln(C)


@register
class UAMT(MeanTeacher):
    name = "ua_mt"
    summary = "Uncertainty-aware Mean Teacher (Yu et al. 2019): consistency only where the teacher's MC-dropout entropy is low."
    Config = UAMTConfig

    def threshold(self, ctx: StepContext) -> float:
        c = self.config
        ramp = sigmoid_rampup(ctx.step, ctx.total_steps)  # over the whole run, as in Yu et al. 2019
        return (c.threshold_start + (c.threshold_end - c.threshold_start) * ramp) * math.log(self.num_classes)

    @torch.no_grad()
    def uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """Predictive entropy of the mean of T noisy dropout passes, (B, 1, H, W)."""
        enable_dropout(self.teacher, True)
        mean = torch.zeros((), device=x.device)
        for _ in range(self.config.mc_passes):
            mean = mean + torch.softmax(self.teacher(_teacher_input(x, self.config.noise)).float(), dim=1)
        mean = mean / self.config.mc_passes
        return -(mean * torch.log(mean + 1e-6)).sum(dim=1, keepdim=True)

    def consistency_mask(self, ctx: StepContext) -> torch.Tensor:
        return (self.uncertainty(ctx.x_unlabelled) < self.threshold(ctx)).float()
