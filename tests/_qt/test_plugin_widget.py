"""The training panel in a real viewer: tiny trainings on the Colin27 sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sslseg._qt.panel import TrainingPanel
from napari_sslseg.training import Trainer

#: Small enough for a shared 2-core CPU: seconds per training.
TINY = {"patch": 64, "batch_labelled": 2, "batch_unlabelled": 2, "threads": 1, "eval_every": 5, "augment": False}


@pytest.fixture
def setup(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setattr("napari_sslseg._qt.panel.RUNS", tmp_path / "runs")  # saved trainings
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sslseg", "colin27")
    _, panel = viewer.window.add_plugin_dock_widget("napari-sslseg", "Semi-supervised segmentation")
    assert isinstance(panel, TrainingPanel)
    for name, value in TINY.items():
        panel.settings[name].value = value
    panel.settings["width"].value = 8
    yield viewer, panel
    panel.shutdown()


def _train(qtbot, panel, steps, preview_every=0, timeout=90_000):
    panel.settings["steps"].value = steps
    panel.settings["preview_every"].value = preview_every
    panel.train()
    assert panel.session is not None, "training did not start"
    return panel.session


def test_training_shows_results_for_review(setup, qtbot, tmp_path):
    viewer, panel = setup
    image, labels = viewer.layers["colin27 T1"], viewer.layers["annotations"]
    assert panel.image.value is image and panel.labels.value is labels and panel.axis.value == 0
    before = labels.data.copy()
    session = _train(qtbot, panel, steps=10, preview_every=5)
    qtbot.waitUntil(lambda: not session.running, timeout=90_000)
    assert panel.trainer.step == 10

    # result layers on the image's grid, the user's labels untouched
    for name in ("prediction", "pseudo-labels", "confidence", "uncertainty"):
        layer = viewer.layers[name]
        assert layer.data.shape == image.data.shape
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert viewer.layers["uncertainty"].blending == "additive"
    np.testing.assert_array_equal(labels.data, before)
    assert panel.plot.losses["supervised"][0]

    # suggestions: a click moves the viewer to that slice
    assert panel.suggestions.count() > 0
    item = panel.suggestions.item(1)
    slice_ = item.data(0x0100)  # Qt.UserRole
    panel.suggestions.itemClicked.emit(item)
    assert panel.current_slice() == slice_
    assert slice_ not in (14, 26, 38, 50)
    visible = viewer.layers["uncertainty"].visible
    panel.toggle_uncertainty()
    assert viewer.layers["uncertainty"].visible is not visible

    # accept: only that slice changes, in one undoable step
    prediction = panel.last_prediction.labels
    panel.accept()
    changed = np.flatnonzero((labels.data != before).any(axis=(1, 2))).tolist()
    assert changed == [slice_] or (changed == [] and not prediction[slice_].any())
    np.testing.assert_array_equal(labels.data[slice_], prediction[slice_])
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)

    # reject clears the pseudo-labels of that slice only
    pseudo = viewer.layers["pseudo-labels"]
    pseudo.data[slice_ + 1] = 1
    panel.reject()
    assert not pseudo.data[slice_].any() and pseudo.data[slice_ + 1].all()

    # save, load, predict another image layer in a worker
    path = tmp_path / "model.pt"
    panel.save_model(str(path))
    assert path.exists()
    panel.model = None
    panel.load_model(str(path))
    other = viewer.add_image(image.data[:, ::-1].copy(), name="other", scale=image.scale, translate=image.translate)
    worker = panel.predict(other)
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert viewer.layers["prediction (other)"].data.shape == other.data.shape


def test_pause_paint_and_stop(setup, qtbot):
    viewer, panel = setup
    labels = viewer.layers["annotations"]
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 2, timeout=60_000)
    panel.toggle_pause()
    qtbot.waitUntil(lambda: panel.status.value.startswith("Paused"), timeout=30_000)
    step = panel.trainer.step
    qtbot.wait(400)
    assert panel.trainer.step == step and session.running

    # paint a new slice: after the debounce the engine counts it as annotated
    assert 30 not in panel.annotated[0]
    labels.paint((30, 44, 48), 2)
    qtbot.waitUntil(lambda: 30 in panel.annotated[0], timeout=10_000)
    assert 30 in panel.trainer.pool.volumes[0].annotated
    assert panel.trainer.pool.volumes[0].labels is not labels.data  # the engine holds a copy

    # a slice with nothing to paint: marked as background, it counts as annotated
    panel.go_to_slice(62)
    assert 62 not in panel.annotated[0]
    panel.mark_background()
    qtbot.waitUntil(lambda: 62 in panel.annotated[0], timeout=10_000)
    assert 30 in panel.annotated[0] and not labels.data[62].any()  # the user's labels untouched

    panel.toggle_pause()
    panel.stop()
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    assert step <= panel.trainer.step < 5000
    assert panel.train_button.enabled


def test_worker_exception_is_a_notification(setup, qtbot, monkeypatch):
    viewer, panel = setup
    errors = []
    monkeypatch.setattr("napari_sslseg._qt.panel.show_error", errors.append)

    def broken(self):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(Trainer, "train_step", broken)
    names = [layer.name for layer in viewer.layers]
    data = [layer.data.copy() for layer in viewer.layers]
    session = _train(qtbot, panel, steps=10)
    qtbot.waitUntil(lambda: not session.running, timeout=30_000)
    assert errors and "out of memory, say" in errors[0]
    assert [layer.name for layer in viewer.layers] == names
    for layer, before in zip(viewer.layers, data):
        np.testing.assert_array_equal(layer.data, before)
    assert panel.train_button.enabled


def test_input_errors_are_notifications(setup, monkeypatch):
    viewer, panel = setup
    errors = []
    monkeypatch.setattr("napari_sslseg._qt.panel.show_error", errors.append)
    viewer.add_labels(np.zeros(viewer.layers["colin27 T1"].data.shape, np.uint8), name="empty")
    panel.labels.value = viewer.layers["empty"]
    panel.train()
    assert panel.session is None and "annotated slice" in errors[0]
    panel.load_model(str(viewer.layers["colin27 T1"].metadata and __file__))
    assert len(errors) == 2


def test_closing_the_panel_stops_training(setup, qtbot):
    viewer, panel = setup
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 1, timeout=60_000)
    panel.shutdown()
    assert not session.worker.is_running
    assert panel.trainer.step < 5000


def test_stop_saves_and_the_panel_offers_to_continue(setup, qtbot):
    viewer, panel = setup
    assert not panel.resume.enabled  # nothing saved for this image yet
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 2, timeout=60_000)
    panel.stop()
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    from napari_sslseg import checkpoint
    from napari_sslseg._qt.panel import saved_run

    path = saved_run(viewer.layers["colin27 T1"])
    step = checkpoint.load(path)["step"]
    assert step == panel.trainer.step >= 2
    assert panel.resume.enabled
    panel.method.value = "supervised"  # a resumed run keeps the saved method
    panel.resume.value = True
    session = _train(qtbot, panel, steps=step + 2)
    assert panel.trainer.step == step and panel.method.value == "mean_teacher"
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    assert checkpoint.load(path)["step"] == step + 2


def test_an_error_and_closing_save_the_training(setup, qtbot, monkeypatch):
    viewer, panel = setup
    errors = []
    monkeypatch.setattr("napari_sslseg._qt.panel.show_error", errors.append)
    from napari_sslseg import checkpoint
    from napari_sslseg._qt.panel import saved_run
    from napari_sslseg.methods.mean_teacher import MeanTeacher

    original = MeanTeacher.unlabelled_loss

    def fails_at_step_3(self, ctx):
        if ctx.step == 2:
            raise RuntimeError("out of memory, say")
        return original(self, ctx)

    monkeypatch.setattr(MeanTeacher, "unlabelled_loss", fails_at_step_3)
    path = saved_run(viewer.layers["colin27 T1"])
    session = _train(qtbot, panel, steps=10)
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    assert errors == [f"Training failed at step 3: RuntimeError: out of memory, say; the model of step 2 is saved in "
                      f"{path}, training can resume from it. Your layers are unchanged."]
    assert checkpoint.load(path)["step"] == 2 and panel.resume.enabled

    monkeypatch.setattr(MeanTeacher, "unlabelled_loss", original)
    path.unlink()
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 1, timeout=60_000)
    panel.shutdown()  # what closing the viewer does
    assert checkpoint.load(path)["step"] == panel.trainer.step >= 1


def test_advanced_settings_out_of_range_are_refused(setup, monkeypatch):
    viewer, panel = setup
    errors = []
    monkeypatch.setattr("napari_sslseg._qt.panel.show_error", errors.append)
    # the spin boxes take their bounds from the config: patch 16, batch 0, width 0, dropout 1.5 cannot be typed
    bounds = {name: (panel.settings[name].min, panel.settings[name].max) for name in ("patch", "batch_labelled", "width", "dropout")}
    assert bounds == {"patch": (32, 10**7), "batch_labelled": (1, 10**7), "width": (1, 10**7), "dropout": (0.0, 1.0)}
    panel.settings["patch"].value = 40  # within the bounds, and still wrong
    panel.settings["dropout"].value = 1.0
    panel.train()
    assert panel.session is None
    assert errors == ["patch = 40 is not allowed: it takes a whole number >= 32 and a multiple of 16.\n"
                      "dropout = 1.0 is not allowed: it takes a number >= 0 and < 1."]


def test_a_0_255_mask_offers_two_classes(setup):
    viewer, panel = setup
    mask = (viewer.layers["annotations"].data > 0).astype(np.uint8) * 255
    panel.labels.value = viewer.add_labels(mask, name="mask")
    assert panel.class_names.value == "background, class 1"
