"""The strategy interface every method implements, and the registry.

One training step, as the loop (``training.Trainer``) runs it::

    ctx = StepContext(step, total_steps, num_classes, x_labelled, y_labelled, x_unlabelled)
    method.prepare(ctx)              # may add student inputs: ctx.views (mixed, strong views)
    student_pass(student, ctx)       # ONE forward pass of the student over every input
    terms = method.unlabelled_loss(ctx)   # {name: (loss, weight)}; may run the teacher, a second network ...
    total = supervised + prior + sum(weight * loss)
    backward; optimiser step over the student and method.joint_parameters()
    method.after_step(ctx)           # EMA update, a discriminator's own step

A method's extra models (an EMA teacher, a discriminator, a second network) are the
``nn.Module`` attributes it holds with parameters: :meth:`Method.extra_models` finds
them by attribute name, and with them the method is moved to the device, saved in
checkpoints and resumed without any code in the loop. Optimisers it holds are saved
and resumed the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from ..config import validate
from ..errors import InputError
from ..schedules import ema_decay

METHODS: dict[str, type["Method"]] = {}


def register(cls: type["Method"]) -> type["Method"]:
    """Class decorator: make a method available by its ``name``."""
    METHODS[cls.name] = cls
    return cls


@dataclass
class StepContext:
    """What one training step hands to the method; the loop fills the logits after :meth:`Method.prepare`."""

    step: int  # current step, from 0
    total_steps: int  # steps of the whole run
    num_classes: int
    x_labelled: torch.Tensor  # (B, C_in, H, W) annotated slices, augmented; channel 0 is the image, the rest the prior's
    y_labelled: torch.Tensor  # (B, 1, H, W) their classes
    x_unlabelled: torch.Tensor | None = None  # (B, C_in, H, W) unannotated slices, augmented
    logits_labelled: torch.Tensor | None = None  # student output on x_labelled
    logits_unlabelled: torch.Tensor | None = None  # student output on x_unlabelled
    views: dict[str, torch.Tensor] = field(default_factory=dict)  # more student inputs, added by prepare(); same H, W
    view_logits: dict[str, torch.Tensor] = field(default_factory=dict)  # student output on each view, and on any input the method forwards itself
    notes: dict[str, Any] = field(default_factory=dict)  # what prepare() leaves for unlabelled_loss() (a mix ratio, a mask)

    @property
    def progress(self) -> float:
        return self.step / max(self.total_steps, 1)


def student_pass(student: nn.Module, ctx: StepContext, unlabelled: bool = True) -> torch.Tensor:
    """The student's one forward pass over the annotated slices, the unannotated ones (unless not
    ``unlabelled``: ``ctx.logits_unlabelled`` then stays None) and the method's views, concatenated
    (one pass is cheaper than several on a CPU); fills the context's logits and returns them whole."""
    parts = [("labelled", ctx.x_labelled)]
    if unlabelled and ctx.x_unlabelled is not None:
        parts.append(("unlabelled", ctx.x_unlabelled))
    parts += list(ctx.views.items())
    logits = student(torch.cat([x for _, x in parts]))
    start = 0
    for name, x in parts:
        out, start = logits[start : start + len(x)], start + len(x)
        if name == "labelled":
            ctx.logits_labelled = out
        elif name == "unlabelled":
            ctx.logits_unlabelled = out
        else:
            ctx.view_logits[name] = out
    return logits


#: The supervised loss of the annotated slices: Dice + cross-entropy over the batch (MONAI), what the
#: loop trains the student with and what methods with a second network train it with.
supervised_loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)


@dataclass
class NoConfig:
    """This method has no options."""


