"""The model section: save the trained model, load one, predict an image layer in a worker."""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, PushButton
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtWidgets import QFileDialog

from ..annotation import AnnotationSession
from ..data import default_axis
from ..devices import pick_device
from ..errors import InputError
from ..inference import predict_annotated_volume
from ..checkpoint import load_model
from . import notify
from .data_widget import layer_choices, slice_grid
from .layout import group


class ModelSection:
    """``panel``: the training panel, for the trainer, the chosen layers and where results go."""

    def __init__(self, panel):
        self.panel = panel
        self.model = None  # SegmentationModel for Predict: the last training's or a loaded one
        self.worker = None
        self.save_button = PushButton(text="Save model…")
        self.load_button = PushButton(text="Load model…")
        self.predict_on = ComboBox(label="predict on", choices=layer_choices(panel.viewer, Image))
        self.predict_button = PushButton(text="Predict")
        buttons = Container(widgets=[self.save_button, self.load_button], layout="horizontal", labels=False)
        self.box = group("Model", buttons, Container(widgets=[self.predict_on]), self.predict_button)
        self.save_button.changed.connect(lambda: self.save())
        self.load_button.changed.connect(lambda: self.load())
        self.predict_button.changed.connect(lambda: self.predict())

    def save(self, path: str | None = None) -> None:
        trainer = self.panel.trainer
        if trainer is None:
            notify.warning("Train a model first; a loaded model is already saved.")
            return
        path = path or QFileDialog.getSaveFileName(self.panel, "Save model", "model.pt", "napari-sslseg model (*.pt)")[0]
        if path:
            notify.info(f"Model saved to {trainer.save(path)}.")

    def load(self, path: str | None = None) -> None:
        path = path or QFileDialog.getOpenFileName(self.panel, "Load model", "", "napari-sslseg model (*.pt)")[0]
        if not path:
            return
        try:
            self.model = load_model(path, pick_device(self.panel.training.settings["device"].value))
        except InputError as exc:
            notify.error(str(exc))
            return
        notify.info(f"Loaded a model of {self.model.num_classes} classes from {path}.")

    def predict(self, layer: Image | None = None):
        """Predict ``layer`` (default: the one chosen) in a worker; returns the worker."""
        panel, layer = self.panel, layer or self.predict_on.value
        if panel.running:
            notify.warning("Training is running; its previews already show the prediction. Stop it to predict.")
            return None
        if self.model is None or layer is None:
            notify.warning("Train or load a model, and choose an image layer to predict.")
            return None
        if self.worker is not None and self.worker.is_running:
            notify.warning("A prediction is already running; wait for it to finish.")
            return None
        labels = panel.data.labels.value if layer is panel.data.image.value else None
        if labels is not None and labels.data.shape != layer.data.shape:
            labels = None
        axis = self.model.axis if self.model.axis is not None else default_axis(layer.scale[-3:])
        session = panel.data.session(layer, labels)
        if session.axis != axis:  # the model's slice axis, whatever the form says: no marks along another
            session = AnnotationSession(layer.data.shape[-3 + axis], slice_grid(layer, axis))
        try:
            volume = session.volume(layer.data, None if labels is None else labels.data, layer.scale[-3:], layer.name)
        except InputError as exc:
            notify.error(str(exc))
            return None
        # with the labels of the image predicted, their prior joins (and feeds a model trained with it)
        worker = create_worker(predict_annotated_volume, self.model, volume, mc_passes=8, _start_thread=False,
                               _ignore_errors=True)
        worker.returned.connect(lambda prediction: self._predicted(prediction, layer, labels))
        worker.errored.connect(lambda exc: self._failed(exc, layer))
        self.worker = worker
        panel.training.status.value = f"Predicting {layer.name}…"
        worker.start()
        return worker

    def _predicted(self, prediction, layer: Image, labels) -> None:
        panel = self.panel
        if panel.closed:
            return
        if layer not in panel.viewer.layers:
            panel.training.status.value = f"Prediction done, but {layer.name} was removed meanwhile."
            return
        name = panel.show(prediction, layer, labels)
        panel.training.status.value = f"Predicted {layer.name}: see the layer {name}."

    def _failed(self, exc: Exception, layer: Image) -> None:
        if self.panel.closed:
            return
        self.panel.training.status.value = f"Prediction of {layer.name} failed."
        notify.error(f"Prediction failed: {exc}")
