"""``napari-sslseg bench IMAGE LABELS``: accuracy of every method against annotated-slice count and
against training time, beside baselines that need no training (the propagation prior, ITK's contour
interpolation), on the whole volume, and annotation guidance, on any image with dense labels.

This repository's own runs (its data sets, speed, memory and viewer-latency probes, and its
targets) are a tool outside the package: ``python -m benchmarks.tools.bench`` (benchmarks/tools)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from .config import ITK_SLICES, BenchConfig  # not the protocol: the parser is built without the training loop


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _seconds(text: str) -> list[float]:
    try:
        times = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not comma-separated seconds, e.g. 15,30,60,120") from None
    if not times or min(times) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}': give one or more positive seconds, e.g. 15,30,60,120")
    return sorted(set(times))


def _names(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = BenchConfig()
    q = d.quick()
    csv = lambda xs: ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in xs)  # noqa: E731
    parser.add_argument("image", nargs="?", help="image volume (NIfTI, NRRD, MHA, DICOM folder)")
    parser.add_argument("labels", nargs="?", help="dense ground-truth labels on the image's grid")
    parser.add_argument("--label-map", help="SOURCE:CLASS pairs, e.g. 71:1,72:1,73:2 (others become background)")
    parser.add_argument("--out", default="bench-results", help="output folder (results.md, results.csv, time.csv, curves.png)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a <= 10 minute run: k {csv(q.ks)}, one seed, {q.steps} steps, one in {q.score_stride} slices "
                             f"scored, time axis {csv(q.times)} s for {csv(q.time_methods)} at k={csv(q.time_ks)}")
    parser.add_argument("--methods", type=_names, help=f"comma-separated (default annotated_only and every registered method: {','.join(d.methods)})")
    parser.add_argument("--ks", type=_ints, help=f"annotated-slice counts of the step-budget table (default {csv(d.ks)})")
    parser.add_argument("--seeds", type=_ints, help=f"seeds (default {csv(d.seeds)})")
    parser.add_argument("--steps", type=int, help=f"steps per training of the step-budget table (default {d.steps}, --quick {q.steps})")
    parser.add_argument("--axis", type=int, default=0, help="slice axis of the protocol (default 0, axial here)")
    parser.add_argument("--crop", action="store_true",
                        help=f"crop to the labelled box + {d.margin} voxels (the old protocol: cheaper, but a box no user has); "
                             "default: train and score on the whole volume")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads per training (0 = the cores shared out; the time axis: all of them)")
    parser.add_argument("--workers", type=int, default=d.workers,
                        help=f"trainings of the step-budget table run at once, a process each (default {d.workers}; 1 = no processes)")
    parser.add_argument("--times", type=_seconds,
                        help=f"training times (s) at which the time axis scores each model (default {csv(d.times)}, --quick {csv(q.times)})")
    parser.add_argument("--time-ks", type=_ints,
                        help=f"annotated-slice counts of the time axis (default {csv(d.time_ks)}; --quick the first)")
    parser.add_argument("--time-methods", type=_names,
                        help=f"methods of the time axis (default every method; --quick {','.join(q.time_methods)})")
    parser.add_argument("--time-seeds", type=_ints,
                        help="seeds of the time axis, each a training against the clock (default the first of --seeds)")
    parser.add_argument("--no-time", action="store_true", help="skip the time axis")
    parser.add_argument("--no-baselines", action="store_true", help="skip the prior and ITK interpolation rows")
    parser.add_argument("--itk-slices", choices=ITK_SLICES, default=d.itk_slices,
                        help="ITK interpolation's slices: 'detected' by the filter (as 3D Slicer's Fill between slices; default) "
                             "or 'annotated' (every annotated slice named for every class)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--guidance", action="store_true", help="run the annotation-guidance simulation (off by default)")
    g.add_argument("--no-guidance", action="store_true", help="skip the annotation-guidance simulation (the default)")
    parser.add_argument("--no-ceiling", action="store_true",
                        help=f"skip the full-supervision ceiling (supervised on every slice, {d.ceiling_steps} steps)")


def config_from_args(args, base: BenchConfig | None = None) -> BenchConfig:
    """The run's settings: ``base`` (default BenchConfig()), then the options given (a new config;
    ``base`` is left as it was)."""
    cfg = base or BenchConfig()
    if args.methods:
        cfg = replace(cfg, methods=list(args.methods))
    if args.quick:
        cfg = cfg.quick()  # after the methods: its time axis keeps the quick ones among them
    given = {"ks": args.ks, "seeds": args.seeds, "times": args.times, "time_ks": args.time_ks,
             "time_methods": args.time_methods, "time_seeds": args.time_seeds}
    changes: dict = {name: list(value) for name, value in given.items() if value}
    if args.steps:
        changes["steps"] = args.steps
    return replace(cfg, **changes, time_axis=cfg.time_axis and not args.no_time,
                   baselines=cfg.baselines and not args.no_baselines, itk_slices=args.itk_slices, crop=args.crop,
                   threads=args.threads, workers=max(1, args.workers),
                   guidance=(cfg.guidance or args.guidance) and not args.no_guidance,
                   ceiling=cfg.ceiling and not args.no_ceiling)


def run(args) -> int:
    from .main import main

    return main(args, config_from_args(args))
