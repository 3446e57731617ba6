"""The napari widgets: the only package, with the reader/writer modules, that imports Qt or napari."""

from .panel import TrainingPanel

__all__ = ["TrainingPanel"]
