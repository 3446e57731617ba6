"""Shared fixtures: real crops shipped inside the project (see tests/data/README.md)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "napari_sslseg" / "samples"
DATA = Path(__file__).resolve().parent / "data"
COLIN_T1 = DATA / "colin27_crop_t1.nii.gz"
COLIN_LABELS = DATA / "colin27_crop_labels.nii.gz"
BRAIN1_IMAGE = DATA / "brain1_crop_image.nrrd"
BRAIN1_LABEL = DATA / "brain1_crop_label.nrrd"


def pytest_configure(config):
    """Under pytest-xdist (``-n``), each worker's torch and OpenMP threads are its share of the cores,
    so that parallel workers, and the processes their tests start, do not fight over them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        share = str(max(1, (os.cpu_count() or 1) // int(workers)))
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = share
        import torch

        torch.set_num_threads(int(share))


#: Axial slices painted in the end-to-end tests: evenly spaced through the structures (z 4..57).
ANNOTATED = [14, 26, 38, 50]


@pytest.fixture(scope="session")
def colin():
    """(image, full labels, geometry) of the Colin27 deep-structure crop."""
    from napari_sslseg.io import read_volume

    image, geom = read_volume(COLIN_T1)
    labels, _ = read_volume(COLIN_LABELS)
    return image, labels, geom


@pytest.fixture
def colin_sparse(colin):
    """Colin crop labels with only the ANNOTATED axial slices kept."""
    image, labels, geom = colin
    sparse = np.zeros_like(labels)
    sparse[ANNOTATED] = labels[ANNOTATED]
    return image, sparse, geom


@pytest.fixture
def tiny_volume():
    """A small synthetic 2-class volume: bright disc on noise, labels on 3 slices."""
    from napari_sslseg.data import Volume

    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:12, 0:32, 0:32]
    disc = ((y - 16) ** 2 + (x - 16) ** 2) < (6 + z % 3) ** 2
    image = (disc * 100 + rng.normal(0, 10, disc.shape)).astype(np.float32)
    labels = np.zeros(disc.shape, np.uint8)
    for s in (2, 6, 10):
        labels[s] = disc[s]
    return Volume(image, (1.0, 1.0, 1.0), labels, name="tiny")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs: a real full disk (root on Linux only; skipped with the reason otherwise)."""
    import os
    import subprocess

    if os.geteuid() != 0 or not os.path.exists("/proc/mounts"):
        pytest.skip("mounting a small tmpfs needs root on Linux")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("this container may not mount a tmpfs")
    yield disk
    subprocess.run(["umount", str(disk)], check=False)
