"""Volumes in and out: geometry kept, DICOM series, clear refusals."""

from __future__ import annotations

import os

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
