"""napari writers: Labels and Image layers back onto the source image's grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ._reader import META_KEY
from .errors import InputError
from .io import Geometry, to_image, write_volume


def source_grid(data: np.ndarray, meta: dict) -> tuple[np.ndarray, Geometry]:
    """Undo the reader's reorientation: the array and geometry of the source file's grid.

    A layer without our metadata (made in napari) is written on the grid its scale
    and translate describe, with the identity direction.
    """
    data = np.asarray(data)
    info = (meta.get("metadata") or {}).get(META_KEY)
    if info is None:
        scale = meta.get("scale") or [1.0] * data.ndim
        translate = meta.get("translate") or [0.0] * data.ndim
        if data.ndim != 3:
            raise InputError(f"Only 3D layers can be written as volumes; this one has shape {data.shape}.")
        geometry = Geometry(
            tuple(reversed(data.shape)),
            tuple(float(s) for s in reversed(scale)),
            tuple(float(t) for t in reversed(translate)),
            tuple(np.eye(3).ravel().tolist()),
        )
        return data, geometry
    source = Geometry.from_dict(info["source_geometry"])
    shown = Geometry.from_dict(info["shown_geometry"])
    if tuple(data.shape) != shown.shape:
        raise InputError(f"The layer has shape {data.shape} but its source grid is {shown.shape}; it cannot be written back.")
    if not info.get("reoriented"):
        return data, source
    image = sitk.DICOMOrient(to_image(data, shown), info["source_orientation"])
    if not Geometry.of(image).same_grid(source):
        raise InputError("Undoing the display orientation did not land on the source grid; the layer was not written.")
    return sitk.GetArrayFromImage(image), source


def _write(path: str, data, meta: dict) -> list[str]:
    array, geometry = source_grid(data, meta)
    return [str(write_volume(array, geometry, path))]


def write_labels(path: str, data, meta: dict) -> list[str]:
    data = np.asarray(data)
    if data.dtype.kind == "i" and data.min() >= 0 and data.max() <= 255:
        data = data.astype(np.uint8)  # napari's int32/64 labels: keep label files small
    return _write(path, data, meta)


def write_image(path: str, data, meta: dict) -> list[str]:
    return _write(path, data, meta)
