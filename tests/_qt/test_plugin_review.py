"""Complete labels, background in bulk, the keys and rejection, in a real viewer on the Colin27 sample."""

from __future__ import annotations

import numpy as np
import pytest

from .test_plugin_widget import _train, setup  # noqa: F401  (the fixture)

#: The sample's painted slices along axis 0.
PAINTED = [50, 64, 77, 91]


def _press(viewer, key: str) -> None:
    """What pressing ``key`` in the viewer does: its binding in the viewer's keymap."""
    action = {str(k).lower(): f for k, f in viewer.keymap.items()}[key]
    action(viewer)


def _annotated(panel) -> list[int]:
    return panel.data.volumes(panel.data.pairs())[0].annotated


@pytest.mark.slow
def test_complete_labels_count_empty_slices_as_annotated(setup, qtbot):
    viewer, panel = setup
    data = panel.data
    assert _annotated(panel) == PAINTED and data.shown.value.startswith("Annotated (4 of ")
    n = viewer.layers["colin27 T1"].data.shape[0]

    data.complete.value = "every slice"
    assert _annotated(panel) == list(range(n)) and data.shown.value == f"Annotated ({n} of {n}): 0–{n - 1}"

    data.complete.value = "a range"
    data.first.value, data.last.value = 20, 30
    assert _annotated(panel) == [*range(20, 31), *PAINTED]
    assert data.shown.value == f"Annotated (15 of {n}): 20–30, 50, 64, 77, 91"

    data.complete.value = "slices I visited"
    panel.review.go_to_slice(3)
    panel.review.go_to_slice(90)
    assert {3, 90} <= set(_annotated(panel))

    # a bulk background mark belongs to these layers, whatever the mode
    data.complete.value = "painted slices"
    data.first.value, data.last.value = 100, 104
    data.background_range.native.click()
    assert _annotated(panel) == [*PAINTED, 100, 101, 102, 103, 104]
    assert data.shown.value == f"Annotated (9 of {n}): 50, 64, 77, 91, 100–104"

    # training takes them: the empty slices are taught as background
    _train(qtbot, panel, steps=1, finish=True)
    labelled = sorted(s for _, s in panel.trainer.pool.labelled)
    assert labelled == [*PAINTED, 100, 101, 102, 103, 104]
    assert not panel.trainer.pool.label((0, 102)).any()


@pytest.mark.slow
def test_keys_train_stop_walk_reject_and_accept(setup, qtbot):
    viewer, panel = setup
    labels = viewer.layers["annotations"]
    before = labels.data.copy()
    for key in "artnu":  # documented in the panel
        assert f"{key} " in panel.review.box.findChildren(type(panel.review.legend.native))[-1].text()
    panel.training.settings["steps"].value = 5000
    panel.training.settings["preview_every"].value = 2
    _press(viewer, "t")
    assert panel.running
    qtbot.waitUntil(lambda: panel.review.suggestions.count() > 0, timeout=90_000)  # a preview
    _press(viewer, "t")
    qtbot.waitUntil(lambda: not panel.running, timeout=60_000)
    assert panel.trainer.step < 5000

    _press(viewer, "n")
    first = panel.review.suggestions.item(0).data(0x0100)
    assert panel.review.current_slice() == first
    _press(viewer, "r")
    session = panel.target()[2]
    assert session.rejected == {first} and not viewer.layers["pseudo-labels"].data[first].any()

    # the rejected slice leaves the unlabelled pool of the next training
    _train(qtbot, panel, steps=1, finish=True)
    pool = panel.trainer.pool
    assert (0, first) not in pool.unlabelled and len(pool.unlabelled) + len(pool.labelled) == pool.volumes[0].num_slices - 1

    _press(viewer, "a")  # accepting it after all makes it annotated, no longer rejected
    np.testing.assert_array_equal(labels.data[first], session.prediction.labels[first])
    assert session.rejected == set()
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_closing_the_panel_unbinds_its_keys(setup):
    viewer, panel = setup
    assert {"A", "R", "T", "N", "U"} <= {str(k) for k in viewer.keymap}
    panel.close_panel()
    assert not {"A", "R", "T", "N", "U"} & {str(k) for k in viewer.keymap}
