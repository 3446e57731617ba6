"""One training run in a napari worker thread, with its progress bar.

The worker only ever sees the trainer, which holds copies of the user's arrays;
events come back to the GUI thread through the worker's signals.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from napari.qt.threading import create_worker
from napari.utils import progress

from ..errors import TrainingError
from ..events import FinishedEvent, Pause, Resume, StepEvent, Stop


#: Niceness of the training thread (Linux, 0..19; 0 = as the viewer). Off: on a loaded 2-core
#: machine (load 7-9) a niced training thread made the viewer's 10 ms timer later, not earlier
#: (p99 19-26 ms against 10-11 ms at 0, 20 s runs): it holds the GIL while it waits for a core.
TRAINING_NICENESS = 0


def free_cores(sample_seconds: float = 0.25) -> int:
    """The cores other work leaves free now: the cores less those busy over ``sample_seconds``
    (all processes, psutil), at least 1."""
    import psutil

    cores = os.cpu_count() or 1
    busy = round(psutil.cpu_percent(interval=sample_seconds) / 100 * cores)
    return max(1, min(cores, cores - busy))


def take_free_cores(threads: int) -> dict:
    """In the training thread: as many CPU threads as there are free cores (unless the user chose
    a number), and with :data:`TRAINING_NICENESS` a lower priority for this thread and the CPU
    threads it starts.

    Measured on this 2-core machine (whole Colin27 head, mean_teacher, 20 s, BENCHMARKS.md): alone,
    two threads trained at 4.6 steps/s (96% of the command line's speed) with the viewer's 10 ms
    timer late by p99 2.3 ms, one thread at 3.6 steps/s (62%); beside one CPU-bound process, two
    threads fought it for the cores (2.8 steps/s), one thread trained at 3.4 (p99 4.0 ms). The
    torch threads release the GIL while they compute, so the viewer keeps its core either way;
    what matters is not to start more threads than there are free cores.

    Returns what was set: ``{"threads": N, "tid": id, "niceness": n}`` (niceness None where the
    system has no per-thread priority)."""
    import torch

    if threads <= 0:
        torch.set_num_threads(free_cores())
    done = {"threads": torch.get_num_threads(), "tid": threading.get_native_id(), "niceness": None}
    if TRAINING_NICENESS > 0 and sys.platform.startswith("linux"):  # a thread is a process to setpriority there
        try:
            os.setpriority(os.PRIO_PROCESS, done["tid"], TRAINING_NICENESS)
            done["niceness"] = os.getpriority(os.PRIO_PROCESS, done["tid"])
        except OSError:  # not allowed here: train at the usual priority
            pass
    return done


def guarded(events, threads: int = 0, report: dict | None = None, what: str = "Training"):
    """Re-raise the loop's exceptions as TrainingError (the loop's own already are one), the
    message starting with ``what``.

    superqt's generator worker takes a RuntimeError for "the worker was deleted" and
    drops it silently, while torch reports most failures (out of memory, say) as one.
    """
    if report is not None:
        report.update(take_free_cores(threads))
    try:
        return (yield from events)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"{what} failed: {type(exc).__name__}: {exc}.") from exc


class TrainingSession:
    def __init__(self, trainer, on_event, on_error, on_done, description: str = "Training"):
        self.trainer = trainer
        self.paused = False
        self.finished = False
        self.timed = trainer.config.time_budget > 0  # the bar counts seconds of training, else steps
        self.progress = progress(total=int(trainer.config.time_budget) if self.timed else trainer.config.steps, desc=description)
        self._run = trainer.run()
        self.thread: dict = {}  # what the training thread set for itself (threads, tid, niceness)
        self.worker = create_worker(guarded, self._run, trainer.config.threads, self.thread, _start_thread=False,
                                    _ignore_errors=True)
        # one slot per signal: two slots on a worker's signal are two queued calls, and the GUI thread
        # may look at the session between them (finished, but the panel's part of finishing not yet run)
        self._callbacks = (on_event, on_done)
        self.worker.yielded.connect(self._on_event)
        self.worker.errored.connect(on_error)
        self.worker.finished.connect(self._on_done)

    def start(self) -> None:
        self.worker.start()

    @property
    def running(self) -> bool:
        return not self.finished

    def _on_event(self, event) -> None:
        try:
            self._callbacks[0](event)  # first: napari's progress bar may process pending Qt events as it updates
        finally:
            if isinstance(event, StepEvent):
                done = min(int(self.trainer.train_seconds), self.progress.total) if self.timed else event.step
                self.progress.update(done - self.progress.n)
            elif isinstance(event, FinishedEvent):
                self.progress.set_description(f"Training {event.reason}")

    def _on_done(self) -> None:
        self.finished = True
        try:
            self._callbacks[1]()
        finally:
            self.progress.close()

    def submit(self, command) -> None:
        if not self.finished:
            self.trainer.submit(command)

    def pause(self) -> None:
        self.paused = True
        self.submit(Pause())

    def resume(self) -> None:
        self.paused = False
        self.submit(Resume())

    def stop(self) -> None:
        """Ask the loop to stop after this step; it still evaluates and previews the result."""
        self.submit(Stop())

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop now and wait for the thread (the viewer or panel is closing); the training state
        is saved to the trainer's checkpoint."""
        if self.finished:
            return
        self.trainer.submit(Stop())
        self.worker.quit()  # leave at the next event, skipping the final preview
        deadline = time.monotonic() + timeout
        while self.worker.is_running and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.worker.is_running:
            self._run.close()  # the loop, closed mid-run, saves what it trained
        self.finished = True
        self.progress.close()


class Shutdown:
    """What must stop when the panel or the viewer goes away; holds no reference to the panel."""

    def __init__(self):
        self.session: TrainingSession | None = None
        self.pretraining = None  # the panel's Pretraining

    def __call__(self, *_):
        if self.pretraining is not None:
            self.pretraining.shutdown()
        if self.session is not None:
            self.session.shutdown()
