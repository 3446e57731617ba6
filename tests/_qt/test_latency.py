"""The event-loop probe of the benchmark, on the Qt binding installed."""

from __future__ import annotations

from benchmarks.tools.latency import PROBE_MS, probe, stats


def test_probe_measures_timer_lateness(qapp):
    lateness = probe(qapp, 0.5)
    # a 10 ms timer over 0.5 s of an idle loop: dozens of ticks, none early
    assert len(lateness) >= 0.5 * 1000 / PROBE_MS / 3
    assert min(lateness) >= 0
    s = stats(lateness)
    assert s["ticks"] == len(lateness) and 0 <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]


def test_rate_counts_steps_inside_the_window_first_to_last():
    from benchmarks.tools.latency import rate_between

    marks = [0.5, 1.0, 1.5, 2.0, 2.5, 9.0]  # steps every 0.5 s, one long after the window
    assert rate_between(marks, 0.9, 2.6) == 2.0  # 1.0 .. 2.5: 3 intervals in 1.5 s
    assert rate_between(marks, 3.0, 4.0) == 0.0
