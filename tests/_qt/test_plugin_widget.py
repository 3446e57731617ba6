"""The training panel in a real viewer: tiny trainings on the Colin27 sample."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sslseg._qt.panel import TrainingPanel
from napari_sslseg.config import DEFAULT_METHOD
from napari_sslseg.events import StepEvent
from napari_sslseg.training import Trainer

#: Small enough for a shared 2-core CPU: seconds per training.
TINY = {"patch": 64, "batch_labelled": 2, "batch_unlabelled": 2, "threads": 1, "eval_every": 5, "augment": False}


def _shown_errors(monkeypatch) -> list[str]:
    """The error notifications the panel shows from now on, in order."""
    errors: list[str] = []
    monkeypatch.setattr("napari_sslseg._qt.notify.show_error", errors.append)
    return errors


def _out_of_memory_at_every_step(monkeypatch, loop) -> None:
    """``loop``'s (a Trainer's or a Pretrainer's) every step fails as torch's out-of-memory would."""
    def broken(self):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(loop, "train_step", broken)


@pytest.fixture
def setup(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setattr("napari_sslseg._qt.training_widget.RUNS", tmp_path / "runs")  # saved trainings
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sslseg", "colin27")
    _, panel = viewer.window.add_plugin_dock_widget("napari-sslseg", "Semi-supervised segmentation")
    assert isinstance(panel, TrainingPanel)
    for name, value in TINY.items():
        panel.training.settings[name].value = value
    panel.training.settings["width"].value = 8
    yield viewer, panel
    panel.shutdown()


def _train(qtbot, panel, steps, preview_every=0, finish=False, timeout=90_000):
    """Start a training of ``steps``; with ``finish``, wait up to ``timeout`` ms for it to end."""
    panel.training.settings["steps"].value = steps
    panel.training.settings["preview_every"].value = preview_every
    panel.train()
    assert panel.session is not None, "training did not start"
    if finish:
        qtbot.waitUntil(lambda: not panel.session.running, timeout=timeout)
    return panel.session


@pytest.mark.slow
def test_training_shows_results_for_review(setup, qtbot, tmp_path):
    viewer, panel = setup
    image, labels = viewer.layers["colin27 T1"], viewer.layers["annotations"]
    assert panel.data.image.value is image and panel.data.labels.value is labels and panel.data.axis.value == 0
    before = labels.data.copy()
    _train(qtbot, panel, steps=10, preview_every=10, finish=True, timeout=90_000)  # one preview, at the end
    assert panel.trainer.step == 10

    # result layers on the image's grid, the user's labels untouched
    for name in ("prediction", "pseudo-labels", "confidence", "uncertainty"):
        layer = viewer.layers[name]
        assert layer.data.shape == image.data.shape
        np.testing.assert_allclose(layer.scale, image.scale)
        np.testing.assert_allclose(layer.translate, image.translate)
    assert viewer.layers["uncertainty"].blending == "additive"
    # hovering any labels layer names the class: the user's, the prediction and the pseudo-labels
    for name in ("annotations", "prediction", "pseudo-labels"):
        assert list(viewer.layers[name].features["class"])[2] == "putamen"
    np.testing.assert_array_equal(labels.data, before)
    assert panel.training.plot.losses["supervised"][0]

    # suggestions: a rank and a plain reason; a click moves the viewer to that slice
    assert panel.review.suggestions.count() > 0
    import re

    first = panel.review.suggestions.item(0).text()
    reason = r"(uncertain inside (caudate|putamen|pallidum|thalamus|hippocampus)|no structure predicted here, is one missing\?)"
    assert re.fullmatch(rf"1\. slice \d+: {reason}, \d+ slices? from your nearest annotation", first), first
    item = panel.review.suggestions.item(1)
    slice_ = item.data(0x0100)  # Qt.UserRole
    panel.review.suggestions.itemClicked.emit(item)
    assert panel.review.current_slice() == slice_
    from napari_sslseg._sample_data import ANNOTATED_SLICES

    assert slice_ not in ANNOTATED_SLICES  # the sample's painted slices are never suggested
    visible = viewer.layers["uncertainty"].visible
    panel.review.toggle_uncertainty()
    assert viewer.layers["uncertainty"].visible is not visible

    # accept: only that slice changes, in one undoable step
    prediction = panel.target()[2].prediction.labels
    panel.review.accept()
    changed = np.flatnonzero((labels.data != before).any(axis=(1, 2))).tolist()
    assert changed == [slice_] or (changed == [] and not prediction[slice_].any())
    np.testing.assert_array_equal(labels.data[slice_], prediction[slice_])
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)

    # reject clears the pseudo-labels of that slice only, and training stops learning from it there
    pseudo = viewer.layers["pseudo-labels"]
    pseudo.data[slice_ + 1] = 1
    panel.review.reject()
    assert not pseudo.data[slice_].any() and pseudo.data[slice_ + 1].all()
    assert panel.target()[2].rejected == {slice_}
    volume = panel.data.volumes(panel.data.pairs())[0]
    assert slice_ in volume.unannotated and slice_ not in volume.unlabelled
    # the legend names each class in its colour on the prediction
    assert all(name in panel.review.legend.value for name in ("caudate", "putamen", "pallidum", "thalamus", "hippocampus"))
    assert viewer.layers["prediction"].contour > 0

    # save, load, predict another image layer in a worker
    path = tmp_path / "model.pt"
    panel.models.save(str(path))
    assert path.exists()
    panel.models.model = None
    panel.models.load(str(path))
    other = viewer.add_image(image.data[:, ::-1].copy(), name="other", scale=image.scale, translate=image.translate)
    worker = panel.models.predict(other)
    assert panel.training.status.value == "Predicting other…"
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert viewer.layers["prediction (other)"].data.shape == other.data.shape
    qtbot.waitUntil(lambda: panel.training.status.value == "Predicted other: see the layer prediction (other).", timeout=5_000)


@pytest.mark.slow
def test_pause_paint_and_stop(setup, qtbot):
    viewer, panel = setup
    labels = viewer.layers["annotations"]
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 2, timeout=60_000)
    panel.toggle_pause()
    qtbot.waitUntil(lambda: panel.training.status.value.startswith("Paused"), timeout=30_000)
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
    panel.review.go_to_slice(62)
    assert 62 not in panel.annotated[0]
    panel.review.mark_background()
    qtbot.waitUntil(lambda: 62 in panel.annotated[0], timeout=10_000)
    assert 30 in panel.annotated[0] and not labels.data[62].any()  # the user's labels untouched

    panel.toggle_pause()
    panel.stop()
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    assert step <= panel.trainer.step < 5000
    assert panel.training.train_button.enabled


def test_worker_exception_is_a_notification(setup, qtbot, monkeypatch):
    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    _out_of_memory_at_every_step(monkeypatch, Trainer)
    names = [layer.name for layer in viewer.layers]
    data = [layer.data.copy() for layer in viewer.layers]
    _train(qtbot, panel, steps=10, finish=True, timeout=30_000)
    assert errors and "out of memory, say" in errors[0]
    assert [layer.name for layer in viewer.layers] == names
    for layer, before in zip(viewer.layers, data):
        np.testing.assert_array_equal(layer.data, before)
    assert panel.training.train_button.enabled


def test_input_errors_are_notifications(setup, monkeypatch):
    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    viewer.add_labels(np.zeros(viewer.layers["colin27 T1"].data.shape, np.uint8), name="empty")
    panel.data.labels.value = viewer.layers["empty"]
    panel.train()
    assert panel.session is None and "annotated slice" in errors[0]
    panel.models.load(__file__)  # a file that is not a model
    assert panel.models.model is None
    assert errors[1] == f"Cannot read {__file__}: not a model file, or truncated."


def test_closing_the_panel_stops_training(setup, qtbot):
    viewer, panel = setup
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 1, timeout=60_000)
    panel.shutdown()
    assert not session.worker.is_running
    assert panel.trainer.step < 5000


def test_stop_says_what_is_left_and_how_long_it_takes():
    from napari_sslseg._qt.training_widget import Timings
    from napari_sslseg.events import CheckpointEvent, EvalEvent, PreviewEvent, StepEvent

    now = [0.0]
    timings = Timings(clock=lambda: now[0])
    assert timings.stopping(True, False, True) == (
        "Stopping: the current step, final evaluation and save to go.")  # nothing timed: no number
    for t, event in [(0.0, StepEvent(10, 100, {}, {}, 1e-3, 0.5, 180.0)),  # 2 s a step
                     (3.0, EvalEvent(10, {}, 0.5)),  # 3 s of evaluation
                     (7.0, PreviewEvent(10, 0, None)),  # 4 s of prediction
                     (7.5, CheckpointEvent(10, "x.pt"))]:
        now[0] = t
        timings.on_event(event)
    assert timings.stopping(True, True, True) == (
        "Stopping: the current step, final evaluation, prediction and save to go, about 10 s.")
    assert timings.stopping(False, False, False) == "Stopping: final evaluation to go, about 3 s."  # paused
    timings.seconds.pop(EvalEvent)
    assert timings.stopping(True, False, True) == (
        "Stopping: the current step, final evaluation and save to go: about 2 s for the current step and save; "
        "final evaluation not timed yet.")


def test_stop_says_it_is_stopping_until_it_has_stopped(setup, qtbot):
    viewer, panel = setup
    panel.training.settings["eval_every"].value = 0  # the final evaluation is the run's first
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 2, timeout=60_000)
    seen = []  # the status after each event the panel handled
    session.worker.yielded.connect(lambda event: seen.append((type(event).__name__, panel.training.status.value)))
    panel.training.stop_button.native.click()
    step = panel.training.timings.seconds[StepEvent]  # measured
    about = f"about {step:.0f} s" if step >= 1 else "under a second"
    assert panel.training.status.value == (f"Stopping: the current step, final evaluation and save to go: {about} "
                                           "for the current step; final evaluation and save not timed yet.")
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    assert seen[-1][0] == "FinishedEvent" and seen[-1][1].startswith(f"Training stopped after {panel.trainer.step} steps")
    assert all(status.startswith("Stopping: ") for _, status in seen[:-1])  # the step that ended after Stop too
    assert {"EvalEvent", "CheckpointEvent"} <= {kind for kind, _ in seen}  # what it said was left


@pytest.mark.slow
def test_stop_saves_and_the_panel_offers_to_continue(setup, qtbot):
    viewer, panel = setup
    assert not panel.training.resume.enabled  # nothing saved for this image yet
    session = _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 2, timeout=60_000)
    panel.stop()
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    from napari_sslseg import checkpoint
    from napari_sslseg._qt.training_widget import saved_run

    path = saved_run(viewer.layers["colin27 T1"])
    step = checkpoint.load(path)["step"]
    assert step == panel.trainer.step >= 2
    assert panel.training.resume.enabled
    panel.method.choice.value = "supervised"  # a resumed run keeps the saved method
    panel.training.resume.value = True
    session = _train(qtbot, panel, steps=step + 2)
    assert panel.trainer.step == step and panel.method.choice.value == DEFAULT_METHOD
    qtbot.waitUntil(lambda: not session.running, timeout=60_000)
    assert checkpoint.load(path)["step"] == step + 2


@pytest.mark.slow
def test_an_error_and_closing_save_the_training(setup, qtbot, monkeypatch):
    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    from napari_sslseg import checkpoint
    from napari_sslseg._qt.training_widget import saved_run
    from napari_sslseg.methods.mean_teacher import MeanTeacher

    original = MeanTeacher.unlabelled_loss

    def fails_at_step_3(self, ctx):
        if ctx.step == 2:
            raise RuntimeError("out of memory, say")
        return original(self, ctx)

    monkeypatch.setattr(MeanTeacher, "unlabelled_loss", fails_at_step_3)
    panel.method.choice.value = "mean_teacher"  # the method whose loss fails
    path = saved_run(viewer.layers["colin27 T1"])
    _train(qtbot, panel, steps=10, finish=True, timeout=60_000)
    assert errors == [f"Training failed at step 3: RuntimeError: out of memory, say; the model of step 2 is saved in "
                      f"{path}, training can resume from it. Your layers are unchanged."]
    assert checkpoint.load(path)["step"] == 2 and panel.training.resume.enabled

    monkeypatch.setattr(MeanTeacher, "unlabelled_loss", original)
    path.unlink()
    _train(qtbot, panel, steps=5000)
    qtbot.waitUntil(lambda: panel.trainer.step >= 1, timeout=60_000)
    panel.shutdown()  # what closing the viewer does
    assert checkpoint.load(path)["step"] == panel.trainer.step >= 1


def test_advanced_settings_out_of_range_are_refused(setup, monkeypatch):
    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    # the spin boxes take their bounds from the config: patch 16, batch 0, width 0, dropout 1.5 cannot be typed
    bounds = {name: (panel.training.settings[name].min, panel.training.settings[name].max) for name in ("patch", "batch_labelled", "width", "dropout")}
    assert bounds == {"patch": (32, 10**7), "batch_labelled": (1, 10**7), "width": (1, 10**7), "dropout": (0.0, 1.0)}
    panel.training.settings["patch"].value = 40  # within the bounds, and still wrong
    panel.training.settings["dropout"].value = 1.0
    panel.train()
    assert panel.session is None
    assert errors == ["patch = 40 is not allowed: it takes a whole number >= 32 and a multiple of 16.\n"
                      "dropout = 1.0 is not allowed: it takes a number >= 0 and < 1."]


def test_a_0_255_mask_offers_two_classes(setup):
    viewer, panel = setup
    mask = (viewer.layers["annotations"].data > 0).astype(np.uint8) * 255
    panel.data.labels.value = viewer.add_labels(mask, name="mask")
    assert panel.data.class_names.value == "background, class 1"


def _dock_of(panel):
    from qtpy.QtWidgets import QDockWidget

    widget = panel
    while widget is not None and not isinstance(widget, QDockWidget):
        widget = widget.parent()
    return widget


def test_add_an_extra_volume(setup):
    viewer, panel = setup
    panel.data.add_extra.native.click()
    assert len(panel.data.extras) == 1
    row = panel.data.extras[0]
    row.extra_image.value = viewer.layers["colin27 T1"]
    row.extra_labels.value = viewer.layers["annotations"]
    pairs = panel.data.pairs()
    volumes = panel.data.volumes(pairs)
    assert len(volumes) == 2 and pairs[1] == (viewer.layers["colin27 T1"], viewer.layers["annotations"])
    row.remove_button.native.click()
    assert len(panel.data.extras) == 0


@pytest.mark.slow
def test_closing_the_dock_stops_training_and_leaves_the_viewer_alone(setup, qtbot):
    viewer, panel = setup
    session = _train(qtbot, panel, steps=5000, preview_every=2)
    qtbot.waitUntil(lambda: panel.trainer.step >= 1, timeout=60_000)
    names = [layer.name for layer in viewer.layers]
    _dock_of(panel).title.close_button.click()  # the dock's x
    assert panel.closed and not session.worker.is_running and not session.running
    assert panel.trainer.step < 5000
    qtbot.wait(1500)  # events queued before the close add nothing
    assert [layer.name for layer in viewer.layers] == names

    _, reopened = viewer.window.add_plugin_dock_widget("napari-sslseg", "Semi-supervised segmentation")
    assert reopened is not panel and reopened.training.train_button.enabled and reopened.session is None
    reopened.shutdown()


def test_background_marks_belong_to_the_layers_they_were_made_on(setup, monkeypatch):
    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    image, labels = viewer.layers["colin27 T1"], viewer.layers["annotations"]
    panel.review.go_to_slice(120)
    panel.review.mark_background()
    assert panel.data.session(image, labels).background == {120}
    assert 120 in panel.data.volumes(panel.data.pairs())[0].annotated

    empty = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="new labels")
    panel.data.labels.value = empty
    assert panel.data.session(image, empty).background == set()
    panel.train()  # nothing annotated on this layer: refused, as if no slice were marked
    assert panel.session is None and "annotated slice" in errors[0]
    panel.data.labels.value = labels
    assert panel.data.session(image, labels).background == {120}


def test_loading_a_file_that_is_not_a_model_says_what_it_is(setup, monkeypatch, tmp_path):
    import torch

    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    path = tmp_path / "network.pt"
    torch.save(torch.nn.Conv3d(1, 2, 3), path)
    panel.models.load(str(path))
    assert panel.models.model is None
    assert errors == [f"{path} is not a napari-sslseg model: it is a PyTorch file holding Python objects "
                      "(torch.nn.modules.conv.Conv3d), a whole network saved by another program, say. It was not "
                      "opened: loading such objects could run code. Load a model saved by napari-sslseg (Save model…, "
                      "or the folder of 'napari-sslseg train')."]


@pytest.mark.slow
def test_result_layers_never_take_the_selection_or_the_mode(setup, qtbot):
    viewer, panel = setup
    labels = viewer.layers["annotations"]
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    session = _train(qtbot, panel, steps=2, preview_every=1)
    qtbot.waitUntil(lambda: "prediction" in viewer.layers, timeout=60_000)  # the first preview
    assert viewer.layers.selection.active is labels and labels.mode == "paint"
    qtbot.waitUntil(lambda: not session.running, timeout=90_000)  # the last preview updates the layers
    assert viewer.layers.selection.active is labels and set(viewer.layers.selection) == {labels}
    assert labels.mode == "paint"


def test_controls_have_labels_and_the_device_is_a_choice(setup):
    from magicgui.widgets import ComboBox
    from qtpy.QtWidgets import QLabel

    viewer, panel = setup
    shown = {label.text().rstrip(":") for label in panel.findChildren(QLabel) if label.isVisibleTo(panel)}
    assert {"pseudo-label confidence ≥", "slices either side", "predict on", "device"} <= shown
    device = panel.training.settings["device"]
    assert isinstance(device, ComboBox) and device.value == "auto"
    assert device.choices[:2] == ("auto", "cpu")
    assert panel.training.config().device == "auto"


def test_pretraining_runs_while_painting_and_training_starts_from_it(setup, qtbot):
    viewer, panel = setup
    assert not panel.training.pretrain.value and panel.pretraining.run is None  # off unless asked for
    panel.training.pretrain.native.click()
    run = panel.pretraining.run
    assert run is not None and run.image is viewer.layers["colin27 T1"]
    qtbot.waitUntil(lambda: run.pretrainer is not None and run.pretrainer.step >= 2, timeout=60_000)  # built in the worker
    qtbot.waitUntil(lambda: panel.training.status.value.startswith("Pre-training the network on colin27 T1 while you paint: step"),
                    timeout=10_000)
    assert run.worker.is_running
    panel.training.settings["steps"].value = 2
    panel.training.settings["preview_every"].value = 0
    panel.training.train_button.native.click()
    assert not run.worker.is_running  # stopped the moment Train was pressed: no step after it
    steps = panel.pretraining.state["step"]
    assert steps >= 2 and run.pretrainer is None  # its weights kept, its volume copy and optimiser let go
    assert f"Started from weights pre-trained (contrastive, {steps} steps)" in " ".join(panel.trainer.notes)
    qtbot.waitUntil(lambda: not panel.session.running, timeout=60_000)
    assert panel.training.status.value.startswith("Training completed after 2 steps")


def test_train_before_painting_is_refused_and_the_pretraining_goes_on(setup, qtbot, monkeypatch):
    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    viewer.add_labels(np.zeros(viewer.layers["colin27 T1"].data.shape, np.uint8), name="empty")
    panel.data.labels.value = viewer.layers["empty"]
    panel.training.pretrain.value = True
    run = panel.pretraining.run
    qtbot.waitUntil(lambda: run.pretrainer is not None and run.pretrainer.step >= 1, timeout=60_000)
    panel.training.train_button.native.click()
    assert errors and errors[-1].startswith("No annotated slice: paint at least one slice")
    assert not panel.running and panel.pretraining.run is run and run.worker.is_running  # it goes on while the user paints
    step = run.pretrainer.step
    qtbot.waitUntil(lambda: run.pretrainer.step > step, timeout=60_000)


def test_pretraining_follows_the_image_and_stops_with_the_panel(setup, qtbot):
    viewer, panel = setup
    panel.training.pretrain.value = True
    first = panel.pretraining.run
    qtbot.waitUntil(lambda: first.pretrainer is not None and first.pretrainer.step >= 1, timeout=60_000)
    other = viewer.add_image(viewer.layers["colin27 T1"].data[60:100, 40:140, 40:140], name="other")
    panel.data.image.value = other
    second = panel.pretraining.run
    assert second is not first and second.image is other
    qtbot.waitUntil(lambda: not first.worker.is_running, timeout=30_000)  # the first leaves after its step
    qtbot.waitUntil(lambda: second.pretrainer is not None and second.pretrainer.step >= 1, timeout=60_000)
    qtbot.waitUntil(lambda: "on other" in panel.training.status.value, timeout=10_000)  # its event reaches the GUI thread
    _dock_of(panel).title.close_button.click()  # the dock's x
    assert panel.closed and not second.worker.is_running


def test_a_pretraining_error_is_a_notification_and_gives_no_weights(setup, qtbot, monkeypatch):
    from napari_sslseg.pretrain import Pretrainer

    viewer, panel = setup
    errors = _shown_errors(monkeypatch)
    _out_of_memory_at_every_step(monkeypatch, Pretrainer)
    panel.training.pretrain.value = True
    qtbot.waitUntil(lambda: bool(errors), timeout=30_000)
    assert errors == ["Pre-training failed: RuntimeError: out of memory, say. Training will start from scratch."]
    assert panel.training.status.value == "Pre-training failed; Train starts from scratch."
    assert panel.pretraining.finish() is None  # Train gets no weights: it starts from scratch


def test_a_settings_form_explains_each_field_as_the_command_line_does(qtbot):
    from napari_sslseg._qt.forms import dataclass_form
    from napari_sslseg.config import TrainConfig, field_help

    form = dataclass_form(TrainConfig)
    help_ = field_help(TrainConfig)
    assert help_["lr"] and form.lr.tooltip.startswith(help_["lr"]) and "default 0.005" in form.lr.tooltip
    assert all(w.tooltip for w in form)


def test_the_first_trainings_imports_load_while_the_user_paints(setup):
    """Opening the panel starts, in a thread of its own, what a process's first training would
    otherwise load on the GUI thread when Train is pressed (torch's optimiser imports its compiler)."""
    import sys

    _viewer, panel = setup
    panel._warm_up.join(timeout=60)
    assert not panel._warm_up.is_alive() and panel._warm_up.daemon
    assert "torch._dynamo" in sys.modules
