"""One image's annotation session, as the viewer keeps it and training sees it (no Qt, no napari).

Which slices count as annotated (painted, marked as background, or inside a range the user
declared complete), the prediction under review, accept and reject with undo records, slice
and world coordinates, and the volume or label update that goes to the trainer. The panel's
widgets are thin over this model; it is tested without a viewer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .data import Volume, annotated_slices
from .errors import InputError
from .events import UpdateLabels

#: What "complete" means, by its name in the panel: which slices count as annotated, empty or not.
COMPLETE_MODES = ("painted slices", "every slice", "a range", "slices I visited")


def parse_range(text: str, num_slices: int) -> tuple[int, int]:
    """``"A:B"`` (both ends included; an empty end is the first or last slice) as (A, B)."""
    try:
        low, high = (part.strip() for part in text.split(":"))
        a = int(low) if low else 0
        b = int(high) if high else num_slices - 1
    except ValueError:
        raise InputError(f"A range of slices is written A:B, e.g. 10:40 (both included); got '{text}'.") from None
    if not 0 <= a <= b < num_slices:
        raise InputError(f"The range {a}:{b} is not within the slices 0..{num_slices - 1}, first to last.")
    return a, b


def complete_slices(labels: np.ndarray, axis: int, complete: Sequence[int] = (), background: Sequence[int] = ()) -> list[int]:
    """The slices training counts as annotated: those holding a label, those marked as background,
    and every slice of ``complete`` (a range the user declared complete: an empty one is background)."""
    return sorted(set(annotated_slices(labels, axis)) | {int(s) for s in complete} | {int(s) for s in background})


def slice_ranges(slices: Sequence[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` as ``"1–3, 7, 9–10"``: a compact list a user can read."""
    parts, run = [], []
    for s in sorted(set(int(s) for s in slices)):
        if run and s != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(s)
    if run:
        parts.append(run)
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}–{r[-1]}" for r in parts)


@dataclass(frozen=True)
class SliceAxis:
    """Slice number <-> world coordinate along the slice axis (a layer's scale and translate there)."""

    axis: int  # array axis of the (z, y, x) volume
    scale: float = 1.0  # world units per slice (mm)
    translate: float = 0.0  # world position of slice 0

    def world(self, index: int) -> float:
        return self.translate + index * self.scale

    def index(self, world: float) -> int:
        return int(round((world - self.translate) / self.scale))


@dataclass
class Edit:
    """An undo record: the voxels of ``slices`` in the array it was made on, before and after."""

    kind: str  # "accept" (the user's labels) or "reject" (the pseudo-labels)
    slices: list[int]
    before: np.ndarray  # the slices' values before, stacked along the slice axis
    after: np.ndarray  # and after
    rejected_before: list[int] = field(default_factory=list)  # the session's rejected slices before it


def _take(array: np.ndarray, axis: int, slices: Sequence[int]) -> np.ndarray:
    return np.take(array, list(slices), axis=axis)


def _put(array: np.ndarray, axis: int, slices: Sequence[int], values: np.ndarray) -> None:
    index = [slice(None)] * array.ndim
    index[axis] = list(slices)
    array[tuple(index)] = values


