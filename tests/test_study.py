"""Study prediction: a folder or manifest of scans, resumable, past a broken scan."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from napari_sslseg.cli import main
from napari_sslseg.cohort import pair_folder, read_manifest, scans_of
from napari_sslseg.errors import InputError

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A model trained 2 steps on the brain1 crop: enough to predict with."""
    run = tmp_path_factory.mktemp("model")
    assert main(["train", str(BRAIN1_IMAGE), str(BRAIN1_LABEL), "--out", str(run), "--method", "supervised",
                 "--steps", "2", "--eval-every", "0", "--batch", "2", "-q"]) == 0
    return run / "model.pt"


def _crops(folder, count):
    """``count`` crops of the brain1 scan (8 slices each), written as separate scans; the first with its labels."""
    image, labels = sitk.ReadImage(str(BRAIN1_IMAGE)), sitk.ReadImage(str(BRAIN1_LABEL))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        z = 6 + 2 * i  # the tumour lies on slices 11-17
        sitk.WriteImage(image[:, :, z : z + 8], str(folder / f"s{i}_image.nii.gz"))
        if i == 0:
            sitk.WriteImage(labels[:, :, z : z + 8], str(folder / f"s{i}_label.nii.gz"))


def _summary(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {row["name"]: row for row in csv.DictReader(f)}


def test_a_study_folder_with_a_broken_scan_is_predicted_and_resumed(tmp_path, tiny_model, capsys):
    study = tmp_path / "study"
    _crops(study, 4)
    (study / "broken_image.nii.gz").write_bytes(b"\x1f\x8b not a volume at all" * 10)
    out = tmp_path / "pred"
    rc = main(["predict", str(tiny_model), str(study), "--out", str(out), "--mc-passes", "1", "--workers", "2", "-q"])
    assert rc == 1  # one scan failed
    text = capsys.readouterr()
    assert "5 scans: 4 predicted, 0 done before, 1 failed" in text.out
    assert "broken: failed:" in text.err + text.out
    rows = _summary(out / "summary.csv")
    assert [rows[n]["status"] for n in ("s0", "s1", "s2", "s3")] == ["predicted"] * 4
    assert rows["broken"]["status"] == "failed" and "broken_image.nii.gz" in rows["broken"]["reason"]
    for i in range(4):
        labels = sitk.ReadImage(str(out / f"s{i}" / "labels.nii.gz"))
        assert labels.GetSize() == (64, 80, 8)
        assert (out / f"s{i}" / "uncertainty.nii.gz").exists() and (out / f"s{i}" / "done.json").exists()
    assert not (out / "broken" / "done.json").exists()
    # the scan with its labels was predicted with their prior: its painted slices come back as painted
    painted = sitk.GetArrayFromImage(sitk.ReadImage(str(study / "s0_label.nii.gz")))
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "s0" / "labels.nii.gz")))
    on = np.flatnonzero(painted.any(axis=(1, 2)))
    assert len(on) and (predicted[on] == painted[on]).mean() > 0.95

    stamp = {i: (out / f"s{i}" / "labels.nii.gz").stat().st_mtime_ns for i in range(4)}
    rc = main(["predict", str(tiny_model), str(study), "--out", str(out), "--mc-passes", "1", "-q"])
    assert rc == 1
    assert "5 scans: 0 predicted, 4 done before, 1 failed" in capsys.readouterr().out
    assert {i: (out / f"s{i}" / "labels.nii.gz").stat().st_mtime_ns for i in range(4)} == stamp
    assert _summary(out / "summary.csv")["s2"]["status"] == "done before"

    # the broken scan fixed (and a scan whose marker is gone): only those two are predicted again
    _crops(tmp_path / "fix", 1)
    (tmp_path / "fix" / "s0_image.nii.gz").replace(study / "broken_image.nii.gz")
    (out / "s3" / "done.json").unlink()
    assert main(["predict", str(tiny_model), str(study), "--out", str(out), "--mc-passes", "1", "-q"]) == 0
    assert "5 scans: 2 predicted, 3 done before, 0 failed" in capsys.readouterr().out


