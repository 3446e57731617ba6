"""The results section: the pseudo-label threshold, the suggested slices, accept and reject, the
background marks and the class legend. Every decision is the annotation session's
(:mod:`napari_sslseg.annotation`); this widget moves the viewer and applies edits to layers."""

from __future__ import annotations

from magicgui.widgets import Container, FloatSlider, Label, PushButton, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from ..annotation import slice_ranges
from ..errors import InputError
from . import notify
from .layout import group
from .results import accept_slices, legend_html, pseudo_labels, result_name, show_prediction, suggestion_reason

#: The panel's keys, bound on the viewer: key -> (what it does, the panel's method).
KEYS = {
    "a": ("accept the prediction on this slice", "accept"),
    "r": ("reject the prediction on this slice", "reject"),
    "t": ("train, or stop the training", "train_or_stop"),
    "n": ("next suggested slice", "next_suggestion"),
    "u": ("show or hide the uncertainty", "toggle_uncertainty"),
}


def bind_keys(viewer, *owners) -> dict:
    """Bind :data:`KEYS` on ``viewer`` to the first of ``owners`` with the method; returns the bindings."""
    bound = {}
    for key, (_, method) in KEYS.items():
        action = next(getattr(o, method) for o in owners if hasattr(o, method))
        bound[key] = lambda viewer, action=action: action()
        viewer.bind_key(key, bound[key], overwrite=True)
    return bound


def unbind_keys(viewer, bound: dict) -> None:
    """Unbind the keys of ``bound`` that still act as bound (not rebound by another panel since)."""
    for key, action in bound.items():
        if any(b is action for b in viewer.keymap.values()):
            viewer.bind_key(key, None)


