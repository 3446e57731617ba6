"""The training panel: choose layers and a method, train in the background, review the result.

The panel is glue: the engine trains and predicts, :mod:`.session` runs it in a
worker, :mod:`.results` owns the result layers and the review of pseudo-labels.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QGroupBox,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .. import checkpoint
from ..config import TrainConfig
from ..data import Volume, annotated_slices, default_axis
from ..devices import available_devices, pick_device
from ..errors import InputError
from ..events import AnnotationsEvent, EvalEvent, FinishedEvent, MessageEvent, PausedEvent, PreviewEvent, StepEvent, UpdateLabels
from ..inference import predict_annotated_volume
from ..methods import METHODS
from ..training import Trainer, default_class_names, load_model
from .forms import dataclass_form, form_values
from .plot import LivePlot
from .results import accept_slices, name_classes, pseudo_labels, reject_slices, result_name, show_prediction, suggestion_reason
from .session import TrainingSession

#: Milliseconds of quiet after painting before the new labels go to the trainer.
PAINT_DEBOUNCE_MS = 1000
#: Training settings shown in the main form; the others sit under "Advanced".
MAIN_SETTINGS = ("time_budget", "steps", "device", "preview_every")
AXES = [("0 (z)", 0), ("1 (y)", 1), ("2 (x)", 2)]
#: Where each image's training state is kept, so that a stopped, failed or closed run can continue.
RUNS = Path.home() / ".cache" / "napari-sslseg" / "runs"


def saved_run(image: Image) -> Path:
    """The checkpoint of the last training on ``image`` (by layer name and shape)."""
    name = re.sub(r"[^\w.-]+", "_", image.name)[:80]
    return RUNS / f"{name}-{'x'.join(map(str, image.data.shape))}.pt"


class _Shutdown:
    """What must stop when the panel or the viewer goes away; holds no reference to the panel."""

    def __init__(self):
        self.session: TrainingSession | None = None

    def __call__(self, *_):
        if self.session is not None:
            self.session.shutdown()


def _group(title: str, *widgets) -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(4, 4, 4, 4)
    for w in widgets:
        layout.addWidget(getattr(w, "native", w))
    return box


def _volume_from_layers(image: Image, labels: Labels | None, axis: int, background=()) -> Volume:
    """A Volume on copies of the layers' arrays: the worker never touches a layer.

    ``background`` slices count as annotated although they hold no label (all background).
    """
    image_data = np.array(image.data, copy=True)
    labels_data = None if labels is None else np.array(labels.data, copy=True)
    annotated = None
    if labels_data is not None and background:
        annotated = sorted(set(annotated_slices(labels_data, axis)) | set(background))
    return Volume(image_data, spacing=tuple(image.scale[-3:]), labels=labels_data, annotated=annotated, axis=axis, name=image.name)


class ExtraVolume(Container):
    """One more image layer to learn from, with its labels layer if it has one.

    Its widgets are reached by name (``row.extra_image``, ``row.extra_labels``): a Container's own
    ``labels`` attribute says whether it shows labels, so a widget may not take that name.
    """

    def __init__(self, layer_choices, on_remove):
        image = ComboBox(name="extra_image", label="extra image", choices=layer_choices(Image))
        labels = ComboBox(name="extra_labels", label="its labels", choices=layer_choices(Labels), nullable=True, value=None)
        remove = PushButton(name="remove_button", text="Remove")
        super().__init__(widgets=[image, labels, remove], labels=True)
        remove.changed.connect(lambda: on_remove(self))


class TrainingPanel(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: TrainingSession | None = None
        self.trainer: Trainer | None = None
        self.model = None  # SegmentationModel for Predict: the last training's or a loaded one
        self.last_prediction = None  # of the training image: suggestions and review use it
        self.annotated: dict[int, list[int]] = {}  # per volume, as the trainer last counted them
        # slices marked as all background, by the (image, labels) pair they were marked on
        self._background: dict[tuple[int, int], tuple[Image, Labels, set[int]]] = {}
        self._train_layers: list[tuple[Image, Labels | None]] = []
        self._watched: list[tuple[Labels, object]] = []
        self._dirty: set[int] = set()
        self._predict_worker = None
        self._axis_layer = None  # the image the last prediction lies on
        self._shutdown = _Shutdown()
        self._docked = False  # set once napari puts the panel in its dock
        self.closed = False  # the dock was closed: nothing may reach the viewer any more
        self._keys = {"u": lambda viewer: self.toggle_uncertainty(), "n": lambda viewer: self.next_suggestion()}
        self._build()
        self._connect()

    # ----- layout -----
    def _layer_choices(self, kind):
        return lambda widget=None: [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, kind)]

    def _build(self) -> None:
        self.image = ComboBox(label="image", choices=self._layer_choices(Image))
        self.labels = ComboBox(label="labels", choices=self._layer_choices(Labels))
        self.axis = ComboBox(label="slice axis", choices=AXES, value=0)
        self.class_names = LineEdit(label="class names")
        self.class_names.tooltip = "Comma-separated, background first"
        self.data_form = Container(widgets=[self.image, self.labels, self.axis, self.class_names])
        self.extras = Container(widgets=[], labels=False)
        self.add_extra = PushButton(text="Add an extra volume")

        self.method = ComboBox(label="method", choices=sorted(METHODS), value="mean_teacher")
        self.method_summary = Label()
        self.method_summary.native.setWordWrap(True)
        self.method_options = Container()
        self.settings = dataclass_form(TrainConfig)
        self.settings.time_budget.value = 120.0  # a user thinks in minutes: 2 of them, then review
        self.settings.time_budget.label = "time budget (s)"
        self.settings.time_budget.tooltip = "Seconds of training; 0 = train for 'steps'. Otherwise 'steps' is only a ceiling."
        self.settings.steps.value = 5000
        self.settings.preview_every.value = 50
        self.settings.threads.value = 0
        self._device_choice()
        self.main_settings = Container(widgets=[self.settings[n] for n in MAIN_SETTINGS])
        self.advanced = Container(widgets=[w for w in list(self.settings) if w.name not in MAIN_SETTINGS])
        self.advanced.visible = False
        self.advanced_toggle = QToolButton(text="Advanced settings")
        self.advanced_toggle.setCheckable(True)

        self.resume = CheckBox(text="Continue the saved training", value=False, enabled=False)
        self.resume.tooltip = ("Training saves its state on Stop, on an error, when napari closes and every few minutes; "
                               "continue it from there with its method and options")
        self.train_button = PushButton(text="Train")
        self.pause_button = PushButton(text="Pause", enabled=False)
        self.stop_button = PushButton(text="Stop", enabled=False)
        buttons = Container(widgets=[self.train_button, self.pause_button, self.stop_button], layout="horizontal", labels=False)
        self.status = Label(value="Choose an image and its labels, then press Train.")
        self.status.native.setWordWrap(True)
        self.plot = LivePlot()

        self.threshold = FloatSlider(label="pseudo-label confidence ≥", min=0.5, max=1.0, step=0.01, value=0.9)
        self.suggestions = QListWidget()
        self.suggestions.setMaximumHeight(120)
        self.next_button = PushButton(text="Next suggestion [n]")
        self.around = SpinBox(label="slices either side", min=0, max=50, value=0)
        self.accept_button = PushButton(text="Accept slice")
        self.reject_button = PushButton(text="Reject slice")
        self.background_button = PushButton(text="Mark slice as background")
        self.background_button.tooltip = "The current slice holds none of the classes: count it as annotated, all background"
        review = Container(widgets=[self.accept_button, self.reject_button], layout="horizontal", labels=False)
        self.toggle_button = PushButton(text="Show/hide uncertainty [u]")

        self.save_button = PushButton(text="Save model…")
        self.load_button = PushButton(text="Load model…")
        self.predict_on = ComboBox(label="predict on", choices=self._layer_choices(Image))
        self.predict_button = PushButton(text="Predict")
        model_buttons = Container(widgets=[self.save_button, self.load_button], layout="horizontal", labels=False)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addWidget(_group("Data", self.data_form, self.extras, self.add_extra))
        layout.addWidget(_group("Method", self.method, self.method_summary, self.method_options))
        layout.addWidget(_group("Training", self.main_settings, self.advanced_toggle, self.advanced, self.resume, buttons,
                                self.status, self.plot))
        layout.addWidget(
            _group("Results", Container(widgets=[self.threshold]), self.toggle_button,
                   Label(value="Suggested slices (best first)"), self.suggestions, self.next_button,
                   Container(widgets=[self.around]), review, self.background_button)
        )
        layout.addWidget(_group("Model", model_buttons, Container(widgets=[self.predict_on]), self.predict_button))
        layout.addStretch()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(340)
        self._paint_timer = QTimer(self)
        self._paint_timer.setSingleShot(True)
        self._paint_timer.setInterval(PAINT_DEBOUNCE_MS)
        self._on_method()
        self._on_image()
        self._on_labels()

    def _device_choice(self) -> None:
        """The device as a choice of the devices this machine has, not free text."""
        names = [w.name for w in self.settings]
        index = names.index("device")
        current = self.settings.device.value
        choices = available_devices()
        device = ComboBox(name="device", label="device", choices=choices, value=current if current in choices else "auto")
        device.tooltip = "auto: the GPU when there is one, else the CPU"
        del self.settings[index]
        self.settings.insert(index, device)

    def _connect(self) -> None:
        self.image.changed.connect(self._on_image)
        self.labels.changed.connect(self._on_labels)
        self.method.changed.connect(self._on_method)
        self.add_extra.changed.connect(self._add_extra)
        self.advanced_toggle.toggled.connect(lambda on: setattr(self.advanced, "visible", on))
        self.train_button.changed.connect(self.train)
        self.pause_button.changed.connect(self.toggle_pause)
        self.stop_button.changed.connect(self.stop)
        self.threshold.changed.connect(self._on_threshold)
        self.suggestions.itemClicked.connect(lambda item: self.go_to_slice(item.data(Qt.UserRole)))
        self.next_button.changed.connect(self.next_suggestion)
        self.accept_button.changed.connect(self.accept)
        self.reject_button.changed.connect(self.reject)
        self.background_button.changed.connect(self.mark_background)
        self.toggle_button.changed.connect(self.toggle_uncertainty)
        self.save_button.changed.connect(lambda: self.save_model())
        self.load_button.changed.connect(lambda: self.load_model())
        self.predict_button.changed.connect(lambda: self.predict())
        self._paint_timer.timeout.connect(self._send_labels)
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.reordered):
            event.connect(self._reset_choices)
        for key, action in self._keys.items():
            self.viewer.bind_key(key, action, overwrite=True)
        self.destroyed.connect(self._shutdown)
        QApplication.instance().aboutToQuit.connect(self._shutdown)

    def _reset_choices(self, event=None) -> None:
        for widget in (self.data_form, self.extras, self.predict_on):
            widget.reset_choices()

    # ----- form reactions -----
    def _on_image(self, *_) -> None:
        layer = self.image.value
        if layer is not None and layer.ndim >= 3:
            self.axis.value = default_axis(layer.scale[-3:])
        self._offer_resume()

    def _offer_resume(self) -> None:
        """Offer to continue when a saved training of the chosen image exists."""
        layer = self.image.value
        path = saved_run(layer) if layer is not None else None
        exists = path is not None and path.exists()
        self.resume.enabled = exists
        if not exists:
            self.resume.value = False
        self.resume.text = f"Continue the saved training ({path.name})" if exists else "Continue the saved training"

    def _on_labels(self, *_) -> None:
        layer = self.labels.value
        if layer is None:
            return
        names = layer.metadata.get("class_names")
        if not names:  # one per value painted: a 0/255 mask has two classes, not 256
            names = default_class_names(max(len(np.unique(layer.data)), 2))
        self.class_names.value = ", ".join(names)

    def _on_method(self, *_) -> None:
        cls = METHODS[self.method.value]
        self.method_summary.value = cls.summary
        self.method_options.clear()
        self.method_options.extend(list(dataclass_form(cls.Config)))

    def _add_extra(self, *_) -> None:
        self.extras.append(ExtraVolume(self._layer_choices, self.extras.remove))

    # ----- training -----
    def _config(self) -> TrainConfig:
        return TrainConfig(**form_values(self.settings))

    def _names(self) -> list[str] | None:
        names = [n.strip() for n in self.class_names.value.split(",") if n.strip()]
        return names or None

    def _collect(self) -> tuple[list[Volume], list[tuple]]:
        image, labels = self.image.value, self.labels.value
        if image is None:
            raise InputError("Choose the image layer to segment.")
        if labels is None:
            raise InputError("Choose the labels layer that holds your annotated slices (paint a few slices first).")
        pairs = [(image, labels)] + [
            (row.extra_image.value, row.extra_labels.value) for row in self.extras if row.extra_image.value is not None
        ]
        volumes = [
            _volume_from_layers(im, lab, self.axis.value, self.background_slices(im, lab) if i == 0 else ())
            for i, (im, lab) in enumerate(pairs)
        ]
        return volumes, pairs

    def train(self, *_) -> None:
        if self.session is not None and self.session.running:
            show_warning("Training is already running; stop it first.")
            return
        try:
            volumes, pairs = self._collect()
            state = saved_run(pairs[0][0])
            resume = checkpoint.load(state) if self.resume.value and self.resume.enabled else None
            trainer = Trainer(
                volumes,
                method=None if resume else self.method.value,  # a resumed run keeps its method and options
                config=self._config(),
                method_options=None if resume else form_values(self.method_options),
                class_names=self._names(),
                resume=resume,
                checkpoint=state,
            )
            state.parent.mkdir(parents=True, exist_ok=True)
        except (InputError, OSError) as exc:
            show_error(str(exc))
            return
        if resume:
            self.method.value = trainer.method_name
        self.trainer, self._train_layers = trainer, pairs
        for _, labels in pairs:
            if labels is not None:
                name_classes(labels, trainer.class_names, replace=False)
        self.annotated = {i: list(v.annotated) for i, v in enumerate(volumes)}
        self.plot.clear()
        self._watch_labels()
        self.session = TrainingSession(
            trainer, self._on_event, self._on_error, self._on_done, f"Training {trainer.method_name}"
        )
        self._shutdown.session = self.session
        self._set_running(True)
        self.status.value = f"Training {trainer.method_name} on {len(trainer.pool.labelled)} annotated slices…"
        self.session.start()

    def _set_running(self, running: bool) -> None:
        self.train_button.enabled = not running
        self.pause_button.enabled = self.stop_button.enabled = running
        self.pause_button.text = "Pause"

    def toggle_pause(self, *_) -> None:
        if self.session is None or not self.session.running:
            return
        if self.session.paused:
            self.session.resume()
            self.pause_button.text = "Pause"
        else:
            self.session.pause()
            self.pause_button.text = "Resume"

    def stop(self, *_) -> None:
        if self.session is not None:
            self.session.stop()
            self.status.value = "Stopping after this step…"

    def shutdown(self) -> None:
        """Stop training now and wait for the worker (the panel or viewer is closing)."""
        self._paint_timer.stop()
        self._shutdown()
        self._unwatch_labels()

    def event(self, event) -> bool:
        # napari's close button (the dock's x) takes the panel out of its dock and drops the dock;
        # the panel itself lives on while anything refers to it, so it must let go of the viewer here
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked and not self.closed:
                self.close_panel()
        return super().event(event)

    def close_panel(self) -> None:
        """The panel was closed: stop training (its state is saved), and leave the viewer as it is:
        no result layer, key or layer-list callback of this panel acts on it any more."""
        self.closed = True
        self.shutdown()
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.reordered):
            event.disconnect(self._reset_choices)
        for key, action in self._keys.items():
            if any(bound is action for bound in self.viewer.keymap.values()):  # not another panel's since
                self.viewer.bind_key(key, None)

    # ----- painting while training -----
    def _watch_labels(self) -> None:
        self._unwatch_labels()
        for index, (_, labels) in enumerate(self._train_layers):
            if labels is None:
                continue
            callback = lambda event=None, i=index: self._labels_painted(i)  # noqa: E731
            labels.events.paint.connect(callback)
            labels.events.data.connect(callback)
            self._watched.append((labels, callback))

    def _unwatch_labels(self) -> None:
        for labels, callback in self._watched:
            labels.events.paint.disconnect(callback)
            labels.events.data.disconnect(callback)
        self._watched = []

    def _labels_painted(self, index: int) -> None:
        self._dirty.add(index)
        self._paint_timer.start()  # restarts: send once the painting pauses

    def _send_labels(self) -> None:
        if self.session is None or not self.session.running:
            return
        for index in sorted(self._dirty):
            data = np.array(self._train_layers[index][1].data, copy=True)
            annotated = None
            background = self.background_slices(*self._train_layers[index]) if index == 0 else set()
            if background:
                annotated = sorted(set(annotated_slices(data, self.trainer.pool.volumes[0].axis)) | background)
            self.session.submit(UpdateLabels(index, data, annotated))
        self._dirty.clear()

    # ----- events from the worker (GUI thread) -----
    def _on_event(self, event) -> None:
        if self.closed:  # events already queued when the panel closed
            return
        if isinstance(event, StepEvent):
            self.plot.add_losses(event.step, event.losses)
            self.status.value = (
                f"Step {event.step}/{event.total} · {event.steps_per_second:.1f} steps/s · "
                f"about {event.eta_seconds:.0f} s left"
            )
        elif isinstance(event, EvalEvent):
            self.plot.add_dice(event.step, event.mean_dice)
        elif isinstance(event, PreviewEvent):
            image = self._train_layers[event.volume_index][0]
            if image in self.viewer.layers:
                self._show(event.prediction, image)
            if event.step == 0:
                self.status.value = "Showing your annotated slices interpolated to every slice; training starts…"
        elif isinstance(event, AnnotationsEvent):
            self.annotated[event.volume_index] = list(event.annotated)
            show_info(f"Training now uses {len(event.annotated)} annotated slices of {self._train_layers[event.volume_index][0].name}.")
        elif isinstance(event, MessageEvent):
            (show_warning if event.level == "warning" else show_info)(event.text)
        elif isinstance(event, PausedEvent):
            self.status.value = f"Paused at step {event.step}."
        elif isinstance(event, FinishedEvent):
            self.status.value = f"Training {event.reason} after {event.step} steps ({event.seconds:.0f} s)."

    def _on_error(self, exc: Exception) -> None:
        if self.closed:
            return
        show_error(f"{exc} Your layers are unchanged.")

    def _on_done(self) -> None:
        if self.closed:
            return
        self._set_running(False)
        self._offer_resume()
        self._unwatch_labels()
        self._paint_timer.stop()
        self.plot.redraw(force=True)
        if self.trainer is not None and self.trainer.step > 0:
            self.model = self.trainer.segmentation_model()

    # ----- results -----
    def _is_training_image(self, layer) -> bool:
        return bool(self._train_layers) and layer is self._train_layers[0][0]

    def _show(self, prediction, image_layer) -> None:
        main = self._is_training_image(image_layer) or not self._train_layers
        show_prediction(self.viewer, prediction, image_layer, self.threshold.value, "" if main else image_layer.name,
                        self._class_names())
        if main:
            self.last_prediction = prediction
            self._axis_layer = image_layer
            self._fill_suggestions(prediction)

    def _class_names(self) -> list[str]:
        if self.trainer is not None:
            return list(self.trainer.class_names)
        if self.model is not None:
            return list(self.model.class_names)
        return self._names() or []

    def _fill_suggestions(self, prediction) -> None:
        """Rank, slice and a plain reason: a score means nothing to a user, and the ranks follow what
        annotating the slices above would already settle, not the scores alone."""
        self.suggestions.clear()
        names, annotated = self._class_names(), self.annotated.get(0, [])
        for rank, s in enumerate(prediction.suggestions, start=1):
            reason = suggestion_reason(prediction, int(s), names, annotated)
            item = QListWidgetItem(f"{rank}. slice {s}: {reason}")
            item.setToolTip(f"Uncertainty score {prediction.slice_scores[s]:.4g} (mean over the slice, weighted by "
                            "the probability of a structure)")
            item.setData(Qt.UserRole, int(s))
            self.suggestions.addItem(item)

    def _on_threshold(self, *_) -> None:
        name = result_name("pseudo-labels")
        if self.last_prediction is not None and name in self.viewer.layers:
            self.viewer.layers[name].data = pseudo_labels(self.last_prediction, self.threshold.value)

    def toggle_uncertainty(self, *_) -> None:
        name = result_name("uncertainty")
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.visible = not layer.visible

    # ----- navigating slices -----
    def _reference(self):
        return self._axis_layer if self.last_prediction is not None else self.image.value

    def _prediction_axis(self) -> int:
        return self.last_prediction.axis if self.last_prediction is not None else self.axis.value

    def _world_axis(self, axis: int) -> int:
        return self.viewer.dims.ndim - 3 + axis

    def current_slice(self) -> int:
        layer, axis = self._reference(), self._prediction_axis()
        world = self.viewer.dims.point[self._world_axis(axis)]
        return int(round((world - layer.translate[-3 + axis]) / layer.scale[-3 + axis]))

    def go_to_slice(self, index: int) -> None:
        layer, axis = self._reference(), self._prediction_axis()
        world = layer.translate[-3 + axis] + index * layer.scale[-3 + axis]
        self.viewer.dims.set_point(self._world_axis(axis), world)

    def next_suggestion(self, *_) -> None:
        count = self.suggestions.count()
        if not count:
            return
        row = (self.suggestions.currentRow() + 1) % count
        self.suggestions.setCurrentRow(row)
        self.go_to_slice(self.suggestions.item(row).data(Qt.UserRole))

    # ----- review of pseudo-labels -----
    def _slices_around(self, n: int) -> list[int]:
        """The current slice and "slices either side", within 0..n-1."""
        cur = self.current_slice()
        return [s for s in range(cur - self.around.value, cur + self.around.value + 1) if 0 <= s < n]

    def _review_slices(self) -> list[int]:
        return self._slices_around(self.last_prediction.labels.shape[self._prediction_axis()])

    def accept(self, *_) -> None:
        """Copy the prediction of the current slice(s) into the labels, as one undoable step."""
        labels = self._train_layers[0][1] if self._train_layers else self.labels.value
        if self.last_prediction is None or labels is None:
            show_warning("No prediction to accept yet: train or predict first.")
            return
        if labels.data.shape != self.last_prediction.labels.shape:
            show_error(f"The labels layer {labels.name} does not match the prediction's grid.")
            return
        slices = self._review_slices()
        accept_slices(labels, self.last_prediction.labels, self._prediction_axis(), slices)
        show_info(f"Prediction accepted into {labels.name} on slice(s) {slices[0]}–{slices[-1]} (undo: Ctrl+Z on that layer).")

    def background_slices(self, image: Image | None, labels: Labels | None) -> set[int]:
        """The slices marked as all background on ``image`` with ``labels``: marks belong to the
        layers they were made on, so another labels layer (or image) starts with none."""
        entry = self._background.get((id(image), id(labels)))
        if entry is None or entry[0] is not image or entry[1] is not labels:
            return set()
        return entry[2]

    def mark_background(self, *_) -> None:
        """Count the current slice(s) as annotated background: what a suggestion with nothing to paint needs."""
        running = self.session is not None and self.session.running
        image, labels = self._train_layers[0] if running else (self.image.value, self.labels.value)
        if image is None or labels is None:
            show_warning("Choose the image and the labels layer the background slices belong to.")
            return
        chosen = self._slices_around(image.data.shape[-3 + self._prediction_axis()])
        marks = self.background_slices(image, labels)
        self._background[(id(image), id(labels))] = (image, labels, marks | set(chosen))
        show_info(f"Slice(s) {', '.join(map(str, chosen))} of {labels.name} count as annotated background.")
        if running:
            self._dirty.add(0)
            self._send_labels()

    def reject(self, *_) -> None:
        name = result_name("pseudo-labels")
        if self.last_prediction is None or name not in self.viewer.layers:
            return
        reject_slices(self.viewer.layers[name], self._prediction_axis(), self._review_slices())

    # ----- models -----
    def save_model(self, path: str | None = None) -> None:
        if self.trainer is None:
            show_warning("Train a model first; a loaded model is already saved.")
            return
        path = path or QFileDialog.getSaveFileName(self, "Save model", "model.pt", "napari-sslseg model (*.pt)")[0]
        if path:
            show_info(f"Model saved to {self.trainer.save(path)}.")

    def load_model(self, path: str | None = None) -> None:
        path = path or QFileDialog.getOpenFileName(self, "Load model", "", "napari-sslseg model (*.pt)")[0]
        if not path:
            return
        try:
            self.model = load_model(path, pick_device(self.settings["device"].value))
        except InputError as exc:
            show_error(str(exc))
            return
        show_info(f"Loaded a model of {self.model.num_classes} classes from {path}.")

    def predict(self, layer: Image | None = None):
        """Predict ``layer`` (default: the one chosen) in a worker; returns the worker."""
        layer = layer or self.predict_on.value
        if self.session is not None and self.session.running:
            show_warning("Training is running; its previews already show the prediction. Stop it to predict.")
            return None
        if self.model is None or layer is None:
            show_warning("Train or load a model, and choose an image layer to predict.")
            return None
        if self._predict_worker is not None and self._predict_worker.is_running:
            show_warning("A prediction is already running; wait for it to finish.")
            return None
        labels = self.labels.value if layer is self.image.value else None
        if labels is not None and labels.data.shape != layer.data.shape:
            labels = None
        axis = self.model.axis if self.model.axis is not None else default_axis(layer.scale[-3:])
        try:
            volume = _volume_from_layers(layer, labels, axis)
        except InputError as exc:
            show_error(str(exc))
            return None
        # with the labels of the image predicted, their prior joins (and feeds a model trained with it)
        worker = create_worker(predict_annotated_volume, self.model, volume, mc_passes=8, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(lambda prediction: self._predicted(prediction, layer))
        worker.errored.connect(lambda exc: self._prediction_failed(exc, layer))
        self._predict_worker = worker
        self.status.value = f"Predicting {layer.name}…"
        worker.start()
        return worker

    def _predicted(self, prediction, layer: Image) -> None:
        if self.closed:
            return
        if layer not in self.viewer.layers:
            self.status.value = f"Prediction done, but {layer.name} was removed meanwhile."
            return
        self._show(prediction, layer)
        main = self._is_training_image(layer) or not self._train_layers
        self.status.value = f"Predicted {layer.name}: see the layer {result_name('prediction', '' if main else layer.name)}."

    def _prediction_failed(self, exc: Exception, layer: Image) -> None:
        if self.closed:
            return
        self.status.value = f"Prediction of {layer.name} failed."
        show_error(f"Prediction failed: {exc}")
