"""Command line: ``napari-sslseg methods | pretrain | train | propagate | predict | bench``."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np


def _parse_slices(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        from .errors import InputError

        raise InputError(f"--slices takes comma-separated slice numbers, e.g. 10,20,30; got '{text}'.") from None


def _annotated(args, labels, geom) -> list[int] | None:
    """The annotated slices: --slices, or those holding a label; with --complete or
    --annotated-range every slice of the range counts too, an empty one as background."""
    from .annotation import complete_slices, parse_range
    from .data import default_axis

    slices = _parse_slices(args.slices)
    if not (args.complete or args.annotated_range):
        return slices
    axis = args.axis if args.axis is not None else default_axis(geom.spacing_zyx)
    n = labels.shape[axis]
    a, b = parse_range(args.annotated_range or ":", n)
    if slices is not None:
        return sorted(set(slices) | set(range(a, b + 1)))
    return complete_slices(labels, axis, range(a, b + 1))


def _parse_window(text: str | None) -> tuple[float, float] | None:
    """--window LOW,HIGH: a fixed intensity window (CT in HU, e.g. -160,240 for soft tissue)."""
    if not text:
        return None
    from .errors import InputError

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--window takes LOW,HIGH, e.g. -160,240; got '{text}'.") from None
    if not low < high:
        raise InputError(f"--window needs LOW < HIGH; got {low:g},{high:g}.")
    return low, high


def _parse_options(pairs: list[str] | None) -> dict:
    """--option key=value pairs; values parsed as JSON where they can be (numbers, true/false)."""
    from .errors import InputError

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise InputError(f"--option takes key=value, got '{pair}'.")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


#: ``steps`` of a run that --time alone ends.
_NO_STEP_LIMIT = 1_000_000


def _add_config_flags(parser, cls, title: str, names: dict | None = None, notes: dict | None = None,
                      skip: tuple = (), metavars: dict | None = None) -> None:
    """One flag per field of the config dataclass ``cls``: ``--field-name`` and the older names in
    ``names``, of the field's type and choices, its help the field's comment (``notes`` adds to it).
    A flag not given is None, so the dataclass alone holds the defaults (:func:`_config`)."""
    import typing

    from .config import field_help

    group = parser.add_argument_group(title)
    hints, helps = typing.get_type_hints(cls), field_help(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        flags = list(dict.fromkeys([*(names or {}).get(f.name, ()), flag]))
        kind = hints[f.name]
        shown = (flag if f.default else "--no-" + flag[2:]) if kind is bool else f.default
        note = (notes or {}).get(f.name)
        text = (f"{helps[f.name]} (default: {shown})" + (f"; {note}" if note else "")).replace("``", "").replace("%", "%%")
        if kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        choices = f.metadata.get("limits", {}).get("choices")
        metavar = None if choices else (metavars or {}).get(f.name, {int: "N", float: "X"}.get(kind, "TEXT"))
        group.add_argument(*flags, dest=f.name, type=kind, choices=choices, default=None, metavar=metavar, help=text)


def _config(cls, args, **values):
    """``cls`` from ``values`` and the flags of :func:`_add_config_flags` given (they win); the
    dataclass's defaults for the rest. Every value is checked (InputError, one line each)."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    return cls(**{**values, **given})


def _time_budget(args, what: str) -> dict:
    """What --time sets beside itself: no step limit when given alone. Refused unless it is more than 0."""
    from .errors import InputError

    if args.time_budget is None:
        return {}
    if args.time_budget <= 0:
        raise InputError(f"--time takes seconds of {what}, more than 0; got {args.time_budget:g}.")
    return {"steps": _NO_STEP_LIMIT} if args.steps is None else {}


def _train_config(args):
    """The training settings of the command line: --batch sets both batches, --time alone no step limit."""
    from .config import TrainConfig

    values = _time_budget(args, "training")
    if args.batch is not None:
        values.update(batch_labelled=args.batch, batch_unlabelled=args.batch)
    return _config(TrainConfig, args, **values)


