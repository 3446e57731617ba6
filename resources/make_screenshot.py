"""Screenshots of the viewer with the training panel, paused mid-training on the Colin27 sample.

Run from the repository root:  xvfb-run -a -s "-screen 0 1600x1000x24" python resources/make_screenshot.py

- screenshot_training.png: a slice between two annotated ones, the prediction's outlines, the
  class legend and the suggested slices with their reasons;
- screenshot_uncertainty.png: an unannotated slice with the uncertainty overlay and the plot.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent


def _wait(app, seconds: float = 1.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def _shoot(viewer, app, name: str) -> None:
    _wait(app)
    out = HERE / name
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")


def main() -> None:
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "error"  # no toasts over the picture
    viewer = napari.Viewer()
    viewer.window.resize(1600, 1000)
    viewer.open_sample("napari-sslseg", "colin27")
    _, panel = viewer.window.add_plugin_dock_widget("napari-sslseg", "Semi-supervised segmentation")
    for name, value in {"time_budget": 0.0, "steps": 300, "preview_every": 40, "eval_every": 10, "threads": 2}.items():
        panel.training.settings[name].value = value
    panel.train()
    app = QApplication.instance()
    # train until several previews have arrived, then pause to take the pictures mid-run
    while panel.trainer.step < 205 and panel.session.running:
        app.processEvents()
        time.sleep(0.02)
    panel.toggle_pause()
    deadline = time.monotonic() + 60
    while not panel.training.status.value.startswith("Paused") and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.02)
    panel.training.plot.redraw(force=True)
    labels = viewer.layers["annotations"]
    viewer.layers.selection.active = labels
    viewer.reset_view()

    # a slice between two annotated ones (50 and 64): the prediction's outlines over the translucent
    # pseudo-labels, the legend, the suggestions (on an annotated slice the outlines follow the labels)
    panel.review.go_to_slice(57)
    viewer.layers["uncertainty"].visible = False
    panel.scroll.verticalScrollBar().setValue(panel.review.box.y())
    _shoot(viewer, app, "screenshot_training.png")

    # an unannotated slice between two annotated ones (64 and 77), with the uncertainty ("u")
    panel.review.go_to_slice(70)
    viewer.layers["uncertainty"].visible = True
    panel.scroll.verticalScrollBar().setValue(panel.training.box.y() + panel.training.plot.y() - 40)
    _shoot(viewer, app, "screenshot_uncertainty.png")
    panel.shutdown()
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
