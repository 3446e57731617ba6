"""The training section: settings (a form built from TrainConfig), Train/Pause/Stop, the status
line and the live plot, and the saved training of each image that a new run may continue."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton
from qtpy.QtWidgets import QToolButton

from .. import checkpoint
from ..config import TrainConfig
from ..data import check_volumes
from ..devices import available_devices
from ..events import CheckpointEvent, EvalEvent, FinishedEvent, PausedEvent, PreviewEvent, StepEvent
from ..training import Trainer
from .forms import dataclass_form, form_values
from .layout import group
from .plot import LivePlot
from .pretraining import weights_for

#: Training settings shown in the main form; the others sit under "Advanced".
MAIN_SETTINGS = ("time_budget", "steps", "device", "preview_every")
#: Where each image's training state is kept, so that a stopped, failed or closed run can continue.
RUNS = Path.home() / ".cache" / "napari-sslseg" / "runs"


def saved_run(image) -> Path:
    """The checkpoint of the last training on ``image`` (by layer name and shape)."""
    name = re.sub(r"[^\w.-]+", "_", image.name)[:80]
    return RUNS / f"{name}-{'x'.join(map(str, image.data.shape))}.pt"


#: What a stopped run still does after its step, in order: (the name in the status, its event).
AFTER_STOP = (("final evaluation", EvalEvent), ("prediction", PreviewEvent), ("save", CheckpointEvent))


def new_trainer(panel) -> tuple[Trainer, list[tuple], list, bool]:
    """The trainer Train starts, from the panel's sections: data, method and settings; the saved run
    of the image continued where asked, else the weights pre-trained on it where there are. Also
    the (image, labels) pairs, their volumes, and whether the run is resumed.

    Raises:
        InputError, OSError: what the user must change, in words.
    """
    pairs = panel.data.pairs()
    volumes = panel.data.volumes(pairs)
    check_volumes(volumes)  # nothing painted yet: refused before a pre-training under way is stopped
    state = saved_run(pairs[0][0])
    section = panel.training
    resume = checkpoint.load(state) if section.resume.value and section.resume.enabled else None
    config = section.config()
    if resume:  # a resumed run keeps its own weights and method; a pre-training under way stops all the same
        panel.pretraining.finish()
        init = None
    else:
        init = weights_for(panel, pairs[0][0], config)
    trainer = Trainer(volumes, method=None if resume else panel.method.choice.value, config=config,
                      method_options=None if resume else panel.method.option_values(),
                      class_names=panel.data.names(), resume=resume, checkpoint=state, init=init)
    state.parent.mkdir(parents=True, exist_ok=True)
    return trainer, pairs, volumes, resume is not None


def warm_up() -> threading.Thread:
    """Pay, in a daemon thread while the user paints, the one-off cost of a process's first training
    that would otherwise freeze the viewer when Train is first pressed: torch's first optimiser
    imports its compiler package (``torch._dynamo``). Measured on the whole Colin27 head, 2 cores:
    the first Train press held the GUI thread 1.4 s, a later one 0.26 s."""

    def run():
        import torch

        torch.optim.AdamW([torch.zeros(1, requires_grad=True)])

    thread = threading.Thread(target=run, name="napari-sslseg warm-up", daemon=True)
    thread.start()
    return thread


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class Timings:
    """How long the last step, evaluation, prediction and save of a run took.

    A step's time is the loop's own measure (1 / steps per second); the others are the time
    between their event and the one before, as they arrive in the GUI: the loop yields each one
    the moment it is done and goes on to the next.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.seconds: dict[type, float] = {}  # event type -> seconds its work took, last time
        self._last: float | None = None

    def on_event(self, event) -> None:
        now = self.clock()
        if isinstance(event, StepEvent):
            if event.steps_per_second > 0:
                self.seconds[StepEvent] = 1.0 / event.steps_per_second
        elif isinstance(event, PreviewEvent) and event.step == 0:
            pass  # the prior shown before training: no prediction of the network
        elif isinstance(event, tuple(kind for _, kind in AFTER_STOP)) and self._last is not None:
            self.seconds[type(event)] = now - self._last
        self._last = now

    def stopping(self, in_step: bool, preview: bool, save: bool) -> str:
        """The status after Stop: what the loop still does and about how long it takes.

        Args:
            in_step: a step is under way (not paused), and must finish.
            preview: the run predicts the volume at its end.
            save: the run writes its state at its end.
        """
        todo = [("the current step", StepEvent)] if in_step else []
        todo += [(name, kind) for name, kind in AFTER_STOP
                 if kind is EvalEvent or (kind is PreviewEvent and preview) or (kind is CheckpointEvent and save)]
        if not todo:
            return "Stopping…"
        timed = [name for name, kind in todo if kind in self.seconds]
        untimed = [name for name, kind in todo if kind not in self.seconds]
        text = f"Stopping: {_listed([name for name, _ in todo])} to go"
        if not timed:
            return text + "."
        total = sum(self.seconds[kind] for _, kind in todo if kind in self.seconds)
        about = f"about {total:.0f} s" if total >= 1 else "under a second"
        if not untimed:
            return f"{text}, {about}."
        return f"{text}: {about} for {_listed(timed)}; {_listed(untimed)} not timed yet."


