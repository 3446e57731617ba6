"""Checkpoints round-trip, resume, and never run code from the file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from napari_sslseg import checkpoint
from napari_sslseg.config import TrainConfig
from napari_sslseg.errors import CheckpointError
from napari_sslseg.inference import predict_volume
from napari_sslseg.checkpoint import load_model
from napari_sslseg.training import Trainer


def cfg(steps):
    return TrainConfig(steps=steps, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=0, seed=3)


@pytest.mark.parametrize("method", ["mean_teacher", "adversarial"])
def test_round_trip_predicts_the_same(tiny_volume, tmp_path, method):
    trainer = Trainer([tiny_volume], method, cfg(4), class_names=["background", "disc"])
    list(trainer.run())
    path = trainer.save(tmp_path / "model.pt")
    model = load_model(tmp_path)  # a folder works too
    assert model.class_names == ["background", "disc"] and model.num_classes == 2
    assert model.target_spacing == (1.0, 1.0)
    a = predict_volume(trainer.segmentation_model(), tiny_volume, mc_passes=0)
    b = predict_volume(model, tiny_volume, mc_passes=0)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
    payload = checkpoint.load(path)
    assert payload["method"] == method and payload["step"] == 4
    assert payload["intensity"][0]["std"] > 0
    assert set(payload["method_state"]) >= ({"teacher"} if method == "mean_teacher" else {"discriminator", "discriminator_optimizer"})


def test_resume_continues_from_the_saved_step(tiny_volume, tmp_path):
    whole = Trainer([tiny_volume], "mean_teacher", cfg(6))
    list(whole.run())
    first = Trainer([tiny_volume], "mean_teacher", cfg(6))
    gen = first.run()
    for ev in gen:
        if getattr(ev, "step", 0) == 3 and hasattr(ev, "losses"):
            break
    first.save(tmp_path / "model.pt")
    resumed = Trainer([tiny_volume], config=cfg(6), resume=checkpoint.load(tmp_path / "model.pt"))
    assert resumed.method_name == "mean_teacher" and resumed.step == 3
    steps = [e.step for e in resumed.run() if hasattr(e, "losses")]
    assert steps == [4, 5, 6]
    # teacher and optimiser state came back: the teacher is not the student's copy
    t = dict(resumed.method.teacher.named_parameters())
    s = dict(resumed.model.named_parameters())
    assert any(not torch.equal(t[k], s[k]) for k in t)
    assert resumed.optimizer.state


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"format": checkpoint.FORMAT, "version": 1, "x": _Exploit(marker)}, evil)
    with pytest.raises(CheckpointError, match="could run code"):
        checkpoint.load(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        checkpoint.load(raw)
    assert not marker.exists()


def test_newer_foreign_and_missing_files_refused(tmp_path):
    newer = tmp_path / "newer.pt"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION + 1}, newer)
    with pytest.raises(CheckpointError, match="newer than this napari-sslseg reads"):
        checkpoint.load(newer)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a napari-sslseg model"):
        checkpoint.load(foreign)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="Cannot read|Refused"):
        checkpoint.load(junk)
    with pytest.raises(CheckpointError, match="No model at"):
        checkpoint.load(tmp_path / "nowhere")


def test_resume_takes_the_network_shape_from_the_file(tiny_volume, tmp_path):
    first = Trainer([tiny_volume], "supervised", cfg(2))
    list(first.run())
    first.save(tmp_path / "model.pt")
    wider = TrainConfig(**{**cfg(4).to_dict(), "width": 16, "context": 1, "dropout_scope": "all"})
    resumed = Trainer([tiny_volume], "supervised", wider, resume=checkpoint.load(tmp_path / "model.pt"))
    assert resumed.config.width == 8 and resumed.step == 2
    assert (resumed.config.context, resumed.config.dropout_scope) == (0, "last")
    assert (wider.width, wider.context, wider.dropout_scope) == (16, 1, "all")  # the caller's settings as they were


def test_resume_refuses_another_axis(tiny_volume, tmp_path):
    from napari_sslseg.data import Volume
    from napari_sslseg.errors import InputError

    first = Trainer([tiny_volume], "supervised", cfg(1))
    list(first.run())
    first.save(tmp_path / "model.pt")
    other = Volume(tiny_volume.image, labels=tiny_volume.labels, axis=2, annotated=[16])
    with pytest.raises(InputError, match="along axis 0"):
        Trainer([other], "supervised", cfg(2), resume=checkpoint.load(tmp_path / "model.pt"))


def test_save_while_training_in_another_thread(tiny_volume, tmp_path):
    import threading

    trainer = Trainer([tiny_volume], "mean_teacher", cfg(30))
    worker = threading.Thread(target=lambda: list(trainer.run()))
    worker.start()
    paths = [trainer.save(tmp_path / f"m{i}.pt") for i in range(5)]
    worker.join()
    for p in paths:
        payload = checkpoint.load(p)
        assert 0 <= payload["step"] <= 30 and set(payload["model"]) == set(trainer.model.state_dict())


def test_checkpoint_without_dropout_scope_keeps_dropout_everywhere(tiny_volume, tmp_path):
    """Files written before the dropout scope existed were trained with dropout in every block;
    they load (and resume) with it, so MC dropout samples what they learnt with."""
    trainer = Trainer([tiny_volume], "supervised", cfg(2))
    list(trainer.run())
    payload = trainer.state()
    assert payload["config"]["dropout_scope"] == "last"
    del payload["config"]["dropout_scope"]
    checkpoint.save(payload, tmp_path / "old.pt")
    model = load_model(tmp_path / "old.pt")
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in model.student.modules()) > 1
    resumed = Trainer([tiny_volume], "supervised", cfg(4), resume=checkpoint.load(tmp_path / "old.pt"))
    assert resumed.config.dropout_scope == "all"


# ----- damaged, inconsistent and interrupted model files -----


@pytest.fixture
def trained(tiny_volume):
    trainer = Trainer([tiny_volume], "mean_teacher", cfg(1))
    list(trainer.run())
    return trainer


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def test_empty_and_text_files_refused(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: the file is empty, not a model file\.$"):
        load_model(empty)
    text = tmp_path / "notes.pt"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(CheckpointError, match=r"notes\.pt: not a model file, or truncated\.$"):
        load_model(text)


def _flip_a_weight_byte(path):
    """Flip one byte in the middle of the largest tensor record of a torch zip file."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = np.frombuffer(bytes(raw[info.header_offset + 26 : info.header_offset + 30]), "<u2")
    raw[info.header_offset + 30 + int(name_len) + int(extra_len) + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_the_weights_refused(trained, tmp_path):
    path = trained.save(tmp_path / "model.pt")
    _flip_a_weight_byte(path)
    with pytest.raises(CheckpointError, match="is damaged: its weights do not match the checksum written with them"):
        load_model(path)


def test_a_file_without_checksum_still_loads(trained, tmp_path):
    payload = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **trained.state()}
    torch.save(payload, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").num_classes == 2


@pytest.mark.parametrize("change, message", [
    (lambda p: p.pop("num_classes"), "it records no class count"),
    (lambda p: p.update(num_classes="two"), "its class count is 'two', not a whole number"),
    (lambda p: p.update(num_classes=3, class_names=None), r"its weights do not fit the 3-class network of width 8 .*"
                                                          r"\(conv_0.conv_0.conv.weight is 8x2x3x3, 8x3x3x3 expected\)"),
    (lambda p: p["config"].update(width=16), r"do not fit the 2-class network of width 16 .*expected\)"),
    (lambda p: p.update(class_names=["background"]), "records 2 classes but the class names"),
    (lambda p: p.update(method="magic"), "its method 'magic' is not one this napari-sslseg knows"),
    (lambda p: p["method_state"]["teacher"].pop("final_conv.bias"), r"its teacher weights do not fit .*final_conv.bias is missing"),
    (lambda p: p.pop("model"), "it holds no network weights"),
    (lambda p: p.update(version="1"), r"records its model format as '1', not a format number"),
])
def test_inconsistent_model_files_refused(trained, tmp_path, change, message):
    payload = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, **trained.state()}
    change(payload)
    torch.save(payload, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=message):
        load_model(tmp_path)
    with pytest.raises(CheckpointError, match=message):  # resuming reads it the same way
        checkpoint.load(tmp_path)


