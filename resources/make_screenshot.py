"""Screenshot of the viewer with the training panel during training.

Run from the repository root:  xvfb-run -a python resources/make_screenshot.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

OUT = Path(__file__).resolve().parent / "screenshot_training.png"


def main() -> None:
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "error"  # no toasts over the picture
    viewer = napari.Viewer()
    viewer.window.resize(1600, 1150)
    viewer.open_sample("napari-sslseg", "colin27")
    _, panel = viewer.window.add_plugin_dock_widget("napari-sslseg", "Semi-supervised segmentation")
    for name, value in {"time_budget": 0.0, "steps": 300, "preview_every": 40, "eval_every": 10, "threads": 2}.items():
        panel.training.settings[name].value = value
    panel.train()
    app = QApplication.instance()
    # train until several previews have arrived, then pause to take the picture mid-run
    while panel.trainer.step < 205 and panel.session.running:
        app.processEvents()
        time.sleep(0.02)
    panel.toggle_pause()
    deadline = time.monotonic() + 60
    while not panel.training.status.value.startswith("Paused") and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    panel.training.plot.redraw(force=True)
    if panel.review.suggestions.count():
        panel.review.suggestions.setCurrentRow(0)
    panel.review.go_to_slice(70)  # an unannotated slice between two annotated ones (64 and 77), through the structures
    viewer.layers["uncertainty"].visible = True  # what the u key toggles: show it in the picture
    viewer.layers.selection.active = viewer.layers["pseudo-labels"]
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(OUT), canvas_only=False)
    panel.shutdown()
    viewer.close()
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    sys.exit(main())
