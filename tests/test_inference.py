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
    p = predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=4, keep_probabilities=True,
                       costly_maps=True)
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
    # a slice's score is its uncertainty weighted by foreground probability: never above its mean uncertainty
    mean_u = np.moveaxis(p.uncertainty, p.axis, 0).reshape(tiny_volume.num_slices, -1).mean(1)
    assert np.all(p.slice_scores >= 0) and np.all(p.slice_scores <= mean_u * 1.05 + 1e-6)


def test_the_student_predicts_and_the_teacher_only_disagrees(tiny_volume):
    """The EMA teacher lags a student still learning fast: labels come from the student; the
    teacher shows up only in the disagreement map."""
    import dataclasses

    import torch

    trainer = _train(tiny_volume, "mean_teacher")
    model = trainer.segmentation_model()
    with torch.no_grad():  # a teacher that disagrees everywhere: it always says class 0
        for p in model.teacher.parameters():
            p.zero_()
        model.teacher.final_conv.bias[0] = 10.0
    with_teacher = predict_volume(model, tiny_volume, mc_passes=0, costly_maps=True)
    student_only = predict_volume(dataclasses.replace(model, method=None), tiny_volume, mc_passes=0)
    np.testing.assert_array_equal(with_teacher.labels, student_only.labels)
    # the teacher's extra pass runs only when its map is asked for
    calls = []
    handle = model.teacher.register_forward_hook(lambda *a: calls.append(1))
    assert predict_volume(model, tiny_volume, mc_passes=2).disagreement is None and not calls
    handle.remove()
    assert (student_only.labels > 0).any()
    fg = with_teacher.labels > 0  # where the student sees a structure the teacher says background
    assert with_teacher.disagreement[fg].min() > 0.5


def test_suggestions_exclude_annotated_and_spread(tiny_volume):
    trainer = _train(tiny_volume, "supervised", steps=5)
    p = predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=2)
    assert p.suggestions and not set(p.suggestions) & set(tiny_volume.annotated)


def test_rank_slices_prefers_uncertainty_far_from_annotations():
    # the most uncertain slice (11) sits beside an annotated one (10); a lower peak (30) lies far from both
    scores = np.full(41, 0.1)
    scores[11], scores[30] = 1.0, 0.8
    picked = rank_slices(scores, exclude=[0, 10], count=3, reach=2)
    assert picked[0] == 30
    assert 11 in picked  # still worth a look, after the far peak
    assert not {0, 10} & set(picked)


def test_rank_slices_spreads_picks_and_skips_unknown():
    scores = np.ones(64)
    scores[40:44] = np.nan  # not predicted: never suggested, their uncertainty is guessed
    picked = rank_slices(scores, exclude=[0], count=5, reach=4)
    assert len(picked) == len(set(picked)) == 5
    assert not set(picked) & {0, 40, 41, 42, 43}
    gaps = np.diff(sorted([0] + picked))
    assert gaps.min() >= 6  # no two suggestions (or a suggestion and the annotation) side by side
    assert rank_slices(scores, exclude=range(64), count=5) == []
    assert len(rank_slices(scores, exclude=[], count=100)) == 60  # every known slice, once


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
