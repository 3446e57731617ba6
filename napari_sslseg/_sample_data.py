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
    labels = keep_slices(labels, ANNOTATED_SLICES)
    _show_an_annotated_slice(labels)
    return [image, (labels, kwargs, kind)]


def _show_an_annotated_slice(labels) -> None:
    """Put the slider of the viewer that opens the sample on the annotated slice nearest the middle.

    napari puts a new volume on its middle slice (90, which holds no label) and a sample has no say
    in it (napari/napari#8453); the labels layer is added after the image, so once napari has added
    it, the step it set is moved. The viewer is napari's current one (File > Open Sample acts on it);
    a call outside a viewer changes nothing.
    """
    from napari import current_viewer
    from napari.layers import Labels

    viewer = current_viewer()
    if viewer is None:
        return
    middle = (len(labels) - 1) / 2
    z = min(ANNOTATED_SLICES, key=lambda s: abs(s - middle))

    def on_inserted(event) -> None:
        layer = event.value
        if not (isinstance(layer, Labels) and layer.data is labels):
            return
        viewer.layers.events.inserted.disconnect(on_inserted)
        axis = viewer.dims.ndim - layer.ndim
        viewer.dims.set_point(axis, layer.data_to_world((z, 0, 0))[0])

    viewer.layers.events.inserted.connect(on_inserted)


def write_sample(folder) -> Path:
    """Write the sample's 4 annotated slices as ``annotations.nii.gz`` in ``folder`` (on the T1's
    grid), for the command line; returns the file."""
    from .io import read_volume, write_volume

    labels, geometry = read_volume(SAMPLES / "colin27_deep_labels.nii.gz")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_volume(keep_slices(labels, ANNOTATED_SLICES), geometry, folder / "annotations.nii.gz")
