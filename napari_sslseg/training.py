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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Generator, Sequence

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms.utils import map_classes_to_indices
from monai.utils import convert_to_tensor
from monai.transforms import (
    Compose,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSpatialCropd,
    SpatialPadd,
)

from . import checkpoint
from .checkpoint import check_resume, restore, resumed
from .config import TrainConfig
from .data import SlicePool, Volume, default_class_names, painted_values, resample_slice, target_size, to_classes
from .devices import pick_device
from .errors import InputError, TrainingError
from .events import (
    AnnotationsEvent,
    CheckpointEvent,
    EvalEvent,
    FinishedEvent,
    MessageEvent,
    Pause,
    PausedEvent,
    PreviewEvent,
    Resume,
    StepEvent,
    Stop,
    UpdateLabels,
)
from .inference import Prediction, SegmentationModel, pad16, predict_volume, prior_prediction
from .metrics import dice_per_class
from .methods import DEFAULT_METHOD, METHODS, StepContext, create_method, method_config, student_pass, supervised_loss
from .networks import student_network
from .prior import Prior
from .schedules import poly_lr, projected_steps
from .uncertainty import hard_labels

#: Annotated slices scored at each evaluation, at most (Dice on what the user painted).
_EVAL_SLICES = 32
#: How often a training slice's prior input is hidden (so that the network works without one too).
_PRIOR_DROPOUT = 0.1
#: How often an annotated slice's prior input is the prior of an unannotated slice nearby (within
#: ``_NEARBY_REACH`` of the prior's taper reach) rather than the other annotated slices' prior there.
#: Left out alone, a structure painted on one slice is never in its own input, and the network
#: learns to ignore the prior of such a class: on the whole Colin27 head, 4 annotated slices, 120 s
#: of mean_teacher, the pallidum (painted on one slice) fell to Dice 0.02-0.11 and the mean to
#: 0.620-0.657 (two seeds); half the time nearby within half the reach: 0.697-0.730 (within the
#: whole reach: 0.587-0.690, the thalamus then lost).
_PRIOR_NEARBY = 0.5
_NEARBY_REACH = 0.5
#: Annotated volumes up to which the priors register slices (above: shape interpolation only, see Trainer).
_REGISTERED_SCANS = 4
#: Slices each scan's prior keeps computed in such a cohort (without registration a slice costs milliseconds).
_COHORT_PRIOR_SLICES = 16


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


class _ClassIndicesd:
    """Where each class lies in ``key`` (flat indices, MONAI's ``map_classes_to_indices``), for the
    class-centred crop. Computed on a NumPy copy: on a torch tensor it took 11 ms a slice, on NumPy 0.3."""

    KEY = "class_indices"

    def __init__(self, key: str, num_classes: int):
        self.key, self.num_classes = key, num_classes

    def __call__(self, d: dict) -> dict:
        d = dict(d)
        d[self.KEY] = map_classes_to_indices(np.asarray(d[self.key]), num_classes=self.num_classes)
        return d


