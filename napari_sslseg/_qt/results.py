"""Result layers (prediction, pseudo-labels, confidence, uncertainty) and the review of pseudo-labels.

Results always live in their own layers; the user's labels change only through
:func:`accept_slices`, as one undoable step.
"""

from __future__ import annotations

import numpy as np

#: Float maps of a prediction shown as images, by layer name -> Prediction attribute.
MAPS = {
    "confidence": "confidence",
    "uncertainty": "uncertainty",
    "discriminator confidence": "discriminator_confidence",
}
#: Perceptual colormap of each map.
COLORMAPS = {"confidence": "viridis", "uncertainty": "magma", "discriminator confidence": "inferno"}


def pseudo_labels(prediction, threshold: float) -> np.ndarray:
    """The predicted classes where the confidence reaches ``threshold``; 0 elsewhere."""
    return np.where(prediction.confidence >= threshold, prediction.labels, 0).astype(np.uint8)


def result_name(kind: str, suffix: str = "") -> str:
    return f"{kind} ({suffix})" if suffix else kind


def _place(image_layer) -> dict:
    """Where the image sits: results share its grid and metadata (so they save on the source grid)."""
    return {
        "scale": tuple(image_layer.scale),
        "translate": tuple(image_layer.translate),
        "metadata": dict(image_layer.metadata),
    }


def _set_layer(viewer, name: str, data: np.ndarray, kind: str, place: dict, contour: int = 0, **style):
    """Update the layer called ``name`` in place, or add it (styled once: the user may restyle it)."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        if layer.data.shape == data.shape:
            layer.data = data
            return layer
        viewer.layers.remove(layer)
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    layer = add(data, name=name, **place, **style)
    if contour:
        layer.contour = contour
    return layer


def show_prediction(viewer, prediction, image_layer, threshold: float, suffix: str = "") -> dict:
    """Show ``prediction`` over ``image_layer`` in the result layers; returns them by kind."""
    place = _place(image_layer)
    layers = {
        "prediction": _set_layer(viewer, result_name("prediction", suffix), prediction.labels, "labels", place, opacity=0.45),
        "pseudo-labels": _set_layer(
            viewer, result_name("pseudo-labels", suffix), pseudo_labels(prediction, threshold), "labels", place, contour=1
        ),
    }
    for kind, attr in MAPS.items():
        data = getattr(prediction, attr, None)
        if data is None:
            continue
        limits = (0.0, 1.0) if kind != "uncertainty" else (0.0, max(float(data.max()), 1e-6))
        layers[kind] = _set_layer(
            viewer,
            result_name(kind, suffix),
            data,
            "image",
            place,
            colormap=COLORMAPS[kind],
            blending="additive",
            contrast_limits=limits,
            opacity=0.6,
            visible=False,  # overlays on demand (the panel's "u" key), the prediction stays readable
        )
        if kind == "uncertainty":
            layers[kind].contrast_limits = limits
    return layers


def slice_index(axis: int, slices, shape) -> tuple[np.ndarray, ...]:
    """Fancy indices of every voxel of ``slices`` along ``axis``."""
    grids = [np.arange(n) for n in shape]
    grids[axis] = np.asarray(list(slices), dtype=int)
    return tuple(g.ravel() for g in np.meshgrid(*grids, indexing="ij"))


def accept_slices(labels_layer, prediction_labels: np.ndarray, axis: int, slices) -> None:
    """Copy the prediction of ``slices`` into the user's labels as one undoable step."""
    indices = slice_index(axis, slices, labels_layer.data.shape)
    values = prediction_labels[indices].astype(labels_layer.data.dtype)
    with labels_layer.block_history():
        labels_layer.data_setitem(indices, values)


def reject_slices(pseudo_layer, axis: int, slices) -> None:
    """Clear the pseudo-labels of ``slices`` (a result layer, never the user's labels)."""
    index = [slice(None)] * pseudo_layer.data.ndim
    index[axis] = list(slices)
    pseudo_layer.data[tuple(index)] = 0
    pseudo_layer.refresh()
