"""Consistency under transformations (Bortsova et al., MICCAI 2019), the seed's Γ-model row.

A segmentation must commute with a spatial transform T: the student's prediction on
T(x) is pulled towards T applied to its prediction on x. Both branches share the
weights and both carry gradient (the paper's Siamese set-up). T here is a random
flip, rotation and scaling drawn per slice, applied with ``affine_grid`` /
``grid_sample``; pixels that T maps from outside the slice are left out of the loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import setting
from ..schedules import sigmoid_rampup
from .base import Method, StepContext, register


@dataclass
class TransformConsistencyConfig:
    consistency: float = setting(0.1, 0.0)  # final weight of the consistency term (as Mean Teacher's, Yu et al. 2019, so the two compare)
    rampup: float = setting(0.4, 0.0, 1.0)  # fraction of the run over which the weight ramps up (sigmoid)
    rotation: float = setting(15.0, 0.0, 180.0)  # largest rotation, degrees (Bortsova et al. 2019 drew rotations among their transforms)
    scale: float = setting(0.1, 0.0, below=1.0)  # scaling drawn in [1 - scale, 1 + scale]
    flip: bool = True  # also mirror half the slices left-right


def random_affine(n: int, rotation: float, scale: float, flip: bool, device=None) -> torch.Tensor:
    """(n, 2, 3) ``affine_grid`` matrices: a rotation within +-``rotation`` degrees, an isotropic
    scaling in [1 - scale, 1 + scale], and a left-right mirror one time in two when ``flip``."""
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(rotation)
    s = 1 + (torch.rand(n, device=device) * 2 - 1) * scale
    mirror = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=device)
    cos, sin = torch.cos(angle) * s, torch.sin(angle) * s
    zero = torch.zeros_like(cos)
    return torch.stack([torch.stack([cos * mirror, -sin, zero], 1), torch.stack([sin * mirror, cos, zero], 1)], 1)


def warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)


@register
class TransformConsistency(Method):
    name = "transform_consistency"
    summary = "Transformation consistency (Bortsova et al. 2019): predictions commute with random flips, rotations, scalings."
    Config = TransformConsistencyConfig

    def prepare(self, ctx: StepContext) -> None:
        if ctx.x_unlabelled is None:
            return
        c = self.config
        theta = random_affine(len(ctx.x_unlabelled), c.rotation, c.scale, c.flip, ctx.x_unlabelled.device)
        ctx.notes["theta"] = theta
        ctx.views["transformed"] = warp(ctx.x_unlabelled, theta)

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        theta = ctx.notes["theta"]
        p = torch.softmax(ctx.logits_unlabelled.float(), dim=1)
        p_of_t = torch.softmax(ctx.view_logits["transformed"].float(), dim=1)  # f(T(x))
        t_of_p = warp(p, theta)  # T(f(x))
        inside = (warp(torch.ones_like(p[:, :1]), theta) > 0.999).float()
        sq = inside * (p_of_t - t_of_p) ** 2
        loss = sq.sum() / (inside.sum() * p.shape[1] + 1e-8)
        weight = self.config.consistency * sigmoid_rampup(ctx.step, self.config.rampup * ctx.total_steps)
        return {"consistency": (loss, weight)}