def _augmentation(keys: list[str], patch: int, augment: bool, crop_by: str | None = None, num_classes: int = 2) -> Compose:
    """MONAI transforms on (C, H, W) slices: pad, crop and, if asked, augment.

    ``crop_by``: a key holding classes (1, H, W); patches are then centred on each class in turn,
    background included (MONAI RandCropByLabelClassesd), instead of anywhere. On a whole head a
    random 96x96 patch of a 217x181 slice holds a 5 mm structure about one time in five; centred
    crops show every painted structure in every few steps.
    """
    modes = ["nearest" if k in ("label", "classes") else "bilinear" for k in keys]
    crop_keys = keys + ([crop_by] if crop_by and crop_by not in keys else [])
    steps = [SpatialPadd(crop_keys, spatial_size=(patch, patch), mode="constant")]
    if crop_by:
        steps += [
            _ClassIndicesd(crop_by, num_classes),
            RandCropByLabelClassesd(crop_keys, label_key=crop_by, spatial_size=(patch, patch), num_classes=num_classes,
                                    num_samples=1, indices_key=_ClassIndicesd.KEY, warn=False),
        ]
    else:
        steps.append(RandSpatialCropd(keys, roi_size=(patch, patch), random_size=False))
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
        method: a registered method name (see :data:`napari_sslseg.methods.METHODS`); default:
            the resumed model's, else ``methods.DEFAULT_METHOD``.
        config: loop settings; a resumed run trains the checkpoint's network (a copy of ``config``
            with its fields, see :func:`napari_sslseg.checkpoint.resumed`; ``config`` itself is not changed).
        method_options: the method's config fields to change, as a dict.
        class_names: one name per class, background first; default "class N".
        resume: a checkpoint payload (from :func:`checkpoint.load`) to continue from: its method,
            options, network, classes and weights.
        checkpoint: where the training state is written every ``config.checkpoint_every`` steps
            and ``config.checkpoint_seconds`` seconds, at the end of the run (completed or
            stopped), when the run is closed mid-way, and after a failure (the last state);
            None = only by :meth:`save`.
        init: pre-trained weights to start from (a folder or file of ``napari-sslseg pretrain``, or
            its loaded payload; :func:`napari_sslseg.pretrain.start_from`), not with ``resume``.
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        method: str | None = None,
        config: TrainConfig | None = None,
        method_options: dict | None = None,
        class_names: Sequence[str] | None = None,
        resume: dict | None = None,
        checkpoint: str | Path | None = None,
        init: str | Path | dict | None = None,
    ):
        config = config or TrainConfig()
        if init is not None and resume is not None:
            raise InputError("A resumed training continues its own weights; start from pre-trained ones in a new training only.")
        if resume is not None:
            method, method_options, config = resumed(resume, method, method_options, config)
        self.config = config
        method = method or DEFAULT_METHOD
        method_config(method, method_options)  # checked before any work
        self.pool = SlicePool(volumes)
        if resume is not None:
            check_resume(resume, self.pool.volumes[0].axis, self.pool.target_spacing)
        self.label_values, self.notes = _label_values(self.pool.volumes, class_names, resume)
        for vol in self.pool.volumes:
            self._take_label_values(vol)
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
        self.model = student_network(config, num_classes).to(self.device)
        if init is not None:  # before the method copies the student (an EMA teacher starts from the same weights)
            from . import pretrain

            payload = init if isinstance(init, dict) else pretrain.load(init)
            self.notes.append(pretrain.start_from(self.model, payload, config.width, config.context))
        self.method_name = method
        self.method = create_method(method, self.model, num_classes, method_options).to(self.device)
        # the student and any network the method co-trains with it (CPS's second network)
        self.optimizer = torch.optim.AdamW([*self.model.parameters(), *self.method.joint_parameters()],
                                           lr=config.lr, weight_decay=config.weight_decay)
        self.priors: dict[int, Prior] = {}
        self._left_out: dict[tuple[int, int], Prior] = {}  # (volume, annotated slice) -> the others' prior
        self._slices_by_class: list[np.ndarray] | None = None  # per class present: indices into pool.labelled of the slices holding it
        # a prior registers its image's slices as training samples them (a chain of demons steps per new
        # slice, kept); in a cohort nearly every sample is a new slice of another scan: 10 s a step on 25
        # annotated scans, most of it registration, and its displacement fields grow with every slice seen
        self._register_priors = sum(bool(v.annotated) for v in self.pool.volumes) <= _REGISTERED_SCANS
        if config.prior_weight > 0 or config.prior_input:
            self.priors = {i: self._prior(v) for i, v in enumerate(self.pool.volumes) if v.annotated}
        self._use_prior = bool(self.priors)  # fixed for the run: the unlabelled crops carry the prior or not
        crop_by = "label" if config.foreground_crops else None
        l_keys = ["image", "label"] + (["prior"] if config.prior_input else [])
        self.aug_labelled = _augmentation(l_keys, config.patch, config.augment, crop_by, num_classes)
        u_keys = ["image", "prior"] if self._use_prior else ["image"]
        u_crop = "classes" if self._use_prior and config.foreground_crops else None
        self.aug_unlabelled = _augmentation(u_keys, config.patch, config.augment, u_crop, num_classes)
        self.aug_labelled.set_random_state(config.seed)
        self.aug_unlabelled.set_random_state(config.seed + 1)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.step = 0
        self.train_seconds = 0.0  # time spent in training steps (not previews or evaluations)
        self.commands: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.paused = False
        self._stop = False
        if resume is not None:
            self.step = restore(resume, self.model, self.method, self.optimizer)
        self.checkpoint_path = Path(checkpoint) if checkpoint is not None else None
        self._saved = (self.step, time.monotonic())  # step and time of the last checkpoint
        self._finished = False

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
            elif isinstance(cmd, UpdateLabels):
                events.append(self._update_labels(cmd))

    def _update_labels(self, cmd: UpdateLabels):
        if not 0 <= cmd.volume_index < len(self.pool.volumes):
            return MessageEvent(self.step, "warning", f"No volume {cmd.volume_index} to take labels for.")
        vol = self.pool.volumes[cmd.volume_index]
        old_labels, old_annotated = vol.labels, vol.annotated
        if cmd.rejected is not None:
            vol.rejected = sorted(int(s) for s in cmd.rejected)
        try:
            vol.set_labels(cmd.labels, cmd.annotated)
            self._take_label_values(vol)
            if vol.labels is not None and vol.labels.max() >= self.num_classes:
                raise InputError(
                    f"The new labels hold class {int(vol.labels.max())}, but this model learns classes "
                    f"0..{self.num_classes - 1}; start a new training to add a class."
                )
            self.pool.refresh()
            self._slices_by_class = None
            if self._use_prior:
                self._left_out.clear()
                if vol.annotated:
                    self.priors[cmd.volume_index] = self._prior(vol, previous=self.priors.get(cmd.volume_index))
                else:
                    self.priors.pop(cmd.volume_index, None)
        except InputError as exc:
            vol.labels, vol.annotated = old_labels, old_annotated
            self.pool.refresh()
            self._slices_by_class = None
            return MessageEvent(self.step, "warning", f"New labels not used: {exc}")
        return AnnotationsEvent(self.step, cmd.volume_index, list(vol.annotated))

    def _prior(self, vol: Volume, previous: Prior | None = None) -> Prior:
        """``vol``'s propagation prior (reusing ``previous``'s registrations where they apply); in a
        cohort, without registration and keeping a few slices, not every one training visits."""
        prior = vol.prior(self.num_classes, self.class_names, previous=previous, register=self._register_priors)
        if not self._register_priors:
            prior.cache_limit = _COHORT_PRIOR_SLICES
        return prior

    def _take_label_values(self, vol: Volume) -> None:
        """Bring ``vol``'s labels from the user's values to classes, where they differ; a value
        the model was not trained on is refused."""
        if self.label_values is None or vol.labels is None:
            return
        unknown = sorted(set(painted_values([vol])) - set(self.label_values))
        if unknown:
            raise InputError(f"The labels hold value {unknown[0]}, which this model was not trained on "
                             f"(values {', '.join(map(str, self.label_values))}); start a new training to add a class.")
        vol.labels = to_classes(vol.labels, self.label_values)

    # ----- one step -----
    def _batch(self, items, labelled: bool):
        """Augmented crops of ``items``: (network input, labels) when ``labelled``, else (network input,
        prior probabilities or None, prior confidence weights or None). With ``prior_input`` the
        network input holds the prior's foreground probabilities after the image; an annotated
        slice gets the prior of the other annotated slices (what the network must learn to correct)."""
        aug = self.aug_labelled if labelled else self.aug_unlabelled
        with_prior = self.config.prior_input if labelled else self._use_prior
        xs, ys, qs, known = [], [], [], []
        with _plain_tensors():
            for item in items:
                known.append(item[0] in self.priors)
                d = {"image": self.pool.image(item, self.config.context)}
                if labelled:
                    d["label"] = self.pool.label(item)
                if with_prior:
                    d["prior"], d["classes"] = self._prior_slice(item, leave_out=labelled)
                d = aug(d)
                d = d[0] if isinstance(d, list) else d
                xs.append(convert_to_tensor(d["image"], track_meta=False).float())
                if labelled:
                    ys.append(convert_to_tensor(d["label"], track_meta=False).long())
                if with_prior:
                    qs.append(convert_to_tensor(d["prior"], track_meta=False).float())
        x = torch.stack(xs).to(self.device, non_blocking=True)
        q = torch.stack(qs).to(self.device, non_blocking=True) if qs else None
        x = self._network_input(x, q, drop=True)
        if labelled:
            return x, torch.stack(ys).to(self.device, non_blocking=True)
        if q is None:
            return x, None, None
        # a slice's prior is trusted by how sure it is (its largest probability, softer the farther the
        # slice is from an annotation); a volume without a prior has an all-background one, weight 0
        return x, q, q.amax(dim=1, keepdim=True) * torch.tensor(known, dtype=q.dtype, device=q.device)[:, None, None, None]

    def _network_input(self, x: torch.Tensor, q: torch.Tensor | None, drop: bool = False) -> torch.Tensor:
        """The image channel, then (with ``prior_input``) the prior's foreground probabilities; in
        training a slice's prior is hidden one time in ``_PRIOR_DROPOUT``, so that the network
        also segments a volume with no annotated slice (a prior of nothing)."""
        if not self.config.prior_input:
            return x
        fg = q[:, 1:] if q is not None else x.new_zeros((len(x), self.num_classes - 1, *x.shape[-2:]))
        if drop:
            keep = torch.from_numpy(self.rng.random(len(x)) >= _PRIOR_DROPOUT).to(fg)
            fg = fg * keep[:, None, None, None]
        return torch.cat([x, fg], dim=1)

    def _prior_slice(self, item: tuple[int, int], leave_out: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior's probabilities (C, H, W) and classes (1, H, W) of a slice, at the training grid;
        ``leave_out``: of the other annotated slices only."""
        vi, s = item
        v = self.pool.volumes[vi]
        size = target_size(v, self.pool.target_spacing)
        prior = self.priors.get(vi)
        if prior is None:
            q = torch.zeros((self.num_classes, *size))
            q[0] = 1
            return q, torch.zeros((1, *size), dtype=torch.long)
        at = s
        if leave_out:
            near = [t for d in range(1, max(1, int(round(prior.reach * _NEARBY_REACH))) + 1) for t in (s - d, s + d)
                    if 0 <= t < prior.num_slices and t not in prior.annotated]
            if near and self.rng.random() < _PRIOR_NEARBY:
                # the prior of a slice nearby, where it is what an unannotated slice that far from an
                # annotation gets: a structure painted on this slice alone is in it, tapering
                at = int(near[self.rng.integers(len(near))])
            else:
                if (vi, s) not in self._left_out:
                    self._left_out[(vi, s)] = prior.without(s)
                prior = self._left_out[(vi, s)]
        q = resample_slice(torch.from_numpy(prior.slice_probabilities(at)), size)
        return q, hard_labels(q, 0, keepdim=True)

    def _sample(self, pool: list, n: int) -> list:
        return [pool[i] for i in self.rng.integers(0, len(pool), size=n)]

    def _sample_labelled(self, n: int) -> list:
        """Annotated slices, balanced by class: each draw picks a class (background included) evenly,
        then a slice that holds it. With a few painted slices, each holding most structures, this
        is near the uniform draw; with every slice annotated (complete labels, the full-supervision
        ceiling) most slices are background only, and the uniform draw filled whole batches with
        them: on the whole Colin27 head, trained on its 181 slices, the network learned to predict
        no structure at all (Dice 0.000 after 600 steps; after 60, uniform 0.000, balanced see
        BENCHMARKS.md)."""
        pool = self.pool.labelled
        if self._slices_by_class is None:
            holding: dict[int, list[int]] = {}
            for i, (vi, s) in enumerate(pool):
                for c in np.unique(self.pool.volumes[vi].label_slice(s)):
                    holding.setdefault(int(c), []).append(i)
            self._slices_by_class = [np.asarray(v) for _, v in sorted(holding.items())]
        groups = self._slices_by_class
        picks = []
        for g in self.rng.integers(0, len(groups), size=n):
            picks.append(pool[int(groups[g][self.rng.integers(len(groups[g]))])])
        return picks

    def _autocast(self):
        """Mixed precision on CUDA; elsewhere nothing (older torch refuses autocast on some devices)."""
        return torch.autocast(device_type="cuda") if self.use_amp else contextlib.nullcontext()

    def total_steps(self) -> int:
        """Steps the run will take: ``config.steps``, or under a time budget the steps the budget
        is projected to hold at the speed so far (what the schedules and ramps count towards)."""
        return projected_steps(self.config.steps, self.config.time_budget, self.step, self.train_seconds)

    def prior_weight(self) -> float:
        """The prior term's weight now: ``prior_weight``, falling linearly to ``prior_decay`` of it."""
        cfg = self.config
        if cfg.prior_weight <= 0 or not self._use_prior:
            return 0.0
        progress = min(1.0, self.step / max(self.total_steps(), 1))
        return cfg.prior_weight * (1.0 - (1.0 - cfg.prior_decay) * progress)

    def time_spent(self) -> bool:
        return self.config.time_budget > 0 and self.train_seconds >= self.config.time_budget

    def train_step(self) -> tuple[dict[str, float], dict[str, float]]:
        """One optimiser step; returns the raw loss terms and the weights of the unlabelled ones."""
        with self.lock:  # a save from another thread sees whole steps only
            return self._train_step()

    def _train_step(self) -> tuple[dict[str, float], dict[str, float]]:
        cfg, method = self.config, self.method
        lr = cfg.lr * poly_lr(self.step, self.total_steps())
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        x_l, y_l = self._batch(self._sample_labelled(cfg.batch_labelled), labelled=True)
        prior_w = self.prior_weight()
        use_u = (method.uses_unlabelled or prior_w > 0) and bool(self.pool.unlabelled) and cfg.batch_unlabelled > 0
        x_u, q_u, w_u = self._batch(self._sample(self.pool.unlabelled, cfg.batch_unlabelled), labelled=False) if use_u else (None, None, None)
        self.model.train()
        ctx = StepContext(self.step, self.total_steps(), self.num_classes, x_l, y_l, x_u)
        with self._autocast():
            method.prepare(ctx)
            prior_term = q_u is not None and prior_w > 0
            student_pass(self.model, ctx, unlabelled=prior_term or method.reads_unlabelled_logits)
            sup = supervised_loss(ctx.logits_labelled.float(), y_l)
            terms = method.unlabelled_loss(ctx) if x_u is not None and method.uses_unlabelled else {}
            if prior_term:
                terms["prior"] = (prior_loss(ctx.logits_unlabelled, q_u, w_u), prior_w)
            total = sup + sum(w * v for v, w in terms.values() if w)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self._after_backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        extra = method.after_step(ctx)  # EMA / discriminator steps also when no slice is unannotated
        losses = {"supervised": float(sup.detach()), **{k: float(v.detach()) for k, (v, _) in terms.items()}, **extra}
        losses["total"] = float(total.detach())
        self.step += 1
        return losses, {k: float(w) for k, (_, w) in terms.items()}

    def _after_backward(self) -> None:
        """Between the backward pass and the optimiser step: where data-parallel training
        (:class:`napari_sslseg.distributed.DistributedTrainer`) averages the gradients."""

    # ----- evaluation and previews -----
    def segmentation_model(self) -> SegmentationModel:
        return SegmentationModel(
            student=self.model,
            num_classes=self.num_classes,
            class_names=self.class_names,
            target_spacing=self.pool.target_spacing,
            axis=self.pool.volumes[0].axis,
            method=self.method,
            prior_input=self.config.prior_input,
            context=self.config.context,
            label_values=self.label_values,
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
        preds, truths = [], []
        for item in items:
            q = self._prior_slice(item, leave_out=True)[0][None].to(self.device) if self.config.prior_input else None
            xp, (h, w) = pad16(self._network_input(self.pool.image(item, self.config.context)[None].to(self.device), q))
            preds.append(hard_labels(net(xp)[..., :h, :w]).cpu().flatten())
            truths.append(self.pool.label(item).flatten())
        net.train(was)
        # Dice over all evaluated slices pooled: a class absent from one slice does not count as 0 there
        dice = dice_per_class(torch.cat(preds), torch.cat(truths), self.num_classes)
        scores = {self.class_names[c]: float(d) for c, d in enumerate(dice, start=1) if np.isfinite(d)}
        mean = float(np.mean(list(scores.values()))) if scores else float("nan")
        return EvalEvent(self.step, scores, mean)

    def predict(self, volume_index: int | None = None, mc_passes: int | None = None, slices=None,
                extra_maps: bool = True) -> Prediction:
        """The current model's prediction of a training volume, as the user sees it: combined with
        that volume's propagation prior (where it has annotated slices), small stray pieces removed.

        Args:
            volume_index: which volume; default: the first.
            mc_passes: MC-dropout passes; default ``config.preview_mc_passes``.
            slices: only these slices (along the slice axis).
            extra_maps: also the method's own maps (discriminator confidence ...), where it has them.
        """
        vi = volume_index or 0
        mc = self.config.preview_mc_passes if mc_passes is None else mc_passes
        model = self.segmentation_model()
        if not extra_maps:
            model = replace(model, method=None)
        return predict_volume(model, self.pool.volumes[vi], mc_passes=mc, device=self.device, slices=slices,
                              prior=self.priors.get(vi))

    def preview(self, volume_index: int | None = None, mc_passes: int | None = None) -> PreviewEvent:
        vi = volume_index or 0
        return PreviewEvent(self.step, vi, self.predict(vi, mc_passes))

    def prior_preview(self, volume_index: int | None = None) -> PreviewEvent:
        """The propagation prior of a volume, as a preview at the current step."""
        vi = volume_index or 0
        prediction = prior_prediction(self.priors[vi], self.pool.volumes[vi].annotated)
        if self.label_values is not None:  # in the user's values, as the network's predictions are
            prediction.labels = np.asarray(self.label_values, np.uint8)[prediction.labels]
        return PreviewEvent(self.step, vi, prediction)

    # ----- the loop -----
    def run(self) -> Generator[object, object, FinishedEvent]:
        """Train until ``config.steps`` or a Stop; yields events, accepts commands via send().

        Raises:
            TrainingError: a step, an evaluation or a preview failed; the state of the last
                complete step was saved to ``checkpoint`` first, and the message says so.
        """
        try:
            return (yield from self._run())
        except GeneratorExit:  # the consumer left mid-run (the viewer closed, say): keep the work
            if not self._finished and self.step > self._saved[0]:
                self.save_checkpoint()
            raise
        except Exception as exc:
            raise TrainingError(self._failure(exc)) from exc

    def _run(self) -> Generator[object, object, FinishedEvent]:
        cfg = self.config
        self._finished = False
        for text in self.notes:
            self._take((yield MessageEvent(self.step, "info", text)))
        t0 = time.perf_counter()
        for vi, prior in self.priors.items():
            for text in prior.warnings:  # where the result will be weak, said before the user waits for it
                self._take((yield MessageEvent(self.step, "warning", f"{self.pool.volumes[vi].name}: {text}")))
        if cfg.preview_every and self.step == 0 and 0 in self.priors:
            # the prior is ready in about a second: the first thing the user sees, before any step
            self._take((yield self.prior_preview()))
        rate, last = 0.0, time.perf_counter()
        while self.step < cfg.steps and not self.time_spent():
            yield from self._command_events()
            while self.paused and not self._stop:
                self._take((yield PausedEvent(self.step)))
                time.sleep(0.05)
                yield from self._command_events()
                last = time.perf_counter()
            if self._stop:
                break
            t_step = time.perf_counter()
            losses, weights = self.train_step()
            now = time.perf_counter()
            self.train_seconds += now - t_step
            dt, last = now - last, now
            rate = 1.0 / dt if rate == 0 else 0.9 * rate + 0.1 / max(dt, 1e-9)
            lr = self.optimizer.param_groups[0]["lr"]
            total = self.total_steps()
            if cfg.time_budget > 0:
                eta = max(0.0, cfg.time_budget - self.train_seconds)
            else:
                eta = (total - self.step) / max(rate, 1e-9)
            self._take((yield StepEvent(self.step, total, losses, weights, lr, rate, eta)))
            if self._checkpoint_due():
                self._take((yield CheckpointEvent(self.step, str(self.save_checkpoint()))))
            more = self.step < cfg.steps and not self.time_spent()
            if cfg.eval_every and self.step % cfg.eval_every == 0 and more:
                self._take((yield self.evaluate()))
            if cfg.preview_every and self.step % cfg.preview_every == 0 and more:
                self._take((yield self.preview()))
            last = time.perf_counter()
        reason = "stopped" if self._stop else "completed"
        if self.step > 0:
            self._take((yield self.evaluate()))
            if cfg.preview_every:
                self._take((yield self.preview()))
        if self.checkpoint_path is not None and self.step > self._saved[0]:
            self._take((yield CheckpointEvent(self.step, str(self.save_checkpoint()))))
        done = FinishedEvent(self.step, reason, time.perf_counter() - t0)
        self._finished = True
        yield done
        return done

    def request_stop(self) -> None:
        """Stop after the current step, as a Stop command does; safe in a signal handler (no lock)."""
        self._stop = True

    def _checkpoint_due(self) -> bool:
        cfg, (step, when) = self.config, self._saved
        if self.checkpoint_path is None or self.step == step:
            return False
        return bool((cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0)
                    or (cfg.checkpoint_seconds and time.monotonic() - when >= cfg.checkpoint_seconds))

    def save_checkpoint(self) -> Path | None:
        """Write the state to ``checkpoint_path`` (when there is one and a step was trained)."""
        if self.checkpoint_path is None or self.step == 0:
            return None
        path = self.save(self.checkpoint_path)
        self._saved = (self.step, time.monotonic())
        return path

    def _failure(self, exc: Exception) -> str:
        """Save what was trained, and say in one line what failed and where the work is."""
        what = f"Training failed at step {self.step + 1}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        if self.checkpoint_path is None or self.step == 0:
            return what + "."
        try:
            path = self.save_checkpoint()
        except Exception as save_exc:  # noqa: BLE001 - the first failure is the one to report
            return f"{what}; the model could not be saved either ({type(save_exc).__name__}: {save_exc})."
        return f"{what}; the model of step {self.step} is saved in {path}, training can resume from it."

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
            "label_values": self.label_values,
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
        with self.lock:  # tensors are written while no step changes them
            return checkpoint.save(self.state(), path)


def prior_loss(logits: torch.Tensor, prior: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Soft Dice + cross-entropy of the student's ``logits`` against the prior's soft labels, each
    voxel weighted by the prior's confidence.

    The cross-entropy alone is ruled by background, most of every slice: on the whole Colin27 head
    it taught a network to predict no structure at all (mean Dice 0.02 after 300 steps, against
    0.14 without it). The Dice part, over the batch and the foreground classes the prior holds,
    weighs a small structure like a large one, as the supervised Dice + CE does.
    """
    p = torch.softmax(logits.float(), dim=1)
    logp = torch.log(p.clamp(min=1e-6))
    ce = -(weight * (prior * logp).sum(dim=1, keepdim=True)).mean()
    dims = (0, 2, 3)
    wp, wq = weight * p[:, 1:], weight * prior[:, 1:]
    inter = (wp * prior[:, 1:]).sum(dims)
    denom = wp.sum(dims) + wq.sum(dims)
    present = wq.sum(dims) > 1.0  # classes the prior shows somewhere in this batch
    if not present.any():
        return ce
    dice = 1 - (2 * inter[present] + 1e-5) / (denom[present] + 1e-5)
    return ce + dice.mean()


def _label_values(volumes, class_names, resume: dict | None) -> tuple[list[int] | None, list[str]]:
    """The user's label value of each class where it is not simply the class (a 0/255 mask would
    otherwise train 256 classes), and the note that says so; None where values are classes. Class
    names for every value up to the largest keep the user's numbering."""
    if resume is not None:
        return resume.get("label_values"), []
    values = painted_values(volumes)
    if values == list(range(len(values))) or len(class_names or []) > values[-1]:
        return None, []
    moved = ", ".join(f"{v} -> {c}" for c, v in enumerate(values) if v != c)
    return values, [f"The labels use values {', '.join(map(str, values))}: trained as classes "
                    f"{', '.join(map(str, range(len(values))))} ({moved}); predictions use your values."]