def _read_pair(image_path, labels_path, channel=None):
    """(image, labels, geometry) of an image and its labels, refused unless they share a grid."""
    from .errors import InputError
    from .io import read_volume

    image, geom = read_volume(image_path, channel)
    labels, lgeom = read_volume(labels_path)
    differences = lgeom.differences(geom)
    if differences:
        raise InputError(
            f"The labels are not on the image's grid ({'; '.join(differences)}, labels vs image); "
            "resample them onto the image first."
        )
    return image, labels, geom


def cmd_methods(args) -> int:
    from .methods import METHODS

    width = max(map(len, METHODS))
    for name, cls in METHODS.items():
        print(f"{name:<{width}}  {cls.summary}")
        if args.verbose:
            for f in fields(cls.Config):
                print(f"{'':<{width}}    --option {f.name}={f.default}")
    return 0


def cmd_train(args) -> int:
    """Train; under torchrun (WORLD_SIZE > 1), one rank of a data-parallel run, rank 0 alone printing."""
    import os
    from dataclasses import replace

    from . import distributed

    config = _train_config(args)  # every number checked before any file is read
    if distributed.world_size() <= 1:
        return _train(args, config)
    config = replace(config, device=distributed.setup(config.device))
    try:
        if distributed.rank() == 0:
            return _train(args, config, distributed.DistributedTrainer)
        args.quiet = True
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            return _train(args, config, distributed.DistributedTrainer)
    finally:
        distributed.teardown()


def _train(args, config, trainer_class=None) -> int:
    from tqdm import tqdm

    from . import atomic, checkpoint
    from .cohort import is_cohort
    from .data import Volume
    from .errors import InputError
    from .io import check_writable, read_volume
    from .methods import DEFAULT_METHOD, method_config

    options = _parse_options(args.option)
    resume = checkpoint.load(args.out if args.resume == "" else args.resume) if args.resume is not None else None
    if resume is not None:
        given = tuple(name for name in checkpoint.NETWORK_FIELDS if getattr(args, name, None) is not None)
        checkpoint.resumed(resume, args.method, options, config, given)  # refused before any volume is read
    else:
        method_config(args.method or DEFAULT_METHOD, options)
    window = _parse_window(args.window)
    out = check_writable(args.out)
    if is_cohort(args.image):
        volumes = _cohort_volumes(args, out, window)
    else:
        if args.labels is None:
            raise InputError(f"{args.image} is one volume: give its labels too (train IMAGE LABELS), or a folder "
                             "or manifest .csv of several scans.")
        image, labels, geom = _read_pair(args.image, args.labels, args.channel)
        volumes = [Volume(image, geom.spacing_zyx, labels, _annotated(args, labels, geom), args.axis, Path(args.image).name, window)]
    for path in args.unlabelled or []:
        arr, g = read_volume(path, args.channel)
        axis = args.axis if args.axis is not None else volumes[0].axis
        volumes.append(Volume(arr, g.spacing_zyx, None, None, axis, Path(path).name, window))
    if not any(v.annotated for v in volumes):
        raise InputError(
            f"No annotated slice in {args.labels or args.image} along axis {volumes[0].axis}: paint at least one slice "
            "(any non-zero class), or name the annotated slices with --slices."
        )
    v0 = next(v for v in volumes if v.annotated)
    names = args.class_names.split(",") if args.class_names else None
    from .training import Trainer

    trainer = (trainer_class or Trainer)(volumes, args.method, config, options, names, resume=resume,
                                         checkpoint=out / checkpoint.FILENAME, init=args.init)
    print(
        (f"Resuming '{trainer.method_name}' at step {trainer.step}" if resume else f"Training '{trainer.method_name}'")
        + f" on {len(trainer.pool.labelled)} annotated slices "
        f"({len(trainer.pool.unlabelled)} unannotated) along axis {v0.axis}, "
        f"{trainer.num_classes} classes, on {trainer.device}.",
        flush=True,
    )
    timed = config.time_budget > 0
    bar = tqdm(total=config.time_budget if timed else config.steps, initial=0 if timed else trainer.step,
               unit="s" if timed else "step", dynamic_ncols=True, disable=args.quiet,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{postfix}]" if timed else None)
    with _stop_on_signals(trainer) as received:
        for event in trainer.run():
            _show(event, bar, trainer, timed)
    if trainer.step == 0:
        print("napari-sslseg: stopped before the first step; no model written", file=sys.stderr)
        return 130 if received else 1
    path = trainer.checkpoint_path
    if path is not None:  # None on the ranks of a distributed run but rank 0
        settings = json.dumps({k: v for k, v in trainer.state().items() if k not in ("model", "method_state", "optimizer")}, indent=2)
        atomic.replace([(out / "config.json", lambda tmp: tmp.write_text(settings, encoding="utf-8"), lambda tmp: json.loads(tmp.read_text(encoding="utf-8")))])
    if received:
        print(f"napari-sslseg: {received[0]} at step {trainer.step} of {config.steps}: the model is saved in {path}; "
              "continue with the same command and --resume", file=sys.stderr)
        return 128 + int(getattr(signal, received[0]))
    print(f"model written to {path}")
    return 0


