"""Predictive entropy and MC-dropout averaging, shared by prediction and the uncertainty-aware methods."""

from __future__ import annotations

from typing import Callable

import torch

_EPS = 1e-6


def entropy(p: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Entropy (nats) of the softmax maps ``p`` over their class dimension 1, (B, H, W) or (B, 1, H, W)."""
    return -(p * torch.log(p + _EPS)).sum(dim=1, keepdim=keepdim)


def mc_dropout(sample: Callable[[], torch.Tensor], passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean softmax of ``passes`` calls of ``sample`` (each the logits of one MC-dropout pass),
    and the mean of their entropies, (B, H, W): their difference, entropy(mean) - mean entropy, is
    the mutual information (the epistemic part, Gal & Ghahramani 2016)."""
    mean = expected_entropy = 0.0
    for _ in range(passes):
        p = torch.softmax(sample().float(), dim=1)
        mean = mean + p / passes
        expected_entropy = expected_entropy + entropy(p) / passes
    return mean, expected_entropy