def test_a_manifest_names_scans_labels_and_slices(tmp_path, tiny_model, capsys):
    _crops(tmp_path / "scans", 2)
    manifest = tmp_path / "study.csv"
    manifest.write_text("image,labels,slices,axis\n"
                        "scans/s0_image.nii.gz,scans/s0_label.nii.gz,5;6,0\n"
                        "scans/s1_image.nii.gz,,,\n"
                        "scans/s1_image.nii.gz,,,\n")
    scans = read_manifest(manifest)
    assert [s.name for s in scans] == ["s0", "s1", "s1-2"]
    assert scans[0].slices == (5, 6) and scans[0].axis == 0 and scans[1].labels is None
    assert scans[0].image == tmp_path / "scans" / "s0_image.nii.gz"
    out = tmp_path / "pred"
    assert main(["predict", str(tiny_model), str(manifest), "--out", str(out), "--mc-passes", "0", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["s0", "s1", "s1-2", "summary.csv"]


def test_cohort_listing_refusals(tmp_path):
    (tmp_path / "a_label.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="holds no image"):
        pair_folder(tmp_path)
    (tmp_path / "b.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="label files without an image: a_label.nii.gz"):
        pair_folder(tmp_path)
    (tmp_path / "a_image.nii.gz").write_bytes(b"")
    scans = scans_of(tmp_path)
    assert [(s.name, s.labels is not None) for s in scans] == [("a", True), ("b", False)]
    bad = tmp_path / "m.csv"
    bad.write_text("path\nx.nii.gz\n")
    with pytest.raises(InputError, match="no 'image' column"):
        read_manifest(bad)
    bad.write_text("image,labels,slices\nx.nii.gz,,3;4\n")
    with pytest.raises(InputError, match="no labels file"):
        read_manifest(bad)
    bad.write_text("image,axis\nx.nii.gz,3\n")
    with pytest.raises(InputError, match="axis takes 0, 1 or 2"):
        read_manifest(bad)


def test_ranks_share_the_scans_out(tmp_path, tiny_model):
    """Under torchrun each rank predicts every WORLD_SIZE-th scan and writes its own summary."""
    from napari_sslseg.config import PredictConfig
    from napari_sslseg.study import StudySettings, predict_study

    _crops(tmp_path / "study", 3)
    scans = scans_of(tmp_path / "study")
    settings = StudySettings(PredictConfig(mc_passes=0))
    results = list(predict_study(tiny_model, scans, tmp_path / "pred", settings, rank=1, world_size=2))
    assert [(r.name, r.status) for r in results] == [("s1", "predicted")]
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["s1", "summary.rank1.csv"]


def test_a_file_that_is_no_model_is_refused_before_any_scan(tmp_path, capsys):
    _crops(tmp_path / "study", 1)
    (tmp_path / "model.pt").write_bytes(b"not a model")
    assert main(["predict", str(tmp_path / "model.pt"), str(tmp_path / "study"), "--out", str(tmp_path / "pred")]) == 2
    assert "napari-sslseg: error:" in capsys.readouterr().err
    assert not (tmp_path / "pred").exists()


def test_the_summary_is_utf8_in_an_ascii_locale(tmp_path):
    """A scan's name or failure holds any character (a path in Zürich, a size as 2×3); in a process
    whose locale is plain ASCII (LC_ALL=C, no UTF-8 mode) the summary is still written, as UTF-8."""
    import os
    import subprocess
    import sys

    row = ["zürich", "scans/zürich.nii.gz", "failed", "a 2×3 image… is too small"]
    script = ("import sys; from pathlib import Path; from napari_sslseg.study import ScanResult, write_summary; "
              f"write_summary([ScanResult(*{ascii(row)})], Path(sys.argv[1]))")  # the command line itself ASCII
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": "ascii"}
    path = tmp_path / "summary.csv"
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[1][:4] == row
