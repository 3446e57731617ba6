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
from napari_sslseg.training import Trainer, load_model


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
    wider = TrainConfig(**{**cfg(4).to_dict(), "width": 16})
    resumed = Trainer([tiny_volume], "supervised", wider, resume=checkpoint.load(tmp_path / "model.pt"))
    assert resumed.config.width == 8 and resumed.step == 2


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