class ReviewSection:
    """``target()`` gives the (image layer, labels layer, AnnotationSession) under review;
    ``changed(session)`` is told when a review changes what training should see."""

    def __init__(self, viewer, target, changed):
        self.viewer, self._target, self._changed = viewer, target, changed
        self.threshold = FloatSlider(label="pseudo-label confidence ≥", min=0.5, max=1.0, step=0.01, value=0.9)
        self.legend = Label(value="")
        self.legend.native.setWordWrap(True)
        self.suggestions = QListWidget()
        self.suggestions.setWordWrap(True)  # the reasons in full
        self.suggestions.setMaximumHeight(150)
        self.next_button = PushButton(text="Next suggestion [n]")
        self.around = SpinBox(label="slices either side", min=0, max=50, value=0)
        self.accept_button = PushButton(text="Accept slice [a]", tooltip="Copy the prediction into your labels (Ctrl+Z undoes)")
        self.reject_button = PushButton(text="Reject slice [r]",
                                        tooltip="The prediction here is wrong: training stops learning from it")
        self.background_button = PushButton(text="Mark slice as background")
        self.background_button.tooltip = "The current slice holds none of the classes: count it as annotated, all background"
        self.toggle_button = PushButton(text="Show/hide uncertainty [u]")
        keys = Label(value="Keys: " + " · ".join(f"{k} {what}" for k, (what, _) in KEYS.items()))
        keys.native.setWordWrap(True)
        review = Container(widgets=[self.accept_button, self.reject_button], layout="horizontal", labels=False)
        self.box = group("Results", Container(widgets=[self.threshold]), self.legend, self.toggle_button,
                         Label(value="Suggested slices (best first)"), self.suggestions, self.next_button,
                         Container(widgets=[self.around]), review, self.background_button, keys)
        self.threshold.changed.connect(self._on_threshold)
        self.suggestions.itemClicked.connect(lambda item: self.go_to_slice(item.data(Qt.UserRole)))
        self.next_button.changed.connect(self.next_suggestion)
        self.accept_button.changed.connect(self.accept)
        self.reject_button.changed.connect(self.reject)
        self.background_button.changed.connect(self.mark_background)
        self.toggle_button.changed.connect(self.toggle_uncertainty)

    # ----- showing a prediction -----
    def show(self, prediction, image_layer, class_names, main: bool, annotated=()) -> None:
        """Show ``prediction`` over ``image_layer``; the ``main`` one (of the image trained on) is
        the one reviewed, suggested from and named without a suffix."""
        layers = show_prediction(self.viewer, prediction, image_layer, self.threshold.value,
                                 "" if main else image_layer.name, class_names)
        if not main:
            return
        self._target()[2].prediction = prediction
        self.legend.value = legend_html(layers["prediction"], class_names)
        self.suggestions.clear()
        for rank, s in enumerate(prediction.suggestions, start=1):
            item = QListWidgetItem(f"{rank}. slice {s}: {suggestion_reason(prediction, int(s), class_names, annotated)}")
            item.setToolTip(f"Uncertainty score {prediction.slice_scores[s]:.4g} (mean over the slice, weighted by "
                            "the probability of a structure)")
            item.setData(Qt.UserRole, int(s))
            self.suggestions.addItem(item)

    def _prediction(self):
        target = self._target()
        return None if target is None else target[2].prediction

    def _on_threshold(self, *_) -> None:
        name, prediction = result_name("pseudo-labels"), self._prediction()
        if prediction is not None and name in self.viewer.layers:
            self.viewer.layers[name].data = pseudo_labels(prediction, self.threshold.value)

    def toggle_uncertainty(self, *_) -> None:
        name = result_name("uncertainty")
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.visible = not layer.visible

    # ----- navigating slices -----
    def _world_axis(self, axis: int) -> int:
        return self.viewer.dims.ndim - 3 + axis

    def current_slice(self) -> int:
        grid = self._target()[2].grid
        return grid.index(self.viewer.dims.point[self._world_axis(grid.axis)])

    def go_to_slice(self, index: int) -> None:
        grid = self._target()[2].grid
        self.viewer.dims.set_point(self._world_axis(grid.axis), grid.world(index))

    def next_suggestion(self, *_) -> None:
        count = self.suggestions.count()
        if not count:
            return
        row = (self.suggestions.currentRow() + 1) % count
        self.suggestions.setCurrentRow(row)
        self.go_to_slice(self.suggestions.item(row).data(Qt.UserRole))

    def _slices(self, session) -> list[int]:
        return session.slices_around(self.current_slice(), self.around.value)

    # ----- review -----
    def accept(self, *_) -> None:
        """Copy the prediction of the current slice(s) into the labels, as one undoable step."""
        target = self._target()
        if target is None or target[1] is None:
            notify.warning("Choose the labels layer to accept the prediction into.")
            return
        _, labels, session = target
        slices = self._slices(session)
        try:
            edit = session.accept(labels.data, slices, apply=False)
        except InputError as exc:
            notify.warning(str(exc))
            return
        accept_slices(labels, session.axis, slices, edit.after)
        notify.info(f"Prediction accepted into {labels.name} on slice(s) {slice_ranges(slices)} (undo: Ctrl+Z on that layer).")
        self._changed(session)

    def reject(self, *_) -> None:
        """The prediction of the current slice(s) is wrong: their pseudo-labels are cleared and
        training no longer learns from their prediction."""
        target, name = self._target(), result_name("pseudo-labels")
        if target is None or target[2].prediction is None or name not in self.viewer.layers:
            notify.warning("No prediction to reject yet: train or predict first.")
            return
        session, pseudo = target[2], self.viewer.layers[name]
        slices = self._slices(session)
        session.reject(pseudo.data, slices)
        pseudo.refresh()
        notify.info(f"Prediction rejected on slice(s) {slice_ranges(slices)}: training stops learning from it there.")
        self._changed(session)

    def mark_background(self, *_) -> None:
        """Count the current slice(s) as annotated background: what a suggestion with nothing to paint needs."""
        target = self._target()
        if target is None or target[1] is None:
            notify.warning("Choose the image and the labels layer the background slices belong to.")
            return
        chosen = target[2].mark_background(self._slices(target[2]))
        notify.info(f"Slice(s) {slice_ranges(chosen)} of {target[1].name} count as annotated background.")
        self._changed(target[2])