def _cohort_volumes(args, out: Path, window) -> list:
    """The scans of a manifest or folder, memory-mapped from ``--cache`` (default: OUT/volumes.cache)."""
    from .cohort import load_volumes, scans_of
    from .errors import InputError

    if args.labels is not None or args.slices:
        raise InputError("A folder or manifest names each scan's labels (NAME_label files, or the manifest's labels "
                         "and slices columns); give no LABELS or --slices with it.")
    from . import distributed

    scans = scans_of(args.image)
    cache = Path(args.cache) if args.cache else out / "volumes.cache"
    print(f"Reading {len(scans)} scans (uncompressed copies in {cache}, reused by later runs) ...", flush=True)
    # under torchrun rank 0 fills the cache and the other ranks on its machine map its copies
    # (on another machine a rank writes its own: entries are written whole, then renamed)
    distributed.after_rank_0()
    volumes = load_volumes(scans, cache, args.channel, window, args.axis)
    distributed.before_other_ranks()
    return volumes


@contextlib.contextmanager
def _stop_on_signals(trainer):
    """While training: Ctrl-C (SIGINT) or SIGTERM ends the run after the current step and the model
    is saved; a second one aborts at once. Yields the names of the signals received."""
    received: list[str] = []

    def handler(signum, frame):
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)
        trainer.request_stop()  # no print here: the handler may interrupt a write to the terminal

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield received
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _show(event, bar, trainer, timed: bool) -> None:
    """One training event on the terminal."""
    from .events import EvalEvent, FinishedEvent, MessageEvent, StepEvent

    if isinstance(event, StepEvent):
        if timed:
            bar.update(min(trainer.train_seconds, trainer.config.time_budget) - bar.n)
            bar.set_postfix(step=event.step, loss=f"{event.losses['total']:.3f}", refresh=False)
        else:
            bar.update(1)
            bar.set_postfix(loss=f"{event.losses['total']:.3f}", refresh=False)
    elif isinstance(event, EvalEvent):
        per_class = ", ".join(f"{k} {v:.2f}" for k, v in event.dice.items())
        bar.write(f"step {event.step}: Dice on annotated slices {event.mean_dice:.3f} ({per_class})")
    elif isinstance(event, MessageEvent):
        bar.write(f"{event.level}: {event.text}")
    elif isinstance(event, FinishedEvent):
        bar.close()
        print(f"{event.reason} after {event.step} steps in {event.seconds:.1f} s", flush=True)


