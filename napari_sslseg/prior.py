"""A propagation prior from the annotated slices alone, ready in a second.

Shape-based interpolation (Raya & Udupa 1990; Herman et al. 1992): every connected piece of
every class on every annotated slice becomes a signed distance map (SimpleITK, in mm, negative
inside). Between two annotated slices each piece is paired with the nearest piece of its class on
the other slice, both are moved to where their centroids meet, and their maps are blended
linearly (on the whole Colin27 head, 4 annotated slices: mean Dice 0.512 without the pairing and
moving, 0.649 with it). A piece without a pair shrinks towards its own centroid and vanishes at
the other slice; beyond the outermost annotated slice it tapers the same way over half the mean
gap between annotated slices (what spacing the annotations evenly over a structure leaves at
each end).

The result is per-voxel class probabilities (a sigmoid of the blended distance, softer the
farther the slice is from an annotation) and a confidence that falls with that distance.
Slices are computed on demand (:meth:`Prior.slice_probabilities`), so a prior costs the
distance maps of the annotated slices, not a volume of probabilities; :meth:`Prior.volume`
builds the whole thing for the viewer or the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .data import annotated_slices

#: Sharpness of the prior's edges at an annotated slice, mm: the sigmoid's scale there.
_EDGE_MM = 1.0
#: Extra softness per slice of distance to the nearest annotation, in units of the slice spacing.
_SOFTEN = 0.35


def _signed_distance(mask: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Signed distance to the mask's boundary, mm, negative inside (SimpleITK, exact Maurer)."""
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.SetSpacing((float(spacing_yx[1]), float(spacing_yx[0])))
    d = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    # Maurer's map is 0 on the mask's own edge pixels: half a pixel in, the edge lies between
    # the last pixel inside and the first outside, so a blend of two equal masks is that mask
    return sitk.GetArrayFromImage(d).astype(np.float32) - 0.5 * min(spacing_yx)


@dataclass
class _Part:
    """One connected piece of a class on an annotated slice."""

    sdf: np.ndarray  # signed distance to its edge, mm, negative inside
    cone: np.ndarray  # distance to its centroid, mm: the shape it shrinks to where it ends
    centroid: np.ndarray  # (y, x), pixels
    radius: float  # radius of a disc of its area, mm


def _parts(mask: np.ndarray, spacing_yx: tuple[float, float]) -> list[_Part]:
    """The connected pieces of ``mask`` (a left and a right structure are two), each with its maps."""
    pieces = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    out = []
    for i in range(1, int(pieces.max()) + 1):
        m = pieces == i
        ys, xs = np.nonzero(m)
        cy, cx = ys.mean(), xs.mean()
        yy = (np.arange(m.shape[0], dtype=np.float32) - cy) * spacing_yx[0]
        xx = (np.arange(m.shape[1], dtype=np.float32) - cx) * spacing_yx[1]
        cone = np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
        radius = float(np.sqrt(len(ys) * spacing_yx[0] * spacing_yx[1] / np.pi))
        out.append(_Part(_signed_distance(m, spacing_yx), cone, np.array([cy, cx]), radius))
    return out


