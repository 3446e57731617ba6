"""Volumes in and out: geometry kept, DICOM series, clear refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_sslseg.errors import InputError
from napari_sslseg.io import Geometry, check_writable, read_image, read_volume, write_volume

from .conftest import BRAIN1_IMAGE, BRAIN1_LABEL, COLIN_T1


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_round_trip_keeps_geometry_anisotropic(tmp_path, suffix):
    image, geom = read_volume(BRAIN1_IMAGE)
    assert geom.spacing[2] == pytest.approx(6.5, rel=1e-3)  # strongly anisotropic real case
    out = write_volume(image, geom, tmp_path / f"copy{suffix}")
    back, geom2 = read_volume(out)
    np.testing.assert_array_equal(back, image)
    assert geom2.same_grid(geom)
    np.testing.assert_allclose(geom2.spacing, geom.spacing, rtol=1e-5)
    np.testing.assert_allclose(geom2.origin, geom.origin, atol=1e-3)
    np.testing.assert_allclose(geom2.direction, geom.direction, atol=1e-6)


def test_round_trip_flipped_direction(tmp_path):
    image, geom = read_volume(COLIN_T1)
    assert geom.direction[0] == -1 and geom.direction[4] == -1  # NIfTI's usual LPS flip
    back, geom2 = read_volume(write_volume(image[::-1].copy(), geom, tmp_path / "x.nrrd"))
    np.testing.assert_array_equal(back, image[::-1])
    assert geom2.same_grid(geom)


def _write_dicom_series(folder, array, spacing, series_uid, first_instance=1):
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(array.shape[0]):
        sl = sitk.GetImageFromArray(array[k : k + 1].astype(np.int16))
        sl.SetSpacing(spacing)
        sl.SetOrigin((0.0, 0.0, k * spacing[2]))
        for tag, value in {
            "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0008|0060": "MR",
            "0020|0013": str(first_instance + k),
            "0020|0032": f"0\\0\\{k * spacing[2]}",
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(sl)


def test_dicom_series_from_folder_largest_wins(tmp_path):
    rng = np.random.default_rng(1)
    big = rng.integers(0, 1000, (6, 16, 20))
    small = rng.integers(0, 1000, (3, 16, 20))
    _write_dicom_series(tmp_path / "dcm", big, (0.5, 0.5, 2.0), "1.2.826.0.1.3680043.2.1125.100")
    _write_dicom_series(tmp_path / "dcm", small, (0.5, 0.5, 2.0), "1.2.826.0.1.3680043.2.1125.200")
    with pytest.warns(UserWarning, match="2 DICOM series.*1125.200"):
        array, geom = read_volume(tmp_path / "dcm")
    assert array.shape == (6, 16, 20)
    np.testing.assert_array_equal(array, big)
    assert geom.spacing == pytest.approx((0.5, 0.5, 2.0))
    # one file of the smaller series reads that whole series
    one, _ = read_volume(sorted((tmp_path / "dcm").glob("200_*.dcm"))[1])
    np.testing.assert_array_equal(one, small)


def test_dicom_folder_with_capitals(tmp_path):
    from napari_sslseg.io import is_volume_path

    folder = tmp_path / "Patient" / "DICOM"
    _write_dicom_series(folder, np.arange(3 * 4 * 5).reshape(3, 4, 5), (1.0, 1.0, 3.0), "1.2.826.0.1.3680043.2.1125.300")
    assert is_volume_path(folder)
    assert read_volume(folder)[0].shape == (3, 4, 5)


def test_refusals(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(COLIN_T1.read_bytes()[:5000])
    with pytest.raises(InputError, match="unreadable or truncated"):
        read_volume(truncated)
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_text("not an image")
    with pytest.raises(InputError, match="Cannot read"):
        read_volume(garbage)
    flat = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20), np.float32)), str(flat))
    with pytest.raises(InputError, match="single 2D slice"):
        read_volume(flat)


def test_multichannel_needs_a_channel(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 8, 9, 3)).astype(np.uint8)
    path = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(path))
    with pytest.raises(InputError, match="3 channels.*--channel"):
        read_image(path)
    arr, _ = read_volume(path, channel=2)
    np.testing.assert_array_equal(arr, rgb[..., 2])
    with pytest.raises(InputError, match="Channel 5 does not exist"):
        read_volume(path, channel=5)


def test_four_d_needs_a_volume(tmp_path):
    four = sitk.JoinSeries([sitk.GetImageFromArray(np.full((4, 5, 6), i, np.int16)) for i in range(3)])
    path = tmp_path / "t.nii.gz"
    sitk.WriteImage(four, str(path))
    with pytest.raises(InputError, match="4D with 3 volumes"):
        read_volume(path)
    arr, _ = read_volume(path, channel=1)
    assert arr.shape == (4, 5, 6) and (arr == 1).all()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder_non_root(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(InputError, match="Cannot write"):
        check_writable(ro / "out")


def test_output_folder_that_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="Cannot write to the output folder"):
        check_writable(blocker / "out")


def test_geometry_dict_round_trip():
    _, geom = read_volume(BRAIN1_LABEL)
    assert Geometry.from_dict(geom.to_dict()) == geom


# ----- outputs complete or absent (a full disk, a writer failing half-way) -----


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def _half_written(real):
    """A writer that stops half-way, as one does on a full disk, without raising (SimpleITK does not)."""

    def write(image, path, *args):
        real(image, path, *args)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    return write


def _regzipped_half(real):
    """A writer leaving an intact gzip stream around half the NIfTI payload."""
    import gzip

    def write(image, path, *args):
        real(image, path, *args)
        with gzip.open(path) as f:
            raw = f.read()
        with gzip.open(path, "wb") as f:
            f.write(raw[: 352 + (len(raw) - 352) // 2])

    return write


def _full_disk(real):
    def write(image, path, *args):
        Path(path).write_bytes(b"\0" * 100)
        raise RuntimeError(f"ITK ERROR: ImageFileWriter: Could not write {path}\n: No space left on device")

    return write


@pytest.mark.parametrize("fault", [_half_written, _regzipped_half, _full_disk])
def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, fault):
    old = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    geom = Geometry((6, 5, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    target = write_volume(old, geom, tmp_path / "uncertainty.nii.gz")
    before = target.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", fault(sitk.WriteImage))
    with pytest.raises(InputError, match=r"Cannot write .*uncertainty.nii.gz: .*The previous file is kept\.$"):
        write_volume(old + 1, geom, target)
    assert target.read_bytes() == before
    assert _temporaries(tmp_path) == []


def test_a_set_of_outputs_is_replaced_all_or_none(tmp_path, monkeypatch):
    from napari_sslseg.io import write_volumes

    geom = Geometry((6, 5, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    names = ["labels.nii.gz", "confidence.nii.gz", "uncertainty.nii.gz"]
    write_volumes([(np.zeros((4, 5, 6), np.float32), geom, tmp_path / n) for n in names])
    before = {n: (tmp_path / n).read_bytes() for n in names}
    real = sitk.WriteImage
    monkeypatch.setattr(sitk, "WriteImage", lambda im, p, *a: (_half_written(real) if "uncert" in p else real)(im, p, *a))
    with pytest.raises(InputError, match="uncertainty.nii.gz: it read back incomplete"):
        write_volumes([(np.ones((4, 5, 6), np.float32), geom, tmp_path / n) for n in names])
    assert {n: (tmp_path / n).read_bytes() for n in names} == before  # labels and confidence not replaced either
    assert _temporaries(tmp_path) == []


def test_full_disk_on_a_small_tmpfs(small_disk):
    geom = Geometry((6, 5, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    small = write_volume(np.zeros((4, 5, 6), np.float32), geom, small_disk / "pred.nii.gz")
    before = small.read_bytes()
    noise = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32)  # 1 MB, incompressible
    big = Geometry((64, 64, 64), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(InputError, match=r"Cannot write .*pred.nii.gz: the disk is full\. The previous file is kept\.$"):
        write_volume(noise, big, small_disk / "pred.nii.gz")
    assert small.read_bytes() == before
    assert _temporaries(small_disk) == []


def test_mhd_and_its_data_file_land_together(tmp_path):
    image, geom = read_volume(BRAIN1_LABEL)
    write_volume(image, geom, tmp_path / "copy.mhd", compress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.mhd", "copy.raw"]
    np.testing.assert_array_equal(read_volume(tmp_path / "copy.mhd")[0], image)


# ----- damaged and odd inputs -----


def _nifti_bytes(array, **header):
    """An uncompressed NIfTI-1 of ``array`` with header fields (dim) overwritten, as bytes."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        sitk.WriteImage(sitk.GetImageFromArray(array), f"{d}/x.nii", False)
        raw = bytearray(Path(d, "x.nii").read_bytes())
    if "dim" in header:
        raw[40:56] = np.asarray(header["dim"], "<i2").tobytes()
    return bytes(raw)


