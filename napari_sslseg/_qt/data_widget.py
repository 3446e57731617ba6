"""The data section: the image, its labels, the slice axis, class names, extra volumes, and which
slices count as annotated (painted, marked as background, or a range declared complete).

Each (image, labels) pair has its :class:`~napari_sslseg.annotation.AnnotationSession`: marks
belong to the layers they were made on, so another labels layer starts with none.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image, Labels

from ..annotation import COMPLETE_MODES, AnnotationSession, SliceAxis, slice_ranges
from ..data import default_axis
from ..errors import InputError
from ..data import default_class_names
from .layout import group

AXES = [("0 (z)", 0), ("1 (y)", 1), ("2 (x)", 2)]


def layer_choices(viewer, kind):
    return lambda widget=None: [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]


def slice_grid(layer, axis: int) -> SliceAxis:
    """The slice axis of ``layer``'s (z, y, x) data in world coordinates."""
    return SliceAxis(axis, float(layer.scale[-3 + axis]), float(layer.translate[-3 + axis]))


class ExtraVolume(Container):
    """One more image layer to learn from, with its labels layer if it has one.

    Its widgets are reached by name (``row.extra_image``, ``row.extra_labels``): a Container's own
    ``labels`` attribute says whether it shows labels, so a widget may not take that name.
    """

    def __init__(self, choices, on_remove):
        image = ComboBox(name="extra_image", label="extra image", choices=choices(Image))
        labels = ComboBox(name="extra_labels", label="its labels", choices=choices(Labels), nullable=True, value=None)
        remove = PushButton(name="remove_button", text="Remove")
        super().__init__(widgets=[image, labels, remove], labels=True)
        remove.changed.connect(lambda: on_remove(self))


