"""The compute core must import without Qt, napari or magicgui."""

import subprocess
import sys

CORE = [
    "napari_sslseg",
    "napari_sslseg.io",
    "napari_sslseg.atomic",
    "napari_sslseg.data",
    "napari_sslseg.networks",
    "napari_sslseg.methods",
    "napari_sslseg.training",
    "napari_sslseg.inference",
    "napari_sslseg.checkpoint",
    "napari_sslseg.cli",
]


def test_core_imports_no_qt():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE)
        + "from napari_sslseg.cli import build_parser; build_parser()\n"
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        + "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'superqt', 'vispy'))\n"
        + "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported GUI modules: {out.stdout}"


def test_prediction_loads_a_model_without_the_training_loop(tiny_volume, tmp_path):
    """Predicting with a saved model (the predict command, a study's worker) takes the model from
    the checkpoint module: the training loop is never imported."""
    import SimpleITK as sitk

    from napari_sslseg.config import TrainConfig
    from napari_sslseg.io import Geometry, write_volume
    from napari_sslseg.training import Trainer

    trainer = Trainer([tiny_volume], "mean_teacher",
                      TrainConfig(steps=1, patch=32, width=4, batch_labelled=1, batch_unlabelled=1, eval_every=0))
    list(trainer.run())
    model = trainer.save(tmp_path / "model.pt")
    image = write_volume(tiny_volume.image, Geometry.of(sitk.GetImageFromArray(tiny_volume.image)), tmp_path / "image.nii.gz")
    out = tmp_path / "prediction"
    code = (
        "import sys\n"
        "from napari_sslseg.cli import main\n"
        "from napari_sslseg.study import _model\n"
        f"assert main(['predict', {str(model)!r}, {str(image)!r}, '--out', {str(out)!r}, '--mc-passes', '0']) == 0\n"
        f"assert _model({str(model)!r}, 'cpu').num_classes == 2\n"
        "print('imported:', *(m for m in sys.modules if m.startswith('napari_sslseg.training')))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (out / "labels.nii.gz").exists()
    assert run.stdout.strip().splitlines()[-1] == "imported:", f"prediction imported the training loop: {run.stdout}"
