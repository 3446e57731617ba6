"""MixUp of unannotated slices: interpolation consistency without a teacher, the ablation of ICT.

Each unannotated slice is mixed with another of the batch, ``lam u_i + (1 - lam) u_j``
with ``lam ~ Beta(alpha, alpha)`` per slice (Zhang et al., ICLR 2018), and the student's
prediction on the mix is pulled towards the same mix of its own (detached) predictions on
the two slices. :mod:`.ict` is this with an EMA teacher's predictions as the targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import setting
from ..schedules import sigmoid_rampup
from .base import Method, StepContext, register


@dataclass
class MixUpConfig:
    alpha: float = setting(0.2, above=0.0)  # mix ratio ~ Beta(alpha, alpha) (Verma et al. 2019 for segmentation-scale inputs; SSL4MIS's ICT: 0.2)
    consistency: float = setting(0.1, 0.0)  # final weight of the consistency term (SSL4MIS's ICT, 2D medical)
    rampup: float = setting(0.4, 0.0, 1.0)  # fraction of the run over which the weight ramps up (sigmoid)


def mix(a: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``lam a_i + (1 - lam) a_(i-1)``: each slice mixed with the one before it in the batch."""
    return lam * a + (1 - lam) * a.roll(1, dims=0)


@register
class MixUp(Method):
    name = "mixup"
    summary = "MixUp consistency: the prediction on a mix of two unannotated slices is the mix of the student's own predictions."
    Config = MixUpConfig

    def prepare(self, ctx: StepContext) -> None:
        x = ctx.x_unlabelled
        if x is None:
            return
        beta = torch.distributions.Beta(self.config.alpha, self.config.alpha)
        lam = beta.sample((len(x), 1, 1, 1)).to(x.device, x.dtype)
        ctx.notes["lam"] = lam
        ctx.views["mixed"] = mix(x, lam)

    def targets(self, ctx: StepContext) -> torch.Tensor:
        """Softmax on each unannotated slice that the mixes are held to: the student's own, detached."""
        return torch.softmax(ctx.logits_unlabelled.detach().float(), dim=1)

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        target = mix(self.targets(ctx), ctx.notes["lam"].float())
        student = torch.softmax(ctx.view_logits["mixed"].float(), dim=1)
        weight = self.config.consistency * sigmoid_rampup(ctx.step, self.config.rampup * ctx.total_steps)
        return {"consistency": (((student - target) ** 2).mean(), weight)}
