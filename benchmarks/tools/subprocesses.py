"""The two measurements that need a process of their own: peak memory and the viewer's latency."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

#: The repository root: the probes run as modules of benchmarks.tools from there.
ROOT = Path(__file__).resolve().parents[2]

from napari_sslseg.bench.datasets import Dataset

from .config import ProbeConfig


def save_dataset(ds: Dataset, path: Path) -> Path:
    np.savez(path, image=ds.image, labels=ds.labels, spacing=np.asarray(ds.spacing), class_names=np.asarray(ds.class_names))
    return path


def _run(cmd: list[str], out: Path, timeout: float) -> dict:
    """Run ``cmd``; its JSON report, or {"error": why}."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}
    return json.loads(out.read_text(encoding="utf-8"))


def peak_memory(full: Path, cfg: ProbeConfig, workdir: Path) -> dict:
    out = workdir / "memory.json"
    z, y, x = cfg.memory_shape
    cmd = [sys.executable, "-m", "benchmarks.tools.memory", str(full), str(out), str(z), str(y), str(x),
           str(cfg.memory_steps), str(cfg.threads)]
    return _run(cmd, out, timeout=600)


def display_prefix() -> tuple[list[str] | None, str]:
    """How to get a display: the current one, else xvfb-run; None (with why) when neither exists."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return [], "the session's display"
    if shutil.which("xvfb-run"):
        return ["xvfb-run", "-a"], "Xvfb (xvfb-run -a)"
    return None, "no display and no xvfb-run: the viewer latency was not measured"


def viewer_latency(volume: Path, cfg: ProbeConfig, workdir: Path) -> dict:
    """The viewer's event-loop latency with the benchmark's volume (an npz from :func:`save_dataset`)."""
    prefix, how = display_prefix()
    if prefix is None:
        return {"error": how}
    out = workdir / "latency.json"
    cmd = prefix + [sys.executable, "-m", "benchmarks.tools.latency", str(volume), str(out), str(cfg.latency_seconds),
                    cfg.overlay_method, str(cfg.threads)]
    result = _run(cmd, out, timeout=300 + 6 * cfg.latency_seconds)
    result["display"] = how
    return result
