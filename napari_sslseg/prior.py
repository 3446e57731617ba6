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

Given the image, neighbouring slices are registered (2D demons, SimpleITK, inside the annotations'
in-plane box) and the annotated shapes are also carried along the structures by the composed
displacements, which follows a structure whose path bends between two annotations (on the whole
Colin27 head, 4 annotated slices: 0.649 without, 0.685 with; mni152's grey and white matter 0.511
and 0.608). A class in many pieces (a cortex) is blended whole rather than piece by piece.

The result is per-voxel class probabilities (a sigmoid of the blended distance, softer the
farther the slice is from an annotation) and a confidence that falls with that distance.
(The registration's residual, the carried annotated image against the slice's own, was tried as
a second discount: on the whole Colin27 head, 4 annotated slices, the confidence's AUROC for
telling right from wrong voxels near the structures fell from 0.676 to 0.650 (residual scale
0.15; 0.675 at 1.0); the residual alone scored 0.558: the prior's errors lie on the edges, where
the images match.)
Slices are computed on demand (:meth:`Prior.slice_probabilities`), so a prior costs the
distance maps of the annotated slices, not a volume of probabilities; :meth:`Prior.volume`
builds the whole thing for the viewer or the command line.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from .data import annotated_slices

#: Sharpness of the prior's edges at an annotated slice, mm: the sigmoid's scale there.
_EDGE_MM = 1.0
#: Extra softness per slice of distance to the nearest annotation, in units of the slice spacing.
_SOFTEN = 0.35


#: Pieces of a class on a slice beyond which it is blended whole, not piece by piece. On mni152's grey
#: and white matter (dozens of pieces), 4 annotated slices: mean Dice 0.351 piece by piece, 0.527 whole;
#: on Colin27's deep structures (one or two pieces each) piece by piece is better, 0.649 against 0.600.
_MANY_PIECES = 3
#: Share of the registration-transported maps when blended with the centroid-shifted ones (where an
#: image is given): on the whole Colin27 head, 4 annotated slices, mean Dice 0.649 with none, 0.663
#: at 0.3, 0.675 at 0.7 and at 1 (95% Hausdorff 5.7, 5.8, 5.9 mm).
FLOW_WEIGHT = 0.7
#: Margin around the annotations' in-plane box that is registered, mm.
_FLOW_MARGIN_MM = 15.0
#: Demons iterations per pair of neighbouring slices at each resolution, coarsest first (each level
#: half the resolution of the one after it). On slices this small an iteration costs about the same
#: at every level (SimpleITK's per-iteration overhead, not the pixels, sets the time). 20, 10, 5
#: took 40% less time for the same prior (mean Dice over every unannotated slice: colin27 k=4
#: 0.6845 / 0.6824 in 4.6 / 2.6 s, mni152 k=4 0.6081 / 0.6088 in 12.4 / 7.5 s, brain1 k=2 0.5737 /
#: 0.5734), but after 600 s of `bcp` on colin27 k=4 (seed 0) the prediction scored 0.725 against
#: 0.737 with 20 at every level, the pallidum 0.39 against 0.47: not adopted (BENCHMARKS.md, seventh round).
_DEMONS_ITERATIONS = (20, 20, 20)
#: The smoothing of the displacement, pixels of each level.
_DEMONS_SMOOTHING = 2.0
#: Largest side of the registered box, pixels: larger boxes are registered at a coarser grid.
_FLOW_SIDE = 128
#: The last registration made, kept for the next prior of the same image, box and intensity window
#: (another training on the same slices after Stop or with another method, a prediction after a
#: training in one command line): its slices are not registered again (4.6 s on the whole Colin27
#: head with 4 annotated slices, 12 s on mni152). The same probabilities either way (a registration
#: is deterministic). One only: it holds its displacement fields (30 MB on that head).
_kept: dict = {}
_KEPT_LOCK = threading.Lock()


