"""Self-supervised pre-training of the segmentation U-Net on the user's own volumes.

No label is read: every slice of every volume (annotated or not) is material. Two objectives:

- ``contrastive`` (the default; global contrastive pre-training, Chaitanya et al. 2020, with the
  SimCLR loss of Chen et al. 2020): two augmented views of the same slice region are pulled
  together and away from the other slices' views, through a projection head on the encoder's
  bottleneck; only the encoder learns.
- ``reconstruction`` (masked-image modelling with denoising, as Models Genesis, Zhou et al. 2019,
  and masked autoencoders, He et al. 2022, do it): square blocks of a crop are hidden and the rest
  is noised; the whole U-Net, encoder and decoder, learns to paint the clean crop back through a
  1-channel head.

On the whole Colin27 head (4 annotated slices, ``supervised`` fine-tuned 300 steps, 3 seeds) 600
contrastive steps raised the mean Dice from 0.669 to 0.692 and 600 reconstruction steps to 0.687;
the contrastive steps cost 2/3 of the reconstruction ones (README, Pre-training).

The file written (:func:`save`) holds the trained weights without their head; :func:`start_from`
copies them into a training's network (``Trainer(..., init=PATH)``): the image channels of the
first convolution are copied, the prior's input channels start at zero, the classifier is fresh.

    pre = Pretrainer([Volume(image, spacing)], PretrainConfig(steps=500))
    for event in pre.run():
        ...
    save(pre.state(), "pretrained/")
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import atomic
from .config import DROPOUT_SCOPES, Settings, setting
from .data import Volume, resample_slice, target_size
from .devices import pick_device
from .errors import CheckpointError, InputError
from .events import CheckpointEvent, FinishedEvent, StepEvent, Stop
from .networks import build_unet
from .schedules import poly_lr, projected_steps

FORMAT = "napari-sslseg/pretrained"
VERSION = 1
FILENAME = "pretrained.pt"
OBJECTIVES = ("contrastive", "reconstruction")

#: The layers of the U-Net's encoder (MONAI BasicUNet), the part the contrastive objective trains.
ENCODER = ("conv_0", "down_1", "down_2", "down_3", "down_4")
#: The first convolution's weight: its input channels are the image's, then (in a training) the prior's.
INPUT_WEIGHT = "conv_0.conv_0.conv.weight"
#: The head, never copied: the training's classifier has one output per class.
HEAD = "final_conv."


@dataclass(frozen=True)
class PretrainConfig(Settings):
    """Settings of a self-supervised pre-training run; frozen and checked when built, as TrainConfig."""

    objective: str = setting("contrastive", choices=OBJECTIVES)  # what the network learns without labels (module docstring); contrastive gained more per step, at 2/3 of the cost (README, Pre-training)
    steps: int = setting(600, 1)  # optimiser steps in all (what was measured, README); with ``time_budget`` only a ceiling
    time_budget: float = setting(0.0, 0.0)  # seconds of training; 0 = train for ``steps``
    batch: int = setting(8, 2)  # slices per step (the contrastive loss sees 2 views of each)
    patch: int = setting(96, 32, multiple=16)  # side of the square crops, pixels (as TrainConfig.patch)
    lr: float = setting(2e-3, above=0, high=1.0)  # AdamW learning rate, decays polynomially (power 0.9) to 0
    weight_decay: float = setting(1e-4, 0.0)  # AdamW weight decay
    width: int = setting(16, 1)  # U-Net features at the first level; the training must use the same
    dropout: float = setting(0.1, 0.0, below=1.0)  # channel dropout rate while pre-training (as the training's)
    dropout_scope: str = setting("last", choices=DROPOUT_SCOPES)  # where dropout sits (as TrainConfig.dropout_scope)
    context: int = setting(0, 0, 4)  # neighbouring slices on each side as extra image channels; the training must use the same
    mask_ratio: float = setting(0.5, 0.0, below=1.0)  # reconstruction: fraction of blocks hidden (MAE hides 75% of ViT patches; a CNN's 3x3 receptive field needs more context left)
    mask_block: int = setting(8, 1)  # reconstruction: side of a hidden block, pixels (the U-Net's third level sees 8x8)
    noise: float = setting(0.1, 0.0)  # std of the Gaussian noise on the visible pixels (denoising), in the normalised image's units
    temperature: float = setting(0.1, above=0.0)  # contrastive: NT-Xent temperature (Chaitanya et al. 2020 use 0.1)
    projection: int = setting(128, 1)  # contrastive: output size of the projection head (SimCLR's 128)
    seed: int = setting(0, 0, 2**32 - 2)  # seeds torch and numpy; CPU runs repeat exactly
    device: str = "auto"  # "auto" = CUDA, else MPS, else CPU; or a torch device string
    threads: int = setting(0, 0)  # torch CPU threads; 0 = torch's default



def image_channels(config) -> int:
    """Image channels of the network input: the slice and ``context`` neighbours on each side."""
    return 1 + 2 * int(config.context)


class _Projection(nn.Module):
    """SimCLR's projection head on the globally pooled bottleneck: linear, ReLU, linear."""

    def __init__(self, features: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, features), nn.ReLU(inplace=True), nn.Linear(features, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.mean(dim=(-2, -1)))