class TrainingSection:
    def __init__(self):
        self.settings = dataclass_form(TrainConfig)
        self.settings.time_budget.value = 120.0  # a user thinks in minutes: 2 of them, then review
        self.settings.time_budget.label = "time budget (s)"
        self.settings.time_budget.tooltip = "Seconds of training; 0 = train for 'steps'. Otherwise 'steps' is only a ceiling."
        self.settings.steps.value = 5000
        self.settings.preview_every.value = 50
        self.settings.threads.value = 0
        self._device_choice()
        main = Container(widgets=[self.settings[n] for n in MAIN_SETTINGS])
        self.advanced = Container(widgets=[w for w in list(self.settings) if w.name not in MAIN_SETTINGS])
        self.advanced.visible = False
        self.advanced_toggle = QToolButton(text="Advanced settings")
        self.advanced_toggle.setCheckable(True)
        self.advanced_toggle.toggled.connect(lambda on: setattr(self.advanced, "visible", on))
        self.resume = CheckBox(text="Continue the saved training", value=False, enabled=False)
        self._resume_help = ("Training saves its state on Stop, on an error, when napari closes and every few minutes; "
                             "continue it from there with its method and options")
        self.resume.tooltip = self._resume_help
        # off by default: the CPU (or GPU) works from the moment an image is chosen, unasked, and a
        # pre-training stopped within 100 steps gained nothing measurable (README, Pre-training)
        self.pretrain = CheckBox(text="Pre-train while I paint", value=False)
        self.pretrain.tooltip = ("From the moment the image is chosen, train the network on the image alone (no label "
                                 "read) until Train is pressed; training then starts from these weights")
        self.train_button = PushButton(text="Train [t]", tooltip="Train, or stop a running training (key t)")
        self.pause_button = PushButton(text="Pause", enabled=False)
        self.stop_button = PushButton(text="Stop [t]", enabled=False)
        buttons = Container(widgets=[self.train_button, self.pause_button, self.stop_button], layout="horizontal", labels=False)
        self.status = Label(value="Choose an image and its labels, then press Train.")
        self.status.native.setWordWrap(True)
        self.plot = LivePlot()
        self.timings = Timings()
        self.is_stopping = False  # Stop was pressed: the status says so until the run ends
        self.box = group("Training", main, self.advanced_toggle, self.advanced, self.resume, self.pretrain, buttons, self.status, self.plot)

    def _device_choice(self) -> None:
        """The device as a choice of the devices this machine has, not free text."""
        index = [w.name for w in self.settings].index("device")
        current = self.settings.device.value
        choices = available_devices()
        device = ComboBox(name="device", label="device", choices=choices, value=current if current in choices else "auto")
        device.tooltip = "auto: the GPU when there is one, else the CPU"
        del self.settings[index]
        self.settings.insert(index, device)

    def config(self) -> TrainConfig:
        return TrainConfig(**form_values(self.settings))

    def set_running(self, running: bool) -> None:
        self.train_button.enabled = not running
        self.pause_button.enabled = self.stop_button.enabled = running
        self.pause_button.text = "Pause"
        if running:
            self.timings = Timings()
        elif self.is_stopping:  # ended without its last event (an error): the status must not say it is stopping
            self.status.value = "Training stopped."
        self.is_stopping = False

    def stopping(self, in_step: bool, preview: bool, save: bool) -> None:
        """Stop was pressed: say what is left to do and about how long it takes (:meth:`Timings.stopping`)."""
        self.is_stopping = True
        self.status.value = self.timings.stopping(in_step, preview, save)

    def stop(self, session, trainer) -> None:
        """Stop ``session``'s run of ``trainer`` after its step, saying what is left."""
        session.stop()
        self.stopping(in_step=not session.paused, preview=bool(trainer.config.preview_every),
                      save=trainer.checkpoint_path is not None)

    def toggle_pause(self, session) -> None:
        paused = not session.paused
        (session.pause if paused else session.resume)()
        self.pause_button.text = "Resume" if paused else "Pause"

    def offer_resume(self, image) -> None:
        """Offer to continue when a saved training of ``image`` exists."""
        path = saved_run(image) if image is not None else None
        exists = path is not None and path.exists()
        self.resume.enabled = exists
        if not exists:
            self.resume.value = False
        # the file in the tooltip: its name in the text would widen the panel beyond the dock
        self.resume.tooltip = self._resume_help + (f"\nSaved in {path}" if exists else "")

    def on_event(self, event) -> None:
        """Progress on the status line and the plot; after Stop, the status says it is stopping
        until the run has finished."""
        self.timings.on_event(event)
        if isinstance(event, FinishedEvent):
            self.is_stopping = False
        if isinstance(event, StepEvent):
            self.plot.add_losses(event.step, event.losses)
            if self.is_stopping:
                return
            self.status.value = (f"Step {event.step}/{event.total} · {event.steps_per_second:.1f} steps/s · "
                                 f"about {event.eta_seconds:.0f} s left")
        elif isinstance(event, EvalEvent):
            self.plot.add_dice(event.step, event.mean_dice)
        elif self.is_stopping:
            return
        elif isinstance(event, PreviewEvent) and event.step == 0:
            self.status.value = "Showing your annotated slices interpolated to every slice; training starts…"
        elif isinstance(event, PausedEvent):
            self.status.value = f"Paused at step {event.step}."
        elif isinstance(event, FinishedEvent):
            self.status.value = f"Training {event.reason} after {event.step} steps ({event.seconds:.0f} s)."
