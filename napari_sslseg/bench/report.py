"""Results as Markdown, CSV and a PNG of the curves, all written by the command."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .baselines import BASELINES, BaselineResult
from .runner import CEILING, AccuracyResults, TimeResults, mean_sd, summarise


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def _baseline(rows: list[BaselineResult], name: str, k: int) -> BaselineResult | None:
    return next((b for b in rows if b.name == name and b.k == k), None)


def _baseline_names(rows: list[BaselineResult]) -> list[str]:
    return [n for n in BASELINES if any(b.name == n for b in rows)]


def accuracy_table(res: AccuracyResults, methods: list[str], ks: list[int], metric: str) -> str:
    """Methods (mean ± spread over seeds), the ceiling, then the baselines (one value: no seed)."""
    table = summarise(res, metric)
    digits = 3 if metric == "dice" else 1
    rows = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for method in methods + ([CEILING] if any(r.method == CEILING for r in res.runs) else []):
        cells = [f"{_fmt(m, digits)} ± {_fmt(s, digits)}" for m, s in (table.get((method, k), (math.nan, math.nan)) for k in ks)]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    for name in _baseline_names(res.baselines):
        cells = []
        for k in ks:
            b = _baseline(res.baselines, name, k)
            if b is None or b.scores is None:
                cells.append(b.note if b is not None else "n/a")
            else:
                cells.append(_fmt(b.scores.mean_dice if metric == "dice" else b.scores.mean_hd95, digits))
        rows.append(f"| {name} (no training) | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def per_class_table(res: AccuracyResults, k: int) -> str:
    runs = [r for r in res.runs if r.k == k]
    base = [b for b in res.baselines if b.k == k and b.scores is not None]
    if not runs and not base:
        return ""
    names = list((runs[0].scores if runs else base[0].scores).dice)
    rows = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        cells = []
        for n in names:
            vals = [r.scores.dice[n] for r in mine if math.isfinite(r.scores.dice[n])]
            cells.append(_fmt(sum(vals) / len(vals)) if vals else "n/a")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    for b in base:
        rows.append(f"| {b.name} (no training) | " + " | ".join(_fmt(b.scores.dice[n]) for n in names) + " |")
    return "\n".join(rows)


def _dice_hd(scores) -> str:
    return f"{_fmt(scores.mean_dice)} ({_fmt(scores.mean_hd95, 1)})"


def baseline_table(rows: list[BaselineResult]) -> str:
    """Baselines x every k they ran at: "Dice (HD95) in seconds"."""
    ks = sorted({b.k for b in rows})
    out = ["| baseline | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for name in _baseline_names(rows):
        cells = []
        for k in ks:
            b = _baseline(rows, name, k)
            cells.append("n/a" if b is None else b.note if b.scores is None else f"{_dice_hd(b.scores)} in {b.seconds:.2f} s")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def baseline_notes(rows: list[BaselineResult], info: dict, itk_slices: str) -> list[str]:
    lines = []
    names = _baseline_names(rows)
    if "prior" in names:
        lines.append("- prior: `napari_sslseg.prior.propagate(...).volume()` (shape-based interpolation of the annotated "
                     "slices' signed distance maps, carried along the structures by registering neighbouring image slices, "
                     "tapering beyond the outermost ones), its labels scored")
    if "itk_interpolation" in names:
        how = ("the filter detects the annotated slices itself, as 3D Slicer's Fill between slices"
               if itk_slices == "detected" else "every annotated slice named as a slice of every class (custom slice positions)")
        line = (f"- itk_interpolation: ITK's morphological contour interpolation (`itk.morphological_contour_interpolator`, "
                f"axis = the slice axis, distance-transform median contours; {how})")
        if "itk_load_seconds" in info:
            line += f"; loading ITK's libraries took {info['itk_load_seconds']:.1f} s once, not counted in its seconds"
        lines.append(line)
    return lines + ([""] if lines else [])


def _time_cell(scores: list) -> str:
    """Dice (HD95) of one run, or mean ± sd of the mean Dice (mean HD95) over seeds; n/a without any."""
    if not scores:
        return "n/a"
    if len(scores) == 1:
        return _dice_hd(scores[0])
    dice, sd = mean_sd(sc.mean_dice for sc in scores)
    hd, _ = mean_sd(sc.mean_hd95 for sc in scores)
    return f"{_fmt(dice)} ± {_fmt(sd)} ({_fmt(hd, 1)})"


def time_section(tl: TimeResults, baselines: list[BaselineResult], stride: int) -> list[str]:
    """One table per k: methods x checkpoint times, "Dice (HD95)"; the baselines beside them, from the
    time they take on (their Dice does not change with time)."""
    head = "| method | " + " | ".join(f"{t:g} s" for t in tl.times) + " |"
    rule = "|---" * (len(tl.times) + 1) + "|"
    lines = []
    for k, annotated in tl.annotated.items():
        lines += [f"### Mean Dice (95% HD, mm) on unannotated slices after T s of training, k={k} (slices {annotated})", "",
                  head, rule]
        runs = [r for r in tl.runs if r.k == k]
        for method in dict.fromkeys(r.method for r in runs):
            mine = [r for r in runs if r.method == method]
            cells = [_time_cell([p.scores for r in mine for p in r.points if p.target == t]) for t in tl.times]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        for name in _baseline_names(baselines):
            b = _baseline(baselines, name, k)
            if b is None:
                continue
            if b.scores is None:
                lines.append(f"| {name} (no training) | " + " | ".join(b.note for _ in tl.times) + " |")
                continue
            cells = [_dice_hd(b.scores) if t >= b.seconds else "-" for t in tl.times]
            lines.append(f"| {name} (no training, {b.seconds:.2f} s) | " + " | ".join(cells) + " |")
        lines.append("")
        several = len({r.seed for r in runs}) > 1  # name each run's seed
        done = "; ".join(f"{r.method}{f' (seed {r.seed})' if several else ''} {r.points[-1].step} steps in {r.points[-1].seconds:.0f} s "
                         f"({r.steps_per_second:.2f} steps/s), scoring {r.score_seconds:.0f} s"
                         for r in runs if r.points)
        lines.append(f"- by the last checkpoint: {done}" if done else "- no run reached a checkpoint")
        lines += [f"- {r.method}: {r.ended}" for r in runs if r.ended]
        lines.append("")
    seeds = sorted({r.seed for r in tl.runs}) or [0]
    which = (f"one seed ({seeds[0]})" if len(seeds) == 1 else
             f"seeds {', '.join(map(str, seeds))}, each a run of its own: a cell is the mean over them, ± the standard "
             f"deviation of the mean Dice, and the mean 95% HD")
    lines += [f"- the time axis: {which}; each cell is the model after the first "
              f"step past T s of training (the clock stops while scoring; it includes building the trainer); scored on "
              f"{'every' if stride == 1 else f'one in {stride} of the'} unannotated slice{'' if stride == 1 else 's'} of the "
              f"volume; a baseline's cells start where its own seconds are spent", ""]
    return lines


def write_csv(res: AccuracyResults, dataset: str, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "k", "seed", "class", "dice", "hd95_mm", "train_seconds"])
        for r in res.runs:
            for name in r.scores.dice:
                w.writerow([dataset, r.method, r.k, r.seed, name, r.scores.dice[name], r.scores.hd95[name], r.train_seconds])
            w.writerow([dataset, r.method, r.k, r.seed, "mean", r.scores.mean_dice, r.scores.mean_hd95, r.train_seconds])
        for b in res.baselines:  # no seed; train_seconds = the baseline's own seconds
            if b.scores is None:
                w.writerow([dataset, b.name, b.k, "", "mean", "", "", b.note])
                continue
            for name in b.scores.dice:
                w.writerow([dataset, b.name, b.k, "", name, b.scores.dice[name], b.scores.hd95[name], b.seconds])
            w.writerow([dataset, b.name, b.k, "", "mean", b.scores.mean_dice, b.scores.mean_hd95, b.seconds])
        for c in res.curves.values():
            for (n, dice), chosen in zip(c.points, c.chosen):
                w.writerow([dataset, f"guidance:{c.strategy}", n, "", "mean", dice, "", " ".join(map(str, chosen))])


def write_time_csv(tl: TimeResults, dataset: str, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "k", "seed", "time_s", "trained_s", "step", "class", "dice", "hd95_mm"])
        for r in tl.runs:
            for p in r.points:
                for name in p.scores.dice:
                    w.writerow([dataset, r.method, r.k, r.seed, p.target, p.seconds, p.step, name, p.scores.dice[name],
                                p.scores.hd95[name]])
                w.writerow([dataset, r.method, r.k, r.seed, p.target, p.seconds, p.step, "mean", p.scores.mean_dice,
                            p.scores.mean_hd95])


def plot(res: AccuracyResults, methods: list[str], ks: list[int], title: str, path: Path,
         timeline: TimeResults | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarise(res, "dice")
    panels = 1 + bool(timeline is not None and timeline.runs) + bool(res.curves)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    for method in methods:
        m = [table.get((method, k), (math.nan, math.nan)) for k in ks]
        ax.errorbar(ks, [v for v, _ in m], yerr=[s for _, s in m], marker="o", capsize=3, label=method)
    ceil = [table[(CEILING, k)][0] for k in ks if (CEILING, k) in table]
    if ceil:
        ax.axhline(sum(ceil) / len(ceil), color="k", ls="--", label=CEILING)
    for name in _baseline_names(res.baselines):
        pts = [(k, b.scores.mean_dice) for k in ks if (b := _baseline(res.baselines, name, k)) and b.scores is not None]
        if pts:
            ax.plot([k for k, _ in pts], [d for _, d in pts], ls=":", marker="s", color="grey" if name == "prior" else "k",
                    label=f"{name} (no training)")
    ax.set(xlabel="annotated slices (k)", ylabel="mean Dice, unannotated slices", title=f"{title}: methods", xticks=ks)
    ax.legend(fontsize=7)
    if timeline is not None and timeline.runs:
        ax = axes.pop(0)
        styles = ["-", "--", "-.", ":"]
        colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(r.method for r in timeline.runs))}
        named = set()  # one legend entry per method and k, however many seeds
        for i, k in enumerate(timeline.annotated):
            for r in (r for r in timeline.runs if r.k == k):
                label = f"{r.method}, k={k}"
                ax.plot([p.seconds for p in r.points], [p.scores.mean_dice for p in r.points], marker="o",
                        ls=styles[i % len(styles)], color=colours[r.method], label="_nolegend_" if label in named else label)
                named.add(label)
            for name in _baseline_names(res.baselines):
                b = _baseline(res.baselines, name, k)
                if b is not None and b.scores is not None:
                    ax.axhline(b.scores.mean_dice, ls=styles[i % len(styles)], lw=0.8,
                               color="grey" if name == "prior" else "k", label=f"{name}, k={k}")
        ax.set(xlabel="training time, s", ylabel="mean Dice, unannotated slices", title=f"{title}: against time", xscale="log")
        ax.set_xticks(timeline.times, [f"{t:g}" for t in timeline.times])
        ax.legend(fontsize=6)
    if res.curves:
        ax = axes.pop(0)
        for c in res.curves.values():
            ax.plot([n for n, _ in c.points], [d for _, d in c.points], marker="o", label=c.strategy)
        ns = sorted({n for c in res.curves.values() for n, _ in c.points})
        ax.set(xlabel="annotated slices", ylabel="mean Dice, unannotated slices", title=f"{title}: which slice next", xticks=ns)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
