"""Training configuration: every field has a default, a unit, a reason and its allowed range.

The range of a field sits beside it (:func:`setting`); :func:`validate` checks a config
against them. :class:`TrainConfig` and :class:`PredictConfig` are frozen and validate
themselves when built, so the command line, the panel and the Python API all hold checked
values; a changed copy is ``dataclasses.replace(config, field=value)``, checked again.
The comment beside each field is its help (:func:`field_help`), for the command line's flags.
"""

from __future__ import annotations

import ast
import functools
import inspect
import io
import math
import textwrap
import tokenize
import typing
from dataclasses import asdict, dataclass, field, fields

from .errors import InputError

#: The method of a training that names none (command line, panel, Python API): the best per minute
#: of training in the benchmark (BENCHMARKS.md, fourth round): on the whole Colin27 head, idle 2-core
#: machine, mean Dice after 30 / 60 / 120 s, k=4: bcp 0.734 / 0.736 / 0.719, mean_teacher - / 0.679 /
#: 0.716, supervised - / 0.712 / 0.694; k=8: bcp 0.815 / 0.824 / 0.835, mean_teacher 0.818 / 0.822 /
#: 0.811, supervised 0.824 / 0.803 / 0.804; the best row of every method's step table (k=4, two seeds).
DEFAULT_METHOD = "bcp"

#: Where dropout sits in the U-Net (``networks.build_unet``).
DROPOUT_SCOPES = ("last", "all")


def setting(default, low=None, high=None, *, above=None, below=None, multiple=None, choices=None):
    """A config field with its allowed values: ``low <= v <= high``, ``above < v < below``,
    ``v % multiple == 0``, or one of ``choices``; checked by :func:`validate`."""
    limits = {k: v for k, v in dict(low=low, high=high, above=above, below=below, multiple=multiple, choices=choices).items()
              if v is not None}
    return field(default=default, metadata={"limits": limits})


