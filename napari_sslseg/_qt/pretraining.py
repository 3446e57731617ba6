"""Pre-training while the user paints: a self-supervised run (:mod:`napari_sslseg.pretrain`) on the
chosen image in a napari worker, from the moment the image is chosen until Train is pressed or its
steps are done; the training then starts from its weights (``Trainer(init=...)``).

It uses time the user spends painting, when the CPU would otherwise wait (README, Pre-training),
at normal priority on the cores other work leaves free, as training (:func:`.session.take_free_cores`); one run
at a time, for one image.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import numpy as np
from napari.qt.threading import create_worker

from ..config import TrainConfig
from ..data import Volume
from ..errors import InputError
from ..events import FinishedEvent, StepEvent
from ..pretrain import PretrainConfig, Pretrainer, pretrained_config
from . import notify
from .session import guarded


def pretrain_config(training: TrainConfig) -> PretrainConfig:
    """Pre-training settings that give weights the training can start from: its network (width,
    context, dropout), crop size, device, threads and seed; the rest as ``PretrainConfig``'s defaults."""
    return PretrainConfig(width=training.width, context=training.context, dropout=training.dropout,
                          dropout_scope=training.dropout_scope, patch=training.patch, device=training.device,
                          threads=training.threads, seed=training.seed)


def fits(state: dict, training: TrainConfig) -> str | None:
    """Why pre-trained ``state`` cannot start a training with these settings, or None."""
    cfg = pretrained_config(state)
    if (cfg.width, cfg.context) != (training.width, training.context):
        return (f"The pre-training built a network of width {cfg.width} and context {cfg.context}; the training "
                f"builds width {training.width} and context {training.context}: it starts from scratch.")
    return None


@dataclass
class _Run:
    """One pre-training run in its worker."""

    worker: object
    image: object  # the layer it pre-trains on
    axis: int  # the slice axis it pre-trains along
    pretrainer: Pretrainer | None = None  # built in the worker; None before, and once the run is over (its volume copy and optimiser let go)
    finished: bool = False
    stopping: bool = False  # asked to stop (before its Pretrainer is built, or after)

    def stop(self) -> None:
        """Stop after the current step, or before the first where the worker is still building."""
        self.stopping = True
        pre = self.pretrainer
        if pre is not None:
            pre.request_stop()

    def wait(self, timeout: float) -> bool:
        """Wait for the worker to leave; whether it did."""
        deadline = time.monotonic() + timeout
        while self.worker.is_running and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.worker.is_running


def _pretraining(run: _Run, make_volume, config: PretrainConfig):
    """The worker's loop: the volume copied and normalised and the Pretrainer built here, off the
    GUI thread, then its run."""
    if run.stopping:
        return None
    pre = Pretrainer([make_volume()], config)
    run.pretrainer = pre
    if run.stopping:  # a stop that came while building, and found no Pretrainer to tell
        pre.request_stop()
    return (yield from pre.run())


