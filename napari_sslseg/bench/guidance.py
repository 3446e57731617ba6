"""Annotation guidance, simulated: the ground truth of a chosen slice stands in for the user.

Three ways to choose the next slice are compared, from the same first slices:
``suggested`` (the engine's top suggestion), ``uniform`` (re-spread n slices evenly)
and ``random`` (any unannotated slice inside the labelled extent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .protocol import evenly_spaced

STRATEGIES = ("suggested", "uniform", "random")

#: ``train_eval(annotated, suggest) -> (mean Dice on the unannotated slices, prediction)``; the prediction
#: needs ``.suggestions`` and ``.slice_scores`` only when ``suggest`` is true (else it may be None), which
#: spares the whole-volume MC-dropout prediction behind them where no suggestion is taken
TrainEval = Callable[[list[int], bool], tuple[float, object]]


@dataclass
class Curve:
    """Dice against the number of annotated slices for one strategy."""

    strategy: str
    points: list[tuple[int, float]] = field(default_factory=list)  # (slices annotated, mean Dice)
    chosen: list[list[int]] = field(default_factory=list)  # the annotated slices at each point
    picks: list[int] = field(default_factory=list)  # slices added one by one, in order (not for uniform)

    def slices_to_reach(self, dice: float) -> int | None:
        """Fewest slices at which this curve's Dice is at least ``dice``; None if never."""
        hits = [n for n, d in self.points if d >= dice]
        return min(hits) if hits else None


def next_slice(strategy: str, annotated: list[int], extent: tuple[int, int], prediction, rng: np.random.Generator) -> int:
    """One more slice to annotate, never one already annotated, always inside the labelled extent."""
    done = set(annotated)
    inside = [s for s in range(extent[0], extent[1] + 1) if s not in done]
    if not inside:
        raise ValueError("Every slice of the labelled extent is annotated already.")
    if strategy == "suggested":
        # the engine's ranking; the simulated user annotates inside the labelled extent (a choice
        # outside it would be an all-background slice), so the best suggestion inside it is taken
        for s in prediction.suggestions:
            if int(s) not in done and extent[0] <= int(s) <= extent[1]:
                return int(s)
        order = np.argsort(-np.nan_to_num(np.asarray(prediction.slice_scores, float), nan=-np.inf))
        return next(int(s) for s in order if int(s) in inside)
    if strategy == "random":
        return int(rng.choice(inside))
    raise ValueError(f"Unknown strategy '{strategy}'.")


def simulate(extent: tuple[int, int], start: int, budget: int, uniform_max: int, train_eval: TrainEval,
             seed: int = 0, strategies=STRATEGIES, progress=None) -> dict[str, Curve]:
    """Run every strategy from the same ``start`` evenly spaced slices, one after the other.

    ``uniform`` goes up to ``uniform_max`` slices, the others up to ``budget``.
    """
    first = evenly_spaced(extent, start)
    first_dice, first_pred = train_eval(first, "suggested" in strategies and budget > start)
    if progress:
        progress()
    return {s: chain(s, extent, first, first_dice, first_pred, budget, uniform_max, train_eval, seed, progress)
            for s in strategies}


def chain(strategy: str, extent: tuple[int, int], first: list[int], first_dice: float, first_pred, budget: int,
          uniform_max: int, train_eval: TrainEval, seed: int = 0, progress=None) -> Curve:
    """One strategy's curve from the first slices (already trained on: ``first_dice``, ``first_pred``).

    The strategies do not depend on each other, so their chains can run side by side.
    """
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    curve = Curve(strategy, [(len(first), first_dice)], [list(first)])
    annotated, pred = list(first), first_pred
    top = uniform_max if strategy == "uniform" else budget
    for n in range(len(first) + 1, top + 1):
        if strategy == "uniform":
            annotated = evenly_spaced(extent, n)
        else:
            curve.picks.append(next_slice(strategy, annotated, extent, pred, rng))
            annotated = sorted(annotated + [curve.picks[-1]])
        dice, pred = train_eval(annotated, strategy == "suggested" and n < top)  # the last round's is never used
        curve.points.append((n, dice))
        curve.chosen.append(list(annotated))
        if progress:
            progress()
    return curve


def trainings_needed(start: int, budget: int, uniform_max: int, strategies=STRATEGIES) -> int:
    return 1 + sum((uniform_max if s == "uniform" else budget) - start for s in strategies)
