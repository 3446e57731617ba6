"""ITK's morphological contour interpolation, in a process of its own (numpy and ITK only).

Run as ``python -I itk_worker.py IN.npz OUT.npz`` (by path, in isolated mode, so that neither this
package nor torch nor SimpleITK is imported). ITK's Python package and SimpleITK each carry their
own ITK libraries: with both and torch in one process, the heap is corrupted (measured here: a
"malloc_consolidate(): unaligned fastbin chunk detected" abort at exit), so the benchmark never
loads ``itk`` itself.

IN.npz holds ``meta`` (JSON: a list of jobs, each ``{"axis", "spacing", "num_classes", "slices"}``)
and, per job i, ``sparse{i}`` (uint8 labels holding only the annotated slices) and ``annotated{i}``.
OUT.npz gets ``labels{i}`` and ``meta`` (JSON: ``{"seconds": [...], "load_seconds": s}``): the
seconds of each interpolation alone, and of loading ITK's libraries once before them.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

SLICES = ("detected", "annotated")


def interpolate(sparse: np.ndarray, annotated, axis: int, spacing, num_classes: int, slices: str = "detected") -> np.ndarray:
    """ITK's morphological contour interpolation of ``sparse`` along ``axis`` (uint8 labels).

    ``slices="detected"``: the filter finds the painted slices itself (its default, and what 3D
    Slicer's Fill between slices does): a class painted on one slice only is then not interpolated
    at all. ``"annotated"``: every annotated slice is named as a slice of every class, so a class
    absent from an annotated slice is known to end there (``UseCustomSlicePositions``).
    The distance-transform median contour (``UseDistanceTransform``, the filter's default) is used.
    """
    import itk

    if slices not in SLICES:
        raise ValueError(f"ITK slice positions must be one of {', '.join(SLICES)}, not {slices!r}")
    if int(sparse.max(initial=0)) > 255 or num_classes > 256:
        raise ValueError("ITK's contour interpolation is run on uint8 labels: at most 255 classes.")
    image = itk.image_from_array(np.ascontiguousarray(sparse, dtype=np.uint8))
    image.SetSpacing([float(s) for s in reversed(tuple(spacing))])  # ITK orders axes x, y, z
    itk_axis = sparse.ndim - 1 - axis
    if slices == "detected":
        out = itk.morphological_contour_interpolator(image, axis=itk_axis, use_distance_transform=True)
    else:
        f = itk.MorphologicalContourInterpolator[type(image)].New(Input=image)
        f.SetAxis(itk_axis)
        f.SetUseDistanceTransform(True)
        f.SetUseCustomSlicePositions(True)
        for c in range(1, num_classes):
            f.SetLabeledSliceIndices(itk_axis, c, [int(a) for a in annotated])
        f.Update()
        out = f.GetOutput()
    return np.asarray(itk.array_from_image(out), dtype=np.uint8)


def load() -> float:
    """Load ITK's libraries (the first use of ``itk`` does; several seconds); how long it took."""
    t0 = time.perf_counter()
    import itk

    itk.MorphologicalContourInterpolator  # noqa: B018
    itk.image_from_array(np.zeros((2, 2, 2), np.uint8))
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    src, dst = argv
    data = np.load(src)
    jobs = json.loads(str(data["meta"]))
    out, seconds = {}, []
    load_seconds = load()
    for i, job in enumerate(jobs):
        t0 = time.perf_counter()
        out[f"labels{i}"] = interpolate(data[f"sparse{i}"], data[f"annotated{i}"].tolist(), job["axis"], job["spacing"],
                                        job["num_classes"], job["slices"])
        seconds.append(time.perf_counter() - t0)
    np.savez(dst, meta=json.dumps({"seconds": seconds, "load_seconds": load_seconds}), **out)
    return 0


if __name__ == "__main__":
    rc = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)  # skip the interpreter's teardown: the results are written, nothing is left to release
