"""Baselines without training, scored like a method's prediction: what the annotated slices give alone.

- ``prior``: the engine's propagation prior (:func:`napari_sslseg.prior.propagate`), shape-based
  interpolation of the annotated slices' signed distance maps.
- ``itk_interpolation``: ITK's morphological contour interpolation (Albu et al. 2008; Zukić et al.
  2016), what 3D Slicer's "Fill between slices" runs; from the optional PyPI package
  ``itk-morphologicalcontourinterpolation`` (``pip install "napari-sslseg[bench]"``, about 1.5 GB of
  ITK): the row says "not installed" without it.

Each gets the label volume holding only the annotated slices, as a training does. ITK runs in a
process of its own (``itk_worker.py``): loaded beside SimpleITK and torch it corrupts the heap.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..data import keep_slices
from .config import ITK_SLICES
from .protocol import Scores

BASELINES = ("prior", "itk_interpolation")
ITK_PACKAGE = "itk-morphologicalcontourinterpolation"
INSTALL_HINT = f'not installed (pip install "napari-sslseg[bench]", or {ITK_PACKAGE})'
#: Where ITK runs: a script of numpy and ITK only, started by path in a process of its own.
ITK_WORKER = Path(__file__).with_name("itk_worker.py")


@dataclass
class BaselineResult:
    """One baseline at one k; ``scores`` None when it could not run (``note`` says why)."""

    name: str
    k: int
    scores: Scores | None
    seconds: float  # wall time of the baseline itself (not of scoring it)
    note: str = ""


def prior_labels(sparse: np.ndarray, annotated: list[int], axis: int, spacing, num_classes: int,
                 image: np.ndarray | None = None) -> np.ndarray:
    """The propagation prior's labels (uint8) of the whole volume (carried along ``image``'s slices where given)."""
    from ..prior import clear_registrations, propagate

    clear_registrations()  # timed as a user's first prior: its registration made here, not reused
    labels, _confidence, _probabilities = propagate(sparse, annotated, axis, spacing, num_classes=num_classes,
                                                    image=image).volume()
    return labels


def itk_missing() -> str | None:
    """Why ITK's contour interpolation cannot run here (None: it can). Cheap: ITK is not loaded."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    try:
        version(ITK_PACKAGE)
    except PackageNotFoundError:
        return INSTALL_HINT
    return None if find_spec("itk") is not None else INSTALL_HINT


@dataclass
class ItkJob:
    """One interpolation for :func:`itk_interpolate`."""

    sparse: np.ndarray  # uint8 labels holding only the annotated slices
    annotated: list[int]
    axis: int
    spacing: tuple[float, float, float]
    num_classes: int
    slices: str = "detected"  # see itk_worker.interpolate


def itk_interpolate(jobs: list[ItkJob], timeout: float = 1800) -> tuple[list[np.ndarray], list[float], float]:
    """Run ``jobs`` in one ITK process (``itk_worker.py``; ITK never enters this process, see there):
    their labels, the seconds of each interpolation, and of loading ITK's libraries once."""
    if not jobs:
        return [], [], 0.0
    meta = [{"axis": int(j.axis), "spacing": [float(x) for x in j.spacing], "num_classes": int(j.num_classes),
             "slices": j.slices} for j in jobs]
    arrays = {}
    for i, j in enumerate(jobs):
        arrays[f"sparse{i}"] = np.ascontiguousarray(j.sparse, dtype=np.uint8)
        arrays[f"annotated{i}"] = np.asarray(j.annotated, np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        np.savez(src, meta=json.dumps(meta), **arrays)
        try:
            proc = subprocess.run([sys.executable, "-I", str(ITK_WORKER), str(src), str(dst)], capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"ITK's contour interpolation did not finish within {timeout:.0f} s.") from None
        if proc.returncode != 0 or not dst.exists():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            raise RuntimeError(f"ITK's contour interpolation failed (exit {proc.returncode}): {tail}")
        with np.load(dst) as out:
            info = json.loads(str(out["meta"]))
            labels = [out[f"labels{i}"] for i in range(len(jobs))]
    return labels, [float(x) for x in info["seconds"]], float(info["load_seconds"])


def itk_interpolation(sparse: np.ndarray, annotated: list[int], axis: int, spacing, num_classes: int,
                      slices: str = "detected") -> np.ndarray:
    """One volume's ITK interpolation (a process of its own; several at once: :func:`itk_interpolate`)."""
    labels, _, _ = itk_interpolate([ItkJob(sparse, list(annotated), axis, tuple(spacing), num_classes, slices)])
    return labels[0]


#: ``scorer(prediction, annotated) -> Scores`` on the protocol's scored slices of that k.
Scorer = Callable[[np.ndarray, list[int]], Scores]


def run_baselines(labels: np.ndarray, spacing, axis: int, num_classes: int, annotated_per_k: dict[int, list[int]],
                  scorer: Scorer, itk_slices: str = "detected", names=BASELINES,
                  image: np.ndarray | None = None) -> tuple[list[BaselineResult], dict]:
    """Every baseline at every k (the prior carried along ``image``'s slices where given, as the engine
    does); also ``{"itk_load_seconds": ...}`` (ITK's one-off library load in its
    process, not counted in its rows' seconds) where ITK ran."""
    if itk_slices not in ITK_SLICES:
        raise ValueError(f"ITK slice positions must be one of {', '.join(ITK_SLICES)}, not {itk_slices!r}")
    results: list[BaselineResult] = []
    info: dict = {}
    sparse = {k: keep_slices(labels, annotated, axis) for k, annotated in annotated_per_k.items()}
    for name in names:
        if name == "prior":
            for k, annotated in annotated_per_k.items():
                t0 = time.perf_counter()
                pred = prior_labels(sparse[k], list(annotated), axis, spacing, num_classes, image)
                seconds = time.perf_counter() - t0
                results.append(BaselineResult(name, k, scorer(pred, list(annotated)), seconds))
        elif name == "itk_interpolation":
            missing = itk_missing()
            if missing is not None:
                results += [BaselineResult(name, k, None, float("nan"), missing) for k in annotated_per_k]
                continue
            jobs = [ItkJob(sparse[k], list(a), axis, tuple(spacing), num_classes, itk_slices) for k, a in annotated_per_k.items()]
            preds, seconds, info["itk_load_seconds"] = itk_interpolate(jobs)
            for (k, annotated), pred, sec in zip(annotated_per_k.items(), preds, seconds):
                results.append(BaselineResult(name, k, scorer(pred, list(annotated)), sec))
        else:
            raise ValueError(f"Unknown baseline '{name}'; known: {', '.join(BASELINES)}.")
    return results, info
