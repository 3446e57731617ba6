"""The panel's messages to the user: napari's notifications, in one place (tests capture them here)."""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info, show_warning


def error(text: str) -> None:
    show_error(text)


def warning(text: str) -> None:
    show_warning(text)


def info(text: str) -> None:
    show_info(text)
