"""Checkpoints that load without running code from the file.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts, written with
``torch.save`` and read with ``torch.load(weights_only=True)``: a file holding any
other Python object (a crafted pickle, say) is refused before anything in it runs.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from .errors import CheckpointError

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


def save(payload: dict, path: str | os.PathLike) -> Path:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **payload}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely; refuse foreign, newer or code-carrying files with a clear message."""
    path = resolve(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, EOFError, ValueError) as exc:
        text = str(exc)
        if "Weights only load failed" in text or isinstance(exc, pickle.UnpicklingError):
            raise CheckpointError(
                f"Refused to load {path}: it holds Python objects beyond weights and settings, "
                "which could run code. Only napari-sslseg model files are loaded."
            ) from None
        raise CheckpointError(f"Cannot read {path}: not a model file, or truncated ({text.splitlines()[0][:160]}).") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-sslseg model file.")
    version = payload.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} was written in model format {version}, newer than this napari-sslseg reads ({VERSION}); "
            "update napari-sslseg."
        )
    return payload
