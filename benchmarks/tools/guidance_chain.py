"""One "suggested" chain of the benchmark's annotation-guidance part, on its own.

Same protocol as `napari-sslseg bench` (colin27 crop, supervised, 150 steps per round, 8 MC
passes behind each suggestion, from 2 evenly spaced slices to 6), run in this process with 2
threads. Used to compare slice rankings before and after a change: run it on each version
of the code (e.g. `PYTHONPATH=<old checkout>:. python -m benchmarks.tools.guidance_chain 0`).

usage: python -m benchmarks.tools.guidance_chain SEED [DATA_DIR]   (from the repository root)
"""

import json
import sys
import time
from pathlib import Path

import torch

from napari_sslseg.bench import runner
from napari_sslseg.bench.config import BenchConfig
from napari_sslseg.bench.datasets import crop_to_labels, labelled_extent
from napari_sslseg.bench.guidance import chain
from napari_sslseg.bench.protocol import evenly_spaced

from .presets import load_preset, shared_data_dir


def main() -> None:
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    root = Path(sys.argv[2]) if len(sys.argv) > 2 else shared_data_dir()
    cfg = BenchConfig(seeds=[seed], steps=150)  # the budget of the before/after table in BENCHMARKS.md
    ds = crop_to_labels(load_preset("colin27", root), cfg.margin)
    extent = labelled_extent(ds.labels, 0)
    torch.set_num_threads(2)
    runner._setup(ds, cfg, 0, extent, 2)
    t0 = time.time()
    first = evenly_spaced(extent, cfg.guidance_start)
    dice, pred = runner._guidance_train_eval(first)
    curve = chain("suggested", extent, first, dice, pred, cfg.guidance_budget, cfg.guidance_max,
                  runner._guidance_train_eval, seed)
    print(json.dumps({"seed": seed, "start": first, "picks": curve.picks,
                      "dice": [round(d, 3) for _, d in curve.points], "minutes": round((time.time() - t0) / 60, 1)}))


if __name__ == "__main__":
    main()
