"""Whole-volume prediction: shapes, ranges, uncertainty, suggestions."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sslseg.config import TrainConfig
from napari_sslseg.inference import predict_volume, rank_slices
from napari_sslseg.training import Trainer



def _train(volume, method, steps=15):
    trainer = Trainer([volume], method, TrainConfig(steps=steps, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=0))
    for _ in trainer.run():
        pass
    return trainer


@pytest.mark.parametrize("method", ["mean_teacher", "adversarial"])
def test_outputs_shapes_and_ranges(tiny_volume, method):
    trainer = _train(tiny_volume, method)
    C = trainer.num_classes
    p = predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=4, keep_probabilities=True)
    shape = tiny_volume.image.shape
    assert p.labels.shape == shape and p.labels.dtype == np.uint8 and p.labels.max() < C
    assert p.confidence.shape == shape and p.confidence.dtype == np.float32
    assert p.confidence.min() >= 1 / C - 1e-4 and p.confidence.max() <= 1 + 1e-5
    assert 0 <= p.entropy.min() and p.entropy.max() <= np.log(C) + 1e-4
    assert p.uncertainty_kind == "mutual_information" and p.uncertainty.min() >= 0
    assert p.uncertainty.max() <= p.entropy.max() + 1e-4  # MI is bounded by the predictive entropy
    assert p.probabilities.shape == (C, *shape) and p.probabilities.dtype == np.uint8
    np.testing.assert_allclose(p.probabilities.sum(0), 255, atol=C)
    if method == "mean_teacher":
        assert p.disagreement is not None and 0 <= p.disagreement.min() and p.disagreement.max() <= 1
        assert p.discriminator_confidence is None
    else:
        assert p.discriminator_confidence is not None
        assert 0 <= p.discriminator_confidence.min() and p.discriminator_confidence.max() <= 1
    assert len(p.slice_scores) == tiny_volume.num_slices


def test_suggestions_exclude_annotated_and_spread(tiny_volume):
    trainer = _train(tiny_volume, "supervised", steps=5)
    p = predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=2)
    assert p.suggestions and not set(p.suggestions) & set(tiny_volume.annotated)


def test_rank_slices_keeps_distance():
    scores = np.array([0, 9, 8.9, 8.8, 1, 7, 0, 0, 0, 5], float)
    picked = rank_slices(scores, exclude=[7], count=3, min_gap=2)
    assert picked == [1, 3, 5]  # 2 is next to 1; 6..8 are next to the annotated 7
    assert rank_slices(scores, exclude=[7], count=20, min_gap=2)[:4] == [1, 3, 5, 9]
    assert 7 not in rank_slices(scores, exclude=[7], count=20, min_gap=2)


def test_other_axis_maps_back_to_volume_grid(tiny_volume):
    from napari_sslseg.data import Volume

    vol = Volume(tiny_volume.image, labels=tiny_volume.labels, axis=2, annotated=[8, 16])
    trainer = _train(vol, "supervised", steps=3)
    p = predict_volume(trainer.segmentation_model(), vol, mc_passes=0)
    assert p.labels.shape == vol.image.shape and p.axis == 2 and len(p.slice_scores) == 32
    assert p.uncertainty_kind == "entropy"


def test_partial_prediction_only_requested_slices(tiny_volume):
    trainer = _train(tiny_volume, "supervised", steps=3)
    p = predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=0, slices=[3, 5])
    assert p.slices == [3, 5]
    assert p.confidence[3].min() > 0 and p.confidence[0].max() == 0


def test_last_block_sampler_is_mc_dropout_of_the_last_block():
    """A sample equals the whole network run with only the last dropout sampling, same random mask."""
    import torch

    from napari_sslseg.networks import LastBlockSampler, build_unet

    net = build_unet(3, width=8, dropout=0.3).eval()
    x = torch.randn(2, 1, 32, 48)
    assert LastBlockSampler.supports(net)
    sampler = LastBlockSampler(net)
    with torch.no_grad():
        torch.testing.assert_close(sampler.forward(x), net(x))  # the deterministic pass is unchanged
        torch.manual_seed(3)
        ours = sampler.sample()
        sampler.dropout.train(True)  # only the last block's dropout samples
        torch.manual_seed(3)
        reference = net(x)
        sampler.dropout.train(False)
        torch.manual_seed(4)
        other = sampler.sample()
    torch.testing.assert_close(ours, reference)
    assert not torch.allclose(ours, other)  # the passes differ


@pytest.mark.parametrize("scope", ["last", "all"])
def test_mc_scopes_give_uncertainty(tiny_volume, scope):
    trainer = _train(tiny_volume, "supervised")
    p = predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=4, mc_scope=scope)
    assert p.uncertainty_kind == "mutual_information"
    assert p.uncertainty.max() > 0 and p.uncertainty.min() >= 0
    assert p.uncertainty.max() <= p.entropy.max() + 1e-4
    np.testing.assert_array_equal(p.labels, predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=0).labels)
    with pytest.raises(ValueError, match="mc_scope"):
        predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=1, mc_scope="middle")
