"""Sample data: the Colin27 crop with 4 annotated axial slices, a user's starting point."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._reader import read_layer

SAMPLES = Path(__file__).parent / "samples"
#: Axial slices that keep their labels; the rest is left for the model to predict.
ANNOTATED_SLICES = (14, 26, 38, 50)
CLASS_NAMES = ("background", "caudate", "putamen", "pallidum", "thalamus", "hippocampus")


def keep_slices(labels: np.ndarray, slices, axis: int = 0) -> np.ndarray:
    """A copy of ``labels`` with every slice but ``slices`` (along ``axis``) cleared."""
    out = np.zeros_like(labels)
    index = [slice(None)] * labels.ndim
    index[axis] = list(slices)
    out[tuple(index)] = labels[tuple(index)]
    return out


def colin27() -> list[tuple]:
    image = read_layer(SAMPLES / "colin27_deep_t1.nii.gz")
    labels, kwargs, kind = read_layer(SAMPLES / "colin27_deep_labels.nii.gz")
    image[1]["name"] = "colin27 T1"
    kwargs = {**kwargs, "name": "annotations", "metadata": {**kwargs["metadata"], "class_names": list(CLASS_NAMES)}}
    return [image, (keep_slices(labels, ANNOTATED_SLICES), kwargs, kind)]
