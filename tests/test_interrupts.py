"""An interrupted or failing run keeps its work: SIGINT, SIGTERM and an exception in a method,
each leaving a checkpoint that loads, no temporary file, and one line saying what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_sslseg import checkpoint
from napari_sslseg.cli import main
from napari_sslseg.config import TrainConfig
from napari_sslseg.errors import TrainingError
from napari_sslseg.events import CheckpointEvent
from napari_sslseg.training import Trainer

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL

ROOT = Path(__file__).resolve().parents[1]


def cfg(**kw):
    return TrainConfig(**{**dict(steps=20, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=0), **kw})


def _train_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "napari_sslseg.cli", "train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(out),
            "--method", "supervised", "--steps", "10000", "--threads", "1", "--batch", "2", "--eval-every", "0", "-q",
            "--checkpoint-every", "3", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_training_saves_the_model(tmp_path, sig, code):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(_train_command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not (out / "model.pt").exists():  # the first periodic checkpoint: training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    payload = checkpoint.load(out)
    step = payload["step"]
    assert 3 <= step < 10000 and payload["method"] == "supervised"
    assert stderr.splitlines() == [
        f"napari-sslseg: {sig.name} at step {step} of 10000: the model is saved in {out / 'model.pt'}; "
        "continue with the same command and --resume"
    ]
    assert f"stopped after {step} steps" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.pt"]  # no temporary left


def test_an_exception_in_a_method_saves_the_last_good_state(tiny_volume, tmp_path, monkeypatch):
    from napari_sslseg.methods.entropy_min import EntropyMin

    original = EntropyMin.unlabelled_loss

    def fails_at_step_5(self, ctx):
        if ctx.step == 4:
            raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore details")
        return original(self, ctx)

    monkeypatch.setattr(EntropyMin, "unlabelled_loss", fails_at_step_5)
    path = tmp_path / "model.pt"
    trainer = Trainer([tiny_volume], "entropy_min", cfg(checkpoint_every=3), checkpoint=path)
    events = []
    with pytest.raises(TrainingError) as info:
        for event in trainer.run():
            events.append(event)
    assert [e.step for e in events if isinstance(e, CheckpointEvent)] == [3]
    assert str(info.value) == (
        "Training failed at step 5: RuntimeError: CUDA error: an illegal memory access was encountered; "
        f"the model of step 4 is saved in {path}, training can resume from it."
    )
    assert checkpoint.load(path)["step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    resumed = Trainer([tiny_volume], config=cfg(steps=6), resume=checkpoint.load(path))
    monkeypatch.setattr(EntropyMin, "unlabelled_loss", original)
    assert list(resumed.run())[-1].step == 6


def test_an_exception_reaches_the_command_line_as_one_line(tmp_path, capsys, monkeypatch):
    def broken(self, ctx):
        raise ValueError("shapes do not match")

    from napari_sslseg.methods.entropy_min import EntropyMin

    monkeypatch.setattr(EntropyMin, "unlabelled_loss", broken)
    out = tmp_path / "run"
    assert main(["train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(out), "--method", "entropy_min",
                 "--steps", "3", "--threads", "1", "--batch", "2", "--eval-every", "0", "-q"]) == 1
    assert capsys.readouterr().err == "napari-sslseg: error: Training failed at step 1: ValueError: shapes do not match.\n"
    assert not (out / "model.pt").exists()  # nothing trained, nothing written


def test_closing_the_run_mid_way_saves_it(tiny_volume, tmp_path):
    """What the panel does when the viewer closes during training."""
    path = tmp_path / "model.pt"
    trainer = Trainer([tiny_volume], "supervised", cfg(), checkpoint=path)
    gen = trainer.run()
    while trainer.step < 2:
        next(gen)
    gen.close()
    assert checkpoint.load(path)["step"] == 2


@pytest.mark.parametrize("every, seconds, saved", [(0, 0.0, [5]), (2, 0.0, [2, 4, 5]), (0, 1e-6, [1, 2, 3, 4, 5])])
def test_checkpoints_by_steps_by_time_and_at_the_end(tiny_volume, tmp_path, every, seconds, saved):
    trainer = Trainer([tiny_volume], "supervised", cfg(steps=5, checkpoint_every=every, checkpoint_seconds=seconds),
                      checkpoint=tmp_path / "model.pt")
    assert [e.step for e in trainer.run() if isinstance(e, CheckpointEvent)] == saved
    assert checkpoint.load(tmp_path / "model.pt")["step"] == 5