@pytest.mark.parametrize("fault", ["raises", "short"])
def test_failed_save_keeps_the_previous_model(trained, tmp_path, monkeypatch, fault):
    path = trained.save(tmp_path / "model.pt")
    before = path.read_bytes()
    real = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real(obj, f, *args, **kwargs)
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
        if fault == "raises":
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    expected = "No space left on device" if fault == "raises" else "it read back incomplete"
    with pytest.raises(CheckpointError, match=rf"Cannot write .*model.pt: {expected}.* The previous file is kept\.$"):
        trained.save(path)
    assert path.read_bytes() == before
    assert _temporaries(tmp_path) == []


def test_save_on_a_full_disk(trained, small_disk):
    small = checkpoint.save({"num_classes": 2, "model": {"w": torch.zeros(10)}}, small_disk / "model.pt")
    before = small.read_bytes()
    with pytest.raises(CheckpointError, match=r"Cannot write .*model.pt: the disk is full\. The previous file is kept\.$"):
        checkpoint.save({**trained.state(), "padding": torch.randn(100_000)}, small_disk / "model.pt")
    assert small.read_bytes() == before
    assert _temporaries(small_disk) == []


def test_concurrent_saves_to_one_path(trained, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        done = list(pool.map(lambda _: checkpoint.save(trained.state(), tmp_path / "model.pt"), range(12)))
    assert len(done) == 12
    assert checkpoint.load(tmp_path / "model.pt")["step"] == 1
    assert _temporaries(tmp_path) == []


def test_stale_temporaries_removed_by_the_next_save(trained, tmp_path):
    import os
    import time

    old, fresh = tmp_path / ".model.pt.abc123.tmp", tmp_path / ".model.pt.def456.tmp"
    for t in (old, fresh):
        t.mkdir()
        (t / "model.pt").write_bytes(b"half a model")
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    trained.save(tmp_path / "model.pt")
    assert _temporaries(tmp_path) == [fresh.name]  # a fresh one may belong to a save still running
    assert load_model(tmp_path).num_classes == 2


@pytest.mark.slow
def test_sigkill_during_saves_leaves_a_loadable_model(trained, tmp_path):
    """A process killed at random points of repeated saves: the model file always loads, and what
    it left is only temporaries the next save clears."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from napari_sslseg import atomic

    path = tmp_path / "model.pt"
    trained.save(path)
    script = (
        "import sys, torch\n"
        "from napari_sslseg import checkpoint\n"
        "payload = checkpoint.load(sys.argv[1])\n"
        "payload['model'] = {k: v.clone() for k, v in payload['model'].items()}\n"
        "while True:\n"
        "    payload['step'] += 1\n"
        "    checkpoint.save(payload, sys.argv[1])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script, str(path)], env=env)
        start = path.stat().st_mtime_ns
        deadline = time.time() + 60
        while path.stat().st_mtime_ns == start and time.time() < deadline:  # saving has begun
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert load_model(path).num_classes == 2
        assert all(n.startswith(".model.pt.") for n in _temporaries(tmp_path))
    atomic.remove_stale(path, max_age=0)
    assert _temporaries(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_trainer_save_writes_under_the_step_lock(trained, tmp_path, monkeypatch):
    real = checkpoint.save
    held = []
    monkeypatch.setattr(checkpoint, "save", lambda state, path: held.append(trained.lock.locked()) or real(state, path))
    trained.save(tmp_path / "model.pt")
    assert held == [True]


def test_resume_refuses_to_change_the_method_its_options_or_to_train_no_step(tiny_volume, tmp_path):
    """Resuming used to switch silently to the file's method and options, and a step count at or
    below the saved step reported "completed" and rewrote the model."""
    from napari_sslseg.errors import InputError

    first = Trainer([tiny_volume], "mean_teacher", cfg(3), method_options={"ema_decay": 0.9})
    list(first.run())
    payload = checkpoint.save(first.state(), tmp_path / "model.pt") and checkpoint.load(tmp_path / "model.pt")
    with pytest.raises(InputError, match=r"^The model was trained with 'mean_teacher'; a resumed run cannot switch to "
                                         r"'supervised'\. Resume without naming another method, or start a new training\.$"):
        Trainer([tiny_volume], "supervised", cfg(6), resume=payload)
    with pytest.raises(InputError, match=r"keeps the options the model was trained with; ema_decay=0\.99 \(trained with 0\.9\)"):
        Trainer([tiny_volume], "mean_teacher", cfg(6), {"ema_decay": 0.99}, resume=payload)
    with pytest.raises(InputError, match=r"^The model has trained 3 steps already; steps = 3 leaves none to train\. "
                                         r"Give the total number of steps, more than 3\.$"):
        Trainer([tiny_volume], config=cfg(3), resume=payload)
    same = Trainer([tiny_volume], "mean_teacher", cfg(4), {"ema_decay": 0.9}, resume=payload)  # naming the same is fine
    assert same.step == 3 and same.method.config.ema_decay == 0.9


def test_files_that_are_not_models_say_what_they_are(tmp_path):
    network = tmp_path / "whole_network.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3)), network)  # torch.save(model), not its weights
    with pytest.raises(CheckpointError) as info:
        checkpoint.load(network)
    message = str(info.value)
    assert "is not a napari-sslseg model: it is a PyTorch file holding Python objects" in message
    assert "torch.nn.modules.container.Sequential" in message and "could run code" in message

    weights = tmp_path / "state_dict.pt"
    torch.save(torch.nn.Conv3d(1, 2, 3).state_dict(), weights)
    with pytest.raises(CheckpointError, match=r"holds the 2 weight tensors of a network \(a PyTorch state dict\)"):
        checkpoint.load(weights)

    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, image=np.zeros(3), labels=np.ones(3))
    with pytest.raises(CheckpointError, match=r"it is a zip archive of 2 file\(s\) \(image.npy, labels.npy\), not a model"):
        checkpoint.load(arrays)