def cmd_pretrain(args) -> int:
    """Self-supervised pre-training on images without labels (:mod:`napari_sslseg.pretrain`)."""
    from tqdm import tqdm

    from .data import Volume
    from .events import CheckpointEvent, FinishedEvent, StepEvent
    from .io import check_writable, read_volume
    from .pretrain import PretrainConfig, Pretrainer

    config = _config(PretrainConfig, args, **_time_budget(args, "pre-training"))
    window = _parse_window(args.window)
    out = check_writable(args.out)
    volumes = []
    for path in args.images:
        arr, g = read_volume(path, args.channel)
        volumes.append(Volume(arr, g.spacing_zyx, axis=args.axis, name=Path(path).name, window=window))
    pre = Pretrainer(volumes, config)
    print(f"Pre-training ({config.objective}) on {len(pre.items)} slices of {len(volumes)} volume(s) "
          f"along axis {volumes[0].axis}, on {pre.device}.", flush=True)
    timed = config.time_budget > 0
    bar = tqdm(total=config.time_budget if timed else config.steps, unit="s" if timed else "step", dynamic_ncols=True,
               disable=args.quiet, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{postfix}]" if timed else None)
    written = None
    with _stop_on_signals(pre) as received:
        for event in pre.run(out):
            if isinstance(event, StepEvent):
                bar.update(min(pre.train_seconds, config.time_budget) - bar.n if timed else 1)
                bar.set_postfix(step=event.step, loss=f"{event.losses['total']:.3f}", refresh=False)
            elif isinstance(event, CheckpointEvent):
                written = event.path
            elif isinstance(event, FinishedEvent):
                bar.close()
                print(f"{event.reason} after {event.step} steps in {event.seconds:.1f} s", flush=True)
    if written is None:
        print("napari-sslseg: stopped before the first step; nothing written", file=sys.stderr)
        return 130 if received else 1
    print(f"pre-trained weights written to {written}; train from them with --init {out}")
    return 0


def _add_pretrain_parser(sub) -> None:
    from .pretrain import PretrainConfig

    p = sub.add_parser("pretrain", help="self-supervised pre-training on images without labels")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="volumes: NIfTI, NRRD, MHA/MHD files or DICOM folders")
    p.add_argument("--out", required=True, help="output folder (pretrained.pt)")
    p.add_argument("--axis", type=int, choices=(0, 1, 2), help="slice axis; default: coarsest spacing (use the training's)")
    p.add_argument("--channel", type=int, help="channel to use from a multichannel or 4D image")
    p.add_argument("--window", metavar="LOW,HIGH", help="fixed intensity window (use the training's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_config_flags(p, PretrainConfig, "pre-training settings (every field of PretrainConfig)",
                      names={"time_budget": ("--time",)}, metavars={"time_budget": "SECONDS"},
                      notes={"time_budget": "--time alone: no step limit"})
    p.set_defaults(func=cmd_pretrain)


