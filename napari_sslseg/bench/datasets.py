"""The benchmark's inputs: an image with dense ground-truth labels (whole, or cropped to the task with ``--crop``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import annotated_slices, default_class_names
from ..errors import InputError
from ..io import read_volume

#: colin27: the AAL atlas drawn on this brain; left and right merged into 5 deep structures.
COLIN27_MAP = {71: 1, 72: 1, 73: 2, 74: 2, 75: 3, 76: 3, 77: 4, 78: 4, 37: 5, 38: 5}
COLIN27_CLASSES = ["background", "caudate", "putamen", "pallidum", "thalamus", "hippocampus"]
MNI152_CLASSES = ["background", "grey matter", "white matter"]
#: The radiomics cases (pyradiomics' test data, ../shared/data/radiomics): one lesion each.
RADIOMICS = {"brain1": ["background", "tumour"], "breast1": ["background", "lesion"]}
PRESETS = ("colin27", "mni152", *RADIOMICS)
#: Steps per training where a preset's default differs from BenchConfig.steps. mni152 has larger
#: slices than colin27: scoring a model (whole-volume prediction and 95% Hausdorff distance on large
#: surfaces) costs far more, so its default run trains fewer steps (an easy task: the models learn
#: it by 100 steps).
PRESET_STEPS = {"mni152": 100}
#: Annotated-slice counts where a preset's labels cover too few slices for BenchConfig's 2, 4, 8
#: (they are the time axis's too): brain1's tumour lies on 7 slices (6.5 mm apart), breast1's
#: lesion on 3 (k=3 there would leave no lesion to score).
PRESET_KS = {"brain1": [2, 3], "breast1": [1, 2]}


@dataclass
class Dataset:
    """A labelled volume, (z, y, x)."""

    name: str
    image: np.ndarray
    labels: np.ndarray  # uint8, 0 = background
    spacing: tuple[float, float, float]  # mm
    class_names: list[str]
    source: str  # where it came from, for the report


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository, when it exists."""
    here = Path(__file__).resolve().parents[3] / "shared" / "data"
    for cand in (Path.cwd().parent / "shared" / "data", here):
        if cand.is_dir():
            return cand
    return None


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


def load_preset(name: str, root: Path | None = None) -> Dataset:
    root = Path(root) if root else shared_data_dir()
    if root is None:
        raise InputError(f"Dataset '{name}' needs ../shared/data; pass IMAGE LABELS instead.")
    if name == "colin27":
        ds = load_pair(root / "colin27/ch2.nii.gz", root / "colin27/aal.nii.gz", COLIN27_MAP, "colin27")
        ds.class_names = list(COLIN27_CLASSES)
        return ds
    if name == "mni152":
        image, geom = read_volume(root / "mni152/t1.nii.gz")
        gm, _ = read_volume(root / "mni152/gm.nii.gz")
        wm, _ = read_volume(root / "mni152/wm.nii.gz")
        labels = np.zeros(image.shape, np.uint8)
        labels[(gm >= 128) & (gm >= wm)] = 1
        labels[(wm >= 128) & (wm > gm)] = 2
        return Dataset("mni152", image, labels, geom.spacing_zyx, list(MNI152_CLASSES), str(root / "mni152"))
    if name in RADIOMICS:
        ds = load_pair(root / f"radiomics/{name}_image.nrrd", root / f"radiomics/{name}_label.nrrd", None, name)
        ds.class_names = list(RADIOMICS[name])
        return ds
    raise InputError(f"Unknown dataset '{name}'; presets: {', '.join(PRESETS)}.")


def labelled_box(labels: np.ndarray) -> tuple[slice, slice, slice]:
    """Bounding box of the non-zero labels."""
    box = []
    for axis in range(labels.ndim):
        idx = annotated_slices(labels, axis)
        if not idx:
            raise InputError("The labels are empty: nothing to benchmark against.")
        box.append(slice(idx[0], idx[-1] + 1))
    return tuple(box)


def crop_to_labels(ds: Dataset, margin: int) -> Dataset:
    """Keep the labelled box plus ``margin`` voxels (``--crop``): cheaper, but a box a user never has,
    and it hides the false positives a model paints far from every structure."""
    box = labelled_box(ds.labels)
    box = tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, ds.labels.shape))
    return Dataset(ds.name, ds.image[box], ds.labels[box], ds.spacing, ds.class_names, ds.source)