class Pretraining:
    """The background pre-training of the chosen image.

    Args:
        on_event: gets each event of the current run (GUI thread), with its image layer.
        on_error: gets the exception that ended the current run (GUI thread).

    Bound methods are held weakly: what shuts this down when the viewer quits must not keep the panel alive.
    """

    def __init__(self, on_event, on_error):
        self._on_event_ref = weakref.WeakMethod(on_event) if hasattr(on_event, "__self__") else lambda: on_event
        self._on_error_ref = weakref.WeakMethod(on_error) if hasattr(on_error, "__self__") else lambda: on_error
        self.run: _Run | None = None
        self.state: dict | None = None  # the weights of the last run that stopped after a step
        self.image = None  # the layer ``state`` was pre-trained on

    @property
    def running(self) -> bool:
        return self.run is not None and not self.run.finished

    def start(self, image, axis: int, make_volume, config: PretrainConfig) -> None:
        """Pre-train on the volume ``make_volume()`` gives (a copy of ``image``'s data along ``axis``;
        called in the worker), leaving any earlier run and its weights."""
        self.cancel()
        run = _Run(None, image, axis)
        run.worker = create_worker(guarded, _pretraining(run, make_volume, config), config.threads, {}, "Pre-training",
                                   _start_thread=False, _ignore_errors=True)
        self.run = run
        run.worker.yielded.connect(lambda event: self._on_event(run, event))
        run.worker.errored.connect(lambda exc: self._on_error(run, exc))
        run.worker.finished.connect(lambda: self._on_done(run))
        run.worker.start()

    def covers(self, image, axis: int) -> bool:
        """Whether the current run (under way or done) pre-trains ``image`` along ``axis``."""
        return self.run is not None and self.run.image is image and self.run.axis == axis

    def _on_event(self, run: _Run, event) -> None:
        handler = self._on_event_ref()
        if run is self.run and not run.finished and handler is not None:  # not after Train took its weights
            handler(event, run.image)

    def _on_error(self, run: _Run, exc: Exception) -> None:
        handler = self._on_error_ref()
        if run is self.run:
            run.finished, run.pretrainer = True, None
            if handler is not None:
                handler(exc)

    def _on_done(self, run: _Run) -> None:
        if run is self.run and not run.finished:
            self._keep(run)

    def _keep(self, run: _Run) -> None:
        run.finished = True
        if run.pretrainer is not None and run.pretrainer.step > 0:
            self.state, self.image = run.pretrainer.state(), run.image
        run.pretrainer = None  # the weights are in ``state``; the volume copy and optimiser go

    def cancel(self) -> None:
        """Leave the current run and its weights (another image was chosen, the box unchecked): it
        stops after its step, in its thread; nothing it says reaches the panel any more."""
        if self.run is not None:
            self.run.stop()
        self.run, self.state, self.image = None, None, None

    def finish(self, timeout: float = 30.0) -> dict | None:
        """Stop after the current step and wait for it (Train was pressed); the weights pre-trained
        so far (None without a step)."""
        run = self.run
        if run is not None and not run.finished:
            run.stop()
            if run.wait(timeout):
                self._keep(run)
        return self.state

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop now and wait for the thread (the panel or viewer is closing)."""
        run, self.run = self.run, None
        if run is not None:
            run.stop()
            run.worker.quit()
            run.wait(timeout)
            run.finished = True


def status(event, image) -> str | None:
    """The status line for a pre-training event, or None."""
    if isinstance(event, StepEvent):
        return (f"Pre-training the network on {image.name} while you paint: step {event.step}/{event.total}. "
                "Train starts from it.")
    if isinstance(event, FinishedEvent) and event.step > 0:
        return f"Pre-trained {event.step} steps on {image.name}: Train starts from these weights."
    return None


# ----- the panel's side: what it calls, what it shows -----
def follow_choice(panel) -> None:
    """Pre-train on the panel's chosen image (again, on another image or slice axis), or stop (the
    box unchecked, training running, the panel closed)."""
    image, axis = panel.data.image.value, panel.data.axis.value
    wanted = (not panel.closed and not panel.running and panel.training.pretrain.value
              and image is not None and image.ndim == 3)
    if wanted and panel.pretraining.covers(image, axis):
        return
    panel.pretraining.cancel()
    if not wanted:
        return
    try:
        config = pretrain_config(panel.training.config())
    except (InputError, ValueError) as exc:
        notify.error(f"Cannot pre-train on {image.name}: {exc}")
        return
    data, spacing, name = image.data, tuple(image.scale[-3:]), image.name
    panel.pretraining.start(image, axis, lambda: Volume(np.array(data, copy=True), spacing, axis=axis, name=name), config)


def weights_for(panel, image, config: TrainConfig) -> dict | None:
    """The weights pre-trained on ``image`` (stopping a run under way), if they fit ``config``."""
    state = panel.pretraining.finish()
    if state is None or panel.pretraining.image is not image:
        return None
    why = fits(state, config)
    if why:
        notify.warning(why)
        return None
    return state


def show_status(panel, event, image) -> None:
    text = status(event, image)
    if text and not panel.closed and not panel.running:
        panel.training.status.value = text


def show_failure(panel, exc: Exception) -> None:
    if not panel.closed:
        notify.error(f"{exc} Training will start from scratch.")
        panel.training.status.value = "Pre-training failed; Train starts from scratch."
