"""Volumes, annotated slices, intensity normalisation and lazy slice sampling.

The engine trains a 2D network on slices along one axis. A :class:`Volume` keeps
the user's arrays untouched (no copy, no float64): slices are cut, normalised and
resampled in-plane only when a batch needs them, so memory follows the batch,
not the volume.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

#: Largest class value a label volume may hold (classes are stored as uint8).
MAX_CLASS = 255
#: Voxels sampled to estimate intensity statistics: enough for stable percentiles.
_STATS_SAMPLE = 2_000_000


def default_axis(spacing_zyx: Sequence[float]) -> int:
    """The slice axis: the one of coarsest spacing; the first array axis when isotropic."""
    sp = np.asarray(spacing_zyx, dtype=float)
    if np.allclose(sp, sp.max(), rtol=1e-3):
        return 0
    return int(np.argmax(sp))


def default_class_names(num_classes: int) -> list[str]:
    """Names of ``num_classes`` classes where the user gave none: background, then "class N"."""
    return ["background"] + [f"class {i}" for i in range(1, num_classes)]


def annotated_slices(labels: np.ndarray, axis: int) -> list[int]:
    """Slices along ``axis`` that hold any non-zero label (0 inside them is background)."""
    other = tuple(a for a in range(labels.ndim) if a != axis)
    return np.flatnonzero(np.any(labels != 0, axis=other)).tolist()


def keep_slices(labels: np.ndarray, slices: Sequence[int], axis: int = 0) -> np.ndarray:
    """A copy of ``labels`` with every slice but ``slices`` (along ``axis``) cleared."""
    out = np.zeros_like(labels)
    index = [slice(None)] * labels.ndim
    index[axis] = list(slices)
    out[tuple(index)] = labels[tuple(index)]
    return out


def painted_values(volumes) -> list[int]:
    """The label values on the annotated slices of ``volumes``, background (0) first."""
    values = {0}
    for v in volumes:
        if v.labels is not None and v.annotated:
            values.update(np.unique(np.take(v.labels, v.annotated, axis=v.axis)).tolist())
    return sorted(int(x) for x in values)


def to_classes(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """The user's label ``values`` as classes 0..N-1 (class c is ``values[c]``), in a new array;
    another value (on a slice not annotated, which training never reads) becomes background."""
    lut = np.zeros(int(labels.max()) + 1, np.uint8)
    for c, v in enumerate(values):
        if v < len(lut):
            lut[v] = c
    if isinstance(labels, np.memmap) and labels.filename:  # a cohort's labels stay on disk (cohort.load_volumes)
        return _mapped_classes(labels, lut, values)
    return lut[labels]


def _mapped_classes(labels: np.memmap, lut: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``lut[labels]`` written slice by slice beside the mapped ``labels`` and mapped in turn."""
    import os
    from pathlib import Path

    path = Path(labels.filename).with_name(f"classes-{'-'.join(map(str, values))}.npy")
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=labels.shape)
        for i in range(labels.shape[0]):
            out[i] = lut[labels[i]]
        out.flush()
        del out
        os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def check_image(image: np.ndarray, name: str = "image") -> None:
    """Refuse what cannot be trained on, with a message that says why."""
    if image.ndim == 2 or (image.ndim == 3 and min(image.shape) == 1):
        raise InputError(f"The {name} is a single 2D slice {image.shape}; napari-sslseg segments 3D volumes.")
    if image.ndim == 4:
        raise InputError(
            f"The {name} has 4 dimensions {image.shape} (channels or time); choose one channel first."
        )
    if image.ndim != 3:
        raise InputError(f"The {name} has {image.ndim} dimensions {image.shape}; a 3D volume is needed.")
    if image.dtype.kind not in "biuf":
        raise InputError(f"The {name} has voxel type {image.dtype}; a numeric volume is needed.")
    if image.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(image)))
        if bad:
            raise InputError(f"The {name} holds {bad} NaN or infinite voxels; fill or mask them first.")
    if image.min() == image.max():
        raise InputError(f"The {name} is constant (every voxel is {image.min()}); there is nothing to learn from.")


