"""napari reader: 3D medical volumes through SimpleITK, placed in physical space.

napari shows an array with a per-axis ``scale`` and ``translate`` only, so it cannot
show a rotated grid. Axis-aligned directions (flips, axis permutations) are
reoriented to the identity direction, which keeps scale and translate exact; an
oblique grid is shown in voxel order with a warning. Either way the source grid
is kept in the layer's metadata so that the writer puts data back on it exactly.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .data import check_labels
from .errors import InputError
from .io import VOLUME_SUFFIXES, Geometry, is_volume_path, read_image

#: Key of this plugin's entry in a layer's ``metadata``.
META_KEY = "napari_sslseg"
#: ITK's orientation code of the identity direction.
IDENTITY_ORIENTATION = "LPS"
#: Words in a file name that mark a label volume.
LABEL_WORDS = ("label", "seg", "mask")
#: An integer volume with at most this many distinct values opens as labels.
MAX_LABEL_VALUES = 16


#: This plugin's name in napari.
PLUGIN = "napari-sslseg"


def activate(context=None) -> None:
    """npe2's ``on_activate``: make this plugin napari's choice for the volumes it reads and writes.

    napari's own reader also claims ``.nii.gz``, ``.nrrd`` and ``.mha`` (through imageio, which
    drops the voxel spacing), so without a preference File > Open asks which plugin to use; and
    its Save dialog offers the first writer registered (napari's tif) as the default format.
    """
    prefer_reader()
    prefer_writers()


def prefer_reader() -> None:
    """Record this plugin as the reader of volume files in napari's settings, where the user
    has not chosen another reader for them."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    missing = {f"*{suffix}": PLUGIN for suffix in VOLUME_SUFFIXES if f"*{suffix}" not in plugins.extension2reader}
    if missing:
        plugins.extension2reader = {**plugins.extension2reader, **missing}


def prefer_writers() -> None:
    """Put this plugin's writers first, so napari's Save dialog offers them first.

    npe2 has no public priority for writers: the dialog lists them in registration order.
    """
    from npe2 import PluginManager

    writers = getattr(getattr(PluginManager.instance(), "_contrib", None), "_writers", None)
    if not isinstance(writers, list):  # npe2 changed: the dialog keeps its own order
        return
    ours = [entry for entry in writers if entry[-1].command.startswith(f"{PLUGIN}.")]
    writers[:] = ours + [entry for entry in writers if entry not in ours]


def get_reader(path):
    """npe2 reader hook: a reading function for volumes we can read, else None."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    if not paths or not all(is_volume_path(p) for p in paths):
        return None
    return read_layers


def read_layers(path) -> list[tuple]:
    paths = path if isinstance(path, (list, tuple)) else [path]
    return [read_layer(p) for p in paths]


def volume_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def orientation_of(direction) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(d) for d in direction])


def to_display(image: sitk.Image, name: str = "volume") -> tuple[sitk.Image, dict]:
    """The image on a grid napari can place exactly, and the metadata to undo it."""
    source = Geometry.of(image)
    direction = np.asarray(source.direction).reshape(3, 3)
    axis_aligned = np.allclose(np.abs(direction), np.round(np.abs(direction)), atol=1e-4) and np.allclose(
        np.abs(direction).sum(axis=0), 1, atol=1e-4
    )
    reoriented = not np.allclose(direction, np.eye(3), atol=1e-4) and axis_aligned
    if reoriented:
        image = sitk.DICOMOrient(image, IDENTITY_ORIENTATION)
    elif not axis_aligned:
        warnings.warn(
            f"{name} lies on an oblique grid (direction {np.round(direction, 3).tolist()}); napari shows it in "
            "voxel order, so it may look rotated against other images. Files written back keep the original grid.",
            UserWarning,
            stacklevel=2,
        )
    meta = {
        "source_geometry": source.to_dict(),
        "shown_geometry": Geometry.of(image).to_dict(),
        "reoriented": bool(reoriented),
        "source_orientation": orientation_of(source.direction) if axis_aligned else None,
        "oblique": not axis_aligned,
    }
    return image, meta


def looks_like_labels(path, array: np.ndarray) -> bool:
    name = Path(path).name.lower()
    if any(word in name for word in LABEL_WORDS):
        return True
    if array.dtype.kind not in "iub":
        return False
    sample = array.reshape(-1)[:: max(1, array.size // 1_000_000)]
    return len(np.unique(sample)) <= MAX_LABEL_VALUES and sample.min() >= 0


def layer_tuple(array: np.ndarray, meta: dict, name: str, as_labels: bool) -> tuple:
    """A napari layer data tuple on the displayed grid of ``meta``."""
    shown = Geometry.from_dict(meta["shown_geometry"])
    kwargs = {
        "name": name,
        "scale": shown.spacing_zyx,
        "translate": shown.origin_zyx,
        "metadata": {META_KEY: meta},
    }
    if as_labels:
        return array, kwargs, "labels"
    return array, {**kwargs, "colormap": "gray"}, "image"


def read_layer(path) -> tuple:
    name = volume_name(path)
    image, meta = to_display(read_image(path), name)
    array = sitk.GetArrayFromImage(image)
    as_labels = looks_like_labels(path, array)
    if as_labels:
        try:
            array = check_labels(array, array.shape)
        except InputError:  # named like labels but holds intensities: show it as an image
            as_labels = False
    return layer_tuple(array, meta, name, as_labels)
