"""Cross pseudo supervision (Chen et al., CVPR 2021), the seed's co-training row.

Two networks of the same architecture, initialised differently, learn from the annotated
slices and, on the unannotated ones, from each other's hard pseudo-labels (argmax):
``CE(f1(u), argmax f2(u)) + CE(f2(u), argmax f1(u))``. The second network is this
method's extra model; the loop's optimiser trains it with the student
(:meth:`Method.joint_parameters`), from its own supervised loss and its half of the
cross term. The student alone predicts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import setting
from ..schedules import sigmoid_rampup
from ..uncertainty import hard_labels
from .base import Method, StepContext, disagreement_map, register, supervised_loss


@dataclass
class CPSConfig:
    weight: float = setting(0.1, 0.0)  # final weight of the cross term (SSL4MIS's 2D medical CPS: 0.1, sigmoid ramp-up; the paper's 1.5 is for PASCAL VOC)
    rampup: float = setting(0.4, 0.0, 1.0)  # fraction of the run over which the weight ramps up (sigmoid)


def reinitialised(net: nn.Module) -> nn.Module:
    """A copy of ``net`` with every layer's parameters drawn anew (CPS's two differently initialised networks)."""
    other = copy.deepcopy(net)
    for m in other.modules():
        if m is not other and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return other


@register
class CPS(Method):
    name = "cps"
    summary = "Cross pseudo supervision (Chen et al. 2021): two networks teach each other with hard pseudo-labels."
    Config = CPSConfig

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        super().__init__(student, num_classes, config)
        self.second = reinitialised(student)

    def joint_parameters(self) -> list[nn.Parameter]:
        return list(self.second.parameters())

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        self.second.train(self.student.training)
        logits = self.second(torch.cat([ctx.x_labelled, ctx.x_unlabelled]))
        second_l, second_u = logits[: len(ctx.x_labelled)], logits[len(ctx.x_labelled):]
        first_u = ctx.logits_unlabelled.float()
        cross = (F.cross_entropy(first_u, hard_labels(second_u.detach()))
                 + F.cross_entropy(second_u.float(), hard_labels(first_u.detach())))
        weight = self.config.weight * sigmoid_rampup(ctx.step, self.config.rampup * ctx.total_steps)
        return {
            "cross_pseudo_supervision": (cross, weight),
            "second_network_supervised": (supervised_loss(second_l.float(), ctx.y_labelled), 1.0),
        }

    def maps(self, x: torch.Tensor, probabilities: torch.Tensor, costly: bool = False) -> dict[str, torch.Tensor]:
        """Where the two networks disagree (one more network pass: only when ``costly``)."""
        return {"cotraining_disagreement": disagreement_map(self.second, x, probabilities)} if costly else {}