def _shift(a: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``a`` moved by (dy, dx) whole pixels (rounded), edges repeated."""
    dy, dx = int(round(dy)), int(round(dx))
    if dy == 0 and dx == 0:
        return a
    H, W = a.shape
    p = np.pad(a, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    y0, x0 = abs(dy) - dy, abs(dx) - dx
    return p[y0 : y0 + H, x0 : x0 + W]


def _taper(part: _Part, t: float) -> np.ndarray:
    """The piece shrunk towards its centroid, ``t`` of the way to nothing."""
    return (1 - t) * part.sdf + t * part.cone


def _match(lo: list[_Part], hi: list[_Part], spacing_yx) -> list[tuple[int, int]]:
    """Pairs of pieces on two annotated slices that are one structure: nearest centroids first, each
    piece once, and only where the centroids lie within the two radii summed (twice over)."""
    sp = np.asarray(spacing_yx)
    cand = sorted(
        (float(np.linalg.norm((a.centroid - b.centroid) * sp)), i, j)
        for i, a in enumerate(lo)
        for j, b in enumerate(hi)
    )
    used_i, used_j, pairs = set(), set(), []
    for dist, i, j in cand:
        if i in used_i or j in used_j or dist > 2 * (lo[i].radius + hi[j].radius):
            continue
        pairs.append((i, j))
        used_i.add(i)
        used_j.add(j)
    return pairs


@dataclass
class Prior:
    """Class probabilities on every slice, interpolated from the annotated ones.

    Build with :func:`propagate`. Arrays are in the volume's (z, y, x) order.
    """

    axis: int  # slice axis
    shape: tuple[int, int, int]  # the volume's shape
    num_classes: int
    annotated: list[int]  # annotated slices, sorted
    slice_spacing: float  # mm between slices
    reach: float  # slices over which a structure tapers off beyond the outermost annotation
    spacing_yx: tuple[float, float] = (1.0, 1.0)  # in-plane mm
    _parts: dict = field(repr=False, default_factory=dict)  # (slice, class) -> its connected pieces
    _painted: dict = field(repr=False, default_factory=dict)  # annotated slice -> its labels
    warnings: list[str] = field(default_factory=list)  # where the prior will be weak, in words

    @property
    def num_slices(self) -> int:
        return self.shape[self.axis]

    @property
    def slice_shape(self) -> tuple[int, int]:
        return tuple(s for a, s in enumerate(self.shape) if a != self.axis)

    def distance(self, s: int) -> int:
        """Slices from ``s`` to the nearest annotated slice."""
        return int(min((abs(s - a) for a in self.annotated), default=self.num_slices))

    def _class_distance(self, s: int, c: int) -> np.ndarray | None:
        """Blended signed distance of class ``c`` on slice ``s``, mm; None = the class is absent.

        Between two annotated slices, each piece of the class on one is paired with the nearest
        piece on the other; a pair is blended after moving both to where their centroids meet at
        this slice (a structure that moves from slice to slice, like the hippocampus, keeps its
        size instead of thinning out where the two shapes overlap little). A piece without a pair
        shrinks to its centroid and is gone at the other slice.
        """
        A = self.annotated
        below = [a for a in A if a < s]
        above = [a for a in A if a > s]
        lo, hi = (below[-1] if below else None), (above[0] if above else None)
        maps = []
        if lo is not None and hi is not None:
            t = (s - lo) / (hi - lo)
            p_lo, p_hi = self._parts.get((lo, c), []), self._parts.get((hi, c), [])
            pairs = _match(p_lo, p_hi, self.spacing_yx)
            for i, j in pairs:
                a, b = p_lo[i], p_hi[j]
                dy, dx = b.centroid - a.centroid
                maps.append((1 - t) * _shift(a.sdf, t * dy, t * dx) + t * _shift(b.sdf, -(1 - t) * dy, -(1 - t) * dx))
            maps += [_taper(a, t) for i, a in enumerate(p_lo) if i not in {i for i, _ in pairs}]
            maps += [_taper(b, 1 - t) for j, b in enumerate(p_hi) if j not in {j for _, j in pairs}]
        else:
            end = lo if lo is not None else hi
            t = abs(s - end) / self.reach
            if t < 1:
                maps = [_taper(p, t) for p in self._parts.get((end, c), [])]
        return np.minimum.reduce(maps) if maps else None

    def slice_probabilities(self, s: int) -> np.ndarray:
        """(C, H, W) float32 class probabilities of slice ``s``, summing to 1."""
        H, W = self.slice_shape
        if not self.annotated:  # nothing is known: all background
            out = np.zeros((self.num_classes, H, W), np.float32)
            out[0] = 1
            return out
        if s in self._painted:  # what the user painted is certain
            onehot = np.zeros((self.num_classes, H, W), np.float32)
            np.put_along_axis(onehot, self._painted[s][None].astype(np.int64), 1.0, axis=0)
            return onehot
        dist = self.distance(s)
        scale = _EDGE_MM + _SOFTEN * dist * self.slice_spacing
        fg = np.zeros((self.num_classes, H, W), np.float32)
        for c in range(1, self.num_classes):
            d = self._class_distance(s, c)
            if d is not None:
                fg[c] = 1.0 / (1.0 + np.exp(np.clip(d / scale, -50, 50)))
        # background is what no class claims; classes compete where their shapes overlap
        fg[0] = np.clip(1.0 - fg[1:].max(axis=0), 1e-3, None) if self.num_classes > 1 else 1.0
        fg /= fg.sum(axis=0, keepdims=True)
        return fg

    def slice_confidence(self, s: int, probabilities: np.ndarray | None = None) -> np.ndarray:
        """(H, W) float32 in [0, 1]: the largest probability, discounted with distance to an annotation.

        At an annotated slice this is 1; it halves every ``reach`` slices away, so slices deep in
        a long gap, and slices beyond the last annotation, are trusted less.
        """
        p = self.slice_probabilities(s) if probabilities is None else probabilities
        decay = 0.5 ** (self.distance(s) / max(self.reach, 1.0))
        return (p.max(axis=0) * decay).astype(np.float32)

    def without(self, s: int) -> "Prior":
        """The prior of every annotated slice but ``s``: what the others say about slice ``s``.

        The network that takes the prior as input learns on annotated slices from these
        leave-one-out priors, so that it learns to correct a prior rather than to copy it.
        """
        rest = [a for a in self.annotated if a != s]
        if not rest:
            return replace(self, annotated=[], _painted={}, warnings=[])
        return replace(self, annotated=rest, reach=_reach(rest, self.reach), _painted={a: self._painted[a] for a in rest},
                       warnings=[])

    def volume(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels uint8, confidence float32, probabilities uint8 (C, z, y, x) x255) of the whole volume."""
        labels = np.zeros(self.shape, np.uint8)
        conf = np.zeros(self.shape, np.float32)
        probs = np.zeros((self.num_classes, *self.shape), np.uint8)
        lv, cv = np.moveaxis(labels, self.axis, 0), np.moveaxis(conf, self.axis, 0)
        pv = np.moveaxis(probs, self.axis + 1, 1)
        for s in range(self.num_slices):
            p = self.slice_probabilities(s)
            lv[s] = p.argmax(0)
            cv[s] = self.slice_confidence(s, p)
            pv[:, s] = (p * 255 + 0.5).astype(np.uint8)
        return labels, conf, probs


def _reach(annotated: Sequence[int], default: float) -> float:
    """Slices a structure tapers over beyond the outermost annotation: half the mean gap, at least 2."""
    gaps = np.diff(annotated)
    return float(max(2.0, gaps.mean() / 2)) if len(gaps) else default


def propagate(
    labels: np.ndarray,
    annotated: Sequence[int],
    axis: int,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> Prior:
    """The prior of a label volume whose ``annotated`` slices along ``axis`` are painted.

    Args:
        labels: (z, y, x) classes, 0 = background; only the annotated slices are read.
        annotated: the annotated slices (an all-background one counts: no structure there).
        axis: slice axis.
        spacing: (z, y, x) mm.
        num_classes: classes including background; default: the largest label + 1.
        class_names: for the warnings; default "class N".
    """
    A = sorted({int(a) for a in annotated})
    if not A:
        raise ValueError("A prior needs at least one annotated slice.")
    if num_classes is None:
        num_classes = int(max(int(np.take(labels, A, axis=axis).max()), 1)) + 1
    names = list(class_names or []) + [f"class {c}" for c in range(len(class_names or []), num_classes)]
    spacing_yx = tuple(float(s) for a, s in enumerate(spacing) if a != axis)
    gaps = np.diff(A)
    prior = Prior(axis, tuple(labels.shape), num_classes, A, float(spacing[axis]), _reach(A, 0.0), spacing_yx)
    seen: dict[int, list[int]] = {c: [] for c in range(1, num_classes)}
    for a in A:
        sl = np.take(labels, a, axis=axis)
        prior._painted[a] = np.minimum(sl, num_classes - 1).astype(np.uint8)
        for c in range(1, num_classes):
            mask = sl == c
            if mask.any():
                prior._parts[(a, c)] = _parts(mask, spacing_yx)
                seen[c].append(a)
    if len(A) == 1:
        # no gap to learn a taper from: let a structure reach as far as it is wide
        areas = [np.count_nonzero(prior._painted[A[0]] == c) * spacing_yx[0] * spacing_yx[1] for c in range(1, num_classes)]
        radius_mm = float(np.sqrt(max(areas) / np.pi)) if max(areas, default=0) else 0.0
        prior.reach = max(2.0, radius_mm / prior.slice_spacing)
        prior.warnings.append("Only one annotated slice: the prior guesses how far each structure reaches from its width.")
    for c, where in seen.items():
        if not where:
            prior.warnings.append(f"{names[c]} is on none of the annotated slices: the prior never predicts it.")
        elif len(where) == 1 and len(A) > 1:
            prior.warnings.append(f"{names[c]} is painted on one slice only ({where[0]}): its extent is a guess.")
    painted = {b: len(annotated_slices(labels, b)) for b in range(3)}
    other = min((b for b in range(3) if b != axis), key=painted.get)
    if 0 < painted[other] < painted[axis] / 2:
        prior.warnings.append(
            f"The labels look painted on {painted[other]} slices along axis {other}, not along axis {axis} (where "
            f"{painted[axis]} slices hold some label): choose the slice axis they were painted on."
        )
    if len(A) > 1 and gaps.min() == 1 and len(A) < 4:
        prior.warnings.append("The annotated slices are next to each other: they tell little about the rest of the volume.")
    return prior
