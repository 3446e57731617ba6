"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017).

The teacher is an exponential moving average of the student. On unannotated slices the
student's softmax is pulled towards the teacher's, which sees the same slice under other
noise. The weight of that consistency ramps up with a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import setting
from ..schedules import sigmoid_rampup
from .base import Method, StepContext, disagreement_map, ema_teacher, ema_update, register


@dataclass
class MeanTeacherConfig:
    ema_decay: float = setting(0.99, 0.0, 1.0)  # teacher EMA decay after warm-up (Tarvainen & Valpola 2017; Yu et al. 2019)
    consistency: float = setting(0.1, 0.0)  # final weight of the consistency term (Yu et al. 2019, 2D/3D medical)
    rampup: float = setting(0.4, 0.0, 1.0)  # fraction of the run over which the weight ramps up (sigmoid)
    noise: float = setting(0.1, 0.0)  # std of the Gaussian noise added to the teacher's input, clipped at +-2 std


def _teacher_input(x: torch.Tensor, std: float) -> torch.Tensor:
    return x + torch.clamp(torch.randn_like(x) * std, -2 * std, 2 * std)


@register
class MeanTeacher(Method):
    name = "mean_teacher"
    summary = "Mean Teacher (Tarvainen & Valpola 2017): an EMA teacher's softmax guides the student on unannotated slices."
    Config = MeanTeacherConfig

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        super().__init__(student, num_classes, config)
        self.teacher = ema_teacher(student)

    def weight(self, ctx: StepContext) -> float:
        return self.config.consistency * sigmoid_rampup(ctx.step, self.config.rampup * ctx.total_steps)

    def teacher_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(self.teacher(_teacher_input(x, self.config.noise)).float(), dim=1)

    def consistency_mask(self, ctx: StepContext) -> torch.Tensor | None:
        """Where consistency counts; None = everywhere."""
        return None

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        student = torch.softmax(ctx.logits_unlabelled.float(), dim=1)
        target = self.teacher_probabilities(ctx.x_unlabelled)
        sq = (student - target) ** 2
        mask = self.consistency_mask(ctx)
        if mask is None:
            loss = sq.mean()
        else:
            # Yu et al. 2019: average over the kept voxels (and classes)
            loss = (mask * sq).sum() / (mask.sum() * sq.shape[1] + 1e-8)
        return {"consistency": (loss, self.weight(ctx))}

    def after_step(self, ctx: StepContext) -> dict[str, float]:
        ema_update(self.teacher, self.student, ctx.step, self.config.ema_decay)
        return {}

    def maps(self, x: torch.Tensor, probabilities: torch.Tensor, costly: bool = False) -> dict[str, torch.Tensor]:
        """Where the EMA teacher disagrees with the student (one more network pass: only when ``costly``)."""
        return {"disagreement": disagreement_map(self.teacher, x, probabilities)} if costly else {}
