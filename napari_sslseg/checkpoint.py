"""Checkpoints that load without running code from the file, and what is built from them.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, written with
``torch.save`` and read with ``torch.load(weights_only=True)``: a file holding any
other Python object (a crafted pickle, say) is refused before anything in it runs.

From a loaded checkpoint come a model to predict with (:func:`load_model`, without the
training loop) and the settings a resumed training continues with (:func:`resumed`,
:func:`check_resume`, :func:`restore`).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import pickletools
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import atomic
from .config import TrainConfig
from .data import default_class_names
from .devices import pick_device
from .errors import CheckpointError, InputError
from .inference import SegmentationModel
from .methods import METHODS, create_method
from .networks import input_channels, student_network

FORMAT = "napari-sslseg/model"
VERSION = 1
FILENAME = "model.pt"


def resolve(path: str | os.PathLike) -> Path:
    """A train output folder or a checkpoint file -> the checkpoint file."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.exists():
        raise CheckpointError(f"No model at {path}: give a folder written by 'napari-sslseg train' or its {FILENAME}.")
    return path


def checksum(payload: dict) -> str:
    """sha256 over every tensor of ``payload`` (its key path, type, shape and bytes) in a fixed order."""
    digest = hashlib.sha256()
    for key, tensor in _tensors({k: v for k, v in payload.items() if k != "checksum"}):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _tensors(obj, key: str = ""):
    if isinstance(obj, torch.Tensor):
        yield key, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{key}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{key}/{i}")


def save(payload: dict, path: str | os.PathLike) -> Path:
    """Write completely or not at all (see :mod:`napari_sslseg.atomic`), with a checksum of the
    weights that :func:`load` verifies. A crash or a full disk mid-write leaves the previous file intact."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    payload["checksum"] = checksum(payload)

    def write(tmp: Path) -> None:
        torch.save(payload, tmp)

    def check(tmp: Path) -> None:
        _verify(_read(tmp), tmp)

    atomic.replace([(path, write, check)], CheckpointError)
    return path


#: Modules whose names a weights-only torch file holds: tensors' storages and rebuild functions.
_WEIGHTS_MODULES = ("torch", "torch._utils", "torch._tensor", "torch.storage", "collections", "builtins", "__builtin__")


def _pickle_of(path: Path) -> bytes | None:
    """The pickle of a torch file (its ``data.pkl``), or None for another zip archive."""
    with zipfile.ZipFile(path) as archive:
        name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
        return archive.read(name) if name else None


def pickled_objects(data: bytes) -> list[str]:
    """The classes and functions a pickle names, other than torch's own, read without running it."""
    found, strings = [], []
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("GLOBAL", "INST"):
                found.append(tuple(str(arg).split(" ", 1)))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append((strings[-2], strings[-1]))
            if isinstance(arg, str) and opcode.name.endswith(("UNICODE", "STRING")):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - a damaged pickle: report what was read before the damage
        pass
    return [".".join(name) for name in dict.fromkeys(found) if name[0] not in _WEIGHTS_MODULES]


