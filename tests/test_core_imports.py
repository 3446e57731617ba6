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
