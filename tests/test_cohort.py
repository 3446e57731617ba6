"""Training on a cohort: a manifest or folder of scans, memory-mapped, not held in memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import SimpleITK as sitk

from napari_sslseg import checkpoint
from napari_sslseg.cli import main
from napari_sslseg.cohort import Scan, load_volumes
from napari_sslseg.data import SlicePool

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL


def _scans(folder, count, size=None):
    """``count`` crops of brain1 along z (12 slices; the tumour on 11-17), every other one with labels;
    ``size``: the crops resampled in-plane to size x size (bigger volumes for the memory test)."""
    image, labels = sitk.ReadImage(str(BRAIN1_IMAGE)), sitk.ReadImage(str(BRAIN1_LABEL))
    folder.mkdir(parents=True, exist_ok=True)
    scans = []
    for i in range(count):
        z = 6 + i % 3
        img, lab = image[:, :, z : z + 12], labels[:, :, z : z + 12]
        if size:
            ref = sitk.Image([size, size, 12], img.GetPixelID())
            ref.SetOrigin(img.GetOrigin())
            ref.SetDirection(img.GetDirection())
            ref.SetSpacing([img.GetSpacing()[0] * 64 / size, img.GetSpacing()[1] * 80 / size, img.GetSpacing()[2]])
            img = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear)
            lab = sitk.Resample(lab, ref, sitk.Transform(), sitk.sitkNearestNeighbor)
        ip = folder / f"c{i}_image.nii.gz"
        sitk.WriteImage(img, str(ip))
        lp = None
        if i % 2 == 0:
            lp = folder / f"c{i}_label.nii.gz"
            sitk.WriteImage(lab, str(lp))
        scans.append(Scan(f"c{i}", ip, lp))
    return scans


def test_a_manifest_trains_and_resumes(tmp_path, capsys):
    _scans(tmp_path / "scans", 3)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("image,labels,slices,axis\n"
                        "scans/c0_image.nii.gz,scans/c0_label.nii.gz,,\n"
                        "scans/c1_image.nii.gz,,,\n"
                        "scans/c2_image.nii.gz,scans/c2_label.nii.gz,5;7,0\n")
    run = tmp_path / "run"
    args = ["train", str(manifest), "--out", str(run), "--method", "mean_teacher", "--steps", "2",
            "--eval-every", "0", "--batch", "2", "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    # c0: the 7 painted slices of 12; c2: slices 5 and 7 only
    assert "on 9 annotated slices (27 unannotated)" in out
    assert len(checkpoint.load(run)["intensity"]) == 3
    assert len(list((run / "volumes.cache").iterdir())) == 3
    assert main(args[:7] + ["4"] + args[8:] + ["--resume"]) == 0  # the cache is reused
    assert "Resuming 'mean_teacher' at step 2" in capsys.readouterr().out
    assert checkpoint.load(run)["step"] == 4


def test_a_folder_pairs_images_and_labels(tmp_path, capsys):
    _scans(tmp_path / "scans", 2)
    assert main(["train", str(tmp_path / "scans"), "--out", str(tmp_path / "run"), "--method", "supervised",
                 "--steps", "1", "--eval-every", "0", "--batch", "1", "-q"]) == 0
    assert "on 7 annotated slices (17 unannotated)" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "scans"), str(BRAIN1_LABEL), "--out", str(tmp_path / "r2")]) == 2
    assert "give no LABELS" in capsys.readouterr().err


def _traced(scans, cache):
    """(memory held, peak memory) traced while the pool of ``scans`` is built and every volume sampled."""
    tracemalloc.start()
    try:
        volumes = load_volumes(scans, cache)
        pool = SlicePool(volumes)
        for item in pool.labelled + pool.unlabelled[::5]:
            pool.image(item)
        for item in pool.labelled:
            pool.label(item)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return volumes, current, peak


def test_the_pool_maps_volumes_instead_of_holding_them(tmp_path):
    """Scans of 200x200x12 voxels: building the pool and sampling every volume holds none of them in
    memory afterwards, and its peak (one scan read at a time) does not grow with the number of scans."""
    scans = _scans(tmp_path / "scans", 6, size=200)
    volumes, current, peak6 = _traced(scans, tmp_path / "cache")
    volume_bytes = volumes[0].image.nbytes
    assert all(isinstance(v.image, np.memmap) for v in volumes)
    assert all(isinstance(v.labels, np.memmap) for v in volumes if v.labels is not None)
    assert current < volume_bytes, current  # held in memory, 6 volumes: less than one
    _, _, peak2 = _traced(scans[:2], tmp_path / "cache2")
    assert peak6 < peak2 + volume_bytes, (peak2, peak6)  # 4 more scans: not one more volume at the peak
    # reloaded from the cache: nothing read again, the same arrays
    again, _, _ = _traced(scans, tmp_path / "cache")
    assert np.array_equal(again[2].image, volumes[2].image) and again[2].image.filename == volumes[2].image.filename


def test_label_values_of_a_cohort_become_classes_on_disk(tmp_path):
    """0/255 masks: the classes the trainer works on are mapped from the cache too, not copied into memory."""
    from napari_sslseg.config import TrainConfig
    from napari_sslseg.training import Trainer

    scans = _scans(tmp_path / "scans", 2)
    lab = sitk.ReadImage(str(scans[0].labels))
    sitk.WriteImage(sitk.Cast(lab, sitk.sitkUInt8) * 255, str(scans[0].labels))
    volumes = load_volumes(scans, tmp_path / "cache")
    trainer = Trainer(volumes, "supervised", TrainConfig(steps=1, prior_input=False, prior_weight=0, device="cpu",
                                                         eval_every=0, checkpoint_seconds=0))
    assert trainer.label_values == [0, 255]
    classes = trainer.pool.volumes[0].labels
    assert isinstance(classes, np.memmap) and set(np.unique(classes)) == {0, 1}
    raw = np.load(next((tmp_path / "cache").glob("c0-*")) / "labels.npy")
    assert raw.max() == 255 and np.array_equal(classes == 1, raw == 255)


def test_a_cohort_of_many_annotated_scans_interpolates_its_priors_without_registration():
    """Registration follows structures in one scan; in a cohort it would register a new chain of
    slices for nearly every sample (and keep their fields): there the priors interpolate only."""
    from napari_sslseg.data import Volume
    from napari_sslseg.config import TrainConfig
    from napari_sslseg.training import _REGISTERED_SCANS, Trainer

    rng = np.random.default_rng(0)

    def scan(i):
        image = rng.normal(0, 1, (40, 24, 24)).astype(np.float32)
        labels = np.zeros(image.shape, np.uint8)
        labels[[3, 8], 8:16, 8:16] = 1
        return Volume(image, labels=labels, annotated=[3, 8], name=f"scan{i}")

    cfg = TrainConfig(steps=1, patch=32, width=8, batch_labelled=2, batch_unlabelled=2, eval_every=0)
    few = Trainer([scan(i) for i in range(_REGISTERED_SCANS)], "supervised", cfg)
    assert all(p._flow is not None for p in few.priors.values())
    many = Trainer([scan(i) for i in range(_REGISTERED_SCANS + 1)], "supervised", cfg)
    assert all(p._flow is None for p in many.priors.values())
    # and each scan's prior keeps a bounded number of slices computed, not every one training visits
    prior = many.priors[0]
    for s in range(prior.num_slices):
        prior.slice_probabilities(s)
    assert 0 < len(prior._cache) <= prior.cache_limit < prior.num_slices - 2
    assert few.priors[0].cache_limit is None