class DataSection:
    def __init__(self, viewer):
        self.viewer = viewer
        self._sessions: dict[tuple[int, int], tuple[Image, Labels, AnnotationSession]] = {}
        choices = lambda kind: layer_choices(viewer, kind)  # noqa: E731
        self.image = ComboBox(name="image", label="image", choices=choices(Image))
        self.labels = ComboBox(name="labels_layer", label="labels", choices=choices(Labels))
        self.axis = ComboBox(name="axis", label="slice axis", choices=AXES, value=0)
        self.class_names = LineEdit(name="class_names", label="class names", tooltip="Comma-separated, background first")
        self.complete = ComboBox(name="complete", label="labels complete on", choices=COMPLETE_MODES, value=COMPLETE_MODES[0])
        self.complete.tooltip = ("Which slices are annotated although they hold no label (empty = background): "
                                 "only the painted ones, every slice, a range, or the slices you looked at")
        self.first = SpinBox(name="first", label="range from", min=0, max=10**5)
        self.last = SpinBox(name="last", label="range to", min=0, max=10**5)
        self.background_range = PushButton(name="background_range", text="Mark range as background")
        self.background_range.tooltip = "Every slice of the range holds none of the classes: count them as annotated background"
        self.shown = Label(name="shown")
        self.shown.native.setWordWrap(True)
        self.extras = Container(name="extras", widgets=[], labels=False)
        self.add_extra = PushButton(name="add_extra", text="Add an extra volume")
        form = Container(widgets=[self.image, self.labels, self.axis, self.class_names, self.complete, self.first, self.last])
        self.box = group("Data", form, self.background_range, self.shown, self.extras, self.add_extra)
        self.image.changed.connect(self._on_image)
        self.labels.changed.connect(self._on_labels)
        for widget in (self.complete, self.first, self.last, self.axis):
            widget.changed.connect(self._on_complete)
        self.background_range.changed.connect(self.mark_range_as_background)
        self.add_extra.changed.connect(lambda: self.extras.append(ExtraVolume(choices, self.extras.remove)))
        self._choosers = [self.image, self.labels, self.extras]
        self._on_image()
        self._on_labels()

    # ----- the chosen layers -----
    def follow_layers(self, *choosers) -> None:
        """Keep the layer choices (these and ``choosers``) current, and note the slices visited."""
        self._choosers += list(choosers)
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.reordered):
            event.connect(self._reset_choices)
        self.viewer.dims.events.current_step.connect(self._visited)

    def unfollow_layers(self) -> None:
        layers = self.viewer.layers.events
        for event in (layers.inserted, layers.removed, layers.reordered):
            event.disconnect(self._reset_choices)
        self.viewer.dims.events.current_step.disconnect(self._visited)

    def _reset_choices(self, *_) -> None:
        for widget in self._choosers:
            widget.reset_choices()

    def _on_image(self, *_) -> None:
        layer = self.image.value
        if layer is not None and layer.ndim >= 3:
            self.axis.value = default_axis(layer.scale[-3:])
            self.first.max = self.last.max = layer.data.shape[-3 + self.axis.value] - 1
            self.last.value = self.last.max
        self._on_complete()

    def _on_labels(self, *_) -> None:
        layer = self.labels.value
        if layer is not None:
            names = layer.metadata.get("class_names")
            if not names:  # one per value painted: a 0/255 mask has two classes, not 256
                names = default_class_names(max(len(np.unique(layer.data)), 2))
            self.class_names.value = ", ".join(names)
        self._on_complete()

    def names(self) -> list[str] | None:
        names = [n.strip() for n in self.class_names.value.split(",") if n.strip()]
        return names or None

    # ----- annotation sessions -----
    def session(self, image: Image | None, labels: Labels | None, create: bool = True) -> AnnotationSession | None:
        """The annotation session of ``image`` with ``labels`` (a new one on a new pair)."""
        if image is None:
            return None
        key = (id(image), id(labels))
        entry = self._sessions.get(key)
        if entry is None or entry[0] is not image or entry[1] is not labels:
            if not create:
                return None
            axis = self.axis.value
            entry = (image, labels, AnnotationSession(image.data.shape[-3 + axis], slice_grid(image, axis)))
            self._sessions[key] = entry
        return entry[2]

    def current(self) -> AnnotationSession | None:
        return self.session(self.image.value, self.labels.value)

    def _on_complete(self, *_) -> None:
        session = self.current()
        ranged = self.complete.value == "a range"
        self.background_range.enabled = session is not None
        if session is None:
            self.shown.value = ""
            return
        if session.axis != self.axis.value:  # the axis changed: marks along the old one mean nothing
            image, labels = self.image.value, self.labels.value
            self._sessions.pop((id(image), id(labels)), None)
            session = self.current()
        session.set_complete(self.complete.value, (self.first.value, self.last.value) if ranged else None)
        self.show_annotated()

    def show_annotated(self) -> None:
        """The slices that count as annotated, in a compact list under the form."""
        session, labels = self.current(), self.labels.value
        if session is None or labels is None:
            self.shown.value = ""
            return
        annotated = session.annotated(labels.data) if labels.data.shape == self.image.value.data.shape else []
        self.shown.value = f"Annotated ({len(annotated)} of {session.num_slices}): {slice_ranges(annotated) or 'none yet'}"

    def _visited(self, *_) -> None:
        session = self.current()
        if session is None or self.viewer.dims.ndim < 3:
            return
        world = self.viewer.dims.point[self.viewer.dims.ndim - 3 + session.axis]
        before = len(session.visited)
        session.visit(session.grid.index(world))
        if session.complete_mode == "slices I visited" and len(session.visited) != before:
            self.show_annotated()

    def mark_range_as_background(self, *_) -> list[int]:
        session = self.current()
        if session is None:
            return []
        chosen = session.mark_background(range(min(self.first.value, self.last.value), max(self.first.value, self.last.value) + 1))
        self.show_annotated()
        return chosen

    # ----- what training gets -----
    def pairs(self) -> list[tuple[Image, Labels | None]]:
        image, labels = self.image.value, self.labels.value
        if image is None:
            raise InputError("Choose the image layer to segment.")
        if labels is None:
            raise InputError("Choose the labels layer that holds your annotated slices (paint a few slices first).")
        extra = [(row.extra_image.value, row.extra_labels.value) for row in self.extras if row.extra_image.value is not None]
        return [(image, labels)] + extra

    def volumes(self, pairs) -> list:
        """The volumes to train on: copies of the layers' arrays, with each pair's marks."""
        volumes = []
        for image, labels in pairs:
            session = self.session(image, labels)
            if labels is not None and labels.data.shape != image.data.shape:
                raise InputError(f"The labels {labels.name} {labels.data.shape} are not on the grid of "
                                 f"{image.name} {image.data.shape}.")
            volumes.append(session.volume(image.data, None if labels is None else labels.data, image.scale[-3:], image.name))
        return volumes
