"""Shared fixtures: real crops shipped inside the project (see tests/data/README.md)."""

from __future__ import annotations

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


#: Widget tests that train in a real viewer for tens of seconds each (tests/_qt belongs to the
#: viewer work: until those files mark themselves, the marker is added here, by test name).
_SLOW_WIDGET_TESTS = {
    "test_training_shows_results_for_review",
    "test_result_layers_never_take_the_selection_or_the_mode",
    "test_stop_saves_and_the_panel_offers_to_continue",
    "test_pause_paint_and_stop",
    "test_closing_the_dock_stops_training_and_leaves_the_viewer_alone",
    "test_an_error_and_closing_save_the_training",
    "test_complete_labels_count_empty_slices_as_annotated",
    "test_keys_train_stop_walk_reject_and_accept",
}


def pytest_collection_modifyitems(config, items):
    """The fast tier (``pytest -m "not slow"``) leaves out the long widget trainings too."""
    for item in items:
        if "_qt" in item.path.parts and item.originalname in _SLOW_WIDGET_TESTS:
            item.add_marker(pytest.mark.slow)
