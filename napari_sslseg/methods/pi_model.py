"""Π-model (Laine & Aila, ICLR 2017).

The same network sees each unannotated slice twice, under different input noise and
dropout; the squared difference of its two softmax outputs is the consistency loss.
Both passes carry gradient (there is no teacher), and the weight ramps up with a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import setting
from ..schedules import sigmoid_rampup
from .base import Method, StepContext, on_image, register


@dataclass
class PiModelConfig:
    consistency: float = setting(0.1, 0.0)  # final weight of the consistency term (0.1 as the Mean Teacher of Yu et al. 2019, so the two compare; the paper's 100 is for a summed, not averaged, squared error)
    rampup: float = setting(0.4, 0.0, 1.0)  # fraction of the run over which the weight ramps up (sigmoid, Laine & Aila 2017: 80 of 300 epochs)
    noise: float = setting(0.15, 0.0)  # std of the Gaussian noise on the second pass's image (Laine & Aila 2017: 0.15)


@register
class PiModel(Method):
    name = "pi_model"
    summary = "Π-model (Laine & Aila 2017): two noisy passes of the student must agree on unannotated slices."
    Config = PiModelConfig

    def prepare(self, ctx: StepContext) -> None:
        if ctx.x_unlabelled is not None:  # the loop's pass is the first, with dropout; this the second
            noise = self.config.noise
            ctx.views["noisy"] = on_image(ctx.x_unlabelled, lambda x: x + torch.randn_like(x) * noise)

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        p = torch.softmax(ctx.logits_unlabelled.float(), dim=1)
        q = torch.softmax(ctx.view_logits["noisy"].float(), dim=1)
        weight = self.config.consistency * sigmoid_rampup(ctx.step, self.config.rampup * ctx.total_steps)
        return {"consistency": (((p - q) ** 2).mean(), weight)}
