"""The data sets of this repository's benchmark runs (``--dataset``), read from ``../shared/data``
beside the checkout: the AAL atlas on Colin27, the MNI152 tissue maps, two pyradiomics cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_sslseg.bench.datasets import Dataset, load_pair
from napari_sslseg.errors import InputError
from napari_sslseg.io import read_volume

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


def shared_data_dir() -> Path | None:
    """``../shared/data`` beside the repository, when it exists."""
    here = Path(__file__).resolve().parents[3] / "shared" / "data"
    for cand in (Path.cwd().parent / "shared" / "data", here):
        if cand.is_dir():
            return cand
    return None


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


