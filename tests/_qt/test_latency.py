"""The event-loop probe of the benchmark, on the Qt binding installed."""

from __future__ import annotations

from napari_sslseg._qt.latency import PROBE_MS, probe, stats


def test_probe_measures_timer_lateness(qapp):
    lateness = probe(qapp, 0.5)
    # a 10 ms timer over 0.5 s of an idle loop: dozens of ticks, none early
    assert len(lateness) >= 0.5 * 1000 / PROBE_MS / 3
    assert min(lateness) >= 0
    s = stats(lateness)
    assert s["ticks"] == len(lateness) and 0 <= s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
