"""Results as Markdown, CSV and a PNG of the curves, all written by the command."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .runner import CEILING, AccuracyResults, summarise


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def accuracy_table(res: AccuracyResults, methods: list[str], ks: list[int], metric: str) -> str:
    table = summarise(res, metric)
    digits = 3 if metric == "dice" else 1
    rows = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---" * (len(ks) + 1) + "|"]
    for method in methods + ([CEILING] if any(r.method == CEILING for r in res.runs) else []):
        cells = [f"{_fmt(m, digits)} ± {_fmt(s, digits)}" for m, s in (table.get((method, k), (math.nan, math.nan)) for k in ks)]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def per_class_table(res: AccuracyResults, k: int) -> str:
    runs = [r for r in res.runs if r.k == k]
    if not runs:
        return ""
    names = list(runs[0].scores.dice)
    rows = ["| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for method in dict.fromkeys(r.method for r in runs):
        mine = [r for r in runs if r.method == method]
        cells = []
        for n in names:
            vals = [r.scores.dice[n] for r in mine if math.isfinite(r.scores.dice[n])]
            cells.append(_fmt(sum(vals) / len(vals)) if vals else "n/a")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_csv(res: AccuracyResults, dataset: str, path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "method", "k", "seed", "class", "dice", "hd95_mm", "train_seconds"])
        for r in res.runs:
            for name in r.scores.dice:
                w.writerow([dataset, r.method, r.k, r.seed, name, r.scores.dice[name], r.scores.hd95[name], r.train_seconds])
            w.writerow([dataset, r.method, r.k, r.seed, "mean", r.scores.mean_dice, r.scores.mean_hd95, r.train_seconds])
        for c in res.curves.values():
            for (n, dice), chosen in zip(c.points, c.chosen):
                w.writerow([dataset, f"guidance:{c.strategy}", n, "", "mean", dice, "", " ".join(map(str, chosen))])


def plot(res: AccuracyResults, methods: list[str], ks: list[int], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarise(res, "dice")
    fig, axes = plt.subplots(1, 2 if res.curves else 1, figsize=(11 if res.curves else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for method in methods:
        m = [table.get((method, k), (math.nan, math.nan)) for k in ks]
        ax.errorbar(ks, [v for v, _ in m], yerr=[s for _, s in m], marker="o", capsize=3, label=method)
    ceil = [table[(CEILING, k)][0] for k in ks if (CEILING, k) in table]
    if ceil:
        ax.axhline(sum(ceil) / len(ceil), color="k", ls="--", label=CEILING)
    ax.set(xlabel="annotated slices (k)", ylabel="mean Dice, unannotated slices", title=f"{title}: methods", xticks=ks)
    ax.legend(fontsize=7)
    if res.curves:
        ax = axes[0, 1]
        for c in res.curves.values():
            ax.plot([n for n, _ in c.points], [d for _, d in c.points], marker="o", label=c.strategy)
        ns = sorted({n for c in res.curves.values() for n, _ in c.points})
        ax.set(xlabel="annotated slices", ylabel="mean Dice, unannotated slices", title=f"{title}: which slice next", xticks=ns)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
