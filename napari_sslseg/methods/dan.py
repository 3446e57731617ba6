"""Deep adversarial networks (Zhang et al., MICCAI 2017): an image-level discriminator.

An evaluation network sees a slice's image with the segmenter's softmax and gives one
score: was this slice annotated? It learns to tell predictions on annotated slices (1)
from those on unannotated ones (0); the segmenter learns to make its predictions on
unannotated slices pass for annotated ones. Beside :mod:`.adversarial`, whose
discriminator judges each pixel against the ground truth. Settings of SSL4MIS's 2D DAN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import setting
from ..networks import ImageDiscriminator
from ..schedules import sigmoid_rampup
from .base import Method, StepContext, register


@dataclass
class DANConfig:
    weight: float = setting(0.1, 0.0)  # final weight of the adversarial term (SSL4MIS's DAN: consistency 0.1, sigmoid ramp-up)
    rampup: float = setting(0.4, 0.0, 1.0)  # fraction of the run over which the weight ramps up (sigmoid)
    lr: float = setting(1e-4, above=0.0, high=1.0)  # evaluation network's Adam learning rate (SSL4MIS's DAN: 1e-4, betas 0.9, 0.99)
    width: int = setting(32, 1)  # evaluation network's channels at the first layer (64 in SSL4MIS; halved for CPU)


@register
class DAN(Method):
    name = "dan"
    summary = "Deep adversarial networks (Zhang et al. 2017): a per-slice evaluator cannot tell unannotated slices' predictions from annotated ones'."
    Config = DANConfig

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        super().__init__(student, num_classes, config)
        self.evaluator = ImageDiscriminator(num_classes, width=self.config.width)
        self.evaluator_optimizer = torch.optim.Adam(self.evaluator.parameters(), lr=self.config.lr, betas=(0.9, 0.99))

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        self.evaluator.requires_grad_(False)
        self.evaluator.eval()  # as SSL4MIS: no dropout while it judges the segmenter
        p_u = torch.softmax(ctx.logits_unlabelled.float(), dim=1)
        score = self.evaluator(p_u, ctx.x_unlabelled[:, :1].float())
        adversarial = F.binary_cross_entropy_with_logits(score, torch.ones_like(score))  # "annotated"
        weight = self.config.weight * sigmoid_rampup(ctx.step, self.config.rampup * ctx.total_steps)
        return {"adversarial": (adversarial, weight)}

    def after_step(self, ctx: StepContext) -> dict[str, float]:
        """One step of the evaluation network: annotated slices' predictions are 1, unannotated 0.

        On this step's predictions, from before the student's update (SSL4MIS predicts again
        after it: one more forward pass for a step's difference)."""
        if ctx.logits_unlabelled is None:
            return {}
        e = self.evaluator
        e.requires_grad_(True)
        e.train()
        self.evaluator_optimizer.zero_grad(set_to_none=True)
        p = torch.softmax(torch.cat([ctx.logits_labelled, ctx.logits_unlabelled]).detach().float(), dim=1)
        x = torch.cat([ctx.x_labelled, ctx.x_unlabelled])[:, :1].float()
        target = torch.zeros(len(p), 1, device=p.device)
        target[: len(ctx.logits_labelled)] = 1
        loss = F.binary_cross_entropy_with_logits(e(p, x), target)
        loss.backward()
        self.evaluator_optimizer.step()
        return {"evaluator": float(loss.detach())}