def test_gzip_intact_but_payload_cut_short(tmp_path):
    import gzip

    raw = _nifti_bytes(np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10))
    half = tmp_path / "half.nii.gz"
    half.write_bytes(gzip.compress(raw[: 352 + (len(raw) - 352) // 2]))
    with pytest.raises(InputError, match=r"truncated \(its header announces 960 bytes of voxels, it holds 480\)"):
        read_volume(half)
    short = tmp_path / "short.nii"
    short.write_bytes(raw[:-100])
    with pytest.raises(InputError, match="truncated"):
        read_volume(short)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nan_and_inf_in_nifti_refused(tmp_path, suffix):
    array = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    array[1, 2, 3], array[4, 0, 0] = np.nan, -np.inf
    path = tmp_path / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match=r"nan\.nii(\.gz)? holds 2 NaN or infinite voxels; fill or mask them first"):
        read_volume(path)
    sitk.WriteImage(sitk.GetImageFromArray(np.nan_to_num(array, posinf=0, neginf=0)), str(path))
    assert read_volume(path)[0].shape == (5, 6, 7)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_tiny_header_claiming_huge_dimensions(tmp_path, suffix):
    import gzip

    raw = _nifti_bytes(np.zeros((4, 4, 4), np.uint8), dim=[3, 1000, 1000, 1000, 1, 1, 1, 1])
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    with pytest.raises(InputError, match=r"header announces 1000x1000x1000 voxels \(1\.0 GB\), more than a file of .* can hold"):
        read_volume(path)


def test_more_voxels_than_memory_refused_before_reading(tmp_path, monkeypatch):
    from napari_sslseg import io

    monkeypatch.setattr(io, "available_memory", lambda: 1000)
    with pytest.raises(InputError, match=r"header announces .* voxels .* more than the 1000 bytes of memory available"):
        read_volume(COLIN_T1)


def test_dicom_series_with_a_missing_slice_refused(tmp_path):
    array = np.random.default_rng(2).integers(0, 1000, (8, 10, 12))
    _write_dicom_series(tmp_path / "dcm", array, (0.5, 0.5, 1.0), "1.2.826.0.1.3680043.2.1125.400")
    (tmp_path / "dcm" / "400_005.dcm").unlink()
    with pytest.raises(InputError, match="slices 4 and 5 are 2 mm apart, the others 1 mm: a slice is missing"):
        read_volume(tmp_path / "dcm")


def test_itk_warnings_become_one_line(tmp_path, capfd):
    """A series spaced unevenly by 0.5 %: read, with ITK's multi-line C++ warning as one Python warning."""
    folder = tmp_path / "dcm"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, z in enumerate([0, 1, 2.005, 3, 4]):
        sl = sitk.GetImageFromArray(np.full((1, 4, 5), k, np.int16))
        for tag, value in {"0020|000e": "1.2.3.500", "0020|000d": "1.2.3", "0008|0060": "MR", "0020|0013": str(k + 1),
                           "0020|0032": f"0\\0\\{z}", "0020|0037": "1\\0\\0\\0\\1\\0"}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k}.dcm"))
        writer.Execute(sl)
    capfd.readouterr()
    with pytest.warns(UserWarning) as record:
        assert read_volume(folder)[0].shape == (5, 4, 5)
    texts = [str(w.message) for w in record]
    assert texts == [f"{folder}: ITK says: Non uniform sampling or missing slices detected, maximum nonuniformity:0.005"]
    assert "WARNING: In" not in capfd.readouterr().err


def test_grid_differences_named():
    _, geom = read_volume(BRAIN1_LABEL)
    moved = Geometry(geom.size, geom.spacing, (0.0, 0.0, 0.0), geom.direction)
    assert moved.describe() == geom.describe()  # why naming the difference matters
    diffs = moved.differences(geom)
    assert len(diffs) == 1 and diffs[0].startswith("origin (0, 0, 0) vs (")
    flipped = Geometry(geom.size, geom.spacing, geom.origin, tuple(-d for d in geom.direction))
    assert [d.split()[0] for d in flipped.differences(geom)] == ["direction"]
    assert geom.same_grid(geom) and not moved.same_grid(geom)


# ----- output folders -----


def test_output_folder_not_created_by_the_check(tmp_path):
    out = check_writable(tmp_path / "a" / "b")
    assert out == tmp_path / "a" / "b" and not (tmp_path / "a").exists()


def test_unwritable_output_folder_any_user(tmp_path, monkeypatch):
    """Runs as root too (CI): the probe the check writes fails as it does in a read-only folder."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match="Cannot write to the output folder .*out: Permission denied"):
        check_writable(tmp_path / "out")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_read_only_mount_refused_for_root(tmp_path):
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("this container may not mount a tmpfs")
    try:
        with pytest.raises(InputError, match="Cannot write to the output folder .*: Read-only file system"):
            check_writable(ro / "out")
    finally:
        subprocess.run(["umount", str(ro)], check=False)