def encode(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The bottleneck features of a BasicUNet (its encoder's last level)."""
    for name in ENCODER:
        x = getattr(net, name)(x)
    return x


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy: view i of one batch is the positive
    of view i of the other; the 2B - 2 other views are its negatives (Chen et al. 2020)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.t() / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def block_mask(n: int, size: int, block: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """(n, 1, size, size) with 1 where a hidden block lies: each ``block`` x ``block`` cell is hidden
    with probability ``ratio``."""
    cells = math.ceil(size / block)
    m = (torch.rand((n, 1, cells, cells), generator=generator) < ratio).float()
    return m.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[..., :size, :size]


class Pretrainer:
    """Self-supervised training of the segmentation U-Net on the slices of ``volumes``.

    Args:
        volumes: the volumes; labels, where they have any, are not read. Slices are brought to the
            first volume's in-plane spacing, as a training does.
        config: the settings.
    """

    def __init__(self, volumes: Sequence[Volume], config: PretrainConfig | None = None):
        self.config = config = config or PretrainConfig()
        if not volumes:
            raise InputError("No volume to pre-train on.")
        self.volumes = list(volumes)
        axes = {v.axis for v in self.volumes}
        if len(axes) > 1:
            raise InputError(f"The volumes are sliced along different axes ({sorted(axes)}); give one axis.")
        self.target_spacing = self.volumes[0].inplane_spacing
        self.items = [(i, s) for i, v in enumerate(self.volumes) for s in range(v.num_slices)]
        self.device = pick_device(config.device)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.model = build_unet(1, config.width, config.dropout, in_channels=image_channels(config),
                                dropout_scope=config.dropout_scope).to(self.device)
        params = list(self.model.parameters())
        self.projection = None
        if config.objective == "contrastive":
            self.projection = _Projection(8 * config.width, config.projection).to(self.device)
            params = [p for name in ENCODER for p in getattr(self.model, name).parameters()]
            params += list(self.projection.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.step = 0
        self.train_seconds = 0.0
        self.losses: list[float] = []  # the loss of every step, for the record
        self._stop = False

    # ----- sampling -----
    def _slice(self, item: tuple[int, int]) -> torch.Tensor:
        v = self.volumes[item[0]]
        x = torch.from_numpy(v.image_stack(item[1], self.config.context))
        return resample_slice(x, target_size(v, self.target_spacing))

    def _region(self, side: int) -> torch.Tensor:
        """A (C, side, side) crop of a random slice, padded with the slice's lowest value where the
        slice is smaller; a crop of air (nearly constant) is drawn again, up to 8 times."""
        for _ in range(8):
            x = self._slice(self.items[int(self.rng.integers(len(self.items)))])
            h, w = x.shape[-2:]
            ph, pw = max(0, side - h), max(0, side - w)
            if ph or pw:
                x = F.pad(x[None], (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=float(x.min()))[0]
                h, w = x.shape[-2:]
            top, left = int(self.rng.integers(h - side + 1)), int(self.rng.integers(w - side + 1))
            crop = x[:, top:top + side, left:left + side]
            if float(crop[0].std()) > 0.2:
                return crop
        return crop

    def _view(self, region: torch.Tensor) -> torch.Tensor:
        """A random view of a region for the contrastive loss: a crop of 50-100% of its side resized
        to the patch, a flip, intensity scaling and shift, Gaussian noise (SimCLR's augmentations
        that apply to grey-level slices; Chaitanya et al. 2020)."""
        P, side = self.config.patch, region.shape[-1]
        s = int(side * self.rng.uniform(0.5, 1.0))
        top, left = int(self.rng.integers(side - s + 1)), int(self.rng.integers(side - s + 1))
        v = F.interpolate(region[None, :, top:top + s, left:left + s], size=(P, P), mode="bilinear", align_corners=False)[0]
        if self.rng.random() < 0.5:
            v = v.flip(-1)
        v = v * self.rng.uniform(0.8, 1.2) + self.rng.uniform(-0.2, 0.2)
        return v + torch.randn(v.shape, generator=self.gen) * self.rng.uniform(0.0, 0.1)

    # ----- one step -----
    def _loss(self) -> torch.Tensor:
        cfg = self.config
        if cfg.objective == "reconstruction":
            clean = torch.stack([self._region(cfg.patch) for _ in range(cfg.batch)])
            flips = torch.from_numpy(self.rng.random(cfg.batch) < 0.5)
            clean[flips] = clean[flips].flip(-1)
            mask = block_mask(cfg.batch, cfg.patch, cfg.mask_block, cfg.mask_ratio, self.gen)
            noisy = clean + torch.randn(clean.shape, generator=self.gen) * cfg.noise
            # hidden blocks hold noise around the crop's mean: nothing of what lies there shows
            fill = clean.mean(dim=(-2, -1), keepdim=True) + torch.randn(clean.shape, generator=self.gen)
            x = (noisy * (1 - mask) + fill * mask).to(self.device)
            target, mask = clean[:, :1].to(self.device), mask.to(self.device)
            err = (self.model(x).float() - target) ** 2
            # the hidden blocks are what is learned; the visible pixels count a tenth (denoising)
            w = mask + 0.1 * (1 - mask)
            return (err * w).sum() / w.sum()
        regions = [self._region(int(round(cfg.patch * 1.25))) for _ in range(cfg.batch)]
        v1 = torch.stack([self._view(r) for r in regions]).to(self.device)
        v2 = torch.stack([self._view(r) for r in regions]).to(self.device)
        z = self.projection(encode(self.model, torch.cat([v1, v2])))
        return nt_xent(z[: cfg.batch], z[cfg.batch:], cfg.temperature)

    def train_step(self) -> float:
        cfg = self.config
        lr = cfg.lr * poly_lr(self.step, self.total_steps())
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.model.train()
        loss = self._loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        return value

    def total_steps(self) -> int:
        """``config.steps``, or under a time budget the steps it is projected to hold (what the
        learning-rate schedule counts towards)."""
        return projected_steps(self.config.steps, self.config.time_budget, self.step, self.train_seconds)

    def time_spent(self) -> bool:
        return self.config.time_budget > 0 and self.train_seconds >= self.config.time_budget

    def request_stop(self) -> None:
        """Stop after the current step (safe in a signal handler)."""
        self._stop = True

    # ----- the loop -----
    def run(self, out: str | Path | None = None) -> Generator[object, object, FinishedEvent]:
        """Train until ``config.steps``, the time budget or a Stop (sent, or :meth:`request_stop`);
        yields a StepEvent per step, a CheckpointEvent when ``out`` is given and the weights were
        written there, and a FinishedEvent."""
        t0, rate = time.perf_counter(), 0.0
        while self.step < self.config.steps and not self.time_spent() and not self._stop:
            t = time.perf_counter()
            loss = self.train_step()
            dt = time.perf_counter() - t
            self.train_seconds += dt
            rate = 1.0 / dt if rate == 0 else 0.9 * rate + 0.1 / max(dt, 1e-9)
            total = self.total_steps()
            eta = (max(0.0, self.config.time_budget - self.train_seconds) if self.config.time_budget > 0
                   else (total - self.step) / max(rate, 1e-9))
            command = yield StepEvent(self.step, total, {self.config.objective: loss, "total": loss}, {},
                                      self.optimizer.param_groups[0]["lr"], rate, eta)
            if isinstance(command, Stop):
                self._stop = True
        if out is not None and self.step > 0:
            yield CheckpointEvent(self.step, str(save(self.state(), out)))
        done = FinishedEvent(self.step, "stopped" if self._stop else "completed", time.perf_counter() - t0)
        yield done
        return done

    def state(self) -> dict:
        """What :func:`save` writes: the network's weights without the head, and how they were made."""
        trained = ENCODER if self.config.objective == "contrastive" else None
        weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                   if not k.startswith(HEAD) and (trained is None or k.split(".")[0] in trained)}
        return {
            "objective": self.config.objective,
            "config": asdict(self.config),
            "model": weights,
            "step": self.step,
            "seconds": self.train_seconds,
            "final_loss": float(np.mean(self.losses[-20:])) if self.losses else float("nan"),
            "target_spacing": list(self.target_spacing),
            "axis": int(self.volumes[0].axis),
            "volumes": [v.name for v in self.volumes],
        }


# ----- the file -----
def resolve(path: str | os.PathLike) -> Path:
    """A pretrain output folder or its file -> the file."""
    from . import checkpoint

    path = Path(path)
    if path.is_dir():  # a train output folder is named for the message that says what it is
        path = path / (checkpoint.FILENAME if (path / checkpoint.FILENAME).exists() and not (path / FILENAME).exists() else FILENAME)
    if not path.exists():
        raise CheckpointError(f"No pre-trained weights at {path}: give a folder written by 'napari-sslseg pretrain' or its {FILENAME}.")
    return path


def save(state: dict, path: str | os.PathLike) -> Path:
    """Write pre-trained weights completely or not at all (:mod:`napari_sslseg.atomic`), with the
    checksum of a model file; ``path``: a folder (the file is ``pretrained.pt`` in it) or a file."""
    from . import checkpoint

    path = Path(path)
    if path.suffix != ".pt":
        path = path / FILENAME
    payload = {"format": FORMAT, "version": VERSION, **state}
    payload["checksum"] = checkpoint.checksum(payload)

    def write(tmp: Path) -> None:
        torch.save(payload, tmp)

    atomic.replace([(path, write, lambda tmp: _verify(checkpoint._read(tmp), tmp))], CheckpointError)
    return path


def load(path: str | os.PathLike) -> dict:
    """Read pre-trained weights safely (weights only, as a model file); refuse a file that is not
    one, is newer, damaged, or whose weights do not fit the network its settings describe."""
    from . import checkpoint

    path = resolve(path)
    payload = checkpoint._read(path)
    _verify(payload, path)
    return payload


def _verify(payload, path: Path) -> None:
    from . import checkpoint

    if isinstance(payload, dict) and payload.get("format") == checkpoint.FORMAT:
        raise CheckpointError(f"{path} is a trained segmentation model, not pre-trained weights; "
                              "continue it with --resume, or give the folder written by 'napari-sslseg pretrain'.")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} holds no napari-sslseg pre-trained weights.")
    version = payload.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path} was written in pre-training format {version!r}; this napari-sslseg reads {VERSION}.")
    if payload.get("checksum") != checkpoint.checksum(payload):
        raise CheckpointError(f"{path} is damaged: its weights do not match the checksum written with them.")

    def refuse(what: str) -> None:
        raise CheckpointError(f"{path} is inconsistent: {what}; it cannot be used.")

    weights = payload.get("model")
    if not isinstance(weights, dict) or not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        refuse("it holds no network weights")
    try:
        cfg = PretrainConfig.from_dict(payload.get("config") or {})  # checked when built
        with torch.device("meta"):
            want = build_unet(1, cfg.width, cfg.dropout, in_channels=image_channels(cfg),
                              dropout_scope=cfg.dropout_scope).state_dict()
    except (TypeError, ValueError) as exc:
        refuse(f"its settings cannot build a network ({str(exc).splitlines()[0][:160]})")
    for k, v in weights.items():
        if k not in want:
            refuse(f"{k} is no weight of a U-Net of width {cfg.width}")
        if tuple(v.shape) != tuple(want[k].shape):
            refuse(f"{k} is {tuple(v.shape)}, {tuple(want[k].shape)} expected for width {cfg.width}")


def pretrained_config(payload: dict) -> PretrainConfig:
    return PretrainConfig.from_dict(payload.get("config") or {})


def start_from(net: nn.Module, payload: dict, width: int, context: int) -> str:
    """Copy pre-trained weights into a training's U-Net ``net`` (built for ``width`` and ``context``):
    every weight they hold but the head; of the first convolution the image channels, the channels
    after them (the prior's probabilities) set to zero, so the network starts as the pre-trained one
    whatever the prior says. Returns a line saying what was copied.

    Raises:
        InputError: the network's width or image channels differ from the pre-trained ones.
    """
    cfg = pretrained_config(payload)
    if cfg.width != width:
        raise InputError(f"The pre-trained weights are for a U-Net of width {cfg.width}; this training builds "
                         f"width {width}. Train with width {cfg.width}, or pre-train again with width {width}.")
    if cfg.context != context:
        raise InputError(f"The pre-trained weights see {image_channels(cfg)} image channel(s) (context {cfg.context}); "
                         f"this training gives {1 + 2 * context} (context {context}). Use the same context.")
    own = net.state_dict()
    weights = dict(payload["model"])
    n = image_channels(cfg)
    if INPUT_WEIGHT in weights:
        first = torch.zeros_like(own[INPUT_WEIGHT])
        first[:, :n] = weights[INPUT_WEIGHT]
        weights[INPUT_WEIGHT] = first
    bad = [k for k, v in weights.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise InputError(f"The pre-trained weights do not fit this network ({bad[0]}); pre-train again.")
    net.load_state_dict({k: v.to(own[k]) for k, v in weights.items()}, strict=False)
    part = "encoder" if cfg.objective == "contrastive" else "encoder and decoder"
    return (f"Started from weights pre-trained ({cfg.objective}, {payload.get('step', 0)} steps): "
            f"the {part}; the classifier is new.")
