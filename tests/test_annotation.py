"""The annotation session, without a viewer: which slices count as annotated, review with undo,
coordinates, what goes to the trainer; and the core honouring complete labels and rejections."""

from __future__ import annotations

import types

import numpy as np
import pytest

from napari_sslseg.annotation import (
    AnnotationSession,
    SliceAxis,
    complete_slices,
    parse_range,
    slice_ranges,
)
from napari_sslseg.cli import main
from napari_sslseg.data import SlicePool
from napari_sslseg.errors import InputError

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL


def _labels():
    labels = np.zeros((10, 8, 8), np.uint8)
    labels[3, 2:5, 2:5] = 1
    labels[6, 1:3, 1:3] = 2
    return labels


def _session(**kw):
    return AnnotationSession(10, SliceAxis(0, scale=2.5, translate=-5.0), **kw)


def test_ranges_and_the_compact_list():
    assert parse_range("2:5", 10) == (2, 5)
    assert parse_range(":", 10) == (0, 9) and parse_range("4:", 10) == (4, 9)
    with pytest.raises(InputError, match="within the slices 0..9"):
        parse_range("3:12", 10)
    with pytest.raises(InputError, match="A:B"):
        parse_range("three", 10)
    assert slice_ranges([9, 1, 2, 3, 7, 10]) == "1–3, 7, 9–10"
    assert slice_ranges([]) == ""


def test_which_slices_count_as_annotated_in_each_mode():
    labels, session = _labels(), _session()
    assert session.annotated(labels) == [3, 6]  # painted only
    assert session.mark_background([8, 11]) == [8]  # 11 lies outside the volume
    assert session.annotated(labels) == [3, 6, 8]
    session.set_complete("a range", (5, 2))
    assert session.annotated(labels) == [2, 3, 4, 5, 6, 8]
    for s in (0, 9, 42):
        session.visit(s)
    session.set_complete("slices I visited")
    assert session.annotated(labels) == [0, 3, 6, 8, 9]
    session.set_complete("every slice")
    assert session.annotated(labels) == list(range(10))
    assert complete_slices(labels, 0, range(0, 2), [9]) == [0, 1, 3, 6, 9]
    with pytest.raises(InputError, match="Unknown complete-labels mode"):
        session.set_complete("most slices")


def test_slice_and_world_coordinates():
    grid = SliceAxis(1, scale=2.5, translate=-5.0)
    assert grid.world(4) == 5.0 and grid.index(5.0) == 4 and grid.index(6.2) == 4
    assert all(grid.index(grid.world(i)) == i for i in range(20))
    assert _session().slices_around(0, 2) == [0, 1, 2] and _session().slices_around(9, 1) == [8, 9]


def test_the_volume_and_the_update_for_the_trainer_are_copies_with_every_mark():
    labels, session = _labels(), _session()
    session.mark_background([0])
    session.set_complete("a range", (7, 9))
    image = np.random.default_rng(0).normal(size=labels.shape).astype(np.float32)
    volume = session.volume(image, labels, (2.5, 1.0, 1.0), "v")
    assert volume.annotated == [0, 3, 6, 7, 8, 9] and volume.axis == 0
    assert volume.labels is not labels and volume.image is not image
    labels[5, 0, 0] = 1
    update = session.update(labels)
    assert update.labels is not labels and update.annotated == [0, 3, 5, 6, 7, 8, 9] and update.rejected == []


def test_accept_and_reject_with_undo():
    labels, session = _labels(), _session()
    with pytest.raises(InputError, match="No prediction"):
        session.accept(labels, [4])
    predicted = np.zeros_like(labels)
    predicted[4:6] = 2
    session.prediction = types.SimpleNamespace(labels=predicted, axis=0)
    before = labels.copy()
    edit = session.accept(labels, [4, 5])
    assert edit.kind == "accept" and (labels[4:6] == 2).all()
    np.testing.assert_array_equal(labels[[0, 1, 2, 3, 6, 7, 8, 9]], before[[0, 1, 2, 3, 6, 7, 8, 9]])
    assert session.annotated(labels) == [3, 4, 5, 6]

    pseudo = predicted.copy()
    session.reject(pseudo, [5])
    assert not pseudo[5].any() and pseudo[4].all() and session.rejected == {5}
    assert session.update(labels).rejected == [5]
    session.undo(labels, pseudo)
    assert pseudo[5].all() and session.rejected == set()
    session.undo(labels, pseudo)
    np.testing.assert_array_equal(labels, before)
    assert session.undo(labels, pseudo) is None
    # accepting a rejected slice takes it back as annotated
    session.reject(None, [4])
    session.accept(labels, [4])
    assert session.rejected == set()
    with pytest.raises(InputError, match="do not match"):
        session.accept(np.zeros((10, 4, 4), np.uint8), [1])


def test_the_pool_honours_complete_labels_and_rejections(tiny_volume):
    # tiny_volume: 12 slices, a disc painted on slices 2, 6, 10
    session = AnnotationSession(12, SliceAxis(0))
    session.set_complete("a range", (0, 4))
    session.rejected = {8, 9}
    volume = session.volume(tiny_volume.image, tiny_volume.labels, tiny_volume.spacing)
    pool = SlicePool([volume])
    assert sorted(s for _, s in pool.labelled) == [0, 1, 2, 3, 4, 6, 10]
    assert sorted(s for _, s in pool.unlabelled) == [5, 7, 11]  # not the rejected 8 and 9
    assert not pool.label((0, 1)).any()  # an empty slice of the range is taught as background


def test_rejections_reach_a_running_trainer(tiny_volume):
    from napari_sslseg.config import TrainConfig
    from napari_sslseg.events import AnnotationsEvent
    from napari_sslseg.training import Trainer

    config = TrainConfig(steps=5, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=0, prior_weight=0)
    trainer = Trainer([tiny_volume], "mean_teacher", config)
    run = trainer.run()
    next(run)
    session = AnnotationSession(12, SliceAxis(0), rejected={4, 5})
    trainer.submit(session.update(tiny_volume.labels))
    assert isinstance(next(run), AnnotationsEvent)
    assert not {(0, 4), (0, 5)} & set(trainer.pool.unlabelled) and (0, 7) in trainer.pool.unlabelled
    run.close()


def test_cli_complete_and_a_range(tmp_path, capsys):
    """brain1's crop: 25 slices along axis 0, 6 of them painted; --complete counts all 25."""
    common = ["--method", "supervised", "--steps", "1", "--eval-every", "0", "-q"]
    assert main(["train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(tmp_path / "a"), "--complete", *common]) == 0
    assert "25 annotated slices (0 unannotated) along axis 0" in capsys.readouterr().out
    assert main(["train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(tmp_path / "b"), "--slices", "12",
                 "--annotated-range", "0:3", *common]) == 0
    assert "5 annotated slices (20 unannotated) along axis 0" in capsys.readouterr().out
    assert main(["train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(tmp_path / "c"),
                 "--annotated-range", "0:99", *common]) == 2
    assert "not within the slices 0..24" in capsys.readouterr().err
