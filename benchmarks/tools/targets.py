"""The project's targets, checked against measured numbers: met, missed (by how much) or not measured."""

from __future__ import annotations

import math

from napari_sslseg.bench.runner import AccuracyResults, summarise
from napari_sslseg.methods import METHODS

def semi_supervised() -> list[str]:
    """The methods that learn from unannotated slices, as the registry says now."""
    return [name for name, cls in METHODS.items() if cls.uses_unlabelled]


def _row(name: str, value: str, met: bool | None, note: str = "") -> str:
    verdict = "not measured" if met is None else ("met" if met else "MISSED")
    return f"| {name} | {value} | {verdict} | {note} |"


def _gain_rows(table: dict, baseline: str, candidates: list[str], name: str, points: float = 8) -> list[str]:
    """At k=2 and k=4: the best of ``candidates`` against ``baseline``, in Dice points."""
    rows = []
    for k in (2, 4):
        best = max((m for m in candidates if (m, k) in table), key=lambda m: table[(m, k)][0], default=None)
        if (baseline, k) not in table or best is None:
            rows.append(_row(f"{name}, k={k}", "-", None))
            continue
        gain = 100 * (table[(best, k)][0] - table[(baseline, k)][0])
        rows.append(_row(f"{name}, k={k}", f"{best}: {gain:+.1f} points", gain >= points,
                         "" if gain >= points else f"short by {points - gain:.1f} points"))
    return rows


def check(res: AccuracyResults | None, speed: dict, guidance_max: int, budget: int) -> str:
    rows = ["| target | measured | verdict | note |", "|---|---|---|---|"]
    table = summarise(res) if res else {}
    semi_methods = semi_supervised()
    sup = {k: table[("supervised", k)][0] for (m, k) in table if m == "supervised"}
    rows += _gain_rows(table, "supervised", semi_methods, "best semi-supervised >= supervised + 8 Dice points")
    rows += _gain_rows(table, "annotated_only", semi_methods + ["supervised"],
                       "best learning from unannotated slices >= annotated slices alone + 8 Dice points")
    semi4 = {m: table[(m, 4)][0] for m in semi_methods if (m, 4) in table}
    if semi4 and 8 in sup:
        best = max(semi4, key=semi4.get)
        d = semi4[best] - sup[8]
        rows.append(_row("best semi-supervised at k=4 >= supervised at k=8", f"{best}: {semi4[best]:.3f} vs {sup[8]:.3f}",
                         d >= 0, "" if d >= 0 else f"short by {-100 * d:.1f} points"))
    else:
        rows.append(_row("best semi-supervised at k=4 >= supervised at k=8", "-", None, "k=4 and k=8 both needed"))
    if res and res.curves.get("uniform") and res.curves.get("suggested"):
        goal = dict(res.curves["uniform"].points).get(guidance_max)
        n = res.curves["suggested"].slices_to_reach(goal) if goal is not None else None
        value = f"uniform {guidance_max}: {goal:.3f}; suggested reaches it with {n if n else f'> {budget}'} slices" if goal is not None else "-"
        rows.append(_row(f"suggested slices reach uniform-{guidance_max} Dice with <= 6", value,
                         None if goal is None or guidance_max != 8 else (n is not None and n <= 6)))
    lat = speed.get("latency", {})
    tr = lat.get("training", {})
    if "p99_ms" in tr:
        rows.append(_row("event loop p99 <= 30 ms while training", f"{tr['p99_ms']:.1f} ms", tr["p99_ms"] <= 30))
        rows.append(_row("event loop max <= 100 ms while training", f"{tr['max_ms']:.1f} ms", tr["max_ms"] <= 100))
        ratio = lat["viewer_steps_per_second"] / lat["headless_steps_per_second"]
        rows.append(_row("in-viewer steps/s >= 85% of headless", f"{100 * ratio:.1f}%", ratio >= 0.85))
    else:
        rows.append(_row("event-loop latency and in-viewer speed", "-", None, lat.get("error", "")))
    ov = speed.get("overlay")
    if ov is not None:
        value = f"{ov.seconds:.0f} s ({ov.steps} steps)" if ov.seconds is not None else f"not reached in {ov.limit_s:.0f} s"
        best = max((d for _, _, d in ov.checks), default=math.nan)
        rows.append(_row("first useful overlay (mean Dice >= 0.7, k=4) <= 60 s", value,
                         ov.seconds is not None and ov.seconds <= 60, f"best Dice seen {best:.3f}"))
    inf = speed.get("inference")
    if inf is not None:
        rows.append(_row(f"inference, {inf.mc_passes} MC passes, {'x'.join(map(str, inf.shape))} <= 20 s",
                         f"{inf.seconds:.1f} s", inf.seconds <= 20,
                         "" if inf.slices_timed == inf.slices_total else f"{inf.slices_timed} slices timed, scaled"))
    mem = speed.get("memory", {})
    if "peak_rss_mb" in mem:
        rows.append(_row("peak RSS <= 3 GB at 512x512x300", f"{mem['peak_rss_mb'] / 1024:.2f} GB", mem["peak_rss_mb"] <= 3072))
    else:
        rows.append(_row("peak RSS <= 3 GB at 512x512x300", "-", None, mem.get("error", "")))
    return "\n".join(rows)
