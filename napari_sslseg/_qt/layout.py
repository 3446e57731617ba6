"""Small layout helpers shared by the panel's sections."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QGroupBox, QScrollArea, QVBoxLayout, QWidget


def group(title: str, *widgets) -> QGroupBox:
    """A titled box holding ``widgets`` (magicgui or Qt) one under the other."""
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(4, 4, 4, 4)
    for w in widgets:
        layout.addWidget(getattr(w, "native", w))
    return box


def scrolled(parent: QWidget, boxes) -> QScrollArea:
    """``boxes`` one under the other in a scroll area filling ``parent``; returns the scroll area."""
    content = QWidget()
    layout = QVBoxLayout(content)
    for box in boxes:
        layout.addWidget(box)
    layout.addStretch()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # the sections wrap to the dock's width
    scroll.setWidget(content)
    outer = QVBoxLayout(parent)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    parent.setMinimumWidth(380)
    return scroll
