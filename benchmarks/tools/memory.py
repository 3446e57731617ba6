"""Peak resident memory while training on a large volume, measured in a fresh process.

Run as ``python -m benchmarks.tools.memory DATA.npz OUT.json Z Y X STEPS THREADS``:
the volume is built from the real image and labels in DATA.npz by resampling
slice by slice (no whole-volume float copy, so the build itself does not set the peak).
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def resample_to(array: np.ndarray, shape: tuple[int, int, int], labels: bool) -> np.ndarray:
    """Nearest along z, bilinear (nearest for labels) in-plane; the output keeps the input dtype."""
    import torch
    import torch.nn.functional as F

    out = np.empty(shape, array.dtype)
    src = np.linspace(0, array.shape[0] - 1, shape[0]).round().astype(int)
    mode = "nearest" if labels else "bilinear"
    kw = {} if labels else {"align_corners": False}
    for z, s in enumerate(src):
        x = torch.from_numpy(array[s].astype(np.float32))[None, None]
        y = F.interpolate(x, size=shape[1:], mode=mode, **kw)[0, 0].numpy()
        out[z] = np.round(y).astype(array.dtype) if not labels else y.astype(array.dtype)
    return out


def main(argv: list[str]) -> int:
    data, out, z, y, x, steps, threads = argv
    shape, steps, threads = (int(z), int(y), int(x)), int(steps), int(threads)
    report = {"shape": shape, "steps": steps}
    report["rss_start_mb"] = current_rss_mb()
    from napari_sslseg.bench.datasets import Dataset, labelled_extent
    from napari_sslseg.bench.protocol import evenly_spaced, trainer_for

    report["rss_after_imports_mb"] = current_rss_mb()
    d = np.load(data, allow_pickle=False)
    image = resample_to(d["image"], shape, labels=False)
    labels = resample_to(d["labels"], shape, labels=True)
    names = [str(n) for n in d["class_names"]]
    ds = Dataset("memory", image, labels, tuple(float(s) for s in d["spacing"]), names, "resampled")
    report["volume_mb"] = (image.nbytes + labels.nbytes) / 2**20
    report["rss_after_volume_mb"] = current_rss_mb()
    annotated = evenly_spaced(labelled_extent(labels, 0), 4)
    trainer = trainer_for(ds, annotated, 0, "mean_teacher", threads, steps=steps)
    t0 = time.perf_counter()
    for _ in trainer.run():
        pass
    report["train_seconds"] = time.perf_counter() - t0
    report["peak_rss_mb"] = peak_rss_mb()
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