class Method:
    """A semi-supervised method: the unlabelled loss, and any extra model it needs.

    The training loop owns sampling, the supervised loss, the prior term, the optimiser,
    mixed precision, checkpoints and previews; a method only adds its inputs and terms.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""  # one line for ``napari-sslseg methods`` and the panel
    Config: ClassVar[type] = NoConfig
    uses_unlabelled: ClassVar[bool] = True
    #: whether ``unlabelled_loss`` reads ``ctx.logits_unlabelled``, the student's plain pass over the
    #: unannotated slices; False where it trains on its own views only (bcp's mixed slices), so that the
    #: pass is left out of a step that has no other use for it (the loop's prior term off)
    reads_unlabelled_logits: ClassVar[bool] = True

    def __init__(self, student: nn.Module, num_classes: int, config=None):
        self.student = student
        self.num_classes = num_classes
        self.config = config if config is not None else self.Config()

    # ----- the step -----
    def prepare(self, ctx: StepContext) -> None:
        """Before the student's pass: add inputs to ``ctx.views`` (mixed or strongly augmented
        slices); their logits come back in ``ctx.view_logits``. Runs every step."""

    def unlabelled_loss(self, ctx: StepContext) -> dict[str, tuple[torch.Tensor, float]]:
        """Loss terms as {name: (value, weight)}; the loop adds weight * value to the total.

        Called when the step has unannotated slices. Logits of any student pass run here
        belong in ``ctx.view_logits`` (the tests follow the gradient through them).
        """
        return {}

    def after_step(self, ctx: StepContext) -> dict[str, float]:
        """Called after the student's optimiser step (EMA update, discriminator step), also in
        steps without unannotated slices. Returns extra numbers to log."""
        return {}

    def joint_parameters(self) -> list[nn.Parameter]:
        """Parameters of extra models that the loop's optimiser trains with the student, from
        the terms of :meth:`unlabelled_loss` (a co-trained second network)."""
        return []

    # ----- the viewer -----
    def maps(self, x: torch.Tensor, probabilities: torch.Tensor, costly: bool = False) -> dict[str, torch.Tensor]:
        """Named maps for the viewer, each (B, H, W) in [0, 1], from the network input ``x`` and the
        student's ``probabilities``; the ones that cost a network pass only when ``costly``."""
        return {}

    # ----- extra models -----
    def extra_models(self) -> dict[str, nn.Module]:
        """The method's own networks by attribute name (teacher, discriminator, second network)."""
        return {k: m for k, m in vars(self).items()
                if isinstance(m, nn.Module) and m is not self.student and not k.startswith("_")
                and any(True for _ in m.parameters())}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {k: o for k, o in vars(self).items() if isinstance(o, torch.optim.Optimizer) and not k.startswith("_")}

    def to(self, device: torch.device) -> "Method":
        for m in self.extra_models().values():
            m.to(device)
        for opt in self._optimizers().values():  # a resumed optimiser's moments follow their parameters
            for state in opt.state.values():
                for k, v in state.items():
                    if torch.is_tensor(v) and k != "step":
                        state[k] = v.to(device)
        return self

    def state_dict(self) -> dict:
        return {**{k: m.state_dict() for k, m in self.extra_models().items()},
                **{k: o.state_dict() for k, o in self._optimizers().items()}}

    def load_state_dict(self, state: dict) -> None:
        for k, m in {**self.extra_models(), **self._optimizers()}.items():
            if k in state:
                m.load_state_dict(state[k])


# ----- pieces several methods share -----
def ema_teacher(student: nn.Module) -> nn.Module:
    """A copy of ``student`` that follows it by exponential moving average, never by gradient."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, step: int, decay: float) -> None:
    """teacher <- a teacher + (1 - a) student, a = ``decay`` after the warm-up of :func:`ema_decay`;
    buffers are copied."""
    a = ema_decay(step, decay)
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(a).add_(s.detach(), alpha=1 - a)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def on_image(x: torch.Tensor, fn) -> torch.Tensor:
    """``fn`` applied to the image channel only: intensity changes leave the prior's channels as they are."""
    return torch.cat([fn(x[:, :1]), x[:, 1:]], dim=1) if x.shape[1] > 1 else fn(x)


def disagreement(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Total variation between two softmax maps, (B, H, W) in [0, 1]."""
    return 0.5 * (p - q).abs().sum(dim=1)


@torch.no_grad()
def disagreement_map(other: nn.Module, x: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """Where the network ``other`` (an EMA teacher, a second network) disagrees with the student's
    ``probabilities`` on the input ``x``; one more network pass."""
    return disagreement(probabilities, torch.softmax(other(x).float(), dim=1))


#: Soft Dice over the batch, one per class, background included, averaged, with squared
#: probabilities in the denominator (MONAI; the DiceLoss of SSL4MIS, BCP and UniMatch).
_soft_dice = DiceLoss(include_background=True, squared_pred=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)


def masked_dice(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss of ``logits`` against the classes ``target`` (B, H, W) over the pixels where
    ``mask`` ((1 or B), 1, H, W) is 1 (:data:`_soft_dice` of the masked softmax and one-hot target);
    0 where the mask keeps nothing."""
    p = torch.softmax(logits.float(), dim=1)
    onehot = torch.nn.functional.one_hot(target, p.shape[1]).permute(0, 3, 1, 2).float()
    mask = mask.float().expand(len(p), 1, *p.shape[-2:])
    return _soft_dice(p * mask, onehot * mask)


def method_config(name: str, options: dict | None = None):
    """The config of the method ``name`` with ``options`` (a dict of its fields) set, each checked
    for its type and range; unknown methods and options are refused."""
    if name not in METHODS:
        raise InputError(f"Unknown method '{name}'. Known: {', '.join(sorted(METHODS))}.")
    cls = METHODS[name]
    unknown = set(options or {}) - set(cls.Config.__dataclass_fields__)
    if unknown:
        raise InputError(
            f"Method '{name}' has no option {', '.join(sorted(unknown))}; "
            f"its options: {', '.join(cls.Config.__dataclass_fields__) or 'none'}."
        )
    return validate(cls.Config(**(options or {})), prefix=f"{name} option ")


def create_method(name: str, student: nn.Module, num_classes: int, options: dict | None = None) -> Method:
    """Build a registered method by name, its options given as a dict of config fields."""
    return METHODS[name](student, num_classes, method_config(name, options))
