"""Dice of a segmentation against labels (MONAI), the one score the loop's evaluation and the
benchmark share."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import compute_dice


def one_hot(labels: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Classes (any shape) as a one-hot batch of one, (1, C, *shape), float."""
    t = torch.as_tensor(np.asarray(labels).astype(np.int64)) if not torch.is_tensor(labels) else labels.long()
    return torch.nn.functional.one_hot(t, num_classes).movedim(-1, 0)[None].float()


def dice_per_class(pred: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    """Dice of each foreground class 1..C-1 over all of ``pred`` against ``truth`` (class maps of one
    shape), MONAI's ``compute_dice``; NaN where a class is absent from ``truth`` (and 0 where it is
    there but never predicted)."""
    return one_hot_dice(one_hot(pred, num_classes), one_hot(truth, num_classes))


def one_hot_dice(pred: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """:func:`dice_per_class` of one-hot maps (1, C, ...), as :func:`one_hot` makes them."""
    with warnings.catch_warnings():  # MONAI warns about empty classes; they are NaN on purpose
        warnings.simplefilter("ignore")
        d = compute_dice(pred, truth, include_background=False, ignore_empty=True)
    return d[0].numpy().astype(np.float64)
