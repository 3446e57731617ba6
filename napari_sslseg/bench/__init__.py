"""``napari-sslseg bench``: accuracy of every method against annotated-slice count, annotation
guidance, and speed and memory, on any image with dense labels. No Qt here: the viewer
measurement runs in a subprocess (``napari_sslseg._qt.latency``)."""

from __future__ import annotations

import argparse

from .config import BenchConfig
from .datasets import PRESET_STEPS, PRESETS


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    parser.add_argument("image", nargs="?", help="image volume (NIfTI, NRRD, MHA, DICOM folder)")
    parser.add_argument("labels", nargs="?", help="dense ground-truth labels on the image's grid")
    parser.add_argument("--dataset", choices=PRESETS, help="a preset from ../shared/data instead of IMAGE LABELS")
    parser.add_argument("--data-dir", help="where the presets live (default ../shared/data)")
    parser.add_argument("--label-map", help="SOURCE:CLASS pairs, e.g. 71:1,72:1,73:2 (others become background)")
    parser.add_argument("--out", default="bench-results", help="output folder (results.md, results.csv, curves.png)")
    parser.add_argument("--quick", action="store_true", help="a <= 5 minute run: k 2,4, one seed, 20 steps, sampled timings")
    parser.add_argument("--methods", help=f"comma-separated (default {','.join(d.methods)})")
    parser.add_argument("--ks", help=f"annotated-slice counts (default {','.join(map(str, d.ks))})")
    parser.add_argument("--seeds", help=f"seeds (default {','.join(map(str, d.seeds))})")
    parser.add_argument("--steps", type=int, help=f"steps per training (default {d.steps}, mni152 "
                        f"{PRESET_STEPS['mni152']}, --quick 20)")
    parser.add_argument("--axis", type=int, default=0, help="slice axis of the protocol (default 0, axial here)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads per training (0 = the cores shared out)")
    parser.add_argument("--workers", type=int, default=d.workers,
                        help=f"trainings run at once in the accuracy part, a process each (default {d.workers}; 1 = no processes)")
    parser.add_argument("--no-guidance", action="store_true", help="skip the annotation-guidance simulation")
    parser.add_argument("--no-speed", action="store_true", help="skip speed, memory and viewer latency")


def config_from_args(args) -> BenchConfig:
    cfg = BenchConfig()
    if args.quick:
        cfg = cfg.quick()
    if args.methods:
        cfg.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.ks:
        cfg.ks = _ints(args.ks)
    if args.seeds:
        cfg.seeds = _ints(args.seeds)
    if args.steps:
        cfg.steps = args.steps
    elif not args.quick and args.dataset in PRESET_STEPS:
        cfg.steps = PRESET_STEPS[args.dataset]
    cfg.threads = args.threads
    cfg.workers = max(1, args.workers)
    cfg.guidance = cfg.guidance and not args.no_guidance
    cfg.speed = cfg.speed and not args.no_speed
    return cfg


def run(args) -> int:
    from .main import main

    return main(args, config_from_args(args))
