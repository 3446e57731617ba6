"""The plugin's reader, writer, sample data and manifest (no viewer needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from napari_sslseg._reader import META_KEY, get_reader, read_layer
from napari_sslseg._sample_data import ANNOTATED_SLICES, colin27
from napari_sslseg._writer import write_image, write_labels
from napari_sslseg.io import Geometry, read_volume

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "napari_sslseg" / "samples"
BRAIN1 = ROOT / "tests" / "data" / "brain1_crop_image.nrrd"
BRAIN1_LABEL = ROOT / "tests" / "data" / "brain1_crop_label.nrrd"


def test_manifest_at_root_is_the_installed_one():
    from npe2 import PluginManifest

    link = ROOT / "napari_sslseg" / "napari.yaml"
    assert link.is_symlink() and link.resolve() == (ROOT / "napari.yaml").resolve()
    manifest = PluginManifest.from_distribution("napari-sslseg")
    manifest.validate_imports()
    assert {w.display_name for w in manifest.contributions.widgets} == {"Semi-supervised segmentation"}
    assert manifest.contributions.readers[0].accepts_directories


def test_reader_claims_only_volumes(tmp_path):
    assert get_reader(str(tmp_path / "a.tif")) is None
    assert get_reader(str(SAMPLES / "colin27_deep_t1.nii.gz")) is not None
    assert get_reader(str(tmp_path)) is not None  # a DICOM folder


def test_flipped_nifti_is_reoriented_and_written_back_exactly(tmp_path):
    source = SAMPLES / "colin27_deep_labels.nii.gz"
    data, kwargs, kind = read_layer(source)
    meta = kwargs["metadata"][META_KEY]
    assert kind == "labels" and meta["reoriented"] and meta["source_orientation"] == "RAS"
    original, geometry = read_volume(source)
    # diag(-1, -1, 1): y and x are flipped for display, z is not
    np.testing.assert_array_equal(data, original[:, ::-1, ::-1])
    assert kwargs["scale"] == geometry.spacing_zyx
    out = write_labels(str(tmp_path / "labels.nii.gz"), data, kwargs)[0]
    back, back_geometry = read_volume(out)
    assert back_geometry.same_grid(geometry)
    np.testing.assert_array_equal(back, original)


def test_anisotropic_nrrd_round_trip(tmp_path):
    data, kwargs, kind = read_layer(BRAIN1)
    original, geometry = read_volume(BRAIN1)
    assert kind == "image"
    np.testing.assert_allclose(kwargs["scale"], geometry.spacing_zyx)
    assert kwargs["scale"][0] > 5 * kwargs["scale"][2]  # 6.5 mm slices, 0.78 mm pixels
    for suffix in (".nrrd", ".mha"):
        out = write_image(str(tmp_path / f"image{suffix}"), data, kwargs)[0]
        back, back_geometry = read_volume(out)
        assert back_geometry.same_grid(geometry)
        np.testing.assert_array_equal(back, original)
    assert read_layer(BRAIN1_LABEL)[2] == "labels"


def _image(direction) -> sitk.Image:
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) * 7  # many values: an image
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 1.0, 3.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection(direction)
    return image


def test_permuted_axes_are_reoriented_and_restored(tmp_path):
    path = tmp_path / "permuted.nrrd"
    sitk.WriteImage(_image((0, 1, 0, -1, 0, 0, 0, 0, 1)), str(path))
    data, kwargs, _ = read_layer(path)
    shown = Geometry.from_dict(kwargs["metadata"][META_KEY]["shown_geometry"])
    np.testing.assert_allclose(shown.direction, np.eye(3).ravel())
    assert tuple(kwargs["scale"]) == shown.spacing_zyx
    out = write_image(str(tmp_path / "back.nii.gz"), data, kwargs)[0]
    back, geometry = read_volume(out)
    original, source = read_volume(path)
    assert geometry.same_grid(source)
    np.testing.assert_array_equal(back, original)


def test_oblique_grid_warns_and_keeps_voxel_order(tmp_path):
    c, s = np.cos(0.3), np.sin(0.3)
    path = tmp_path / "oblique.mha"
    sitk.WriteImage(_image((c, -s, 0, s, c, 0, 0, 0, 1)), str(path))
    with pytest.warns(UserWarning, match="oblique"):
        data, kwargs, _ = read_layer(path)
    original, source = read_volume(path)
    np.testing.assert_array_equal(data, original)
    back, geometry = read_volume(write_image(str(tmp_path / "back.mha"), data, kwargs)[0])
    assert geometry.same_grid(source)


def test_layer_made_in_napari_is_written_from_scale_and_translate(tmp_path):
    labels = np.zeros((3, 4, 5), np.int32)
    labels[1, 2, 3] = 2
    out = write_labels(str(tmp_path / "new.nii.gz"), labels, {"scale": (2.0, 1.0, 0.5), "translate": (1, 2, 3), "metadata": {}})[0]
    back, geometry = read_volume(out)
    assert geometry.spacing_zyx == (2.0, 1.0, 0.5) and geometry.origin_zyx == (1.0, 2.0, 3.0)
    np.testing.assert_array_equal(back, labels)


def test_sample_keeps_four_annotated_slices():
    (image, image_kwargs, image_kind), (labels, labels_kwargs, labels_kind) = colin27()
    assert (image_kind, labels_kind) == ("image", "labels")
    assert image.shape == labels.shape == (181, 217, 181)  # the whole head, uncropped
    assert np.flatnonzero(labels.any(axis=(1, 2))).tolist() == list(ANNOTATED_SLICES)
    assert labels_kwargs["metadata"]["class_names"][1] == "caudate"
    assert image_kwargs["translate"] == labels_kwargs["translate"]


def test_file_open_sample_shows_an_annotated_slice(make_napari_viewer):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    get_app_model().commands.execute_command("napari-sslseg.colin27").result()  # File > Open Sample's action
    labels = viewer.layers["annotations"]
    z = int(round(labels.world_to_data(viewer.dims.point)[0]))
    assert z in ANNOTATED_SLICES and labels.data[z].any()
    assert viewer.layers["colin27 T1"].data.shape[0] // 2 not in ANNOTATED_SLICES  # napari alone shows the middle


def _activated_afresh():
    """The plugin as napari meets it after an install: not yet activated (tests share one plugin manager)."""
    from npe2 import PluginManager

    PluginManager.instance().deactivate("napari-sslseg")


def test_file_open_and_save_keep_spacing_with_the_default_choices(make_napari_viewer, tmp_path, monkeypatch):
    from napari.settings import get_settings

    viewer = make_napari_viewer()
    _activated_afresh()
    get_settings().plugins.extension2reader = {"*.nhdr": "napari"}  # a choice the user made stays
    viewer.open_sample("napari-sslseg", "colin27")  # any use of the plugin activates it
    assert get_settings().plugins.extension2reader["*.nrrd"] == "napari-sslseg"
    assert get_settings().plugins.extension2reader["*.nhdr"] == "napari"
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)

    # File > Open: the dialog's path, with no plugin named
    viewer.window._qt_viewer._qt_open([str(BRAIN1)], stack=False)
    image = viewer.layers["brain1_crop_image"]
    original, geometry = read_volume(BRAIN1)
    np.testing.assert_allclose(image.scale, geometry.spacing_zyx)
    assert image.scale[0] > 6 and META_KEY in image.metadata  # 6.5 mm slices

    # File > Save Selected Layers: the dialog's first format, a name typed with its extension
    from qtpy.QtWidgets import QFileDialog

    for suffix in (".nii.gz", ".nrrd", ".mha"):
        viewer.layers.selection.active = image
        path = tmp_path / f"saved{suffix}"

        def dialog(*args, filter="", path=path, **kwargs):
            return str(path), filter.split(";;")[0]  # the user accepts the format offered first

        monkeypatch.setattr(QFileDialog, "getSaveFileName", dialog)
        viewer.window._qt_viewer._save_layers_dialog(selected=True)
        back, back_geometry = read_volume(path)
        assert back_geometry.same_grid(geometry)
        np.testing.assert_array_equal(back, original)

        viewer.open(str(path), plugin=None)  # and reopened the way File > Open does
        np.testing.assert_allclose(viewer.layers[-1].scale, image.scale)

    # a labels layer too, saved without naming a plugin
    labels = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="labels", scale=image.scale,
                               translate=image.translate, metadata=dict(image.metadata))
    viewer.layers.selection.active = labels
    written = viewer.layers.save(str(tmp_path / "labels.nii.gz"), selected=True)
    assert written == [str(tmp_path / "labels.nii.gz")]
    assert read_volume(written[0])[1].same_grid(geometry)


def test_the_first_file_open_of_a_fresh_install_reads_with_the_plugin_when_the_user_presses_ok(
        make_napari_viewer, monkeypatch):
    """Before the plugin's first use napari asks which reader to use (several match, none is saved);
    the choice it preselects is the plugin's, so OK keeps the spacing."""
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog
    from napari.settings import get_settings
    from npe2 import PluginManager

    viewer = make_napari_viewer()
    _activated_afresh()
    get_settings().plugins.extension2reader = {}
    offered = []

    def press_ok(dialog):
        offered.append([b.text() for b in dialog.reader_btn_group.buttons()])
        return 1  # accepted, with the preselected reader

    monkeypatch.setattr(QtReaderDialog, "exec_", press_ok)
    viewer.window._qt_viewer._qt_open([str(BRAIN1)], stack=False)  # File > Open
    ours = PluginManager.instance().get_manifest("napari-sslseg").display_name
    assert len(offered) == 1 and len(offered[0]) > 1 and offered[0][0] == ours  # asked, ours preselected
    image = viewer.layers["brain1_crop_image"]
    np.testing.assert_allclose(image.scale, read_volume(BRAIN1)[1].spacing_zyx)
    assert META_KEY in image.metadata