class Settings:
    """What every config dataclass here shares: checked when built (:func:`validate`), and read
    back from a saved dict, leaving out names this version does not know."""

    def __post_init__(self):
        validate(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class TrainConfig(Settings):
    """Settings of the training loop shared by every method."""

    steps: int = setting(2000, 1)  # optimiser steps in all; a step is one labelled + one unlabelled batch
    batch_labelled: int = setting(4, 1)  # annotated slices per step
    batch_unlabelled: int = setting(4, 0)  # unannotated slices per step (methods that use them)
    patch: int = setting(96, 32, multiple=16)  # side of the square crop trained on, pixels (a multiple of 16; 16 leaves the U-Net's last level 1 pixel)
    lr: float = setting(5e-3, above=0, high=1.0)  # AdamW learning rate, decays polynomially (power 0.9) to 0; best of 2e-3..1e-2 on the Colin27 crop
    weight_decay: float = setting(1e-4, 0.0)  # AdamW weight decay
    width: int = setting(16, 1)  # U-Net features at the first level
    dropout: float = setting(0.1, 0.0, below=1.0)  # channel dropout rate, also what MC-dropout samples
    dropout_scope: str = setting("last", choices=DROPOUT_SCOPES)  # "last": dropout before the classifier only (learns faster); "all": after every convolution
    augment: bool = True  # flips, small rotations and scaling, intensity jitter, noise (MONAI)
    seed: int = setting(0, 0, 2**32 - 2)  # seeds torch, numpy and the transforms; CPU runs repeat exactly
    device: str = "auto"  # "auto" = CUDA, else MPS, else CPU; or a torch device string
    amp: bool = True  # mixed precision on CUDA (ignored elsewhere)
    threads: int = setting(0, 0)  # torch CPU threads; 0 = torch's default
    eval_every: int = setting(100, 0)  # steps between Dice on the annotated slices; 0 = at the end only
    preview_every: int = setting(0, 0)  # steps between previews of predictions; 0 = none
    preview_mc_passes: int = setting(8, 0)  # MC-dropout passes (last block: cheap) behind the previews' uncertainty and suggestions; 0 = entropy
    time_budget: float = setting(0.0, 0.0)  # seconds of training (previews and evaluations not counted); 0 = train for ``steps``; else ``steps`` is only a ceiling
    foreground_crops: bool = True  # centre patches on each painted class in turn (and on background), so that small structures in large slices are seen (MONAI RandCropByLabelClassesd)
    context: int = setting(0, 0, 4)  # neighbouring slices on each side given to the network as extra image channels (2.5D); 0 = the slice alone
    prior_input: bool = True  # the network also sees the prior's class probabilities as input channels, and learns to correct them (on annotated slices from the other slices' prior)
    prior_weight: float = setting(0.3, 0.0)  # weight of the propagation prior's soft pseudo-labels on unannotated slices (napari_sslseg.prior); 0 = off
    prior_decay: float = setting(0.5, 0.0, 1.0)  # the prior's weight falls linearly to this fraction of itself over the run, as the network's own predictions take over
    checkpoint_every: int = setting(0, 0)  # steps between checkpoints written during the run (the Trainer's ``checkpoint``); 0 = none by steps
    checkpoint_seconds: float = setting(300.0, 0.0)  # also one when this many seconds passed since the last, so an interrupted run loses at most these; 0 = none by time

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PredictConfig(Settings):
    """Settings of a whole-volume prediction (``inference.predict_volume``)."""

    mc_passes: int = setting(8, 0)  # MC-dropout passes behind the uncertainty; 0 = the prediction's entropy
    batch_size: int = setting(8, 1)  # slices per forward pass
    mc_scope: str = setting("last", choices=DROPOUT_SCOPES)  # which dropout the passes sample: the last block's (one forward pass in all) or every layer's
    keep_fraction: float = setting(0.1, 0.0, 1.0)  # per class, 3D pieces under this fraction of its largest are removed; 0 = keep all


def _describe(limits: dict, kind: type) -> str:
    if "choices" in limits:
        return "one of " + ", ".join(map(str, limits["choices"]))
    ops = {"low": ">=", "above": ">", "high": "<=", "below": "<"}
    parts = [f"{op} {limits[k]:g}" if isinstance(limits[k], float) else f"{op} {limits[k]}"
             for k, op in ops.items() if k in limits]
    if "multiple" in limits:
        parts.append(f"a multiple of {limits['multiple']}")
    what = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}[kind]
    return what + (" " + " and ".join(parts) if parts else "")


def _check(value, kind: type, limits: dict):
    """``value`` as ``kind`` if it is allowed, else None."""
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool) or (kind is str) != isinstance(value, str):
        return None
    if kind in (int, float):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or (kind is int and value != int(value)):
            return None
        value = kind(value)
    ok = (
        value in limits.get("choices", (value,))
        and limits.get("low", value) <= value <= limits.get("high", value)
        and ("above" not in limits or value > limits["above"])
        and ("below" not in limits or value < limits["below"])
        and ("multiple" not in limits or value % limits["multiple"] == 0)
    )
    return value if ok else None


def validate(config, prefix: str = ""):
    """Check every field of a config dataclass for its type and range; return the config, numbers
    converted to their field's type (an int for a float field, 2.0 for an int one), in place (also
    in a frozen config: its ``__post_init__`` calls this before anyone holds it).

    Raises:
        InputError: one line per bad value, naming the field, the value and what is allowed.
    """
    hints = typing.get_type_hints(type(config))
    bad = []
    for f in fields(config):
        kind, limits, value = hints[f.name], f.metadata.get("limits", {}), getattr(config, f.name)
        if kind not in (int, float, bool, str):
            continue
        checked = _check(value, kind, limits)
        if checked is None:
            bad.append(f"{prefix}{f.name} = {value!r} is not allowed: it takes {_describe(limits, kind)}.")
        else:
            object.__setattr__(config, f.name, checked)
    if bad:
        raise InputError("\n".join(bad))
    return config


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The comment beside each field of the dataclass ``cls`` in its source, by field name ("" for a
    field without one, and for every field where the source cannot be read)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {f.name: "" for f in fields(cls)}
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    lines = {node.target.id: node.end_lineno for node in ast.parse(source).body[0].body
             if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}
    return {f.name: comments.get(lines.get(f.name), "") for f in fields(cls)}
