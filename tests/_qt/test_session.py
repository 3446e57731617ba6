"""The training worker leaves the UI a core and the better priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest
import torch

from napari_sslseg._qt.session import TrainingSession
from napari_sslseg.config import TrainConfig
from napari_sslseg.training import Trainer


@pytest.mark.parametrize("percent,cores,free", [(0.0, 2, 2), (50.0, 2, 1), (100.0, 2, 1), (30.0, 8, 6), (0.0, 1, 1)])
def test_training_takes_the_cores_other_work_leaves_free(monkeypatch, percent, cores, free):
    import psutil

    from napari_sslseg._qt.session import free_cores

    monkeypatch.setattr(psutil, "cpu_percent", lambda interval=None: percent)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert free_cores() == free


def test_the_training_thread_takes_the_free_cores_and_a_lower_priority(qtbot, tiny_volume, monkeypatch):
    monkeypatch.setattr("napari_sslseg._qt.session.TRAINING_NICENESS", 5)
    before = torch.get_num_threads()
    config = TrainConfig(steps=2, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=0, preview_every=0)
    done = []
    session = TrainingSession(Trainer([tiny_volume], "supervised", config), lambda e: None, done.append,
                              lambda: done.append("done"))
    try:
        session.start()
        qtbot.waitUntil(lambda: "done" in done, timeout=60_000)
        assert 1 <= session.thread["threads"] <= (os.cpu_count() or 1)
        assert session.thread["tid"] != threading.get_native_id()
        if sys.platform.startswith("linux") and session.thread["niceness"] is not None:
            assert session.thread["niceness"] >= 5
            assert os.getpriority(os.PRIO_PROCESS, 0) < 5  # the UI's own thread keeps its priority
        else:
            pytest.skip("no per-thread priority here (not Linux, or a process already above that niceness)")
    finally:
        torch.set_num_threads(before)
