"""Event-loop latency of a real napari viewer while training runs in a napari thread worker.

Run as ``python -m benchmarks.tools.latency DATA.npz OUT.json SECONDS METHOD THREADS [HEADLESS_THREADS [BUSY]]``
under a display (``xvfb-run -a`` on a headless machine); HEADLESS_THREADS (default THREADS) is what
the headless run it is compared with uses (the command line takes torch's default, every core; the
panel the cores other work leaves free), BUSY=1 keeps one other CPU-bound process running throughout
(a machine that is doing something else). DATA.npz holds the benchmark's volume (the whole one
unless the run was cropped).
A QTimer fires every 10 ms; its lateness (time since the previous tick minus 10 ms) is what a
user feels as a stutter. Measured with the viewer idle, then while training, and training's
steps per second are compared with the same training run headless in this process, before and
after the viewer (their mean: this machine's speed drifts within minutes).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

PROBE_MS = 10


def probe(app, seconds: float) -> list[float]:
    """Lateness of a 10 ms timer, in ms, over ``seconds`` of the running event loop."""
    from qtpy.QtCore import QEventLoop, Qt, QTimer

    ticks: list[float] = []
    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(PROBE_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    timer.start()
    loop.exec()
    timer.stop()
    gaps = np.diff(ticks) * 1000 - PROBE_MS
    return np.clip(gaps, 0, None).tolist()


def rate_between(marks: list[float], start: float, end: float) -> float:
    """Steps per second from the step times that fall in [start, end], first to last (as headless)."""
    from .speed import steps_per_second

    inside = [t for t in marks if start <= t <= end]
    if len(inside) < 2:
        return len(inside) / max(end - start, 1e-9)
    return steps_per_second(inside)


def stats(lateness: list[float]) -> dict:
    a = np.asarray(lateness, float)
    if a.size == 0:
        return {"ticks": 0}
    return {"ticks": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def main(argv: list[str]) -> int:
    data, out, seconds, method, threads, *rest = argv
    seconds, threads = float(seconds), int(threads)
    headless_threads = int(rest[0]) if rest else threads
    busy = bool(int(rest[1])) if len(rest) > 1 else False
    other = None
    if busy:
        import subprocess

        # spins until its parent is gone, so a probe killed on a timeout leaves nothing running
        other = subprocess.Popen([sys.executable, "-c", "import os\np = os.getppid()\nwhile os.getppid() == p:\n"
                                  "    for _ in range(100000): pass"])
    try:
        return _measure(data, out, seconds, method, threads, headless_threads, busy)
    finally:
        if other is not None:
            other.kill()
            other.wait()


def _measure(data, out, seconds: float, method: str, threads: int, headless_threads: int, busy: bool) -> int:
    import napari
    from napari.qt.threading import thread_worker

    from napari_sslseg.bench.datasets import Dataset, labelled_extent
    from napari_sslseg.bench.protocol import evenly_spaced, trainer_for, training_volume
    from napari_sslseg.events import StepEvent

    from .speed import timed_steps

    d = np.load(data, allow_pickle=False)
    ds = Dataset("latency", d["image"], d["labels"], tuple(float(s) for s in d["spacing"]),
                 [str(n) for n in d["class_names"]], "benchmark crop")
    annotated = evenly_spaced(labelled_extent(ds.labels, 0), 4)

    def trainer(steps: int, threads: int = threads):
        return trainer_for(ds, annotated, 0, method, threads, steps=steps)

    report = {"method": method, "seconds_per_phase": seconds, "threads": threads,
              "headless_threads": headless_threads, "busy": busy}
    # headless: as many steps as fit in about the probe time, timed the same way as in the viewer
    rough = timed_steps(trainer(20, headless_threads), 5)
    n = max(5, int(rough * seconds))

    def headless() -> float:
        return timed_steps(trainer(n + 10, headless_threads), n)

    report["headless_before"] = headless()

    viewer = napari.Viewer(show=True)
    viewer.add_image(ds.image, name="image")
    viewer.add_labels(training_volume(ds, annotated, 0).labels, name="labels")
    app = napari.qt.get_qapp()
    probe(app, 1.0)  # let the window settle
    report["idle"] = stats(probe(app, seconds))

    steps_at: list[float] = []

    @thread_worker
    def train_in_worker():
        yield from trainer(10**6).run()

    worker = train_in_worker()
    worker.yielded.connect(lambda e: steps_at.append(time.perf_counter()) if isinstance(e, StepEvent) else None)
    worker.start()
    probe(app, 2.0)  # warm-up steps are not timed
    t0 = time.perf_counter()
    report["training"] = stats(probe(app, seconds))
    report["viewer_steps_per_second"] = rate_between(steps_at, t0, time.perf_counter())
    worker.quit()
    deadline = time.perf_counter() + 30
    while worker.is_running and time.perf_counter() < deadline:
        app.processEvents()
        time.sleep(0.01)
    viewer.close()
    report["headless_after"] = headless()
    report["headless_steps_per_second"] = (report["headless_before"] + report["headless_after"]) / 2
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
