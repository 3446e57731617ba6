"""Uncertainty-aware Mean Teacher (Yu et al., MICCAI 2019).

Mean Teacher whose consistency counts only where the teacher is sure: T noisy
MC-dropout passes of the teacher give a predictive entropy per pixel, and pixels
above a threshold that ramps from 0.75 to 1.0 times ln(C) are left out.

When the network has dropout before its classifier only (``dropout_scope="last"``, the
default), the T passes share one noisy teacher pass, the one whose softmax is the
consistency target, and redraw only that dropout (:class:`LastBlockSampler`): the
input noise is drawn once per step instead of once per pass, and the uncertainty costs
a fraction of a forward pass instead of T of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import setting
from ..networks import LastBlockSampler, dropout_layers, enable_dropout
from ..schedules import sigmoid_rampup
from ..uncertainty import entropy, mc_dropout
from .base import StepContext, register
from .mean_teacher import MeanTeacher, MeanTeacherConfig, _teacher_input


@dataclass
class UAMTConfig(MeanTeacherConfig):
    mc_passes: int = setting(8, 1)  # T, noisy teacher passes for the uncertainty (Yu et al. 2019)
    threshold_start: float = setting(0.75, 0.0)  # threshold at the start, as a fraction of ln(C) (Yu et al. 2019)
    threshold_end: float = setting(1.0, 0.0)  # threshold once ramped up, as a fraction of ln(C)


@register
class UAMT(MeanTeacher):
    name = "ua_mt"
    summary = "Uncertainty-aware Mean Teacher (Yu et al. 2019): consistency only where the teacher's MC-dropout entropy is low."
    Config = UAMTConfig

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        super().__init__(student, num_classes, config)
        last_only = len(dropout_layers(self.teacher)) == 1 and LastBlockSampler.supports(self.teacher)
        self._sampler = LastBlockSampler(self.teacher) if last_only else None
        self._uncertainty: torch.Tensor | None = None

    def threshold(self, ctx: StepContext) -> float:
        c = self.config
        ramp = sigmoid_rampup(ctx.step, ctx.total_steps)  # over the whole run, as in Yu et al. 2019
        return (c.threshold_start + (c.threshold_end - c.threshold_start) * ramp) * math.log(self.num_classes)

    @torch.no_grad()
    def uncertainty(self, x: torch.Tensor) -> torch.Tensor:
        """Predictive entropy of the mean of T noisy dropout passes, (B, 1, H, W)."""
        enable_dropout(self.teacher, True)
        mean, _ = mc_dropout(lambda: self.teacher(_teacher_input(x, self.config.noise)), self.config.mc_passes)
        return entropy(mean, keepdim=True)

    @torch.no_grad()
    def teacher_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        if self._sampler is None:
            self._uncertainty = None
            return super().teacher_probabilities(x)
        enable_dropout(self.teacher, True)
        target = torch.softmax(self._sampler.forward(_teacher_input(x, self.config.noise)).float(), dim=1)
        mean, _ = mc_dropout(self._sampler.sample, self.config.mc_passes)
        self._uncertainty = entropy(mean, keepdim=True)
        self._sampler.features = None
        return target

    def consistency_mask(self, ctx: StepContext) -> torch.Tensor:
        u, self._uncertainty = self._uncertainty, None
        if u is None:  # dropout in every block: T full noisy passes, as in Yu et al. 2019
            u = self.uncertainty(ctx.x_unlabelled)
        return (u < self.threshold(ctx)).float()
