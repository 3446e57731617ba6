"""Self-supervised pre-training: the objectives learn, the file round-trips, a training starts from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sslseg import pretrain
from napari_sslseg.config import TrainConfig
from napari_sslseg.data import Volume
from napari_sslseg.errors import CheckpointError, InputError
from napari_sslseg.events import CheckpointEvent, FinishedEvent, StepEvent, Stop
from napari_sslseg.pretrain import INPUT_WEIGHT, PretrainConfig, Pretrainer
from napari_sslseg.training import Trainer

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL, COLIN_T1


@pytest.fixture(scope="module")
def colin_unlabelled():
    from napari_sslseg.io import read_volume

    image, geom = read_volume(COLIN_T1)
    return Volume(image, geom.spacing_zyx, name="colin")


@pytest.mark.parametrize("objective, batch, patch", [("reconstruction", 6, 48), ("contrastive", 8, 64)])
def test_the_objective_loss_falls_on_a_real_crop(colin_unlabelled, objective, batch, patch):
    # the contrastive loss needs negatives and views large enough to tell apart (an encoder-only step is cheap)
    pre = Pretrainer([colin_unlabelled], PretrainConfig(objective=objective, steps=40, batch=batch, patch=patch, threads=1))
    events = list(pre.run())
    assert [type(e) for e in events[-2:]] == [StepEvent, FinishedEvent] and events[-1].step == 40
    first, last = np.mean(pre.losses[:5]), np.mean(pre.losses[-5:])
    assert last < 0.9 * first, (objective, pre.losses)


def test_a_stop_ends_the_run_and_the_weights_are_written(colin_unlabelled, tmp_path):
    pre = Pretrainer([colin_unlabelled], PretrainConfig(steps=50, batch=2, patch=32, threads=1))
    run = pre.run(tmp_path / "out")
    next(run)
    written = run.send(Stop())
    assert isinstance(written, CheckpointEvent) and written.step == 1
    assert next(run).reason == "stopped"
    assert pretrain.load(tmp_path / "out")["step"] == 1


@pytest.fixture(scope="module")
def pretrained(colin_unlabelled, tmp_path_factory):
    """A reconstruction pre-training (encoder and decoder) of 2 steps, written to a folder."""
    out = tmp_path_factory.mktemp("pretrained")
    pre = Pretrainer([colin_unlabelled], PretrainConfig(objective="reconstruction", steps=2, batch=2, patch=32, threads=1))
    for _ in pre.run(out):
        pass
    return out


@pytest.mark.parametrize("method", ["supervised", "mean_teacher"])
def test_a_training_starts_from_the_pretrained_weights(pretrained, tiny_volume, method):
    saved = pretrain.load(pretrained)
    trainer = Trainer([tiny_volume], method, TrainConfig(steps=1, patch=32, threads=1), init=pretrained)
    assert any("pre-trained" in note for note in trainer.notes)
    own = trainer.model.state_dict()
    for key in ("down_3.convs.conv_1.conv.weight", "upcat_1.convs.conv_1.conv.weight"):
        assert torch.equal(own[key], saved["model"][key])
    # the image channel of the first convolution is the pre-trained one, the prior's channel starts at 0
    assert own[INPUT_WEIGHT].shape[1] == 2
    assert torch.equal(own[INPUT_WEIGHT][:, :1], saved["model"][INPUT_WEIGHT])
    assert not own[INPUT_WEIGHT][:, 1:].any()
    assert own["final_conv.weight"].shape[0] == 2  # a fresh 2-class head
    if method == "mean_teacher":  # the EMA teacher is a copy of the pre-trained student
        teacher = trainer.method.teacher.state_dict()
        assert torch.equal(teacher["down_3.convs.conv_1.conv.weight"], saved["model"]["down_3.convs.conv_1.conv.weight"])
    fresh = Trainer([tiny_volume], method, TrainConfig(steps=1, patch=32, threads=1))
    assert not torch.equal(fresh.model.state_dict()["down_3.convs.conv_1.conv.weight"], saved["model"]["down_3.convs.conv_1.conv.weight"])
    events = list(trainer.run())
    assert events[-1].step == 1


def test_the_contrastive_objective_gives_the_encoder_only(colin_unlabelled, tiny_volume, tmp_path):
    pre = Pretrainer([colin_unlabelled], PretrainConfig(objective="contrastive", steps=1, batch=2, patch=32, threads=1))
    list(pre.run(tmp_path))
    saved = pretrain.load(tmp_path)
    assert saved["model"] and all(k.split(".")[0] in pretrain.ENCODER for k in saved["model"])
    trainer = Trainer([tiny_volume], "supervised", TrainConfig(steps=1, patch=32, threads=1), init=tmp_path)
    assert torch.equal(trainer.model.state_dict()["down_4.convs.conv_1.conv.weight"], saved["model"]["down_4.convs.conv_1.conv.weight"])


def test_a_mismatched_network_is_refused_with_a_message(pretrained, tiny_volume):
    with pytest.raises(InputError, match="width 16.*width 8"):
        Trainer([tiny_volume], "supervised", TrainConfig(steps=1, width=8), init=pretrained)
    with pytest.raises(InputError, match="context"):
        Trainer([tiny_volume], "supervised", TrainConfig(steps=1, context=1), init=pretrained)


def test_foreign_and_damaged_files_are_refused(pretrained, tiny_volume, tmp_path):
    trainer = Trainer([tiny_volume], "supervised", TrainConfig(steps=1, patch=32, threads=1))
    model = trainer.save(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="trained segmentation model"):
        pretrain.load(model)
    payload = pretrain.load(pretrained)
    payload["model"][INPUT_WEIGHT] += 1  # weights changed after the checksum was taken
    torch.save(payload, tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="damaged"):
        pretrain.load(tmp_path / "damaged.pt")
    with pytest.raises(CheckpointError, match="No pre-trained weights"):
        pretrain.load(tmp_path / "nothing")


def test_the_command_line_pretrains_and_trains_from_it(tmp_path, capsys):
    from napari_sslseg.cli import main

    assert main(["pretrain", str(BRAIN1_IMAGE), "--out", str(tmp_path / "pre"), "--steps", "2", "--batch", "2", "-q"]) == 0
    assert "pre-trained weights written" in capsys.readouterr().out
    assert main(["train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(tmp_path / "run"), "--steps", "1", "-q",
                 "--method", "supervised", "--eval-every", "0", "--init", str(tmp_path / "pre")]) == 0
    assert "Started from weights pre-trained" in capsys.readouterr().out
    assert main(["pretrain", str(BRAIN1_IMAGE), "--out", str(tmp_path / "x"), "--time", "0"]) == 2
    assert main(["train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(tmp_path / "r2"), "--steps", "1",
                 "--init", str(tmp_path / "run")]) == 2
    assert "trained segmentation model" in capsys.readouterr().err