def cmd_predict(args) -> int:
    from dataclasses import asdict

    from .cohort import is_cohort
    from .config import PredictConfig

    if is_cohort(args.image):
        return cmd_predict_study(args)
    from .checkpoint import load_model
    from .data import Volume
    from .inference import predict_annotated_volume
    from .io import check_writable, read_volume, write_volumes

    settings = _config(PredictConfig, args)
    window = _parse_window(args.window)
    out = check_writable(args.out)
    model = load_model(args.model, "cpu")
    from .devices import pick_device

    device = pick_device(args.device)
    model.to(device)
    image, geom = read_volume(args.image, args.channel)
    axis = args.axis if args.axis is not None else model.axis
    labels = _read_pair(args.image, args.labels, args.channel)[1] if args.labels else None
    volume = Volume(image, geom.spacing_zyx, labels=labels, annotated=_parse_slices(args.slices), axis=axis,
                    name=Path(args.image).name, window=window)
    t0 = time.perf_counter()
    pred = predict_annotated_volume(model, volume, device=device, **asdict(settings))
    seconds = time.perf_counter() - t0
    write_volumes([(pred.labels, geom, out / "labels.nii.gz"), (pred.confidence, geom, out / "confidence.nii.gz"),
                   (pred.uncertainty, geom, out / "uncertainty.nii.gz")])
    values = model.label_values or list(range(model.num_classes))  # the label value of each class
    counts = np.bincount(pred.labels.ravel(), minlength=max(values) + 1)
    print(f"predicted {volume.num_slices} slices in {seconds:.1f} s ({settings.mc_passes} MC-dropout passes, {settings.mc_scope} blocks"
          + (f"; with the prior of {len(volume.annotated)} annotated slices" if volume.annotated else "") + ")")
    for c in range(1, model.num_classes):
        print(f"  {model.class_names[c]}: {counts[values[c]]} voxels")
    print(f"slices to annotate next (axis {axis}): {', '.join(map(str, pred.suggestions[:5]))}")
    print(f"written: {out / 'labels.nii.gz'}, {out / 'confidence.nii.gz'}, {out / 'uncertainty.nii.gz'} ({pred.uncertainty_kind})")
    return 0


def cmd_predict_study(args) -> int:
    """``predict MODEL FOLDER_OR_MANIFEST``: every scan into its own subfolder of --out."""
    import os

    from tqdm import tqdm

    from .cohort import scans_of
    from .config import PredictConfig
    from .errors import InputError
    from .io import check_writable
    from .study import SUMMARY, StudySettings, predict_study

    settings = _config(PredictConfig, args)
    if args.labels or args.slices or args.axis is not None:
        raise InputError("--labels, --slices and --axis name one scan's; for a study, give them per scan in a manifest "
                         "(columns image,labels,slices,axis) or pair NAME_label files with NAME_image files in the folder.")
    if args.workers < 1:
        raise InputError(f"--workers takes 1 or more; got {args.workers}.")
    window = _parse_window(args.window)
    out = check_writable(args.out)
    scans = scans_of(args.image)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))  # under torchrun: a share each
    from .devices import pick_device

    device = str(pick_device(args.device))
    if device.startswith("cuda") and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    study = StudySettings(settings, device, window, args.channel, args.threads)
    counts: dict[str, int] = {}
    mine = len(scans[rank::world])
    with tqdm(total=mine, unit="scan", dynamic_ncols=True, disable=args.quiet) as bar:
        for result in predict_study(args.model, scans, out, study, args.workers, rank, world):
            counts[result.status] = counts.get(result.status, 0) + 1
            if result.status == "failed":
                bar.write(f"{result.name}: failed: {result.reason}")
            bar.update(1)
            bar.set_postfix(counts, refresh=False)
    summary = out / (SUMMARY if world == 1 else f"summary.rank{rank}.csv")
    print(f"{mine} scans: {counts.get('predicted', 0)} predicted, {counts.get('done before', 0)} done before, "
          f"{counts.get('failed', 0)} failed; summary in {summary}")
    return 1 if counts.get("failed") else 0


