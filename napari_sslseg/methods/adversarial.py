"""Adversarial learning for semi-supervised segmentation (Hung et al., BMVC 2018).

A fully convolutional discriminator learns, per pixel, to tell one-hot ground truth
from the segmenter's softmax. The segmenter gets (1) an adversarial loss on all its
predictions, to look like ground truth, and (2) a self-training cross-entropy on
unannotated pixels the discriminator trusts, with the argmax as pseudo-label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import setting
from ..networks import PixelDiscriminator
from ..uncertainty import hard_labels
from .base import Method, StepContext, register


@dataclass
class AdversarialConfig:
    lambda_adv_labelled: float = setting(0.01, 0.0)  # adversarial weight on annotated slices (Hung et al. 2018)
    lambda_adv_unlabelled: float = setting(0.001, 0.0)  # adversarial weight on unannotated slices (Hung et al. 2018)
    lambda_semi: float = setting(0.1, 0.0)  # self-training weight (Hung et al. 2018)
    threshold: float = setting(0.2, 0.0, 1.0)  # discriminator confidence above which a pixel is self-trained (T_semi, Hung et al. 2018)
    semi_start: float = setting(0.25, 0.0, 1.0)  # fraction of the run before self-training starts (5k of 20k iterations in the paper)
    lr: float = setting(1e-4, above=0.0, high=1.0)  # discriminator Adam learning rate (Hung et al. 2018)
    width: int = setting(32, 1)  # discriminator channels at the first layer (64 in the paper; halved for CPU)


@register
class Adversarial(Method):
    name = "adversarial"
    summary = "Adversarial self-training (Hung et al. 2018): a per-pixel discriminator picks trusted pseudo-labels."
    Config = AdversarialConfig

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        super().__init__(student, num_classes, config)
        self.discriminator = PixelDiscriminator(num_classes, width=self.config.width)
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=self.config.lr, betas=(0.9, 0.99))

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        c = self.config
        self.discriminator.requires_grad_(False)
        p_l = torch.softmax(ctx.logits_labelled.float(), dim=1)
        p_u = torch.softmax(ctx.logits_unlabelled.float(), dim=1)
        d_l, d_u = self.discriminator(p_l), self.discriminator(p_u)
        adv_l = F.binary_cross_entropy_with_logits(d_l, torch.ones_like(d_l))
        adv_u = F.binary_cross_entropy_with_logits(d_u, torch.ones_like(d_u))
        trusted = (torch.sigmoid(d_u.detach()) > c.threshold)[:, 0]
        pseudo = hard_labels(p_u.detach())
        ce = F.cross_entropy(ctx.logits_unlabelled.float(), pseudo, reduction="none")
        semi = (ce * trusted).sum() / trusted.sum().clamp(min=1)
        semi_weight = c.lambda_semi if ctx.progress >= c.semi_start else 0.0
        return {
            "adversarial_labelled": (adv_l, c.lambda_adv_labelled),
            "adversarial_unlabelled": (adv_u, c.lambda_adv_unlabelled),
            "self_training": (semi, semi_weight),
        }

    def after_step(self, ctx: StepContext) -> dict[str, float]:
        """One discriminator step: ground truth is real (1), predictions are fake (0)."""
        d = self.discriminator
        d.requires_grad_(True)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        predictions = [ctx.logits_labelled] + ([ctx.logits_unlabelled] if ctx.logits_unlabelled is not None else [])
        fake = torch.softmax(torch.cat(predictions).detach().float(), dim=1)
        real = F.one_hot(ctx.y_labelled[:, 0].long(), self.num_classes).permute(0, 3, 1, 2).float()
        out_fake, out_real = d(fake), d(real)
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake))
            + F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
        )
        loss.backward()
        self.discriminator_optimizer.step()
        return {"discriminator": float(loss.detach())}

    @torch.no_grad()
    def maps(self, x: torch.Tensor, probabilities: torch.Tensor, costly: bool = False) -> dict[str, torch.Tensor]:
        """Where the discriminator takes the prediction for ground truth."""
        return {"discriminator_confidence": torch.sigmoid(self.discriminator(probabilities))[:, 0]}
