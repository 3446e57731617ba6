"""Result layers (prediction, pseudo-labels, confidence, uncertainty) and the review of pseudo-labels.

Results always live in their own layers; the user's labels change only through
:func:`accept_slices`, as one undoable step.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

#: Float maps of a prediction shown as images, by layer name -> Prediction attribute.
MAPS = {
    "confidence": "confidence",
    "uncertainty": "uncertainty",
    "discriminator confidence": "discriminator_confidence",
}
#: Perceptual colormap of each map.
#: Uncertainty in one hue unlike any class colour, bright where it is high; confidence likewise,
#: shown inside predicted structures only (elsewhere it is the background's, near 1 everywhere).
COLORMAPS = {"confidence": "green", "uncertainty": "yellow", "discriminator confidence": "cyan"}


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


@contextmanager
def keep_selection(viewer):
    """Leave the user's selection, active layer and its mode as they were.

    napari selects every layer it adds; a preview arriving while the user paints would move
    the brush and Ctrl+Z to a result layer.
    """
    selection = viewer.layers.selection
    active, chosen = selection.active, list(selection)
    mode = getattr(active, "mode", None)
    try:
        yield
    finally:
        chosen = [layer for layer in chosen if layer in viewer.layers]
        if active is not None and active in viewer.layers:
            selection.active = active  # selects it alone, and makes it the one keys and controls act on
            selection.update(chosen)
        else:
            selection.clear()
            selection.update(chosen)
        if mode is not None and active.mode != mode:
            active.mode = mode


def name_classes(layer, class_names, replace: bool = True) -> None:
    """Hovering a labels layer shows the class's name: napari's status bar reads the layer's features.

    ``replace=False`` leaves a layer that has features of its own (the user's) as it is.
    """
    if not class_names or (not replace and layer.features.shape[1]):
        return
    layer.features = {"index": list(range(len(class_names))), "class": list(class_names)}


def show_prediction(viewer, prediction, image_layer, threshold: float, suffix: str = "", class_names=()) -> dict:
    """Show ``prediction`` over ``image_layer`` in the result layers, leaving the selection and the
    mode alone; returns the layers by kind."""
    with keep_selection(viewer):
        layers = _show_prediction(viewer, prediction, image_layer, threshold, suffix)
    for kind in ("prediction", "pseudo-labels"):
        name_classes(layers[kind], class_names)
    return layers


def _show_prediction(viewer, prediction, image_layer, threshold: float, suffix: str) -> dict:
    place = _place(image_layer)
    layers = {
        # outlines: the image and the user's labels stay readable under the prediction
        "prediction": _set_layer(viewer, result_name("prediction", suffix), prediction.labels, "labels", place,
                                 contour=2, opacity=0.9),
        "pseudo-labels": _set_layer(viewer, result_name("pseudo-labels", suffix), pseudo_labels(prediction, threshold),
                                    "labels", place, opacity=0.35),
    }
    for kind, attr in MAPS.items():
        data = getattr(prediction, attr, None)
        if data is None:
            continue
        if kind == "confidence":
            data = np.where(prediction.labels > 0, data, 0).astype(np.float32)
        limits = (0.0, 1.0) if kind != "uncertainty" else uncertainty_limits(data)
        layers[kind] = _set_layer(
            viewer,
            result_name(kind, suffix),
            data,
            "image",
            place,
            colormap=COLORMAPS[kind],
            blending="additive",
            contrast_limits=limits,
            opacity=0.8,
            visible=False,  # overlays on demand (the panel's "u" key), the prediction stays readable
        )
        if kind == "uncertainty":
            layers[kind].contrast_limits = limits
    return layers


def uncertainty_limits(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits of the uncertainty: black below its 90th percentile (most voxels, far from any
    structure: they would tint the whole image), full colour from its 99.5th (the structures' edges)."""
    low, high = np.percentile(data.ravel()[:: max(1, data.size // 10**6)], (90, 99.5))
    return float(low), float(max(high, low + 1e-6))


def slice_index(axis: int, slices, shape) -> tuple[np.ndarray, ...]:
    """Fancy indices of every voxel of ``slices`` along ``axis``."""
    grids = [np.arange(n) for n in shape]
    grids[axis] = np.asarray(list(slices), dtype=int)
    return tuple(g.ravel() for g in np.meshgrid(*grids, indexing="ij"))


def accept_slices(labels_layer, axis: int, slices, values: np.ndarray) -> None:
    """Write ``values`` (the slices' new labels, stacked along ``axis``) into the user's labels as
    one undoable step."""
    indices = slice_index(axis, slices, labels_layer.data.shape)
    with labels_layer.block_history():
        labels_layer.data_setitem(indices, values.astype(labels_layer.data.dtype).ravel())


def legend_html(layer, class_names) -> str:
    """Each class's name in its colour on ``layer``: the legend of the prediction."""
    items = []
    for index, name in enumerate(class_names):
        if index == 0:
            continue
        r, g, b = (int(round(255 * c)) for c in np.asarray(layer.get_color(index))[:3])
        items.append(f'<span style="color:#{r:02x}{g:02x}{b:02x}">&#9632;</span>&nbsp;{name}')
    return "&nbsp;&nbsp; ".join(items)


def suggestion_reason(prediction, slice_: int, class_names, annotated=()) -> str:
    """Why ``slice_`` is suggested, in a user's words: the structure its uncertainty lies in, and
    how far it is from the nearest annotated slice."""
    index = [slice(None)] * prediction.labels.ndim
    index[prediction.axis] = slice_
    labels = prediction.labels[tuple(index)].ravel()
    uncertainty = prediction.uncertainty[tuple(index)].ravel().astype(np.float64)
    per_class = np.bincount(labels, weights=uncertainty, minlength=len(class_names))
    per_class[0] = 0  # the background's uncertainty is the structures' edges, named by their class
    if per_class.any():
        c = int(np.argmax(per_class))
        where = f"uncertain inside {class_names[c] if c < len(class_names) else f'class {c}'}"
    else:
        where = "no structure predicted here, is one missing?"
    if len(annotated):
        distance = int(min(abs(slice_ - int(a)) for a in annotated))
        return f"{where}, {distance} slice{'s' if distance != 1 else ''} from your nearest annotation"
    return where
