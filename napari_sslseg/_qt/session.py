"""One training run in a napari worker thread, with its progress bar.

The worker only ever sees the trainer, which holds copies of the user's arrays;
events come back to the GUI thread through the worker's signals.
"""

from __future__ import annotations

import time

from napari.qt.threading import create_worker
from napari.utils import progress

from ..errors import TrainingError
from ..events import FinishedEvent, Pause, Resume, StepEvent, Stop


def _guarded(events):
    """Re-raise the loop's exceptions as TrainingError (the loop's own already are one).

    superqt's generator worker takes a RuntimeError for "the worker was deleted" and
    drops it silently, while torch reports most failures (out of memory, say) as one.
    """
    try:
        return (yield from events)
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"Training failed: {type(exc).__name__}: {exc}.") from exc


class TrainingSession:
    def __init__(self, trainer, on_event, on_error, on_done, description: str = "Training"):
        self.trainer = trainer
        self.paused = False
        self.finished = False
        self.timed = trainer.config.time_budget > 0  # the bar counts seconds of training, else steps
        self.progress = progress(total=int(trainer.config.time_budget) if self.timed else trainer.config.steps, desc=description)
        self._run = trainer.run()
        self.worker = create_worker(_guarded, self._run, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._on_event)
        self.worker.yielded.connect(on_event)
        self.worker.errored.connect(on_error)
        self.worker.finished.connect(self._on_done)
        self.worker.finished.connect(on_done)

    def start(self) -> None:
        self.worker.start()

    @property
    def running(self) -> bool:
        return not self.finished

    def _on_event(self, event) -> None:
        if isinstance(event, StepEvent):
            done = min(int(self.trainer.train_seconds), self.progress.total) if self.timed else event.step
            self.progress.update(done - self.progress.n)
        elif isinstance(event, FinishedEvent):
            self.progress.set_description(f"Training {event.reason}")

    def _on_done(self) -> None:
        self.finished = True
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

    def __call__(self, *_):
        if self.session is not None:
            self.session.shutdown()
