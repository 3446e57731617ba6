"""One benchmark run: load, score the baselines, train and score, time, and write the report."""

from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..config import TrainConfig
from ..errors import InputError
from ..methods import method_config
from . import report
from .config import VARIANTS, BenchConfig, method_settings
from .datasets import Dataset, crop_to_labels, labelled_extent, load_pair, parse_label_map
from .runner import (baseline_ks, run_accuracy, run_baseline_rows, run_time_axis, time_trainings_planned,
                     trainings_planned)
from .timeaxis import schedule_note


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        kb = int(next(l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores{mem}, {gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def load(args, cfg: BenchConfig, dataset: Dataset | None = None):
    """The data set as loaded (``dataset``, else IMAGE LABELS), and what the benchmark trains on: the
    same (the whole volume) or, with ``cfg.crop``, its labelled box plus a margin."""
    if dataset is not None:
        full = dataset
    elif args.image and args.labels:
        full = load_pair(args.image, args.labels, parse_label_map(args.label_map))
    else:
        raise InputError("Give IMAGE LABELS.")
    return full, (crop_to_labels(full, cfg.margin) if cfg.crop else full)


class Extra:
    """More measurements after the accuracy ones (this repository's speed probes and targets, in
    benchmarks/tools): ``jobs`` for the progress bar; ``run`` returns Markdown lines for the report."""

    jobs = 0

    def run(self, full: Dataset, ds: Dataset, cfg: BenchConfig, axis: int, res, timed: Callable, tick: Callable) -> list[str]:
        return []


def check_ks(ds, cfg: BenchConfig, axis: int) -> None:
    """Every k of both tables fits the labelled extent (before an hour of training, not inside it)."""
    if not 0 <= axis < ds.labels.ndim:
        raise InputError(f"Axis {axis} does not exist in a {ds.labels.ndim}D volume.")
    lo, hi = labelled_extent(ds.labels, axis)
    too_many = [k for k in baseline_ks(cfg) if not 1 <= k <= hi - lo + 1]
    if too_many:
        raise InputError(f"The labels cover {hi - lo + 1} slices along axis {axis} ({lo}..{hi}): cannot annotate "
                         f"k={', '.join(map(str, too_many))} of them (--ks, --time-ks).")


def main(args, cfg: BenchConfig, dataset: Dataset | None = None, extra: Extra | None = None,
         command: str = "napari-sslseg bench") -> int:
    """One run: ``dataset`` instead of IMAGE LABELS, ``extra`` measurements after the accuracy ones,
    ``command``: what the report names as the command run (with the arguments given)."""
    extra = extra or Extra()
    try:
        for m in dict.fromkeys(list(cfg.methods) + cfg.timed_methods()):
            method_config(method_settings(m)[0])
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    all_threads = cfg.threads or torch.get_num_threads()  # the time axis: one training with every core
    try:
        full, ds = load(args, cfg, dataset)
        check_ks(ds, cfg, args.axis)
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    axis = args.axis
    if ds.labels.shape[axis] < cfg.stride_min_slices:
        cfg = replace(cfg, score_stride=1)  # few slices: every one is scored, cheaply
    start = time.perf_counter()
    bar = tqdm(total=trainings_planned(cfg) + time_trainings_planned(cfg) + extra.jobs, desc=f"bench {ds.name}", unit="job")
    parts: dict[str, float] = {}  # wall seconds of each part, for the report

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        parts[name] = time.perf_counter() - t0
        return out

    # the baselines first, alone: their seconds are part of the result
    rows, info = timed("baselines", run_baseline_rows, ds, cfg, axis) if cfg.baselines else ([], {})
    res = timed("step-budget table" + (" and guidance" if cfg.guidance else ""), run_accuracy, ds, cfg, axis, tick=bar.update)
    res.baselines, res.baseline_info = rows, info
    timeline = (timed("time axis", run_time_axis, ds, cfg, axis, all_threads, tick=bar.update)
                if cfg.time_axis and cfg.timed_methods() and cfg.time_ks else None)
    results: dict = {"timeline": timeline}
    more = extra.run(full, ds, cfg, axis, res, timed, bar.update)
    bar.close()
    total = time.perf_counter() - start
    results["parts"] = parts
    report.write_csv(res, ds.name, out / "results.csv")
    if timeline is not None:
        report.write_time_csv(timeline, ds.name, out / "time.csv")
    report.plot(res, cfg.methods, cfg.ks, ds.name, out / "curves.png", timeline)
    md = render(args, cfg, full, ds, res, results, total, more, command)
    (out / "results.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


def render(args, cfg, full, ds, res, sp, total, more=(), command: str = "napari-sslseg bench") -> str:
    argv = sys.argv[1:]
    argv = argv[1:] if argv[:1] == ["bench"] else argv  # run as the CLI's subcommand or as a module
    cmd = command + " " + " ".join(shlex.quote(a) for a in argv)
    shape = "x".join(map(str, full.image.shape))
    data = (f"{shape} cropped (`--crop`) to the labelled box + {cfg.margin} voxels: {'x'.join(map(str, ds.image.shape))}"
            if cfg.crop else f"{shape}, the whole volume (not cropped)")
    where = "crop" if cfg.crop else "volume"
    timeline = sp.get("timeline")
    annotated = dict(res.annotated)
    if timeline is not None:
        annotated.update(timeline.annotated)
    lines = [
        f"## {ds.name}: {'quick' if args.quick else 'full'} run",
        "",
        f"- command: `{cmd}`; total {total / 60:.1f} min"
        + (" (" + ", ".join(f"{k} {v / 60:.1f} min" for k, v in sp["parts"].items()) + ")" if sp.get("parts") else ""),
        f"- machine: {machine()}",
        f"- data: {ds.source}; {data} (z, y, x), spacing {tuple(round(float(x), 4) for x in ds.spacing)} mm; slices along axis {axis_name(args.axis)}",
        f"- labelled extent along the axis: slices {res.extent[0]}..{res.extent[1]} of the {res.num_slices} of the {where}; "
        "annotated slices per k (evenly spaced over the extent): " + "; ".join(f"k={k}: {annotated[k]}" for k in sorted(annotated)),
        f"- scored: Dice and 95% Hausdorff distance (MONAI) per class, then their mean over the classes, on "
        f"{'every' if cfg.score_stride == 1 else f'one in {cfg.score_stride} of the'} unannotated slice"
        f"{'' if cfg.score_stride == 1 else 's'} of the {where} ({res.num_slices} - k slices), "
        "the slices outside the labelled extent included: a structure painted where none exists counts against a model",
        f"- budget of this run: {budget_line(cfg, res, timeline)}",
        f"- step-budget table: every training {cfg.steps} steps, {train_config_line()}; seeds {cfg.seeds}; "
        "± is the standard deviation over seeds; "
        f"{res.workers} training(s) at a time, {res.threads or 'default'} torch thread(s) each",
        f"- {', '.join(ds.class_names[1:])}",
        "",
        "### Mean Dice on unannotated slices (higher is better)",
        "",
        report.accuracy_table(res, cfg.methods, cfg.ks, "dice"),
        "",
        "### Mean 95% Hausdorff distance, mm (lower is better; inf = a class never predicted)",
        "",
        report.accuracy_table(res, cfg.methods, cfg.ks, "hd95"),
        "",
        f"### Dice per class at k={max(cfg.ks)}",
        "",
        report.per_class_table(res, max(cfg.ks)),
        "",
    ]
    if res.baselines:
        lines += ["### Baselines without training: mean Dice (95% HD, mm) and their own seconds", "",
                  report.baseline_table(res.baselines), ""]
        lines += report.baseline_notes(res.baselines, res.baseline_info, cfg.itk_slices)
    if timeline is not None:
        lines += report.time_section(timeline, res.baselines, cfg.score_stride)
    if res.curves:
        lines += [
            f"### Which slice to annotate next ({cfg.guidance_method}, seed {cfg.seeds[0]}, {cfg.guidance_mc_passes} MC passes "
            f"behind each suggestion; {res.guidance_seconds / 60:.1f} min of training and prediction)",
            "",
            "| slices | " + " | ".join(res.curves) + " |",
            "|---" * (len(res.curves) + 1) + "|",
        ]
        ns = sorted({n for c in res.curves.values() for n, _ in c.points})
        for n in ns:
            lines.append(f"| {n} | " + " | ".join(report._fmt(dict(c.points).get(n, float('nan'))) for c in res.curves.values()) + " |")
        lines += ["", f"Start: {res.curves['uniform'].chosen[0]}; " + "; ".join(
            f"{c.strategy} added {c.picks}" for c in res.curves.values() if c.picks), ""]
    lines += list(more) + ["![curves](curves.png)", ""]
    return "\n".join(lines)


def train_config_line() -> str:
    """The engine's default TrainConfig, which every training uses, in words."""
    tc = TrainConfig()
    words = [f"batch {tc.batch_labelled} labelled + {tc.batch_unlabelled} unlabelled", f"patch {tc.patch}", f"width {tc.width}",
             f"lr {tc.lr:g}"]
    if getattr(tc, "foreground_crops", False):
        words.append("patches centred on each class in turn")
    if getattr(tc, "prior_weight", 0) > 0:
        words.append(f"propagation-prior term on unannotated slices, weight {tc.prior_weight:g} falling to "
                     f"{tc.prior_weight * getattr(tc, 'prior_decay', 1.0):g} (every method, supervised included)")
    line = "default TrainConfig (" + ", ".join(words) + ")"
    for row, (method, settings) in VARIANTS.items():
        line += f"; `{row}`: `{method}` with " + ", ".join(f"{k}={v}" for k, v in settings.items())
    return line


def budget_line(cfg: BenchConfig, res, timeline) -> str:
    """What this run trained, in one line (the header of the report)."""
    trainings = len(cfg.methods) * len(cfg.ks) * len(cfg.seeds)
    parts = [f"step-budget table {len(cfg.methods)} method(s) x k {', '.join(map(str, cfg.ks))} x {len(cfg.seeds)} seed(s) = "
             f"{trainings} training(s) of {cfg.steps} steps" + (f" + {len(cfg.seeds)} full-supervision of {cfg.ceiling_steps} steps" if cfg.ceiling else "")]
    if timeline is not None:
        methods = list(dict.fromkeys(r.method for r in timeline.runs))
        parts.append(f"time axis {len(methods)} method(s) ({', '.join(methods)}) x k {', '.join(map(str, timeline.annotated))}, "
                     f"scored at {', '.join(f'{t:g}' for t in timeline.times)} s of training, one training at a time with "
                     f"{timeline.threads} torch thread(s); {schedule_note()}")
    else:
        parts.append("no time axis")
    parts.append("baselines " + (", ".join(dict.fromkeys(b.name for b in res.baselines)) if res.baselines else "none"))
    parts.append("annotation guidance " + ("on" if cfg.guidance else "off (`--guidance` runs it)"))
    return "; ".join(parts)


def axis_name(axis: int) -> str:
    return f"{axis} ({['z', 'y', 'x'][axis]})"