@dataclass
class AnnotationSession:
    """The annotations of one image and its labels.

    The labels array stays the user's: the session reads it, and edits it only through
    :meth:`accept`, which returns an :class:`Edit` to undo with.
    """

    num_slices: int  # slices along the slice axis
    grid: SliceAxis  # the slice axis and its world coordinates
    background: set[int] = field(default_factory=set)  # marked as holding none of the classes
    complete_mode: str = COMPLETE_MODES[0]  # which slices count as annotated though empty
    complete_range: tuple[int, int] | None = None  # the range, in "a range" mode
    visited: set[int] = field(default_factory=set)  # slices the user looked at
    rejected: set[int] = field(default_factory=set)  # slices whose prediction the user rejected
    prediction: object = None  # inference.Prediction under review
    history: list[Edit] = field(default_factory=list)

    @property
    def axis(self) -> int:
        return self.grid.axis

    # ----- which slices count as annotated -----
    def complete(self) -> list[int]:
        """The slices the current mode declares complete (annotated, empty or not)."""
        if self.complete_mode == "every slice":
            return list(range(self.num_slices))
        if self.complete_mode == "a range" and self.complete_range is not None:
            return list(range(self.complete_range[0], self.complete_range[1] + 1))
        if self.complete_mode == "slices I visited":
            return sorted(self.visited)
        return []

    def set_complete(self, mode: str, limits: tuple[int, int] | None = None) -> None:
        if mode not in COMPLETE_MODES:
            raise InputError(f"Unknown complete-labels mode '{mode}'; one of {', '.join(COMPLETE_MODES)}.")
        if limits is not None:
            a, b = sorted(int(x) for x in limits)
            self.complete_range = (max(a, 0), min(b, self.num_slices - 1))
        self.complete_mode = mode

    def annotated(self, labels: np.ndarray | None) -> list[int]:
        """The slices training counts as annotated."""
        if labels is None:
            return []
        return complete_slices(labels, self.axis, self.complete(), self.background)

    def visit(self, index: int) -> None:
        if 0 <= index < self.num_slices:
            self.visited.add(int(index))

    def mark_background(self, slices: Sequence[int]) -> list[int]:
        """Count ``slices`` as annotated, all background; returns those within the volume."""
        chosen = [int(s) for s in slices if 0 <= int(s) < self.num_slices]
        self.background.update(chosen)
        return chosen

    def slices_around(self, center: int, either_side: int = 0) -> list[int]:
        """``center`` and ``either_side`` slices each way, within the volume."""
        return [s for s in range(center - either_side, center + either_side + 1) if 0 <= s < self.num_slices]

    # ----- what goes to the trainer -----
    def volume(self, image: np.ndarray, labels: np.ndarray | None, spacing, name: str = "volume") -> Volume:
        """A :class:`Volume` on copies of the arrays (the trainer never holds the user's)."""
        image = np.array(image, copy=True)
        labels = None if labels is None else np.array(labels, copy=True)
        annotated = self.annotated(labels) if labels is not None else None
        return Volume(image, spacing=tuple(spacing), labels=labels, annotated=annotated, axis=self.axis, name=name,
                      rejected=sorted(self.rejected))

    def update(self, labels: np.ndarray, volume_index: int = 0) -> UpdateLabels:
        """The labels as they are now, for a running training (a copy)."""
        labels = np.array(labels, copy=True)
        return UpdateLabels(volume_index, labels, self.annotated(labels), sorted(self.rejected))

    # ----- review -----
    def _check_prediction(self, shape) -> None:
        if self.prediction is None:
            raise InputError("No prediction to review yet: train or predict first.")
        if tuple(shape) != tuple(self.prediction.labels.shape):
            raise InputError(f"The labels {tuple(shape)} do not match the prediction's grid {self.prediction.labels.shape}.")

    def accept(self, labels: np.ndarray, slices: Sequence[int], apply: bool = True) -> Edit:
        """Copy the prediction of ``slices`` into ``labels``; ``apply=False`` leaves the array to the
        caller (napari applies the edit itself, as one undoable step)."""
        self._check_prediction(labels.shape)
        slices = list(slices)
        after = _take(self.prediction.labels, self.axis, slices).astype(labels.dtype)
        edit = Edit("accept", slices, _take(labels, self.axis, slices), after, sorted(self.rejected))
        if apply:
            _put(labels, self.axis, slices, after)
        self.rejected.difference_update(slices)
        self.history.append(edit)
        return edit

    def reject(self, pseudo_labels: np.ndarray | None, slices: Sequence[int]) -> Edit:
        """The prediction of ``slices`` is wrong: their pseudo-labels are cleared and training stops
        learning from their prediction (they leave the unlabelled pool)."""
        if self.prediction is None:
            raise InputError("No prediction to review yet: train or predict first.")
        slices = list(slices)
        before = _take(pseudo_labels, self.axis, slices) if pseudo_labels is not None else np.zeros(0)
        if pseudo_labels is not None:
            _put(pseudo_labels, self.axis, slices, 0)
        edit = Edit("reject", slices, before, np.zeros_like(before), sorted(self.rejected))
        self.rejected.update(slices)
        self.history.append(edit)
        return edit

    def undo(self, labels: np.ndarray | None = None, pseudo_labels: np.ndarray | None = None) -> Edit | None:
        """Undo the last accept (on ``labels``) or reject (on ``pseudo_labels``)."""
        if not self.history:
            return None
        edit = self.history.pop()
        target = labels if edit.kind == "accept" else pseudo_labels
        if target is not None and edit.before.size:
            _put(target, self.axis, edit.slices, edit.before)
        self.rejected = set(edit.rejected_before)
        return edit
