"""Painting while training: the labels layers being trained on are watched, and once the painting
pauses the new labels of each painted layer go to the trainer."""

from __future__ import annotations

from qtpy.QtCore import QTimer

#: Milliseconds of quiet after painting before the new labels go to the trainer.
PAINT_DEBOUNCE_MS = 1000


class PaintWatcher:
    """Calls ``send(indices)`` with the indices of the layers painted, once painting pauses."""

    def __init__(self, parent, send):
        self._send = send
        self._watched: list[tuple[object, object]] = []
        self.dirty: set[int] = set()
        self.timer = QTimer(parent)
        self.timer.setSingleShot(True)
        self.timer.setInterval(PAINT_DEBOUNCE_MS)
        self.timer.timeout.connect(self.flush)

    def watch(self, layers) -> None:
        """Watch ``layers`` (labels layers or None), by their index in the training's volumes."""
        self.unwatch()
        for index, labels in enumerate(layers):
            if labels is None:
                continue
            callback = lambda event=None, i=index: self.painted(i)  # noqa: E731
            labels.events.paint.connect(callback)
            labels.events.data.connect(callback)
            self._watched.append((labels, callback))

    def unwatch(self) -> None:
        self.timer.stop()
        for labels, callback in self._watched:
            labels.events.paint.disconnect(callback)
            labels.events.data.disconnect(callback)
        self._watched = []

    def painted(self, index: int) -> None:
        self.dirty.add(index)
        self.timer.start()  # restarts: send once the painting pauses

    def flush(self) -> None:
        dirty, self.dirty = sorted(self.dirty), set()
        if dirty:
            self._send(dirty)