def cmd_propagate(args) -> int:
    from .data import Volume
    from .errors import InputError
    from .io import check_writable, write_volumes

    out = check_writable(args.out)
    image, labels, geom = _read_pair(args.image, args.labels, args.channel)
    volume = Volume(image, geom.spacing_zyx, labels, _parse_slices(args.slices), args.axis, Path(args.image).name)
    if not volume.annotated:
        raise InputError(f"No annotated slice in {args.labels} along axis {volume.axis}: paint at least one slice.")
    t0 = time.perf_counter()
    prior = volume.prior(class_names=args.class_names.split(",") if args.class_names else None)
    labels_out, confidence, _ = prior.volume()
    seconds = time.perf_counter() - t0
    for text in prior.warnings:
        print(f"warning: {text}", file=sys.stderr)
    write_volumes([(labels_out, geom, out / "labels.nii.gz"), (confidence, geom, out / "confidence.nii.gz")])
    print(f"propagated {len(volume.annotated)} annotated slices along axis {volume.axis} to {volume.num_slices} slices "
          f"in {seconds:.1f} s")
    print(f"written: {out / 'labels.nii.gz'}, {out / 'confidence.nii.gz'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .config import DEFAULT_METHOD, PredictConfig, TrainConfig

    p = argparse.ArgumentParser(prog="napari-sslseg", description="Semi-supervised segmentation of 3D medical volumes.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("methods", help="list the registered methods")
    m.add_argument("-v", "--verbose", action="store_true", help="also list each method's options")
    m.set_defaults(func=cmd_methods)

    t = sub.add_parser("train", help="train on an image and its partly annotated labels, or on a cohort of scans")
    t.add_argument("image", help="volume: NIfTI, NRRD, MHA/MHD file or DICOM folder; or a cohort: a folder pairing "
                                 "NAME_image and NAME_label files, or a manifest .csv (image,labels,slices,axis)")
    t.add_argument("labels", nargs="?", help="label volume on the image's grid; slices holding any label count as "
                                              "annotated (not with a cohort, which names its own)")
    t.add_argument("--cache", metavar="DIR", help="cohort: folder of the scans' uncompressed copies, memory-mapped in "
                                                   "training (default: OUT/volumes.cache)")
    t.add_argument("--out", required=True, help="output folder (model.pt, config.json)")
    t.add_argument("--method", help=f"see 'napari-sslseg methods' (default: {DEFAULT_METHOD}; with --resume, the model's)")
    t.add_argument("--unlabelled", nargs="*", metavar="IMAGE", help="further volumes without labels")
    t.add_argument("--axis", type=int, choices=(0, 1, 2), help="slice axis of the (z, y, x) array; default: coarsest spacing")
    t.add_argument("--slices", help="annotated slices, comma-separated (default: those holding a label)")
    t.add_argument("--complete", action="store_true",
                   help="the labels are complete: every slice is annotated, an empty one holds background only")
    t.add_argument("--annotated-range", metavar="A:B",
                   help="every slice from A to B (both included) is annotated, an empty one as background")
    t.add_argument("--batch", type=int, metavar="N", help="slices per batch, labelled and unlabelled: sets both "
                                                          "--batch-labelled and --batch-unlabelled")
    t.add_argument("--channel", type=int, help="channel to use from a multichannel or 4D image")
    t.add_argument("--window", metavar="LOW,HIGH", help="fixed intensity window, e.g. CT -160,240 HU (default: 0.5-99.5 percentiles); "
                        "--window -160,240 and --window=-160,240 both work")
    t.add_argument("--class-names", help="comma-separated, background first")
    t.add_argument("--option", action="append", metavar="KEY=VALUE", help="a method option (repeatable)")
    t.add_argument("--resume", metavar="MODEL", nargs="?", const="",
                   help="continue training from a model folder or file; alone, from the checkpoint in --out "
                        "(written every --checkpoint-every steps, and on Ctrl-C, termination or an error). "
                        "The method and its options stay the model's; --steps counts the steps already done")
    t.add_argument("--init", metavar="PRETRAINED",
                   help="start from pre-trained weights: a folder written by 'napari-sslseg pretrain' or its pretrained.pt")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_config_flags(
        t, TrainConfig, "training settings (TrainConfig; each flag's default is the field's)",
        names={"time_budget": ("--time",)},
        notes={"steps": "with --time and no --steps, no limit but the time",
               "time_budget": "the schedules follow the time",
               "checkpoint_every": "the model is always saved in --out at the end, on Ctrl-C or SIGTERM, and after an error"},
        skip=("preview_every", "preview_mc_passes"),  # the command line shows no previews
        metavars={"time_budget": "SECONDS", "checkpoint_every": "STEPS", "checkpoint_seconds": "SECONDS", "device": "DEVICE"},
    )
    t.set_defaults(func=cmd_train)
    _add_pretrain_parser(sub)

    g = sub.add_parser("propagate", help="interpolate the annotated slices to every slice, no training (seconds)")
    g.add_argument("image", help="volume: NIfTI, NRRD, MHA/MHD file or DICOM folder (its grid is written)")
    g.add_argument("labels", help="label volume on the image's grid; slices holding any label count as annotated")
    g.add_argument("--out", required=True, help="output folder: labels.nii.gz, confidence.nii.gz")
    g.add_argument("--axis", type=int, choices=(0, 1, 2), help="slice axis; default: coarsest spacing")
    g.add_argument("--slices", help="annotated slices, comma-separated (default: those holding a label)")
    g.add_argument("--class-names", help="comma-separated, background first (for the warnings)")
    g.add_argument("--channel", type=int)
    g.set_defaults(func=cmd_propagate)

    r = sub.add_parser("predict", help="predict labels, confidence and uncertainty for a volume or a whole study")
    r.add_argument("model", help="a train output folder or its model.pt")
    r.add_argument("image", help="volume: NIfTI, NRRD, MHA/MHD file or DICOM folder; or a study: a folder of "
                                 "volume files (NAME_label files paired with NAME_image ones) or a manifest .csv")
    r.add_argument("--out", required=True, help="output folder: labels/confidence/uncertainty.nii.gz; for a study, "
                                                "one subfolder per scan and summary.csv (scans already done are skipped)")
    r.add_argument("--workers", type=int, default=1, help="study: scans predicted at once, each in its own process (default: 1)")
    r.add_argument("--threads", type=int, default=0, help="study: torch CPU threads per worker (default: cores / workers)")
    r.add_argument("-q", "--quiet", action="store_true", help="study: no progress bar")
    r.add_argument("--labels", help="the image's annotated slices (the training labels): their propagation prior "
                                    "is combined with the network's prediction, which keeps structures near where they were painted")
    r.add_argument("--slices", help="with --labels: the annotated slices, comma-separated (default: those holding a label)")
    r.add_argument("--axis", type=int, choices=(0, 1, 2), help="slice axis (default: the model's)")
    r.add_argument("--device", default="auto")
    r.add_argument("--channel", type=int)
    r.add_argument("--window", metavar="LOW,HIGH", help="the window used in training, if any")
    _add_config_flags(r, PredictConfig, "prediction settings (PredictConfig; each flag's default is the field's)",
                      names={"batch_size": ("--batch",)},
                      notes={"mc_scope": "every layer's: one forward pass each, every block's in a model trained "
                                         "with dropout_scope=all"},
                      metavars={"keep_fraction": "FRACTION"})
    r.set_defaults(func=cmd_predict)

    from . import bench

    b = sub.add_parser("bench", help="benchmark every method against annotated slices and training time on an image with dense labels")
    bench.add_arguments(b)
    b.set_defaults(func=bench.run)
    return p


#: Options whose value may start with a minus sign (a CT window: -160,240).
_SIGNED_OPTIONS = ("--window",)


def _attach_signed_values(argv: list[str]) -> list[str]:
    """``--window -160,240`` -> ``--window=-160,240``: argparse takes a value that starts with '-'
    (and is not a plain number) for an option."""
    out = []
    for arg in argv:
        if out and out[-1] in _SIGNED_OPTIONS and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    from .errors import InputError, TrainingError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(_attach_signed_values(argv))
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr)
        try:
            return int(args.func(args) or 0)
        except InputError as exc:
            for line in str(exc).splitlines():  # one line for each bad value
                print(f"napari-sslseg: error: {line}", file=sys.stderr)
            return 2
        except TrainingError as exc:
            print(f"napari-sslseg: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("napari-sslseg: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