class _Flow:
    """Where each pixel of a slice comes from on another slice, by registering neighbouring image slices.

    Each neighbouring pair of slices is registered once (SimpleITK's fast symmetric-forces demons,
    inside the annotations' in-plane box plus a margin); the displacement from slice ``s`` back to an
    annotated slice ``a`` composes the steps between them. Everything is computed on first use and
    kept, so that the leave-one-out priors of training (:meth:`Prior.without`) share it.
    """

    def __init__(self, image: np.ndarray, axis: int, spacing_yx, box: tuple[slice, slice], window: tuple[float, float]):
        self.image, self.axis, self.box = image, axis, box
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        self.shrink = max(1, int(np.ceil(max(h, w) / _FLOW_SIDE)))
        self.spacing_xy = (float(spacing_yx[1]), float(spacing_yx[0]))
        self.lo, self.hi = window  # intensities mapped to 0 and 1: those around the annotations (:func:`_flow`)
        self._steps: dict[tuple[int, int], sitk.Image] = {}  # (s, s +- 1) -> displacement of s's points
        self._total: dict[tuple[int, int], sitk.Image] = {}  # (a, s) -> displacement of s's points to a
        self._slices: dict[int, sitk.Image] = {}  # the registered slices, normalised (and shrunk)
        self._warpers: dict = {}  # (a, s) -> sampling of a box-sized map of slice a at slice s
        self._lock = threading.RLock()  # training and the viewer may ask at once

    def _slice(self, s: int) -> sitk.Image:
        if s not in self._slices:
            self._slices[s] = self._load(s)
        return self._slices[s]

    def _load(self, s: int) -> sitk.Image:
        a = np.take(self.image, s, axis=self.axis)[self.box].astype(np.float32)
        a = np.clip((a - self.lo) / max(self.hi - self.lo, 1e-6), 0, 1)
        img = sitk.GetImageFromArray(a)
        img.SetSpacing(self.spacing_xy)
        if self.shrink > 1:
            img = sitk.Shrink(sitk.SmoothingRecursiveGaussian(img, 0.5 * self.shrink * min(self.spacing_xy)),
                              [self.shrink, self.shrink])
        return img

    def _step(self, s: int, t: int) -> sitk.Image:
        """Displacement of slice ``s``'s points to the neighbouring slice ``t``: demons on a pyramid of
        ``len(_DEMONS_ITERATIONS)`` resolutions, coarsest first, each level starting from the one below's answer
        (demons moves an edge a pixel or so per pass: at full resolution alone it followed a drifting
        disc half-way)."""
        if (s, t) not in self._steps:
            fixed, moving = self._slice(s), self._slice(t)
            demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
            demons.SetStandardDeviations(_DEMONS_SMOOTHING)
            # one thread: on images this small more only wait on each other, and slow down further
            # where the cores are busy (in training, torch's threads): 42 against 58 ms a pair
            demons.SetNumberOfThreads(1)
            field = None
            for iterations, level in zip(_DEMONS_ITERATIONS, range(len(_DEMONS_ITERATIONS) - 1, -1, -1)):
                demons.SetNumberOfIterations(iterations)
                f, m = (sitk.Shrink(fixed, [2 ** level] * 2), sitk.Shrink(moving, [2 ** level] * 2)) if level else (fixed, moving)
                if field is not None:  # the coarser answer, on this grid, as the start
                    field = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
                field = demons.Execute(f, m) if field is None else demons.Execute(f, m, field)
            self._steps[(s, t)] = field
        return self._steps[(s, t)]

    def total(self, a: int, s: int) -> sitk.Image:
        """Displacement of slice ``s``'s points to slice ``a``: the steps between them composed."""
        d = 1 if s > a else -1
        with self._lock:
            field = None
            for t in range(a + d, s + d, d):
                if (a, t) not in self._total:
                    step = self._step(t, t - d)
                    # D(p) = d(p) + D'(p + d(p)): where t's point lands on the slice before, then onwards to a
                    self._total[(a, t)] = step if field is None else step + sitk.Resample(
                        field, step, sitk.DisplacementFieldTransform(sitk.Image(step)), sitk.sitkLinear, 0.0,
                        field.GetPixelID())
                field = self._total[(a, t)]
            return field

    def warp(self, m: np.ndarray, a: int, s: int) -> np.ndarray:
        """A map ``m`` of annotated slice ``a`` carried to slice ``s``; unchanged outside the box."""
        with self._lock:
            if (a, s) not in self._warpers:
                if len(self._warpers) >= 16:  # a slice needs its two annotated neighbours: keep a few
                    self._warpers.pop(next(iter(self._warpers)))
                self._warpers[(a, s)] = self._warper(self.total(a, s))
            gather = self._warpers[(a, s)]
        full = m.astype(np.float32, copy=True)
        full[self.box] = gather(full[self.box])
        return full

    def _warper(self, field: sitk.Image):
        """Bilinear sampling of a box-sized map where ``field`` sends each pixel (NumPy: many maps
        of one slice pair share the weights)."""
        h, w = self.box[0].stop - self.box[0].start, self.box[1].stop - self.box[1].start
        if self.shrink > 1:  # the field at every pixel of the box
            ref = sitk.Image([w, h], sitk.sitkFloat32)
            ref.SetSpacing(self.spacing_xy)
            field = sitk.Resample(field, ref, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
        d = sitk.GetArrayFromImage(field)  # (h, w, 2): x, y displacement, mm
        y = np.arange(h, dtype=np.float32)[:, None] + d[..., 1] / self.spacing_xy[1]
        x = np.arange(w, dtype=np.float32)[None, :] + d[..., 0] / self.spacing_xy[0]
        outside = (y < 0) | (y > h - 1) | (x < 0) | (x > w - 1)
        y, x = np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)
        y0, x0 = np.minimum(y.astype(np.int64), h - 2 if h > 1 else 0), np.minimum(x.astype(np.int64), w - 2 if w > 1 else 0)
        fy, fx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        i00, i01, i10, i11 = y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1
        w00, w01, w10, w11 = (1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx

        def gather(c: np.ndarray) -> np.ndarray:
            f = c.ravel()
            v = f[i00] * w00 + f[i01] * w01 + f[i10] * w10 + f[i11] * w11
            # from beyond the box: what lies farthest out there (a distance map grows outwards)
            v[outside] = c.max()
            return v

        return gather


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


def _piece(mask: np.ndarray, spacing_yx: tuple[float, float]) -> _Part:
    """``mask`` as one piece, with its maps."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    yy = (np.arange(mask.shape[0], dtype=np.float32) - cy) * spacing_yx[0]
    xx = (np.arange(mask.shape[1], dtype=np.float32) - cx) * spacing_yx[1]
    radius = float(np.sqrt(len(ys) * spacing_yx[0] * spacing_yx[1] / np.pi))
    return _Part(_signed_distance(mask, spacing_yx), np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2), np.array([cy, cx]), radius)


def _parts(mask: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[list[_Part], _Part]:
    """The connected pieces of ``mask`` (a left and a right structure are two), each with its maps,
    and the whole of it as one piece; no pieces (``[]``) beyond ``_MANY_PIECES`` of them."""
    pieces = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), True))
    whole = _piece(mask, spacing_yx)
    count = int(pieces.max())
    if count > _MANY_PIECES:
        return [], whole
    return ([whole] if count == 1 else [_piece(pieces == i, spacing_yx) for i in range(1, count + 1)]), whole


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
    _parts: dict = field(repr=False, default_factory=dict)  # (slice, class) -> its connected pieces ([]: too many)
    _painted: dict = field(repr=False, default_factory=dict)  # annotated slice -> its labels
    _whole: dict = field(repr=False, default_factory=dict)  # (slice, class) -> the class as one piece
    _flow: _Flow | None = field(repr=False, default=None)  # the image's slice-to-slice registration, if given
    _cache: dict = field(repr=False, default_factory=dict)  # slice -> its probabilities, uint8 x255
    cache_limit: int | None = None  # most slices kept in that cache (the oldest go first); None = every slice
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

        def carry(m: np.ndarray, a: int, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
            """A map of annotated slice ``a`` brought to slice ``s``: moved by (dy, dx), blended with
            the image registration's transport where there is one."""
            moved = _shift(m, dy, dx)
            if self._flow is None:
                return moved
            return (1 - FLOW_WEIGHT) * moved + FLOW_WEIGHT * self._flow.warp(m, a, s)

        def pieces(a: int) -> list[_Part]:
            """The class's pieces on annotated slice ``a`` (the whole class where in many; [] = absent)."""
            parts = self._parts.get((a, c), [])
            return parts or ([self._whole[(a, c)]] if (a, c) in self._whole else [])

        maps = []
        if lo is not None and hi is not None:
            t = (s - lo) / (hi - lo)
            p_lo, p_hi = pieces(lo), pieces(hi)
            if p_lo and p_hi and (self._parts[(lo, c)] == [] or self._parts[(hi, c)] == []):
                # a class in many pieces (a cortex, a vessel tree) changes them between slices: pairing
                # fails, and the class's whole maps are blended instead
                return (1 - t) * carry(self._whole[(lo, c)].sdf, lo) + t * carry(self._whole[(hi, c)].sdf, hi)
            pairs = _match(p_lo, p_hi, self.spacing_yx)
            for i, j in pairs:
                a, b = p_lo[i], p_hi[j]
                dy, dx = b.centroid - a.centroid
                maps.append((1 - t) * carry(a.sdf, lo, t * dy, t * dx) + t * carry(b.sdf, hi, -(1 - t) * dy, -(1 - t) * dx))
            maps += [carry(_taper(a, t), lo) for i, a in enumerate(p_lo) if i not in {i for i, _ in pairs}]
            maps += [carry(_taper(b, 1 - t), hi) for j, b in enumerate(p_hi) if j not in {j for _, j in pairs}]
        else:
            end = lo if lo is not None else hi
            t = abs(s - end) / self.reach
            if t < 1:
                maps = [carry(_taper(p, t), end) for p in pieces(end)]
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
        cached = self._cache.get(s)
        if cached is not None:
            p = cached.astype(np.float32)
            return p / p.sum(axis=0, keepdims=True)
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
        self._cache[s] = (fg * 255 + 0.5).astype(np.uint8)  # training asks for a slice many times
        if self.cache_limit is not None and len(self._cache) > self.cache_limit:
            self._cache.pop(next(iter(self._cache)))
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
            return replace(self, annotated=[], _painted={}, _cache={}, warnings=[])
        return replace(self, annotated=rest, reach=_reach(rest, self.reach), _painted={a: self._painted[a] for a in rest},
                       _cache={}, warnings=[])

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


def _flow(image: np.ndarray, labels: np.ndarray, annotated: list[int], axis: int, spacing_yx,
          previous: _Flow | None = None) -> _Flow | None:
    """The registration of ``image``'s slices inside the annotations' in-plane box plus a margin;
    None where nothing is painted. ``previous``: a registration of the same image to reuse where its
    box is the same (new annotations inside the old ones' box: every registered pair is kept)."""
    painted = np.stack([np.take(labels, a, axis=axis) != 0 for a in annotated]).any(axis=0)
    if not painted.any():
        return None
    box = []
    for dim, sp in enumerate(spacing_yx):
        idx = np.flatnonzero(painted.any(axis=1 - dim))
        margin = int(np.ceil(_FLOW_MARGIN_MM / sp))
        box.append(slice(max(0, int(idx[0]) - margin), min(painted.shape[dim], int(idx[-1]) + 1 + margin)))
    box = tuple(box)
    if previous is not None and previous.image is image and previous.axis == axis and previous.box == box:
        return previous
    # intensities normalised by those around the annotations (a CT's air and bone would squash soft tissue)
    sample = np.stack([np.take(image, a, axis=axis)[box] for a in annotated]).astype(np.float32)
    window = tuple(float(v) for v in np.percentile(sample, [1, 99.5]))
    # the same image, box and window register alike: a registration already made is taken
    key = (hashlib.sha256(np.ascontiguousarray(image).data).hexdigest(), image.shape, image.dtype.str, axis,
           tuple(float(v) for v in spacing_yx), tuple((b.start, b.stop) for b in box), window)
    with _KEPT_LOCK:
        flow = _kept.get(key)
        if flow is None:
            flow = _Flow(image, axis, spacing_yx, box, window)
            _kept.clear()
            _kept[key] = flow
        else:
            flow.image = image  # the newest of equal arrays: an older copy is not held for it
    return flow


def clear_registrations() -> None:
    """Forget the registration kept for reuse (:func:`propagate` with an image): the next prior
    registers its slices anew, as a first training does (the benchmark times that)."""
    with _KEPT_LOCK:
        _kept.clear()


def propagate(
    labels: np.ndarray,
    annotated: Sequence[int],
    axis: int,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    image: np.ndarray | None = None,
    previous: Prior | None = None,
) -> Prior:
    """The prior of a label volume whose ``annotated`` slices along ``axis`` are painted.

    Args:
        labels: (z, y, x) classes, 0 = background; only the annotated slices are read.
        annotated: the annotated slices (an all-background one counts: no structure there).
        axis: slice axis.
        spacing: (z, y, x) mm.
        num_classes: classes including background; default: the largest label + 1.
        class_names: for the warnings; default "class N".
        image: the (z, y, x) image: neighbouring slices are registered to carry the annotated shapes
            along the structures (:class:`_Flow`); without it the shapes are only interpolated.
        previous: the prior of earlier annotations of the same image: its registrations are reused
            where they still apply (a slice painted inside the earlier annotations' box), so that
            new labels cost their distance maps, not the registration again (5-7 s on Colin27).
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
                prior._parts[(a, c)], prior._whole[(a, c)] = _parts(mask, spacing_yx)
                seen[c].append(a)
    if image is not None:
        prior._flow = _flow(image, labels, A, axis, spacing_yx, previous._flow if previous is not None else None)
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
