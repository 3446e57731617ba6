"""Schedules as pure functions of the step."""

from __future__ import annotations

import math


def sigmoid_rampup(step: float, length: float) -> float:
    """exp(-5 (1 - t)^2) for t = step / length in [0, 1] (Laine & Aila 2017; Tarvainen & Valpola 2017)."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def poly_lr(step: int, total: int, power: float = 0.9) -> float:
    """Polynomial decay factor (1 - step/total)^power, as in most medical SSL code."""
    return (1.0 - min(step, total) / max(total, 1)) ** power


def projected_steps(steps: int, time_budget: float, step: int, seconds: float) -> int:
    """Steps a run will take: ``steps``, or under a ``time_budget`` (s) the steps it is projected to
    hold at the speed so far (``step`` steps in ``seconds``), at most ``steps`` and past ``step``."""
    if time_budget <= 0 or step == 0 or seconds <= 0:
        return steps
    projected = int(round(step * time_budget / seconds))
    return int(min(steps, max(step + 1, projected)))


def ema_decay(step: int, decay: float) -> float:
    """EMA decay with warm-up: the true average early on, then ``decay`` (Tarvainen & Valpola 2017)."""
    return min(1.0 - 1.0 / (step + 1), decay)
