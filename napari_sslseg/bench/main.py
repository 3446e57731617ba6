"""One benchmark run: load, train and score, time, and write the report."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import InputError
from ..methods import METHODS
from . import report, speed, subprocesses, targets
from .config import BenchConfig
from .datasets import crop_to_labels, load_pair, load_preset, parse_label_map
from .runner import run_accuracy, trainings_planned


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


def load(args, cfg: BenchConfig):
    if args.dataset:
        full = load_preset(args.dataset, args.data_dir)
    elif args.image and args.labels:
        full = load_pair(args.image, args.labels, parse_label_map(args.label_map))
    else:
        raise InputError("Give IMAGE LABELS, or --dataset colin27|mni152.")
    return full, crop_to_labels(full, cfg.margin)


def main(args, cfg: BenchConfig) -> int:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown:
        print(f"Unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}", file=sys.stderr)
        return 2
    try:
        full, ds = load(args, cfg)
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    axis = args.axis
    start = time.perf_counter()
    n_speed = (len(cfg.methods) + 4) if cfg.speed else 0
    bar = tqdm(total=trainings_planned(cfg) + n_speed, desc=f"bench {ds.name}", unit="job")
    parts: dict[str, float] = {}  # wall seconds of each part, for the report

    def timed(name, fn, *a, **kw):
        t0 = time.perf_counter()
        out = fn(*a, **kw)
        parts[name] = time.perf_counter() - t0
        return out

    res = timed("accuracy and guidance", run_accuracy, ds, cfg, axis, tick=bar.update)
    results: dict = {}
    if cfg.speed:
        results["rates"] = timed("steps/s", speed.step_rates, ds, cfg, axis, tick=bar.update)
        results["overlay"], trainer = timed("first overlay", speed.first_overlay, ds, cfg, axis)
        bar.update()
        results["inference"] = timed("inference", speed.inference_time, trainer, full.image, full.spacing, axis, cfg)
        bar.update()
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            results["memory"] = timed("memory", subprocesses.peak_memory,
                                      subprocesses.save_dataset(full, tmp / "full.npz"), cfg, tmp)
            bar.update()
            results["latency"] = timed("viewer", subprocesses.viewer_latency,
                                       subprocesses.save_dataset(ds, tmp / "crop.npz"), cfg, tmp)
            bar.update()
    bar.close()
    total = time.perf_counter() - start
    results["parts"] = parts
    report.write_csv(res, ds.name, out / "results.csv")
    report.plot(res, cfg.methods, cfg.ks, ds.name, out / "curves.png")
    md = render(args, cfg, full, ds, res, results, total)
    (out / "results.md").write_text(md)
    print(md)
    return 0


def render(args, cfg, full, ds, res, sp, total) -> str:
    argv = sys.argv[1:]
    argv = argv[1:] if argv[:1] == ["bench"] else argv  # run as the CLI's subcommand or as a module
    cmd = "napari-sslseg bench " + " ".join(shlex.quote(a) for a in argv)
    lines = [
        f"## {ds.name}: {'quick' if args.quick else 'full'} run",
        "",
        f"- command: `{cmd}`; total {total / 60:.1f} min"
        + (" (" + ", ".join(f"{k} {v / 60:.1f} min" for k, v in sp["parts"].items()) + ")" if sp.get("parts") else ""),
        f"- machine: {machine()}",
        f"- data: {ds.source}; {'x'.join(map(str, full.image.shape))} cropped to the labelled box + {cfg.margin} voxels: "
        f"{'x'.join(map(str, ds.image.shape))} (z, y, x), spacing {ds.spacing} mm; slices along axis {axis_name(args.axis)}",
        f"- labelled extent along the axis: slices {res.extent[0]}..{res.extent[1]} of the crop; annotated slices per k: "
        + "; ".join(f"k={k}: {v}" for k, v in res.annotated.items()),
        f"- every training: {cfg.steps} steps, default TrainConfig (batch 4 labelled + 4 unlabelled, patch 96, width 16); "
        f"seeds {cfg.seeds}; scored on {'the' if cfg.score_stride == 1 else f'one in {cfg.score_stride} of the'} unannotated slices inside the labelled extent; ± is the standard deviation over seeds; "
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
    if "rates" in sp:
        lines += speed_section(cfg, sp)
    lines += ["### Targets", "", targets.check(res, sp, cfg.guidance_max, cfg.guidance_budget), "",
              "![curves](curves.png)", ""]
    return "\n".join(lines)


def axis_name(axis: int) -> str:
    return f"{axis} ({['z', 'y', 'x'][axis]})"


def speed_section(cfg: BenchConfig, sp: dict) -> list[str]:
    lines = ["### Speed and memory", "", "| method | steps/s | one step holds |", "|---|---|---|"]
    lines += [f"| {r.method} | {r.steps_per_second:.2f} | {r.holds} |" for r in sp["rates"]]
    ov = sp["overlay"]
    checks = ", ".join(f"{s}: {d:.2f} @ {t:.0f}s" for s, t, d in ov.checks)
    lines += [
        "",
        f"- steps/s: {cfg.speed_steps} steps timed after {speed.WARMUP_STEPS} warm-up steps, k={cfg.overlay_k}, the crop above",
        f"- first useful overlay ({ov.method}, k={ov.k}, mean Dice >= {ov.target} on unannotated slices; training time only, "
        f"checked every {cfg.overlay_check_every} steps on one unannotated slice in {cfg.overlay_slice_stride}): "
        + (f"**{ov.seconds:.0f} s** at step {ov.steps}" if ov.seconds is not None else f"**not reached** within {ov.limit_s:.0f} s")
        + f" (step: Dice @ time: {checks})",
    ]
    inf = sp["inference"]
    lines.append(
        f"- inference, {inf.mc_passes} MC-dropout passes over the last block (the default), {'x'.join(map(str, inf.shape))} "
        f"volume: **{inf.seconds:.1f} s**"
        + ("" if inf.slices_timed == inf.slices_total else f" ({inf.slices_timed} of {inf.slices_total} slices timed, scaled)")
        + (f"; dropout after every convolution, sampled everywhere (`--mc-scope all`): {inf.seconds_all_blocks:.1f} s "
           f"({inf.slices_all_blocks} slices timed, scaled)" if inf.slices_all_blocks else "")
    )
    mem = sp["memory"]
    if "peak_rss_mb" in mem:
        lines.append(
            f"- peak RSS, mean_teacher, {mem['steps']} steps on a {'x'.join(map(str, mem['shape']))} (z, y, x) volume resampled "
            f"from this image: **{mem['peak_rss_mb']:.0f} MB** (after imports {mem['rss_after_imports_mb']:.0f} MB, "
            f"after building the image + labels {mem['rss_after_volume_mb']:.0f} MB; they hold {mem['volume_mb']:.0f} MB)")
    else:
        lines.append(f"- peak RSS: not measured ({mem.get('error')})")
    lat = sp["latency"]
    if "training" in lat:
        i, t = lat["idle"], lat["training"]
        lines += [
            f"- napari viewer ({lat['display']}), 10 ms QTimer probe, {lat['seconds_per_phase']:.0f} s per phase, "
            f"{lat['method']} training in a thread worker:",
            "",
            "| viewer | p50 ms | p99 ms | max ms |",
            "|---|---|---|---|",
            f"| idle | {i['p50_ms']:.1f} | {i['p99_ms']:.1f} | {i['max_ms']:.1f} |",
            f"| training | {t['p50_ms']:.1f} | {t['p99_ms']:.1f} | {t['max_ms']:.1f} |",
            "",
            f"- steps/s in the viewer {lat['viewer_steps_per_second']:.2f} vs headless {lat['headless_steps_per_second']:.2f} "
            f"({100 * lat['viewer_steps_per_second'] / lat['headless_steps_per_second']:.1f}%; headless is the mean of "
            f"{lat['headless_before']:.2f} before and {lat['headless_after']:.2f} after the viewer)",
        ]
    else:
        lines.append(f"- viewer latency: not measured ({lat.get('error')})")
    return lines + [""]
