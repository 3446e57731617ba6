"""The repository's benchmark runs: ``napari-sslseg bench`` on the data sets of ../shared/data
(``--dataset``), with speed, memory and viewer latency measured after the accuracy (``--no-speed``
leaves them out) and the project's targets checked at the end of the report.

usage: python -m benchmarks.tools.bench (--dataset NAME | IMAGE LABELS) [napari-sslseg bench options]
           [--data-dir DIR] [--no-speed]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from napari_sslseg.bench import add_arguments, config_from_args
from napari_sslseg.bench.main import Extra, main as bench_main
from napari_sslseg.errors import InputError

from . import speed, subprocesses, targets
from .config import ProbeConfig
from .presets import PRESET_KS, PRESET_STEPS, PRESETS, load_preset

COMMAND = "python -m benchmarks.tools.bench"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=COMMAND, description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--dataset", choices=PRESETS, help="a data set of ../shared/data instead of IMAGE LABELS")
    parser.add_argument("--data-dir", help="where the data sets live (default ../shared/data)")
    parser.add_argument("--no-speed", action="store_true", help="skip speed, memory and viewer latency")
    return parser


def config_from(args) -> ProbeConfig:
    """The package's settings from the options, on a data set's own defaults (its ks, its steps)."""
    preset = {}
    if args.dataset in PRESET_KS:
        preset["ks"] = preset["time_ks"] = list(PRESET_KS[args.dataset])
    if args.dataset in PRESET_STEPS:
        preset["steps"] = PRESET_STEPS[args.dataset]
    cfg = config_from_args(args, ProbeConfig(**preset))
    cfg = replace(cfg, speed=cfg.speed and not args.no_speed)
    return cfg


class Probes(Extra):
    """Speed, memory and viewer latency (with ``cfg.speed``), then the targets."""

    def __init__(self, cfg: ProbeConfig):
        self.jobs = (len(cfg.methods) + 4) if cfg.speed else 0

    def run(self, full, ds, cfg: ProbeConfig, axis, res, timed, tick) -> list[str]:
        sp: dict = {}
        if cfg.speed:
            sp["rates"] = timed("steps/s", speed.step_rates, ds, cfg, axis, tick=tick)
            sp["overlay"], trainer = timed("first overlay", speed.first_overlay, ds, cfg, axis)
            tick()
            sp["inference"] = timed("inference", speed.inference_time, trainer, full.image, full.spacing, axis, cfg)
            tick()
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                sp["memory"] = timed("memory", subprocesses.peak_memory,
                                     subprocesses.save_dataset(full, tmp / "full.npz"), cfg, tmp)
                tick()
                sp["latency"] = timed("viewer", subprocesses.viewer_latency,
                                      subprocesses.save_dataset(ds, tmp / "volume.npz"), cfg, tmp)
                tick()
        lines = speed_section(cfg, sp) if "rates" in sp else []
        return lines + ["### Targets", "", targets.check(res, sp, cfg.guidance_max, cfg.guidance_budget), ""]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from(args)
    if not args.dataset and not (args.image and args.labels):
        print(f"Give IMAGE LABELS, or --dataset {'|'.join(PRESETS)}.", file=sys.stderr)
        return 2
    try:
        dataset = load_preset(args.dataset, args.data_dir) if args.dataset else None
    except InputError as exc:
        print(exc, file=sys.stderr)
        return 2
    return bench_main(args, cfg, dataset=dataset, extra=Probes(cfg), command=COMMAND)


def speed_section(cfg: ProbeConfig, sp: dict) -> list[str]:
    lines = ["### Speed and memory", "", "| method | steps/s | one step holds |", "|---|---|---|"]
    lines += [f"| {r.method} | {r.steps_per_second:.2f} | {r.holds} |" for r in sp["rates"]]
    ov = sp["overlay"]
    checks = ", ".join(f"{s}: {d:.2f} @ {t:.0f}s" for s, t, d in ov.checks)
    lines += [
        "",
        f"- steps/s: {cfg.speed_steps} steps timed after {speed.WARMUP_STEPS} warm-up steps, k={cfg.overlay_k}, the volume above",
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


if __name__ == "__main__":
    sys.exit(main())
