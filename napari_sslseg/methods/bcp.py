"""Bidirectional copy-paste (Bai et al., CVPR 2023), with the settings of the official code
(DeepMed-Lab-ECNU/BCP, ``ACDC_BCP_train.py``).

A region of 2/3 x 2/3 of the patch is copied between an annotated and an unannotated slice,
both ways: the unannotated slice with an annotated region pasted in, and the annotated
slice with an unannotated region pasted in. The target is the ground truth inside the
annotated part and the EMA teacher's pseudo-label (argmax, largest connected piece of each
class) in the other, whose Dice + cross-entropy weighs 0.5. A first stage copy-pastes
between annotated slices only (the official code's pre-training, 10k of its 40k
iterations); the teacher then starts as the student and follows it by EMA (0.99).

Unlike the official code the loop's plain supervised loss on the annotated slices stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from torch import nn

from ..config import setting
from ..uncertainty import hard_labels
from .base import Method, StepContext, disagreement_map, ema_teacher, ema_update, masked_dice, register


@dataclass
class BCPConfig:
    region: float = setting(2 / 3, above=0.0, below=1.0)  # side of the pasted region, as a fraction of the patch's (BCP: 2/3)
    pseudo_weight: float = setting(0.5, 0.0)  # weight of the pseudo-labelled part of each mix (BCP's u_weight: 0.5)
    first_stage: float = setting(0.25, 0.0, 1.0)  # fraction of the run that copy-pastes between annotated slices only (BCP: 10k pre-training of 40k iterations)
    ema_decay: float = setting(0.99, 0.0, 1.0)  # teacher EMA decay in the second stage (BCP: 0.99)
    largest_component: bool = True  # keep each class's largest connected piece in the pseudo-labels (BCP's get_ACDC_2DLargestCC)


def region_mask(x: torch.Tensor, side: float) -> torch.Tensor:
    """(1, 1, H, W): 0 inside one random region of ``side`` x the slice's sides, 1 outside (one per batch, as BCP)."""
    h, w = x.shape[-2:]
    ph, pw = int(h * side), int(w * side)
    top, left = (int(torch.randint(0, max(h - ph, 1), ())), int(torch.randint(0, max(w - pw, 1), ())))
    m = torch.ones((1, 1, h, w), device=x.device, dtype=x.dtype)
    m[..., top : top + ph, left : left + pw] = 0
    return m


def paste(outside: torch.Tensor, inside: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return outside * mask + inside * (1 - mask)


def largest_pieces(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each class of each (H, W) slice of ``labels`` (B, H, W) cut to its largest connected piece; the rest background."""
    out = np.zeros(labels.shape, np.int64)
    for i, lab in enumerate(labels.cpu().numpy()):
        for c in range(1, num_classes):
            if (lab == c).any():
                mask = sitk.GetImageFromArray((lab == c).astype(np.uint8))
                pieces = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(mask)))  # largest is 1
                out[i][pieces == 1] = c
    return torch.from_numpy(out).to(labels.device)


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(Dice + cross-entropy) / 2 over the pixels where ``mask`` is 1 (BCP's mix_loss, one region)."""
    m = mask[:, 0].expand(len(logits), -1, -1)
    ce = (F.cross_entropy(logits.float(), target, reduction="none") * m).sum() / (m.sum() + 1e-16)
    return (masked_dice(logits, target, mask) + ce) / 2


@register
class BCP(Method):
    name = "bcp"
    summary = "Bidirectional copy-paste (Bai et al. 2023): regions pasted between annotated and unannotated slices, both ways."
    Config = BCPConfig
    reads_unlabelled_logits = False  # the student learns from the mixed slices alone (the official code)

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        super().__init__(student, num_classes, config)
        self.teacher = ema_teacher(student)

    def first_stage(self, ctx: StepContext) -> bool:
        return ctx.progress < self.config.first_stage

    def prepare(self, ctx: StepContext) -> None:
        x_l, x_u = ctx.x_labelled, ctx.x_unlabelled
        if x_u is None:
            return
        mask = region_mask(x_l, self.config.region)
        ctx.notes["mask"] = mask
        if self.first_stage(ctx):  # annotated slices only: each with a region of the next
            ctx.views["labelled pasted"] = paste(x_l, x_l.roll(1, 0), mask)
            return
        n = min(len(x_l), len(x_u))
        a, b = torch.arange(n), torch.arange(n).roll(1)  # the official code's halves a and b, as pairs
        ctx.notes["pairs"] = (a, b)
        ctx.views["unlabelled outside"] = paste(x_u[a], x_l[a], mask)
        ctx.views["labelled outside"] = paste(x_l[b], x_u[b], mask)

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        mask, y = ctx.notes["mask"], ctx.y_labelled[:, 0].long()
        if self.first_stage(ctx):
            out = ctx.view_logits["labelled pasted"]
            return {"copy_paste": (masked_dice_ce(out, y, mask) + masked_dice_ce(out, y.roll(1, 0), 1 - mask), 1.0)}
        a, b = ctx.notes["pairs"]
        pseudo = self.pseudo_labels(ctx.x_unlabelled)
        w = self.config.pseudo_weight
        out_u, out_l = ctx.view_logits["unlabelled outside"], ctx.view_logits["labelled outside"]
        loss = (w * masked_dice_ce(out_u, pseudo[a], mask) + masked_dice_ce(out_u, y[a], 1 - mask)
                + masked_dice_ce(out_l, y[b], mask) + w * masked_dice_ce(out_l, pseudo[b], 1 - mask))
        return {"copy_paste": (loss, 1.0)}

    @torch.no_grad()
    def pseudo_labels(self, x: torch.Tensor) -> torch.Tensor:
        labels = hard_labels(self.teacher(x))
        return largest_pieces(labels, self.num_classes) if self.config.largest_component else labels

    def after_step(self, ctx: StepContext) -> dict[str, float]:
        # the first stage trains the student alone; the teacher starts from it (decay 0 = a copy)
        ema_update(self.teacher, self.student, ctx.step, 0.0 if self.first_stage(ctx) else self.config.ema_decay)
        return {}

    def maps(self, x: torch.Tensor, probabilities: torch.Tensor, costly: bool = False) -> dict[str, torch.Tensor]:
        return {"disagreement": disagreement_map(self.teacher, x, probabilities)} if costly else {}
