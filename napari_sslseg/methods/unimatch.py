"""UniMatch (Yang et al., CVPR 2023), with the settings of the official medical code
(LiheYoung/UniMatch, ``more-scenarios/medical``).

The student's prediction on the weak view (the loop's augmented unannotated slice) gives
pseudo-labels where its confidence reaches 0.95. They supervise, by Dice over the
confident pixels: two strong views (intensity jitter, blur, and with probability 0.5 a
CutMix box from another slice, whose pseudo-labels come along), and a pass whose encoder
features lose half their channels (dropout 0.5 on every level: feature perturbation).
The official loss, (L_x + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2 with L_x = (CE + Dice) / 2,
is kept in proportion to the loop's supervised CE + Dice: weights 0.5, 0.5 and 1.

The CutMix partner is another slice of the same batch, where the official code draws a
second unannotated batch and predicts it once more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import setting
from .base import Method, StepContext, masked_dice, on_image, register


@dataclass
class UniMatchConfig:
    threshold: float = setting(0.95, 0.0, 1.0)  # confidence a pseudo-label needs (UniMatch ACDC: conf_thresh 0.95)
    strong_weight: float = setting(0.5, 0.0)  # weight of each strong view's Dice (0.25 of L_x = (CE + Dice) / 2 in UniMatch; the loop's is CE + Dice)
    feature_weight: float = setting(1.0, 0.0)  # weight of the feature-perturbed pass's Dice (0.5 of L_x in UniMatch)
    feature_dropout: float = setting(0.5, 0.0, below=1.0)  # channel dropout on the encoder features (UniMatch: 0.5)
    jitter: float = setting(0.5, 0.0, 1.0)  # brightness and contrast factors in [1 - jitter, 1 + jitter] (UniMatch: ColorJitter 0.5, 0.5, p 0.8)
    jitter_p: float = setting(0.8, 0.0, 1.0)  # how often a strong view is jittered (UniMatch: 0.8)
    blur_p: float = setting(0.5, 0.0, 1.0)  # how often a strong view is blurred, sigma in [0.1, 2] pixels (UniMatch: 0.5)
    cutmix_p: float = setting(0.5, 0.0, 1.0)  # how often a strong view gets a CutMix box, 2-40% of the slice (UniMatch: 0.5)


def _chance(p: float, n: int, device) -> torch.Tensor:
    return (torch.rand(n, 1, 1, 1, device=device) < p).float()


def jitter(x: torch.Tensor, amount: float, p: float) -> torch.Tensor:
    """Brightness and contrast jitter of (B, 1, H, W) images, on each slice's own [min, max] range."""
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    v = (x - lo) / (hi - lo + 1e-6)
    n, dev = len(x), x.device
    b = 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * amount
    c = 1 + (torch.rand(n, 1, 1, 1, device=dev) * 2 - 1) * amount
    mean = (v * b).mean((2, 3), keepdim=True)
    out = ((v * b - mean) * c + mean).clamp(0, 1) * (hi - lo) + lo
    keep = _chance(p, n, dev)
    return keep * out + (1 - keep) * x


def blur(x: torch.Tensor, p: float) -> torch.Tensor:
    """Gaussian blur of (B, 1, H, W) images, sigma in [0.1, 2] pixels, one slice in 1/p."""
    out = []
    for xi in x:
        if float(torch.rand(())) < p:
            sigma = float(0.1 + torch.rand(()) * 1.9)
            r = max(1, int(3 * sigma))
            k = torch.exp(-((torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)) ** 2) / (2 * sigma**2))
            k = k / k.sum()
            xi = F.conv2d(F.pad(xi[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
            xi = F.conv2d(F.pad(xi, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))[0]
        out.append(xi)
    return torch.stack(out)


def cutmix_boxes(n: int, h: int, w: int, p: float, device) -> torch.Tensor:
    """(n, 1, H, W): 1 inside a box of 2-40% of the slice with aspect 0.3-3.3, in one slice in 1/p (UniMatch's obtain_cutmix_box)."""
    boxes = torch.zeros(n, 1, h, w, device=device)
    for i in range(n):
        if float(torch.rand(())) >= p:
            continue
        area = float(0.02 + torch.rand(()) * 0.38) * h * w
        ratio = float(0.3 + torch.rand(()) * (1 / 0.3 - 0.3))
        bw, bh = min(w, int((area / ratio) ** 0.5)), min(h, int((area * ratio) ** 0.5))
        top, left = int(torch.randint(0, h - bh + 1, ())), int(torch.randint(0, w - bw + 1, ()))
        boxes[i, :, top : top + bh, left : left + bw] = 1
    return boxes


def encoder(net: nn.Module) -> list[nn.Module]:
    """The encoder levels of a MONAI BasicUNet, whose outputs the feature perturbation drops."""
    return [net.conv_0, net.down_1, net.down_2, net.down_3, net.down_4]


@register
class UniMatch(Method):
    name = "unimatch"
    summary = "UniMatch (Yang et al. 2023): confident pseudo-labels of a weak view teach two strong views and a feature-perturbed pass."
    Config = UniMatchConfig

    def prepare(self, ctx: StepContext) -> None:
        x = ctx.x_unlabelled
        if x is None:
            return
        c = self.config
        h, w = x.shape[-2:]
        strong = lambda: on_image(x, lambda im: blur(jitter(im, c.jitter, c.jitter_p), c.blur_p))  # noqa: E731
        for k in ("strong 1", "strong 2"):
            view, box = strong(), cutmix_boxes(len(x), h, w, c.cutmix_p, x.device)
            ctx.notes[k] = box
            ctx.views[k] = box * view.roll(1, 0) + (1 - box) * view  # the partner's strong view in the box

    def feature_perturbed(self, x: torch.Tensor) -> torch.Tensor:
        """The student on ``x`` with channel dropout on every encoder level's output."""
        drop = lambda _m, _i, out: F.dropout2d(out, self.config.feature_dropout, training=True)  # noqa: E731
        handles = [m.register_forward_hook(drop) for m in encoder(self.student)]
        try:
            return self.student(x)
        finally:
            for hd in handles:
                hd.remove()

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        c = self.config
        with torch.no_grad():
            conf, pseudo = torch.softmax(ctx.logits_unlabelled.detach().float(), dim=1).max(dim=1)
        confident = (conf >= c.threshold).float()[:, None]
        terms = {}
        for k in ("strong 1", "strong 2"):
            box = ctx.notes[k]
            target = torch.where(box[:, 0] > 0, pseudo.roll(1, 0), pseudo)
            mask = box * confident.roll(1, 0) + (1 - box) * confident
            terms[k.replace(" ", "_")] = (masked_dice(ctx.view_logits[k], target, mask), c.strong_weight)
        fp = self.feature_perturbed(ctx.x_unlabelled)
        ctx.view_logits["feature perturbed"] = fp
        terms["feature_perturbed"] = (masked_dice(fp, pseudo, confident), c.feature_weight)
        return terms
