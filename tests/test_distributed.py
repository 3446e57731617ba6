"""Data-parallel training with gloo on CPU: 2 processes hold the same model and learn as one does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL, ROOT

#: Steps of the comparison; Dice on the 7 annotated slices of the brain1 crop.
STEPS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _volumes():
    from napari_sslseg.data import Volume
    from napari_sslseg.io import read_volume

    image, geom = read_volume(BRAIN1_IMAGE)
    labels, _ = read_volume(BRAIN1_LABEL)
    return [Volume(image, geom.spacing_zyx, labels, name="brain1")]


def _config(steps):
    from napari_sslseg.config import TrainConfig

    return TrainConfig(steps=steps, batch_labelled=2, batch_unlabelled=2, patch=64, eval_every=0, device="cpu",
                       threads=1, checkpoint_seconds=0)


def _train(trainer_class, method, steps):
    from napari_sslseg.events import EvalEvent

    trainer = trainer_class(_volumes(), method, _config(steps))
    dice = None
    for event in trainer.run():
        if isinstance(event, EvalEvent):
            dice = event.mean_dice  # the last: the Dice at the end of the run
    state = {"student": trainer.model.state_dict(), "dice": dice,
             **{k: m.state_dict() for k, m in trainer.method.extra_models().items()}}
    return trainer, state


def _rank(rank, world, port, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from napari_sslseg.distributed import DistributedTrainer

        states = {}
        for method, steps in (("mean_teacher", STEPS), ("adversarial", 3)):
            trainer, states[method] = _train(DistributedTrainer, method, steps)
            states[method]["seen"] = trainer._sample(trainer.pool.unlabelled, 8)  # the rank's own draws
        torch.save(states, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path):
    import torch.multiprocessing as mp

    from napari_sslseg.training import Trainer

    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for method, names in (("mean_teacher", ("student", "teacher")), ("adversarial", ("student", "discriminator"))):
        for name in names:
            a, b = r0[method][name], r1[method][name]
            assert a.keys() == b.keys()
            for k in a:
                assert torch.equal(a[k], b[k]), f"{method}: the {name}'s {k} differs between the ranks"
        assert r0[method]["seen"] != r1[method]["seen"]  # each rank samples its own slices
    torch.set_num_threads(1)
    _, single = _train(Trainer, "mean_teacher", STEPS)
    dice2, dice1 = r0["mean_teacher"]["dice"], single["dice"]
    print(f"Dice on the annotated slices after {STEPS} steps: 1 process {dice1:.3f}, 2 processes {dice2:.3f}")
    assert dice2 > 0.5 and abs(dice2 - dice1) < 0.1, (dice1, dice2)


@pytest.mark.slow
def test_torchrun_trains_on_a_cohort_and_a_resume_takes_any_number_of_ranks(tmp_path):
    """2 ranks on a folder of 2 scans (rank 0 fills the volume cache, rank 1 maps it), then 1 process resumes."""
    import SimpleITK as sitk

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    image, labels = sitk.ReadImage(str(BRAIN1_IMAGE)), sitk.ReadImage(str(BRAIN1_LABEL))
    for i, z in enumerate((4, 8)):
        sitk.WriteImage(image[:, :, z : z + 14], str(cohort / f"s{i}_image.nii.gz"))
        sitk.WriteImage(labels[:, :, z : z + 14], str(cohort / f"s{i}_label.nii.gz"))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    train = [str(cohort), "--out", str(run), "--method", "mean_teacher",
             "--eval-every", "0", "--batch", "2", "--device", "cpu", "-q"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", str(_free_port()), "-m", "napari_sslseg", "train", *train, "--steps", "2"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("model written to") == 1  # rank 0 alone writes and prints
    assert (run / "model.pt").exists() and (run / "config.json").exists()
    assert len(list((run / "volumes.cache").iterdir())) == 2  # one entry a scan, shared by the ranks
    one = subprocess.run([sys.executable, "-m", "napari_sslseg", "train", *train, "--steps", "3", "--resume"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "Resuming 'mean_teacher' at step 2" in one.stdout
