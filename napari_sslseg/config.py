"""Training configuration: every field has a default, a unit and a reason."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    """Settings of the training loop shared by every method."""

    steps: int = 2000  # optimiser steps in all; a step is one labelled + one unlabelled batch
    batch_labelled: int = 4  # annotated slices per step
    batch_unlabelled: int = 4  # unannotated slices per step (methods that use them)
    patch: int = 96  # side of the square crop trained on, pixels (a multiple of 16)
    lr: float = 5e-3  # AdamW learning rate, decays polynomially (power 0.9) to 0; best of 2e-3..1e-2 on the Colin27 crop
    weight_decay: float = 1e-4  # AdamW weight decay
    width: int = 16  # U-Net features at the first level
    dropout: float = 0.1  # channel dropout rate, also what MC-dropout samples
    dropout_scope: str = "last"  # "last": dropout before the classifier only (learns faster); "all": after every convolution
    augment: bool = True  # flips, small rotations and scaling, intensity jitter, noise (MONAI)
    seed: int = 0  # seeds torch, numpy and the transforms; CPU runs repeat exactly
    device: str = "auto"  # "auto" = CUDA, else MPS, else CPU; or a torch device string
    amp: bool = True  # mixed precision on CUDA (ignored elsewhere)
    threads: int = 0  # torch CPU threads; 0 = torch's default
    eval_every: int = 100  # steps between Dice on the annotated slices
    preview_every: int = 0  # steps between previews of predictions; 0 = none
    preview_mc_passes: int = 8  # MC-dropout passes (last block: cheap) behind the previews' uncertainty and suggestions; 0 = entropy
    time_budget: float = 0.0  # seconds of training (previews and evaluations not counted); 0 = train for ``steps``; else ``steps`` is only a ceiling
    foreground_crops: bool = True  # centre patches on each painted class in turn (and on background), so that small structures in large slices are seen (MONAI RandCropByLabelClassesd)
    prior_input: bool = True  # the network also sees the prior's class probabilities as input channels, and learns to correct them (on annotated slices from the other slices' prior)
    prior_weight: float = 0.3  # weight of the propagation prior's soft pseudo-labels on unannotated slices (napari_sslseg.prior); 0 = off
    prior_decay: float = 0.5  # the prior's weight falls linearly to this fraction of itself over the run, as the network's own predictions take over

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def dataclass_from_dict(cls, d: dict):
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (d or {}).items() if k in names})
