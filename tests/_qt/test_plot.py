"""The live plot: the legend sits outside the curves, the Dice axis title on the Dice axis."""

from __future__ import annotations

from napari_sslseg._qt.plot import LivePlot


def test_legend_leaves_the_curves_visible_and_dice_has_its_own_axis(qtbot):
    plot = LivePlot()
    qtbot.addWidget(plot)
    for step in range(1, 200):
        plot.add_losses(step, {"supervised": 1 / step, "consistency": 0.3, "prior": 0.5, "total": 1.5 / step})
        if step % 20 == 0:
            plot.add_dice(step, step / 200)
    plot.redraw(force=True)
    plot.draw()
    renderer = plot.figure.canvas.get_renderer()
    legend = plot.ax_loss.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["supervised", "consistency", "prior", "total", "Dice (annotated)"]
    assert not legend.get_window_extent(renderer).overlaps(plot.ax_loss.get_window_extent(renderer))
    assert plot.ax_dice.yaxis.get_label_position() == "right" and plot.ax_dice.get_ylabel() == "Dice"


def test_uncertainty_is_black_where_it_is_low_and_bright_at_the_edges():
    import numpy as np

    from napari_sslseg._qt.results import uncertainty_limits

    rng = np.random.default_rng(0)
    data = rng.uniform(0, 0.01, (20, 50, 50)).astype(np.float32)  # the noise floor, far from any structure
    data[:, 20:22, :] = 0.5  # an edge
    low, high = uncertainty_limits(data)
    assert np.mean(data < low) >= 0.89 and low < 0.5 <= high
