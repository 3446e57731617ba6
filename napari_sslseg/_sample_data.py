"""Sample data: the whole Colin27 head with 4 annotated axial slices, a user's starting point."""

from __future__ import annotations

from pathlib import Path


from ._reader import read_layer
from .data import keep_slices

SAMPLES = Path(__file__).parent / "samples"
#: Axial slices that keep their labels, spread evenly over the structures (z 44..97); the rest
#: (177 of the 181 slices, most holding none of the structures) is left for the model to predict.
ANNOTATED_SLICES = (50, 64, 77, 91)
CLASS_NAMES = ("background", "caudate", "putamen", "pallidum", "thalamus", "hippocampus")


def colin27() -> list[tuple]:
    image = read_layer(SAMPLES / "colin27_t1.nii.gz")
    labels, kwargs, kind = read_layer(SAMPLES / "colin27_deep_labels.nii.gz")
    image[1]["name"] = "colin27 T1"
    kwargs = {**kwargs, "name": "annotations", "metadata": {**kwargs["metadata"], "class_names": list(CLASS_NAMES)}}
    return [image, (keep_slices(labels, ANNOTATED_SLICES), kwargs, kind)]


def write_sample(folder) -> Path:
    """Write the sample's 4 annotated slices as ``annotations.nii.gz`` in ``folder`` (on the T1's
    grid), for the command line; returns the file."""
    from .io import read_volume, write_volume

    labels, geometry = read_volume(SAMPLES / "colin27_deep_labels.nii.gz")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_volume(keep_slices(labels, ANNOTATED_SLICES), geometry, folder / "annotations.nii.gz")
