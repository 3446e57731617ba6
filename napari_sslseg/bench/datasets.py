"""The benchmark's inputs: an image with dense ground-truth labels (whole, or cropped to the task with ``--crop``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import annotated_slices, default_class_names
from ..errors import InputError
from ..io import read_volume

@dataclass
class Dataset:
    """A labelled volume, (z, y, x)."""

    name: str
    image: np.ndarray
    labels: np.ndarray  # uint8, 0 = background
    spacing: tuple[float, float, float]  # mm
    class_names: list[str]
    source: str  # where it came from, for the report


def parse_label_map(text: str | None) -> dict[int, int] | None:
    """``"71:1,72:1"`` -> {71: 1, 72: 1}; values not named become background."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        try:
            src, dst = part.split(":")
            out[int(src)] = int(dst)
        except ValueError:
            raise InputError(f"Label map entry '{part}' is not SOURCE:CLASS (e.g. 71:1).") from None
    return out


def apply_label_map(labels: np.ndarray, mapping: dict[int, int] | None) -> np.ndarray:
    if mapping is None:
        return labels.astype(np.uint8)
    lut = np.zeros(int(max(labels.max(), max(mapping))) + 1, np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut[labels]


def load_pair(image_path, labels_path, label_map: dict[int, int] | None = None, name: str | None = None) -> Dataset:
    image, geom = read_volume(image_path)
    labels, lgeom = read_volume(labels_path)
    if labels.shape != image.shape:
        raise InputError(f"Labels {labels.shape} and image {image.shape} do not share a grid.")
    labels = apply_label_map(labels, label_map)
    n = int(labels.max())
    return Dataset(name or Path(image_path).name.split(".")[0], image, labels, geom.spacing_zyx,
                   default_class_names(n + 1), f"{image_path} + {labels_path}")


def labelled_extent(labels: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last slice along ``axis`` holding any label (inclusive)."""
    idx = annotated_slices(labels, axis)
    if not idx:
        raise InputError("The labels are empty: nothing to benchmark against.")
    return idx[0], idx[-1]


def labelled_box(labels: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of the non-zero labels."""
    return tuple(slice(lo, hi + 1) for lo, hi in (labelled_extent(labels, axis) for axis in range(labels.ndim)))


def crop_to_labels(ds: Dataset, margin: int) -> Dataset:
    """Keep the labelled box plus ``margin`` voxels (``--crop``): cheaper, but a box a user never has,
    and it hides the false positives a model paints far from every structure."""
    box = labelled_box(ds.labels)
    box = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, ds.labels.shape))
    return Dataset(ds.name, ds.image[box], ds.labels[box], ds.spacing, ds.class_names, ds.source)
