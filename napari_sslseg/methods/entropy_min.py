"""Entropy minimisation (Grandvalet & Bengio 2005; Vu et al. 2019 for segmentation).

On unannotated slices, the student is pushed towards confident predictions by
minimising the mean per-pixel entropy of its softmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import setting
from ..schedules import sigmoid_rampup
from .base import Method, StepContext, register


@dataclass
class EntropyMinConfig:
    weight: float = setting(0.1, 0.0)  # final weight of the entropy term (SSL4MIS's entropy-minimisation baseline)
    rampup: float = setting(0.4, 0.0, 1.0)  # fraction of the run over which the weight ramps up (sigmoid)


@register
class EntropyMin(Method):
    name = "entropy_min"
    summary = "Entropy minimisation (Grandvalet & Bengio 2005): confident predictions on unannotated slices."
    Config = EntropyMinConfig

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        logp = torch.log_softmax(ctx.logits_unlabelled.float(), dim=1)
        entropy = -(logp.exp() * logp).sum(dim=1).mean()
        return {"entropy": (entropy, self.config.weight * sigmoid_rampup(ctx.step, self.config.rampup * ctx.total_steps))}
