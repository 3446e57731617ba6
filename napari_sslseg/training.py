"""The one training loop, as a generator of events.

    trainer = Trainer(volumes, method="mean_teacher", config=TrainConfig(steps=500))
    for event in trainer.run():
        ...

Each step ends with ``command = yield event``. Commands (pause, resume, stop, new
labels) may also be queued from any thread with :meth:`Trainer.submit`; the loop
applies them between steps and never touches the caller's arrays.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Generator, Sequence

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.losses import DiceCELoss
from monai.utils import convert_to_tensor
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from . import checkpoint
from .config import TrainConfig
from .data import SlicePool, Volume
from .devices import pick_device
from .errors import InputError
from .events import (
    AnnotationsEvent,
    EvalEvent,
    FinishedEvent,
    MessageEvent,
    Pause,
    PausedEvent,
    PreviewEvent,
    RequestPreview,
    Resume,
    StepEvent,
    Stop,
    UpdateLabels,
)
from .inference import SegmentationModel, pad16, predict_volume
from .methods import METHODS, StepContext, create_method
from .networks import DROPOUT_SCOPES, build_unet
from .schedules import poly_lr

#: Annotated slices scored at each evaluation, at most (Dice on what the user painted).
_EVAL_SLICES = 32


@contextlib.contextmanager
def _plain_tensors():
    """MONAI transforms on plain tensors: without metadata tracking they take a third of the time
    (2D slices, flips, affine, crop), and nothing here reads the metadata."""
    was = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(was)


def default_class_names(num_classes: int) -> list[str]:
    return ["background"] + [f"class {i}" for i in range(1, num_classes)]


def _augmentation(keys: list[str], patch: int, augment: bool) -> Compose:
    """MONAI transforms on (C, H, W) slices: pad, random crop and, if asked, augment."""
    modes = ["bilinear", "nearest"][: len(keys)]
    steps = [SpatialPadd(keys, spatial_size=(patch, patch), mode="constant"), RandSpatialCropd(keys, roi_size=(patch, patch), random_size=False)]
    if augment:
        steps += [
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandAffined(keys, prob=0.5, rotate_range=(0.26,), scale_range=(0.1, 0.1), mode=modes, padding_mode="border"),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            RandGaussianNoised("image", prob=0.3, std=0.05),
        ]
    return Compose(steps)


class Trainer:
    """Trains a 2D segmenter on annotated slices and, per the method, on unannotated ones.

    Args:
        volumes: the volumes; each may have labels and annotated slices, or be unlabelled.
        method: a registered method name (see :data:`napari_sslseg.methods.METHODS`).
        config: loop settings.
        method_options: the method's config fields to change, as a dict.
        class_names: one name per class, background first; default "class N".
        resume: a checkpoint payload (from :func:`checkpoint.load`) to continue from.
        preview_volume: which volume previews show.
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        method: str = "mean_teacher",
        config: TrainConfig | None = None,
        method_options: dict | None = None,
        class_names: Sequence[str] | None = None,
        resume: dict | None = None,
        preview_volume: int = 0,
    ):
        self.config = config = config or TrainConfig()
        if config.patch % 16:
            raise InputError(f"Patch size {config.patch} is not a multiple of 16, which the U-Net needs.")
        if config.steps < 1:
            raise InputError("Train for at least one step.")
        if config.dropout_scope not in DROPOUT_SCOPES:
            raise InputError(f"Dropout scope '{config.dropout_scope}' is not one of: {', '.join(DROPOUT_SCOPES)}.")
        if method not in METHODS:
            raise InputError(f"Unknown method '{method}'. Known: {', '.join(sorted(METHODS))}.")
        self.pool = SlicePool(volumes)
        if resume is not None:
            method = resume["method"]
            method_options = resume.get("method_options")
            saved = saved_config(resume)
            # the network must match the weights (and the dropout they were trained with)
            config.width, config.dropout, config.dropout_scope = saved.width, saved.dropout, saved.dropout_scope
            self._check_resume(resume)
        num_classes = self.pool.num_classes()
        if class_names is not None:
            num_classes = max(num_classes, len(class_names))
        if resume is not None:
            if num_classes > resume["num_classes"]:
                raise InputError(f"The labels hold {num_classes} classes but the model was trained for {resume['num_classes']}.")
            num_classes = resume["num_classes"]
            class_names = class_names or resume.get("class_names")
        self.num_classes = num_classes
        names = list(class_names or [])
        self.class_names = names + default_class_names(num_classes)[len(names):]
        self.device = pick_device(config.device)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.model = build_unet(num_classes, config.width, config.dropout, dropout_scope=config.dropout_scope).to(self.device)
        self.method_name = method
        self.method = create_method(method, self.model, num_classes, method_options).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.supervised_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.aug_labelled = _augmentation(["image", "label"], config.patch, config.augment)
        self.aug_unlabelled = _augmentation(["image"], config.patch, config.augment)
        self.aug_labelled.set_random_state(config.seed)
        self.aug_unlabelled.set_random_state(config.seed + 1)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self.preview_volume = preview_volume
        self.commands: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.paused = False
        self._stop = False
        self._preview_request: RequestPreview | None = None
        self.last_dice: float | None = None
        if resume is not None:
            self._load(resume)

    def _check_resume(self, payload: dict) -> None:
        axis, saved_axis = self.pool.volumes[0].axis, payload.get("axis")
        if saved_axis is not None and saved_axis != axis:
            raise InputError(f"The model was trained on slices along axis {saved_axis}; these volumes use axis {axis}.")
        saved = payload.get("target_spacing")
        if saved and not np.allclose(saved, self.pool.target_spacing, rtol=0.05):
            raise InputError(
                f"The model was trained at {saved} mm in-plane; these slices are at "
                f"{tuple(round(s, 3) for s in self.pool.target_spacing)} mm. Start a new training."
            )

    # ----- commands -----
    def submit(self, command) -> None:
        """Queue a command from any thread; it is applied before the next step."""
        self.commands.put(command)

    def _apply_commands(self) -> list:
        events = []
        while True:
            try:
                cmd = self.commands.get_nowait()
            except queue.Empty:
                return events
            if isinstance(cmd, Stop):
                self._stop = True
            elif isinstance(cmd, Pause):
                self.paused = True
            elif isinstance(cmd, Resume):
                self.paused = False
            elif isinstance(cmd, RequestPreview):
                self._preview_request = cmd
            elif isinstance(cmd, UpdateLabels):
                events.append(self._update_labels(cmd))

    def _update_labels(self, cmd: UpdateLabels):
        if not 0 <= cmd.volume_index < len(self.pool.volumes):
            return MessageEvent(self.step, "warning", f"No volume {cmd.volume_index} to take labels for.")
        vol = self.pool.volumes[cmd.volume_index]
        old_labels, old_annotated = vol.labels, vol.annotated
        try:
            vol.set_labels(cmd.labels, cmd.annotated)
            if vol.labels is not None and vol.labels.max() >= self.num_classes:
                raise InputError(
                    f"The new labels hold class {int(vol.labels.max())}, but this model learns classes "
                    f"0..{self.num_classes - 1}; start a new training to add a class."
                )
            self.pool.refresh()
        except InputError as exc:
            vol.labels, vol.annotated = old_labels, old_annotated
            self.pool.refresh()
            return MessageEvent(self.step, "warning", f"New labels not used: {exc}")
        return AnnotationsEvent(self.step, cmd.volume_index, list(vol.annotated))

    # ----- one step -----
    def _batch(self, items, labelled: bool):
        aug = self.aug_labelled if labelled else self.aug_unlabelled
        xs, ys = [], []
        with _plain_tensors():
            for item in items:
                d = {"image": self.pool.image(item)}
                if labelled:
                    d["label"] = self.pool.label(item)
                d = aug(d)
                xs.append(convert_to_tensor(d["image"], track_meta=False).float())
                if labelled:
                    ys.append(convert_to_tensor(d["label"], track_meta=False).long())
        x = torch.stack(xs).to(self.device, non_blocking=True)
        return (x, torch.stack(ys).to(self.device, non_blocking=True)) if labelled else x

    def _sample(self, pool: list, n: int) -> list:
        return [pool[i] for i in self.rng.integers(0, len(pool), size=n)]

    def _autocast(self):
        """Mixed precision on CUDA; elsewhere nothing (older torch refuses autocast on some devices)."""
        return torch.autocast(device_type="cuda") if self.use_amp else contextlib.nullcontext()

    def train_step(self) -> tuple[dict[str, float], dict[str, float]]:
        """One optimiser step; returns the raw loss terms and the weights of the unlabelled ones."""
        with self.lock:  # a save from another thread sees whole steps only
            return self._train_step()

    def _train_step(self) -> tuple[dict[str, float], dict[str, float]]:
        cfg, method = self.config, self.method
        lr = cfg.lr * poly_lr(self.step, cfg.steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        x_l, y_l = self._batch(self._sample(self.pool.labelled, cfg.batch_labelled), labelled=True)
        use_u = method.uses_unlabelled and bool(self.pool.unlabelled) and cfg.batch_unlabelled > 0
        x_u = self._batch(self._sample(self.pool.unlabelled, cfg.batch_unlabelled), labelled=False) if use_u else None
        self.model.train()
        with self._autocast():
            logits = self.model(x_l if x_u is None else torch.cat([x_l, x_u]))
            logits_l, logits_u = logits[: len(x_l)], (logits[len(x_l) :] if x_u is not None else None)
            sup = self.supervised_loss(logits_l.float(), y_l)
            ctx = StepContext(self.step, cfg.steps, x_l, y_l, x_u, logits_l, logits_u, self.num_classes)
            terms = method.unlabelled_loss(ctx) if x_u is not None else {}
            total = sup + sum(w * v for v, w in terms.values() if w)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        extra = method.after_step(ctx)  # EMA / discriminator steps also when no slice is unannotated
        losses = {"supervised": float(sup.detach()), **{k: float(v.detach()) for k, (v, _) in terms.items()}, **extra}
        losses["total"] = float(total.detach())
        self.step += 1
        return losses, {k: float(w) for k, (_, w) in terms.items()}

    # ----- evaluation and previews -----
    def segmentation_model(self) -> SegmentationModel:
        return SegmentationModel(
            student=self.model,
            num_classes=self.num_classes,
            class_names=self.class_names,
            target_spacing=self.pool.target_spacing,
            axis=self.pool.volumes[0].axis,
            teacher=self.method.teacher,
            discriminator=self.method.discriminator,
        )

    @torch.no_grad()
    def evaluate(self) -> EvalEvent:
        """Dice per class on (up to 32 of) the annotated slices."""
        items = self.pool.labelled
        if len(items) > _EVAL_SLICES:
            items = [items[i] for i in np.linspace(0, len(items) - 1, _EVAL_SLICES).astype(int)]
        net = self.model
        was = net.training
        net.eval()
        C = self.num_classes
        inter, total = torch.zeros(C), torch.zeros(C)
        hits, present = torch.zeros(C), torch.zeros(C)
        for item in items:
            xp, (h, w) = pad16(self.pool.image(item)[None].to(self.device))
            y = self.pool.label(item)[None]
            pred = net(xp)[..., :h, :w].argmax(1, keepdim=True).cpu()
            oh_p = torch.nn.functional.one_hot(pred[:, 0], C).permute(0, 3, 1, 2).float()
            oh_y = torch.nn.functional.one_hot(y[:, 0], C).permute(0, 3, 1, 2).float()
            inter += (oh_p * oh_y).sum((0, 2, 3))
            total += oh_p.sum((0, 2, 3)) + oh_y.sum((0, 2, 3))
            present += oh_y.sum((0, 2, 3)) > 0
        net.train(was)
        # Dice over all evaluated slices pooled: a class absent from one slice does not count as 0 there
        scores = {}
        for c in range(1, C):
            if present[c] > 0:
                scores[self.class_names[c]] = float(2 * inter[c] / total[c].clamp(min=1))
        mean = float(np.mean(list(scores.values()))) if scores else float("nan")
        self.last_dice = mean
        return EvalEvent(self.step, scores, mean)

    def preview(self, volume_index: int | None = None, mc_passes: int | None = None) -> PreviewEvent:
        vi = self.preview_volume if volume_index is None else volume_index
        mc = self.config.preview_mc_passes if mc_passes is None else mc_passes
        pred = predict_volume(self.segmentation_model(), self.pool.volumes[vi], mc_passes=mc, device=self.device)
        return PreviewEvent(self.step, vi, pred)

    # ----- the loop -----
    def run(self) -> Generator[object, object, FinishedEvent]:
        """Train until ``config.steps`` or a Stop; yields events, accepts commands via send()."""
        cfg = self.config
        t0 = time.perf_counter()
        rate, last = 0.0, time.perf_counter()
        while self.step < cfg.steps:
            yield from self._command_events()
            while self.paused and not self._stop:
                self._take((yield PausedEvent(self.step)))
                time.sleep(0.05)
                yield from self._command_events()
                last = time.perf_counter()
            if self._stop:
                break
            losses, weights = self.train_step()
            now = time.perf_counter()
            dt, last = now - last, now
            rate = 1.0 / dt if rate == 0 else 0.9 * rate + 0.1 / max(dt, 1e-9)
            lr = self.optimizer.param_groups[0]["lr"]
            eta = (cfg.steps - self.step) / max(rate, 1e-9)
            self._take((yield StepEvent(self.step, cfg.steps, losses, weights, lr, rate, eta)))
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.steps:
                self._take((yield self.evaluate()))
            if self._preview_request is not None:
                req, self._preview_request = self._preview_request, None
                self._take((yield self.preview(req.volume_index, req.mc_passes)))
            elif cfg.preview_every and self.step % cfg.preview_every == 0 and self.step < cfg.steps:
                self._take((yield self.preview()))
            last = time.perf_counter()
        reason = "stopped" if self._stop else "completed"
        if self.step > 0:
            self._take((yield self.evaluate()))
            if cfg.preview_every:
                self._take((yield self.preview()))
        done = FinishedEvent(self.step, reason, time.perf_counter() - t0)
        yield done
        return done

    def _command_events(self):
        """Apply queued commands, yielding what they produce, until none is left."""
        events = self._apply_commands()
        while events:
            for ev in events:
                self._take((yield ev))
            events = self._apply_commands()

    def _take(self, command) -> None:
        """A command sent with generator.send() joins the queue, applied before the next step."""
        if command is not None:
            self.submit(command)

    # ----- checkpoints -----
    def state(self) -> dict:
        method_cls = METHODS[self.method_name]
        return {
            "method": self.method_name,
            "method_options": asdict(self.method.config) if method_cls.Config.__dataclass_fields__ else {},
            "config": self.config.to_dict(),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "target_spacing": list(self.pool.target_spacing),
            "axis": int(self.pool.volumes[0].axis),
            "intensity": [asdict(v.stats) for v in self.pool.volumes],
            "step": self.step,
            "model": self.model.state_dict(),
            "method_state": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint; safe to call from another thread while training runs."""
        with self.lock:
            state = self.state()
        return checkpoint.save(state, path)

    def _load(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.method.load_state_dict(payload.get("method_state", {}))
        if "optimizer" in payload:
            self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload.get("step", 0))


def saved_config(payload: dict) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with; checkpoints written before ``dropout_scope``
    existed had dropout in every block."""
    d = dict(payload.get("config", {}))
    d.setdefault("dropout_scope", "all")
    return TrainConfig.from_dict(d)


def load_model(path, device: str | torch.device = "cpu") -> SegmentationModel:
    """A trained model from a checkpoint file or a train output folder, ready to predict."""
    payload = checkpoint.load(path)
    cfg = saved_config(payload)
    C = int(payload["num_classes"])
    student = build_unet(C, cfg.width, cfg.dropout, dropout_scope=cfg.dropout_scope)
    student.load_state_dict(payload["model"])
    method = create_method(payload["method"], student, C, payload.get("method_options"))
    method.load_state_dict(payload.get("method_state", {}))
    model = SegmentationModel(
        student=student,
        num_classes=C,
        class_names=list(payload.get("class_names") or default_class_names(C)),
        target_spacing=tuple(payload["target_spacing"]) if payload.get("target_spacing") else None,
        axis=payload.get("axis"),
        teacher=method.teacher,
        discriminator=method.discriminator,
    )
    return model.to(pick_device(str(device)) if not isinstance(device, torch.device) else device)