def check_labels(labels: np.ndarray, shape: tuple[int, ...], num_classes: int | None = None) -> np.ndarray:
    """Validate a label volume; return it as an integer array (the same array when it already is one)."""
    if not isinstance(labels, np.ndarray):  # a list, or another array type
        try:
            labels = np.asarray(labels)
        except (ValueError, TypeError):
            raise InputError(f"The labels ({type(labels).__name__}) are not an array of one shape; "
                             "give a (z, y, x) array of class numbers.") from None
    if tuple(labels.shape) != tuple(shape):
        raise InputError(f"The labels have shape {tuple(labels.shape)} but the image has {tuple(shape)}; they must share a grid.")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InputError("The labels hold fractional values; labels must be whole class numbers (0 = background).")
    elif labels.dtype.kind == "b":
        labels = labels.astype(np.uint8)
    elif labels.dtype.kind not in "iu":
        raise InputError(f"The labels have type {labels.dtype}; labels must be whole class numbers.")
    lo, hi = labels.min(), labels.max()
    if lo < 0:
        raise InputError(f"The labels hold negative values (down to {lo}); classes are 0 (background) and up.")
    limit = MAX_CLASS if num_classes is None else num_classes - 1
    if hi > limit:
        raise InputError(
            f"The labels hold class {int(hi)}, above the largest allowed ({limit}"
            + (f", the model knows {num_classes} classes" if num_classes else "")
            + "). Renumber the classes 1..N."
        )
    if labels.dtype.kind == "f":
        labels = labels.astype(np.uint8 if hi <= 255 else np.int32)
    return labels


@dataclass(frozen=True)
class IntensityStats:
    """Robust per-volume normalisation: clip to [low, high], then z-score."""

    low: float  # clip floor, in the image's units
    high: float  # clip ceiling
    mean: float  # mean of the clipped voxels
    std: float  # standard deviation of the clipped voxels (> 0)

    @classmethod
    def of(
        cls,
        image: np.ndarray,
        percentiles: tuple[float, float] = (0.5, 99.5),
        window: tuple[float, float] | None = None,
    ) -> "IntensityStats":
        """Estimate from a strided sample of the volume (no whole-volume float copy).

        Args:
            image: the volume, any numeric dtype.
            percentiles: clip range for MRI-like data, percent.
            window: a fixed (low, high) window, e.g. (-1000, 400) HU for CT; overrides percentiles.
        """
        flat = image.reshape(-1)
        step = max(1, flat.size // _STATS_SAMPLE)
        sample = flat[::step].astype(np.float32)
        lo, hi = window if window is not None else np.percentile(sample, percentiles)
        clipped = np.clip(sample, lo, hi)
        std = float(clipped.std())
        return cls(float(lo), float(hi), float(clipped.mean()), std if std > 1e-6 else 1.0)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.clip(x.astype(np.float32, copy=True), self.low, self.high)
        out -= self.mean
        out /= self.std
        return out


@dataclass
class Volume:
    """One image, with its labels (if any) and which slices are annotated.

    Arrays are (z, y, x) as read by SimpleITK or shown by napari; they are never modified.
    """

    image: np.ndarray  # the user's intensities, any numeric dtype
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mm, (z, y, x)
    labels: np.ndarray | None = None  # class per voxel, 0 = background; None = unlabelled volume
    annotated: list[int] | None = None  # annotated slices; None = every slice holding a label
    axis: int | None = None  # slice axis; None = coarsest spacing
    name: str = "volume"
    window: tuple[float, float] | None = None  # fixed intensity window (CT); None = percentiles
    stats: IntensityStats | None = field(default=None, repr=False)
    rejected: list[int] = field(default_factory=list)  # slices whose prediction the user rejected: no unlabelled loss there

    def __post_init__(self) -> None:
        check_image(self.image, f"image '{self.name}'")
        self.spacing = tuple(float(s) for s in self.spacing)
        if self.axis is None:
            self.axis = default_axis(self.spacing)
        if not 0 <= self.axis < 3:
            raise InputError(f"Slice axis {self.axis} does not exist; use 0, 1 or 2.")
        if self.labels is not None:
            self.labels = check_labels(self.labels, self.image.shape)
        self.set_annotated(self.annotated)
        if self.stats is None:
            self.stats = IntensityStats.of(self.image, window=self.window)

    @property
    def num_slices(self) -> int:
        return self.image.shape[self.axis]

    @property
    def slice_shape(self) -> tuple[int, int]:
        return tuple(s for a, s in enumerate(self.image.shape) if a != self.axis)

    @property
    def inplane_spacing(self) -> tuple[float, float]:
        return tuple(s for a, s in enumerate(self.spacing) if a != self.axis)

    def set_annotated(self, annotated: Sequence[int] | None) -> None:
        if self.labels is None:
            if annotated:
                raise InputError(f"Volume '{self.name}' has no labels, so it cannot have annotated slices.")
            self.annotated = []
            return
        if annotated is None:
            self.annotated = annotated_slices(self.labels, self.axis)
            return
        bad = [s for s in annotated if not 0 <= int(s) < self.num_slices]
        if bad:
            raise InputError(f"Annotated slices {bad} are outside 0..{self.num_slices - 1} along axis {self.axis}.")
        self.annotated = sorted({int(s) for s in annotated})

    def set_labels(self, labels: np.ndarray | None, annotated: Sequence[int] | None = None) -> None:
        """Take new labels (e.g. the user painted more slices); the array is used as given."""
        self.labels = None if labels is None else check_labels(labels, self.image.shape)
        self.set_annotated(annotated)

    @property
    def unannotated(self) -> list[int]:
        done = set(self.annotated)
        return [s for s in range(self.num_slices) if s not in done]

    @property
    def unlabelled(self) -> list[int]:
        """The unannotated slices training may learn from without labels: not those whose
        prediction the user rejected (a prediction the model must not be taught to trust)."""
        rejected = set(self.rejected)
        return [s for s in self.unannotated if s not in rejected]

    def prior(self, num_classes: int | None = None, class_names=None, label_values=None, previous=None,
              register: bool = True):
        """The propagation prior of the annotated slices (:func:`napari_sslseg.prior.propagate`), carried
        along the structures by registering this image's neighbouring slices; ``label_values``: the
        label value of each class, where the labels hold values, not classes; ``previous``: this
        volume's prior before the labels changed, whose registrations are reused where they apply;
        ``register``: False = shape interpolation only, no registration (cheap, for cohorts)."""
        from .prior import propagate

        labels = self.labels if label_values is None else to_classes(self.labels, label_values)
        return propagate(labels, self.annotated, self.axis, self.spacing, num_classes, class_names,
                         image=self.image if register else None, previous=previous)

    def image_slice(self, index: int) -> np.ndarray:
        """Normalised float32 slice."""
        return self.stats.apply(np.take(self.image, index, axis=self.axis))

    def image_stack(self, index: int, context: int = 0) -> np.ndarray:
        """(1 + 2 ``context``, H, W) normalised float32: the slice, then its neighbours nearest first
        (below, above; repeated at the volume's ends), for a network that sees 2.5D."""
        order = [index] + [index + d * sign for d in range(1, context + 1) for sign in (-1, 1)]
        last = self.num_slices - 1
        return np.stack([self.image_slice(min(max(i, 0), last)) for i in order])

    def label_slice(self, index: int) -> np.ndarray:
        return np.take(self.labels, index, axis=self.axis).astype(np.int64)


def check_volumes(volumes: Sequence[Volume]) -> None:
    """The training set needs at least one annotated slice and one slice axis orientation."""
    if not volumes:
        raise InputError("No volume to train on.")
    if not any(v.annotated for v in volumes):
        raise InputError(
            "No annotated slice: paint at least one slice of the labels (any non-zero class), "
            "or name the annotated slices explicitly."
        )
    if not any(np.take(v.labels, v.annotated, axis=v.axis).any() for v in volumes if v.annotated):
        raise InputError(
            "The annotated slices hold background only: paint at least one structure (a non-zero class) "
            "on one of them; there is nothing to learn to segment yet."
        )


def resample_slice(x: torch.Tensor, size: tuple[int, int], labels: bool = False) -> torch.Tensor:
    """Resize a (C, H, W) slice in-plane: bilinear for intensities, nearest for labels."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if labels:
        return F.interpolate(x[None].float(), size=size, mode="nearest")[0].long()
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]


def target_size(volume: Volume, target_spacing: tuple[float, float] | None) -> tuple[int, int]:
    """In-plane size of ``volume``'s slices once brought to ``target_spacing``."""
    if target_spacing is None:
        return volume.slice_shape
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(volume.slice_shape, volume.inplane_spacing, target_spacing)
    )


