"""A small live plot of the loss terms and Dice, drawn with matplotlib in the panel."""

from __future__ import annotations

import time

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

#: Seconds between redraws: training may emit many steps per second.
_REDRAW_EVERY = 0.5


class LivePlot(FigureCanvasQTAgg):
    def __init__(self, parent=None):
        fig = Figure(figsize=(3.2, 2.6), tight_layout=True)
        fig.patch.set_facecolor("#262930")
        super().__init__(fig)
        self.setParent(parent)
        self.setMinimumHeight(200)
        self.ax_loss = fig.add_subplot(111)
        self.ax_dice = self.ax_loss.twinx()
        self._last_draw = 0.0
        self.clear()

    def clear(self) -> None:
        self.losses: dict[str, tuple[list, list]] = {}
        self.dice: tuple[list, list] = ([], [])
        self.redraw(force=True)

    def add_losses(self, step: int, losses: dict) -> None:
        for name, value in losses.items():
            xs, ys = self.losses.setdefault(name, ([], []))
            xs.append(step)
            ys.append(value)
        self.redraw()

    def add_dice(self, step: int, dice: float) -> None:
        self.dice[0].append(step)
        self.dice[1].append(dice)
        self.redraw()

    def redraw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < _REDRAW_EVERY:
            return
        self._last_draw = now
        for ax in (self.ax_loss, self.ax_dice):
            ax.clear()
            ax.set_facecolor("#262930")
            ax.tick_params(colors="#d0d0d0", labelsize=7)
        for name, (xs, ys) in self.losses.items():
            self.ax_loss.plot(xs, ys, lw=1, label=name)
        if self.dice[0]:
            self.ax_dice.plot(*self.dice, "w.-", lw=1.5, label="Dice (annotated)")
            self.ax_dice.set_ylim(0, 1)
        self.ax_loss.set_xlabel("step", color="#d0d0d0", fontsize=7)
        self.ax_loss.set_ylabel("loss", color="#d0d0d0", fontsize=7)
        self.ax_dice.yaxis.set_label_position("right")  # clear() puts a twin's title back on the left
        self.ax_dice.set_ylabel("Dice", color="#d0d0d0", fontsize=7)
        handles = self.ax_loss.get_legend_handles_labels()
        extra = self.ax_dice.get_legend_handles_labels()
        if handles[0] or extra[0]:
            # above the axes, in columns: a legend inside would hide the curves it names
            self.ax_loss.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=6, loc="lower left", ncol=3,
                                bbox_to_anchor=(0.0, 1.02, 1.0, 0.1), mode="expand", borderaxespad=0.0, frameon=False,
                                labelcolor="#d0d0d0")
        self.draw_idle()
