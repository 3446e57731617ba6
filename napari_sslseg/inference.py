"""Whole-volume prediction in slice batches, with confidence and uncertainty.

Outputs lie on the input volume's own grid, (z, y, x), whatever the slice axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import PredictConfig
from .data import Volume, resample_slice, target_size
from .networks import LastBlockSampler, enable_dropout
from .uncertainty import entropy, mc_dropout

if TYPE_CHECKING:
    from .methods import Method

_EPS = 1e-6
#: The network's share when its probabilities are mixed with the propagation prior's
#: (``predict_volume``). At one half, a class the prior is sure of (probability 1, on and near an
#: annotated slice) is not overruled (short of a network exactly as sure of another), and where the
#: prior is unsure (far from the annotations, between pieces that do not pair) the network decides.
#: Measured after 120 s of ``bcp`` on 2 cores, whole volumes, mean Dice over every unannotated slice
#: at shares 0.3 / 0.5 / 0.7 / 1 (``benchmarks/mix_weight.py``,
#: ``benchmarks/results/mix_weight.jsonl``): Colin27 k=4 0.738 / 0.740 / 0.737 / 0.732 and (seed 1)
#: 0.737 / 0.734 / 0.726 / 0.696; Colin27 k=2 0.550 / 0.559 / 0.518 / 0.463; mni152 k=4 0.844 /
#: 0.901 / 0.906 / 0.906 and 0.849 / 0.903 / 0.907 / 0.908; the CT case brain1 k=2 0.685 / 0.757 /
#: 0.397 / 0.249. Above one half the network overrules the prior where both are sure: brain1's 95%
#: Hausdorff jumps from 6.5 mm to 99 at 0.6, Colin27 k=2's from 8.6 to 17 at 0.55. A per-voxel share
#: (the network's confidence over its and the prior's) did worse on all but mni152.
NETWORK_WEIGHT = 0.5
#: Pieces of a class under this fraction of its largest piece are removed from whole-volume predictions.
KEEP_FRACTION = PredictConfig.keep_fraction


@dataclass
class SegmentationModel:
    """What prediction needs: the networks and how the data were prepared for them."""

    student: nn.Module
    num_classes: int
    class_names: list[str]
    target_spacing: tuple[float, float] | None = None  # in-plane mm the network was trained at
    axis: int | None = None  # slice axis used in training; None = the volume's own default
    method: "Method | None" = None  # the method trained with: its extra networks draw its maps (``Method.maps``); the student predicts
    prior_input: bool = False  # the network takes the prior's foreground probabilities after the image channels
    context: int = 0  # neighbouring slices on each side among the image channels (2.5D)
    label_values: list[int] | None = None  # the user's label value of each class, where it is not the class (a 0/255 mask); predictions use them

    def to(self, device: torch.device) -> "SegmentationModel":
        self.student.to(device)
        if self.method is not None:
            self.method.to(device)
        return self

    def extra_models(self) -> dict[str, nn.Module]:
        return self.method.extra_models() if self.method is not None else {}

    @property
    def teacher(self) -> nn.Module | None:
        return self.extra_models().get("teacher")


@dataclass
class Prediction:
    """Result of :func:`predict_volume`; maps are (z, y, x) like the image."""

    labels: np.ndarray  # uint8, argmax class
    confidence: np.ndarray  # float32 in [1/C, 1], the largest class probability
    entropy: np.ndarray  # float32 in [0, ln C], predictive entropy (nats)
    uncertainty: np.ndarray  # float32, mutual information over MC passes (epistemic), else the entropy
    uncertainty_kind: str  # "mutual_information" or "entropy"
    axis: int  # slice axis
    slice_scores: np.ndarray  # per slice along ``axis``: mean of uncertainty x foreground probability (NaN: not predicted)
    suggestions: list[int]  # unannotated slices to annotate next, most informative first
    probabilities: np.ndarray | None = None  # uint8 (C, z, y, x), probability x 255
    method_maps: dict[str, np.ndarray] = field(default_factory=dict)  # float32 in [0, 1] each, the method's own (``Method.maps``)
    slices: list[int] | None = field(default=None)  # the slices predicted, when not all

    @property
    def disagreement(self) -> np.ndarray | None:
        """Teacher-student total variation, where the method has a teacher and it was asked for."""
        return self.method_maps.get("disagreement")

    @property
    def discriminator_confidence(self) -> np.ndarray | None:
        """Where a per-pixel discriminator takes the prediction for ground truth."""
        return self.method_maps.get("discriminator_confidence")


def _prior_channels(q: torch.Tensor | None, count: int, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """The prior's foreground probabilities (``q``: (B, C, H, W) at the volume's grid) at the
    network's grid, (B, C-1, H, W); zeros (no structure known anywhere, as the network saw in
    training now and then) without a prior."""
    if q is None:
        return torch.zeros((count, num_classes - 1, *size))
    return torch.stack([resample_slice(qi, size)[1:] for qi in q])


def pad16(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (..., H, W) at the far edges to multiples of 16 (four poolings); return the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    return (F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x), (h, w)


def rank_slices(scores: np.ndarray, exclude: Sequence[int], count: int = 10, reach: float | None = None) -> list[int]:
    """The slices whose annotation would settle the most uncertainty, best first.

    Neighbouring slices look alike, so annotating slice ``s`` is taken to settle slice ``t``
    by ``w = exp(-|s - t| / reach)``. A set of annotated slices settles ``sum_t U_t max_a w(a, t)``
    of the uncertainty ``U`` (scores), and each pick is the slice that adds the most to it
    (greedy facility location), counting the annotated slices (``exclude``) as picked already.
    A suggestion thus lands where much uncertainty lies *and* no annotation is near; the most
    uncertain slice alone is often an end of the structures, where they taper off and teach
    little about the rest. Slices without a score (NaN: not predicted) are never suggested;
    their uncertainty is interpolated from their neighbours.

    Args:
        scores: uncertainty per slice (``predict_volume``: its mean over the slice weighted by
            foreground probability), NaN where unknown.
        exclude: annotated slices; never suggested.
        count: at most this many suggestions.
        reach: slices over which an annotation's help decays by e; default 1/16 of the slices.
    """
    u = np.asarray(scores, dtype=np.float64)
    n = len(u)
    known = np.isfinite(u)
    if n == 0 or not known.any():
        return []
    reach = max(1.0, n / 16) if reach is None else float(reach)
    pos = np.arange(n)
    u = np.clip(np.interp(pos, pos[known], u[known]), 0, None)
    u += 1e-3 * u.mean() + 1e-12  # all certain: still spread the picks out
    w = np.exp(-np.abs(pos[:, None] - pos[None, :]) / reach)  # w[s, t]
    settled = np.zeros(n)
    candidate = known.copy()
    for s in exclude:
        if 0 <= int(s) < n:
            settled = np.maximum(settled, w[int(s)])
            candidate[int(s)] = False
    picked: list[int] = []
    while len(picked) < count and candidate.any():
        gain = np.clip(w - settled, 0, None) @ u
        gain[~candidate] = -np.inf
        s = int(np.argmax(gain))
        picked.append(s)
        candidate[s] = False
        settled = np.maximum(settled, w[s])
    return picked


@torch.no_grad()
def predict_volume(
    model: SegmentationModel,
    volume: Volume,
    mc_passes: int = 8,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    slices: Sequence[int] | None = None,
    keep_probabilities: bool = False,
    suggestions: int = 10,
    mc_scope: str = "last",
    costly_maps: bool = False,
    prior=None,
    network_weight: float = NETWORK_WEIGHT,
    keep_fraction: float = KEEP_FRACTION,
) -> Prediction:
    """Predict every slice (or ``slices``) of ``volume``.

    Args:
        model: networks and their preprocessing.
        volume: the volume; its intensity statistics normalise it.
        mc_passes: MC-dropout passes for the epistemic uncertainty; 0 = entropy only.
        batch_size: slices per forward pass.
        device: where to run; default: where the model is.
        slices: only these slices along the axis (previews); the rest of the maps stay 0.
        keep_probabilities: also return class probabilities (uint8, x255).
        suggestions: how many slices to suggest.
        mc_scope: "last" samples the dropout of the last block only (one forward pass in all, see
            :class:`~napari_sslseg.networks.LastBlockSampler`); "all" reruns the whole network per
            pass, sampling every dropout layer the network has (``mc_passes`` + 1 forward passes;
            every block's in a network built with ``dropout_scope="all"``).
        costly_maps: also the method's maps that cost a network pass per slice (where the EMA
            teacher or a second network disagrees with the student), so off unless asked for; the
            others (a discriminator's confidence) are always drawn.
        prior: the propagation prior of the volume's annotated slices (:class:`napari_sslseg.prior.Prior`):
            the input of a model trained with it as input (without it such a model sees no prior); and
            the labels and confidence then come from ``network_weight`` x the network's probabilities
            + (1 - ``network_weight``) x the prior's.
        network_weight: the network's share in that mix; 1 = the network alone (:data:`NETWORK_WEIGHT`
            says why one half, and what was measured).
        keep_fraction: with every slice predicted, remove each class's 3D pieces smaller than this
            fraction of its largest (:func:`remove_small_components`); 0 keeps all.
    """
    PredictConfig(mc_passes, batch_size, mc_scope, keep_fraction)  # validates itself
    device = torch.device(device) if device is not None else next(model.student.parameters()).device
    axis = volume.axis
    shape = volume.image.shape
    # the student predicts, as in the reference implementations of Mean Teacher for segmentation
    # (Yu et al. 2019; Luo's SSL4MIS): the EMA teacher lags a student that is still learning fast
    # (120 steps, colin27 crop, k=4: student 0.444, teacher 0.273 mean Dice) and draws level later
    # (600 steps: 0.646 vs 0.648); see BENCHMARKS.md
    net = model.student
    sampler = LastBlockSampler(net) if mc_passes > 0 and mc_scope == "last" and LastBlockSampler.supports(net) else None
    modes = {m: m.training for m in (model.student, *model.extra_models().values())}
    for m in modes:
        m.eval()
    C = model.num_classes
    labels = np.zeros(shape, np.uint8)
    maps = {k: np.zeros(shape, np.float32) for k in ("confidence", "entropy", "uncertainty")}
    probs_out = np.zeros((C, *shape), np.uint8) if keep_probabilities else None
    scores = np.full(volume.num_slices, np.nan)
    view = lambda a: np.moveaxis(a, axis, 0)  # noqa: E731
    view_p = lambda a: np.moveaxis(a, axis + 1, 1)  # noqa: E731
    wanted = list(range(volume.num_slices)) if slices is None else sorted(set(int(s) for s in slices))
    size = target_size(volume, model.target_spacing)
    native = volume.slice_shape
    try:
        for start in range(0, len(wanted), batch_size):
            idx = wanted[start : start + batch_size]
            x = torch.stack([resample_slice(torch.from_numpy(volume.image_stack(i, model.context)), size) for i in idx])
            q = torch.from_numpy(np.stack([prior.slice_probabilities(i) for i in idx])) if prior is not None else None
            if model.prior_input:
                x = torch.cat([x, _prior_channels(q, len(idx), size, C)], dim=1)
            x, (h, w) = pad16(x.to(device))
            crop = lambda t: t[..., :h, :w]  # noqa: E731
            back = lambda t: resample_slice(t, native) if tuple(t.shape[-2:]) != native else t  # noqa: E731

            p_padded = torch.softmax((net(x) if sampler is None else sampler.forward(x)).float(), dim=1)
            p = crop(p_padded)
            out = {"entropy": entropy(p)}
            if model.method is not None:  # the method's own maps: teacher disagreement, discriminator confidence ...
                drawn = model.method.maps(x, p_padded, costly_maps)
                out.update({name: crop(m.float()) for name, m in drawn.items()})
                for name in drawn:
                    maps.setdefault(name, np.zeros(shape, np.float32))
            if mc_passes > 0:
                if sampler is None:
                    enable_dropout(net, True)  # every block samples; the sampler needs no network pass
                mean, exp_h = mc_dropout(lambda: crop(net(x) if sampler is None else sampler.sample()), mc_passes)
                enable_dropout(net, False)
                out["uncertainty"] = (entropy(mean) - exp_h).clamp(min=0)
            else:
                out["uncertainty"] = out["entropy"]
            # back to the volume's own in-plane grid
            fg = torch.stack([back(pi) for pi in (mean if mc_passes > 0 else p)])
            p = torch.stack([back(pi) for pi in p])
            if q is not None:
                q = q.to(p.device)
                p = network_weight * p + (1 - network_weight) * q
                fg = network_weight * fg + (1 - network_weight) * q
            p = p / p.sum(dim=1, keepdim=True)
            conf, lab = p.max(dim=1)
            out = {k: torch.stack([back(v[None])[0] for v in t]) for k, t in out.items()}
            # what a slice is worth annotating: uncertainty where the prediction (prior included)
            # sees structures, not background far from them (which every slice has), per pixel;
            # the network's own foreground alone sent the first suggestion to the top of the head
            scores[idx] = (out["uncertainty"] * (1 - fg[:, 0])).mean(dim=(-2, -1)).cpu().numpy()
            out["confidence"] = conf
            view(labels)[idx] = lab.cpu().numpy().astype(np.uint8)
            for k, t in out.items():
                view(maps[k])[idx] = t.cpu().numpy()
            if probs_out is not None:
                view_p(probs_out)[:, idx] = (p.permute(1, 0, 2, 3).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    finally:
        for m, was in modes.items():
            m.train(was)
    if keep_fraction > 0 and slices is None:
        labels = remove_small_components(labels, keep_fraction, volume.spacing)
    if model.label_values is not None:
        labels = np.asarray(model.label_values, np.uint8)[labels]
    return Prediction(
        labels=labels,
        confidence=maps["confidence"],
        entropy=maps["entropy"],
        uncertainty=maps["uncertainty"],
        uncertainty_kind="mutual_information" if mc_passes > 0 else "entropy",
        axis=axis,
        slice_scores=scores,
        suggestions=rank_slices(scores, volume.annotated, suggestions),
        probabilities=probs_out,
        method_maps={k: v for k, v in maps.items() if k not in ("confidence", "entropy", "uncertainty")},
        slices=None if slices is None else wanted,
    )



def predict_annotated_volume(model: SegmentationModel, volume: Volume, **kwargs) -> Prediction:
    """:func:`predict_volume` with the propagation prior of ``volume``'s annotated slices, where it
    has any (the user's labels of the image being predicted); without, the network alone."""
    prior = (volume.prior(model.num_classes, model.class_names, model.label_values)
             if volume.labels is not None and volume.annotated else None)
    return predict_volume(model, volume, prior=prior, **kwargs)


def remove_small_components(labels: np.ndarray, keep_fraction: float = 0.1, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Per class, drop 3D connected pieces smaller than ``keep_fraction`` of that class's largest piece.

    A structure a few slices away from where it belongs, or a speck in the skull, is a piece of its
    own and far smaller than the structure itself; it is what drives the 95% Hausdorff distance
    up. Two halves of a paired structure (left and right) are both kept. Removed voxels become
    background. Returns a new array; ``labels`` is not changed.

    Args:
        labels: (z, y, x) classes.
        keep_fraction: pieces under this fraction of the largest piece of their class go; 0 keeps all.
        spacing: (z, y, x) mm; only recorded on the image handed to SimpleITK.
    """
    import SimpleITK as sitk

    out = labels.copy()
    if keep_fraction <= 0:
        return out
    for c in np.unique(labels):
        if c == 0:
            continue
        mask = sitk.GetImageFromArray((labels == c).astype(np.uint8))
        mask.SetSpacing(tuple(float(s) for s in reversed(spacing)))
        relabel = sitk.RelabelComponentImageFilter()
        pieces = relabel.Execute(sitk.ConnectedComponent(mask, True))
        sizes = relabel.GetSizeOfObjectsInPixels()  # largest first
        small = [i + 1 for i, n in enumerate(sizes) if n < keep_fraction * sizes[0]]
        if small:
            arr = sitk.GetArrayViewFromImage(pieces)
            out[np.isin(arr, small)] = 0
    return out


def prior_prediction(prior, annotated: Sequence[int] = (), suggestions: int = 10) -> Prediction:
    """The propagation prior (:class:`napari_sslseg.prior.Prior`) as a :class:`Prediction`, so the
    viewer and the command line show it like a network's: before the first training step it is
    the best guess there is. Its uncertainty is the entropy of its probabilities."""
    labels, confidence, probs = prior.volume()
    p = torch.from_numpy(probs).float().div_(255).clamp_(min=_EPS)
    p = p / p.sum(0, keepdim=True)
    h = entropy(p[None])[0].numpy().astype(np.float32)
    foreground = 1 - p[0].numpy()
    other = tuple(a for a in range(3) if a != prior.axis)
    scores = (h * foreground).mean(axis=other).astype(np.float64)
    return Prediction(
        labels=labels,
        confidence=confidence,
        entropy=h,
        uncertainty=h,
        uncertainty_kind="entropy",
        axis=prior.axis,
        slice_scores=scores,
        suggestions=rank_slices(scores, annotated, suggestions),
        probabilities=probs,
    )