class SlicePool:
    """Annotated and unannotated slices of several volumes, sampled lazily.

    All slices are brought to the in-plane spacing of the first annotated volume, so
    that one network sees one scale.
    """

    def __init__(self, volumes: Sequence[Volume]):
        check_volumes(volumes)
        self.volumes = list(volumes)
        first = next(v for v in self.volumes if v.annotated)
        self.target_spacing = first.inplane_spacing
        self.refresh()

    def refresh(self) -> None:
        """Rebuild the pools after annotations changed."""
        self.labelled = [(i, s) for i, v in enumerate(self.volumes) for s in v.annotated]
        self.unlabelled = [(i, s) for i, v in enumerate(self.volumes) for s in v.unlabelled]
        check_volumes(self.volumes)

    def num_classes(self) -> int:
        hi = 1
        for v in self.volumes:
            if v.labels is not None and v.annotated:
                idx = np.asarray(v.annotated)
                hi = max(hi, int(np.take(v.labels, idx, axis=v.axis).max()))
        return hi + 1

    def image(self, item: tuple[int, int], context: int = 0) -> torch.Tensor:
        """(1 + 2 ``context``, H, W) at the training grid: the slice and its neighbours (``Volume.image_stack``)."""
        v = self.volumes[item[0]]
        x = torch.from_numpy(v.image_stack(item[1], context))
        return resample_slice(x, target_size(v, self.target_spacing))

    def label(self, item: tuple[int, int]) -> torch.Tensor:
        v = self.volumes[item[0]]
        y = torch.from_numpy(v.label_slice(item[1]))[None]
        return resample_slice(y, target_size(v, self.target_spacing), labels=True)
