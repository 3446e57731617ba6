"""Pick the torch device."""

from __future__ import annotations

import torch

from .errors import InputError


def pick_device(name: str = "auto") -> torch.device:
    """"auto": CUDA, else Apple MPS, else CPU; otherwise the named device, checked."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputError(f"Unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Device '{name}' asked for, but this machine has no usable CUDA GPU; use auto or cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"Device '{name}' does not exist; this machine has {torch.cuda.device_count()} GPU(s).")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("Device 'mps' asked for, but it is not available here; use auto or cpu.")
    return device


def available_devices() -> list[str]:
    """The devices this machine has, for a choice: auto first, the CPU, each CUDA GPU, then MPS."""
    names = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names
