"""The shared scores: Dice (MONAI) and the MC-dropout averaging behind every uncertainty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sslseg.metrics import dice_per_class
from napari_sslseg.uncertainty import entropy, mc_dropout, hard_labels


def test_dice_per_class_by_hand_nan_where_a_class_is_absent():
    truth = np.array([[0, 1, 1, 1], [0, 0, 2, 2]])
    pred = np.array([[0, 1, 1, 0], [1, 0, 0, 0]])
    d = dice_per_class(pred, truth, 4)
    assert d[0] == pytest.approx(2 * 2 / (3 + 3))  # class 1: 2 right of 3 painted, 3 true
    assert d[1] == 0.0  # class 2 there, never predicted
    assert np.isnan(d[2])  # class 3 absent from the truth: no score
    # the same from torch tensors, any shape
    assert np.allclose(dice_per_class(torch.from_numpy(pred).flatten(), torch.from_numpy(truth).flatten(), 4)[:2], d[:2])


def test_mc_dropout_of_identical_passes_has_no_mutual_information():
    logits = torch.randn(2, 3, 4, 4)
    mean, expected = mc_dropout(lambda: logits, 5)
    p = torch.softmax(logits, dim=1)
    torch.testing.assert_close(mean, p)
    torch.testing.assert_close(entropy(mean), expected)
    assert entropy(mean, keepdim=True).shape == (2, 1, 4, 4)


def test_mc_dropout_of_disagreeing_passes_has_some():
    draws = iter([torch.tensor([[[[5.0]], [[-5.0]]]]), torch.tensor([[[[-5.0]], [[5.0]]]])])
    mean, expected = mc_dropout(lambda: next(draws), 2)
    torch.testing.assert_close(mean, torch.full((1, 2, 1, 1), 0.5))
    assert float(entropy(mean) - expected) > 0.6  # near ln 2: two sure passes that disagree


def test_hard_labels_are_argmax_with_the_first_class_on_ties():
    p = torch.rand(3, 5, 7, 9)
    p[0, :, 0, 0] = 0.5  # a tie: classes 0 and 1 hold the largest value
    p[0, 2:, 0, 0] = 0.0
    assert torch.equal(hard_labels(p), p.argmax(1))
    assert int(hard_labels(p)[0, 0, 0]) == 0
    assert torch.equal(hard_labels(p[0], 0, keepdim=True), p[0].argmax(0, keepdim=True))
