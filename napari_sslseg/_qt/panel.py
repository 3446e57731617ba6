"""The training panel: the data, method, training, results and model sections, and the training
run that ties them together.

The sections are thin over the core: :mod:`napari_sslseg.annotation` decides which slices are
annotated and what a review changes, :mod:`.session` runs the trainer in a worker,
:mod:`.results` owns the result layers.
"""

from __future__ import annotations

from napari.layers import Image
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QApplication, QWidget

from ..errors import InputError
from ..events import AnnotationsEvent, MessageEvent, PreviewEvent
from ..training import Trainer
from . import notify
from .data_widget import DataSection
from .method_widget import MethodSection
from .model_widget import ModelSection
from .layout import scrolled
from .painting import PaintWatcher
from .pretraining import Pretraining, follow_choice, show_failure, show_status
from .results import name_classes, result_name
from .review_widget import ReviewSection, bind_keys, unbind_keys
from .session import Shutdown, TrainingSession
from .training_widget import TrainingSection, new_trainer, warm_up


class TrainingPanel(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.session: TrainingSession | None = None
        self.trainer: Trainer | None = None
        self.pairs: list[tuple] = []  # the (image, labels) layers of the last training
        self.reviewed: tuple | None = None  # the (image, labels) layers whose prediction is reviewed
        self.annotated: dict[int, list[int]] = {}  # per volume, as the trainer last counted them
        self.closed = False  # the dock was closed: nothing may reach the viewer any more
        self._docked = False  # set once napari puts the panel in its dock
        self._shutdown = Shutdown()
        self.pretraining = self._shutdown.pretraining = Pretraining(self._on_pretraining, self._on_pretraining_error)
        self.data = DataSection(napari_viewer)
        self.method = MethodSection()
        self.training = TrainingSection()
        self.review = ReviewSection(napari_viewer, self.target, self._reviewed)
        self.models = ModelSection(self)
        self.paint = PaintWatcher(self, self._send_labels)
        self.scroll = scrolled(self, [section.box for section in (self.data, self.method, self.training, self.review, self.models)])
        self._keys = bind_keys(napari_viewer, self, self.review)
        self.data.follow_layers(self.models.predict_on)
        self.data.image.changed.connect(lambda *_: self.training.offer_resume(self.data.image.value))
        self.training.train_button.changed.connect(self.train)
        self.training.pause_button.changed.connect(self.toggle_pause)
        self.training.stop_button.changed.connect(self.stop)
        self.destroyed.connect(self._shutdown)
        QApplication.instance().aboutToQuit.connect(self._shutdown)
        self.training.offer_resume(self.data.image.value)
        self._warm_up = warm_up()
        for widget in (self.training.pretrain, self.data.image, self.data.axis):
            widget.changed.connect(self.pretrain)

    @property
    def running(self) -> bool:
        return self.session is not None and self.session.running

    def target(self):
        """The (image, labels, AnnotationSession) under review: the trained or predicted image's, else the chosen."""
        image, labels = self.reviewed or (self.pairs[0] if self.running else (self.data.image.value, self.data.labels.value))
        session = self.data.session(image, labels)
        return None if session is None else (image, labels, session)

    # ----- pre-training (what it does: .pretraining) -----
    def pretrain(self, *_) -> None:
        follow_choice(self)

    def _on_pretraining(self, event, image) -> None:
        show_status(self, event, image)

    def _on_pretraining_error(self, exc: Exception) -> None:
        show_failure(self, exc)

    # ----- training -----
    def train(self, *_) -> None:
        if self.running:
            notify.warning("Training is already running; stop it first.")
            return
        try:
            trainer, pairs, volumes, resumed = new_trainer(self)
        except (InputError, OSError) as exc:
            notify.error(str(exc))
            return
        if resumed:
            self.method.choice.value = trainer.method_name
        self.trainer, self.pairs, self.reviewed = trainer, pairs, pairs[0]
        for _, labels in pairs:
            if labels is not None:
                name_classes(labels, trainer.class_names, replace=False)
        self.annotated = {i: list(v.annotated) for i, v in enumerate(volumes)}
        self.training.plot.clear()
        self.paint.watch([labels for _, labels in pairs])
        self.session = TrainingSession(trainer, self._on_event, self._on_error, self._on_done, f"Training {trainer.method_name}")
        self._shutdown.session = self.session
        self.training.set_running(True)
        self.training.status.value = f"Training {trainer.method_name} on {len(trainer.pool.labelled)} annotated slices…"
        self.session.start()

    def train_or_stop(self, *_) -> None:
        (self.stop if self.running else self.train)()

    def toggle_pause(self, *_) -> None:
        if self.running:
            self.training.toggle_pause(self.session)

    def stop(self, *_) -> None:
        if self.running:
            self.training.stop(self.session, self.trainer)

    def _send_labels(self, indices) -> None:
        if not self.running:
            return
        for index in indices:
            image, labels = self.pairs[index]
            self.session.submit(self.data.session(image, labels).update(labels.data, index))
        self.data.show_annotated()

    def _reviewed(self, session) -> None:
        """A review or a background mark changed what training should see."""
        self.data.show_annotated()
        for index, (image, labels) in enumerate(self.pairs):
            if self.running and labels is not None and self.data.session(image, labels, create=False) is session:
                self._send_labels([index])

    # ----- events from the worker (GUI thread) -----
    def _on_event(self, event) -> None:
        if self.closed:  # events already queued when the panel closed
            return
        if isinstance(event, PreviewEvent):
            image, labels = self.pairs[event.volume_index]
            if image in self.viewer.layers:
                self.show(event.prediction, image, labels)
        elif isinstance(event, AnnotationsEvent):
            self.annotated[event.volume_index] = list(event.annotated)
            notify.info(f"Training now uses {len(event.annotated)} annotated slices of {self.pairs[event.volume_index][0].name}.")
        elif isinstance(event, MessageEvent):
            (notify.warning if event.level == "warning" else notify.info)(event.text)
        self.training.on_event(event)

    def _on_error(self, exc: Exception) -> None:
        if not self.closed:
            notify.error(f"{exc} Your layers are unchanged.")

    def _on_done(self) -> None:
        if self.closed:
            return
        self.training.set_running(False)
        self.training.offer_resume(self.data.image.value)
        self.paint.unwatch()
        self.training.plot.redraw(force=True)
        if self.trainer is not None and self.trainer.step > 0:
            self.models.model = self.trainer.segmentation_model()

    def show(self, prediction, image: Image, labels=None) -> str:
        """Show a prediction of ``image``; returns the name of its prediction layer."""
        main = (bool(self.pairs) and image is self.pairs[0][0]) or not self.pairs
        if main:
            self.reviewed = (image, labels)
        source = self.trainer or self.models.model
        names = list(source.class_names) if source is not None else (self.data.names() or [])
        self.review.show(prediction, image, names, main, self.annotated.get(0, []))
        return result_name("prediction", "" if main else image.name)

    # ----- closing -----
    def shutdown(self) -> None:
        """Stop training and pre-training now and wait for their workers (the panel or viewer is closing)."""
        self.paint.unwatch()
        self._shutdown()

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
        self.data.unfollow_layers()
        unbind_keys(self.viewer, self._keys)
