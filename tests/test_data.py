"""Annotated slices, axis choice, validation of images and labels, lazy sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sslseg.data import SlicePool, Volume, annotated_slices, default_axis
from napari_sslseg.errors import InputError
from napari_sslseg.io import read_volume

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL


def test_default_axis_is_coarsest_else_first():
    assert default_axis((6.5, 0.78, 0.78)) == 0
    assert default_axis((0.7, 3.0, 0.7)) == 1
    assert default_axis((1.0, 1.0, 1.0)) == 0


def test_annotated_slices_along_each_axis():
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1, 2, 3] = 1
    labels[3, 4, 5] = 2
    assert annotated_slices(labels, 0) == [1, 3]
    assert annotated_slices(labels, 1) == [2, 4]
    assert annotated_slices(labels, 2) == [3, 5]


def test_real_anisotropic_case_uses_coarse_axis():
    image, geom = read_volume(BRAIN1_IMAGE)
    labels, _ = read_volume(BRAIN1_LABEL)
    v = Volume(image, geom.spacing_zyx, labels)
    assert v.axis == 0  # 6.5 mm between slices
    assert v.annotated == annotated_slices(labels, 0) and len(v.annotated) == 7


def test_explicit_list_marks_background_slice(tiny_volume):
    v = Volume(tiny_volume.image, labels=tiny_volume.labels, annotated=[0, 2, 6])
    assert v.annotated == [0, 2, 6]  # slice 0 holds only background, still annotated
    assert 0 not in v.unannotated
    with pytest.raises(InputError, match="outside 0..11"):
        Volume(tiny_volume.image, labels=tiny_volume.labels, annotated=[12])


def test_several_volumes_pool(tiny_volume):
    unlabelled = Volume(tiny_volume.image[:, ::-1].copy(), name="other")
    pool = SlicePool([tiny_volume, unlabelled])
    assert pool.labelled == [(0, 2), (0, 6), (0, 10)]
    assert len(pool.unlabelled) == 9 + 12
    assert pool.num_classes() == 2
    x, y = pool.image((0, 2)), pool.label((0, 2))
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (1, 32, 32) and int(y.max()) == 1


def test_inplane_spacing_brought_to_common(tiny_volume):
    coarse = Volume(tiny_volume.image[:, ::2, ::2].copy(), spacing=(1.0, 2.0, 2.0), axis=0, name="coarse")
    pool = SlicePool([tiny_volume, coarse])
    assert tuple(pool.image((1, 0)).shape) == (1, 32, 32)


def test_user_arrays_never_changed(tiny_volume):
    image, labels = tiny_volume.image.copy(), tiny_volume.labels.copy()
    pool = SlicePool([tiny_volume])
    for item in pool.labelled:
        pool.image(item)
        pool.label(item)
    np.testing.assert_array_equal(tiny_volume.image, image)
    np.testing.assert_array_equal(tiny_volume.labels, labels)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.full((12, 32, 32), 0.5, np.float32), "fractional"),
        (np.full((12, 32, 32), -1, np.int16), "negative"),
        (np.full((12, 32, 32), 300, np.int16), "above the largest allowed"),
        (np.zeros((12, 32, 31), np.uint8), "must share a grid"),
    ],
)
def test_bad_labels(tiny_volume, labels, message):
    with pytest.raises(InputError, match=message):
        Volume(tiny_volume.image, labels=labels)


def test_float_labels_with_whole_values_are_taken():
    image = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    labels = np.zeros((4, 8, 8), np.float32)
    labels[1, 2:4, 2:4] = 2.0
    v = Volume(image, labels=labels)
    assert v.labels.dtype == np.uint8 and v.annotated == [1]


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((4, 8, 8), np.nan, np.float32), "NaN or infinite"),
        (np.where(np.eye(8)[None], np.inf, 1.0).repeat(4, 0).astype(np.float32), "NaN or infinite"),
        (np.full((4, 8, 8), 7, np.int16), "constant"),
        (np.ones((8, 8)), "single 2D slice"),
        (np.ones((1, 8, 8)), "single 2D slice"),
        (np.ones((2, 4, 8, 8)), "4 dimensions"),
    ],
)
def test_bad_images(image, message):
    with pytest.raises(InputError, match=message):
        Volume(image)


def test_no_annotated_slice(tiny_volume):
    v = Volume(tiny_volume.image, labels=np.zeros_like(tiny_volume.labels))
    with pytest.raises(InputError, match="No annotated slice"):
        SlicePool([v])


def test_normalisation_is_robust_and_float32(tiny_volume):
    s = tiny_volume.stats
    x = tiny_volume.image_slice(6)
    assert x.dtype == np.float32
    assert s.low < s.high and s.std > 0
    assert abs(float(tiny_volume.stats.apply(tiny_volume.image).mean())) < 0.1