def _describe_zip(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    return f"it is a zip archive of {len(names)} file(s) ({shown}), not a model file"


def _read(path: Path) -> dict:
    """torch.load with weights only: nothing in the file runs."""
    if path.stat().st_size == 0:
        raise CheckpointError(f"Cannot read {path}: the file is empty, not a model file.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; text, junk or a cut-off file is none
        raise CheckpointError(f"Cannot read {path}: not a model file, or truncated.")
    try:
        data = _pickle_of(path)
    except (zipfile.BadZipFile, OSError, KeyError):
        data = b""
    if data is None:  # a NumPy .npz, an office document...
        raise CheckpointError(f"Cannot read {path}: {_describe_zip(path)}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError,
            KeyError, IndexError, zipfile.BadZipFile) as exc:
        text = str(exc)
        if "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError):
            objects = pickled_objects(data)
            what = f" ({', '.join(objects[:3])}{', …' if len(objects) > 3 else ''})" if objects else ""
            raise CheckpointError(
                f"{path} is not a napari-sslseg model: it is a PyTorch file holding Python objects{what}, "
                "a whole network saved by another program, say. It was not opened: loading such objects "
                "could run code. Load a model saved by napari-sslseg (Save model…, or the folder of "
                "'napari-sslseg train')."
            ) from None
        detail = (text.splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"Cannot read {path}: not a model file, or truncated ({detail}).") from None


def _verify(payload, path: Path) -> None:
    """Refuse foreign, newer or damaged payloads."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-sslseg model file: {_describe(payload)}.")
    version = payload.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path} records its model format as {version!r}, not a format number; it is damaged.")
    if version > VERSION:
        raise CheckpointError(
            f"{path} was written in model format {version}, newer than this napari-sslseg reads ({VERSION}); "
            "update napari-sslseg."
        )
    stored = payload.get("checksum")  # files written before checksums were kept have none
    if stored is not None and stored != checksum(payload):
        raise CheckpointError(
            f"{path} is damaged: its weights do not match the checksum written with them. "
            "Use another copy, or train again."
        )


def _describe(payload) -> str:
    """What a PyTorch file that is not ours holds, in a user's words."""
    tensors = sum(1 for _ in _tensors(payload))
    if isinstance(payload, dict) and tensors and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return f"it holds the {tensors} weight tensors of a network (a PyTorch state dict) without napari-sslseg's settings"
    kind = type(payload).__name__
    keys = f" with keys {', '.join(map(str, list(payload)[:4]))}" if isinstance(payload, dict) and payload else ""
    return f"it is a PyTorch file holding a {kind}{keys} and {tensors} tensor(s), without napari-sslseg's format mark"


def load(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely; refuse foreign, newer, damaged, inconsistent or code-carrying files
    with a clear message."""
    path = resolve(path)
    payload = _read(path)
    _verify(payload, path)
    validate(payload, path)
    return payload


def validate(payload: dict, path: str | os.PathLike = "the model file") -> None:
    """Refuse a payload whose settings and weights do not fit together, before any network is built
    from it: one message each, instead of a KeyError or a wall of load_state_dict mismatches."""

    def refuse(what: str) -> None:
        raise CheckpointError(f"{path} is inconsistent: {what}; it cannot be used.")

    classes = payload.get("num_classes")
    if "num_classes" not in payload:
        refuse("it records no class count")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 2:
        refuse(f"its class count is {classes!r}, not a whole number of at least 2")
    names = payload.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != classes
                              or not all(isinstance(n, str) for n in names)):
        refuse(f"it records {classes} classes but the class names {names!r}")
    method = payload.get("method")
    if method not in METHODS:
        refuse(f"its method {method!r} is not one this napari-sslseg knows ({', '.join(sorted(METHODS))})")
    weights = payload.get("model")
    if not isinstance(weights, dict) or not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        refuse("it holds no network weights")
    if not isinstance(payload.get("config", {}), dict) or not isinstance(payload.get("method_state", {}), dict):
        refuse("its settings are not a table of values")
    try:
        cfg = saved_config(payload)
        with torch.device("meta"):  # shapes only: nothing is allocated
            student = student_network(cfg, classes)
            expected = {"model": student.state_dict(),
                        **create_method(method, student, classes, payload.get("method_options")).state_dict()}
    except (TypeError, ValueError, KeyError) as exc:  # InputError is a ValueError
        refuse(f"its settings cannot build a network ({str(exc).splitlines()[0][:160]})")
    network = f"{classes}-class network of width {cfg.width} with {input_channels(cfg, classes)} input channels"
    found = {"model": weights, **payload.get("method_state", {})}
    for part, want in expected.items():
        have = found.get(part)
        if not isinstance(have, dict) or not all(isinstance(v, torch.Tensor) for v in want.values()):
            continue  # optimiser states, and parts older files lack, are not weights to compare
        which = "weights" if part == "model" else f"{part} weights"
        missing = [k for k in want if k not in have]
        extra = [k for k in have if k not in want]
        wrong = [k for k in want if k in have and tuple(have[k].shape) != tuple(want[k].shape)]
        if wrong:
            k = wrong[0]
            refuse(f"its {which} do not fit the {network} it records ({k} is {_shape(have[k])}, {_shape(want[k])} expected)")
        if missing or extra:
            k = (missing or extra)[0]
            refuse(f"its {which} do not fit the {network} it records ({k} is {'missing' if missing else 'unknown'})")


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "a scalar"


# ----- what is built from a checkpoint -----

#: The settings that shape the network: a resumed training takes them from the checkpoint, so that
#: the weights fit (and keep the dropout they were trained with).
NETWORK_FIELDS = ("width", "dropout", "dropout_scope", "prior_input", "context")


def saved_config(payload: dict) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with; checkpoints written before ``dropout_scope``
    existed had dropout in every block."""
    d = dict(payload.get("config", {}))
    d.setdefault("dropout_scope", "all")
    d.setdefault("prior_input", False)  # nor a prior among their inputs
    return TrainConfig.from_dict(d)


def resumed(payload: dict, method: str | None, options: dict | None,
            config: TrainConfig, given: tuple[str, ...] = ()) -> tuple[str, dict, TrainConfig]:
    """The method, its options and the settings a resumed training continues with: the
    checkpoint's method and options, and ``config`` with the checkpoint's network (a new config;
    ``config`` itself is left as it was). A different method, a different option value, a network
    setting among ``given`` (the fields the user set, e.g. on the command line) other than the
    model's, or a step count the model has already reached is refused rather than silently overridden.

    Raises:
        InputError: one of those, in the user's words.
    """
    saved, saved_options, done = payload["method"], dict(payload.get("method_options") or {}), int(payload.get("step", 0))
    if method is not None and method != saved:
        raise InputError(f"The model was trained with '{saved}'; a resumed run cannot switch to '{method}'. "
                         "Resume without naming another method, or start a new training.")
    changed = [f"{k}={v!r} " + (f"(trained with {saved_options[k]!r})" if k in saved_options else f"(no option of '{saved}')")
               for k, v in (options or {}).items() if k not in saved_options or saved_options[k] != v]
    if changed:
        raise InputError(f"A resumed run keeps the options the model was trained with; {', '.join(changed)} "
                         "would change them. Resume without them, or start a new training.")
    if config.time_budget <= 0 and config.steps <= done:
        raise InputError(f"The model has trained {done} steps already; steps = {config.steps} leaves none to train. "
                         f"Give the total number of steps, more than {done}.")
    network = saved_config(payload)
    clash = [f"{name} = {getattr(config, name)!r} (trained with {getattr(network, name)!r})"
             for name in NETWORK_FIELDS if name in given and getattr(config, name) != getattr(network, name)]
    if clash:
        raise InputError(f"A resumed run keeps the network the model was trained with; {', '.join(clash)} would "
                         "change it. Resume without these settings, or start a new training.")
    return saved, saved_options, replace(config, **{name: getattr(network, name) for name in NETWORK_FIELDS})


def check_resume(payload: dict, axis: int, target_spacing) -> None:
    """Refuse to resume on slices other than the model's: another slice axis or in-plane spacing.

    Raises:
        InputError: saying which, and what to do.
    """
    saved_axis = payload.get("axis")
    if saved_axis is not None and saved_axis != axis:
        raise InputError(f"The model was trained on slices along axis {saved_axis}; these volumes use axis {axis}.")
    saved = payload.get("target_spacing")
    if saved and not np.allclose(saved, target_spacing, rtol=0.05):
        raise InputError(
            f"The model was trained at {saved} mm in-plane; these slices are at "
            f"{tuple(round(s, 3) for s in target_spacing)} mm. Start a new training."
        )


def restore(payload: dict, student: torch.nn.Module, method, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Load a checkpoint's weights into ``student`` and ``method`` (its teacher, discriminator ...)
    and, where given and saved, the optimiser's state; return the step the checkpoint was at."""
    student.load_state_dict(payload["model"])
    method.load_state_dict(payload.get("method_state", {}))
    if optimizer is not None and "optimizer" in payload:
        optimizer.load_state_dict(payload["optimizer"])
    return int(payload.get("step", 0))


def load_model(path, device: str | torch.device = "cpu") -> SegmentationModel:
    """A trained model from a checkpoint file or a train output folder, ready to predict."""
    payload = load(path)
    cfg = saved_config(payload)
    C = int(payload["num_classes"])
    student = student_network(cfg, C)
    student.load_state_dict(payload["model"])  # before the method copies it (a teacher a file lacks starts from it)
    method = create_method(payload["method"], student, C, payload.get("method_options"))
    method.load_state_dict(payload.get("method_state", {}))
    model = SegmentationModel(
        student=student,
        num_classes=C,
        class_names=list(payload.get("class_names") or default_class_names(C)),
        target_spacing=tuple(payload["target_spacing"]) if payload.get("target_spacing") else None,
        axis=payload.get("axis"),
        method=method,
        prior_input=cfg.prior_input,
        context=cfg.context,
        label_values=payload.get("label_values"),
    )
    return model.to(pick_device(str(device)) if not isinstance(device, torch.device) else device)
