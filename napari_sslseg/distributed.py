"""Data-parallel training under ``torchrun``: one process a GPU (or a share of the CPU cores).

    torchrun --nproc_per_node 2 -m napari_sslseg train IMAGE LABELS --out run

Every rank builds the same model (the weights are broadcast from rank 0 at the start), samples its
own slices with its own seed, and averages its gradients with the others' before each optimiser
step, as DistributedDataParallel does: the student, the networks co-trained with it (CPS's second
network) and the methods' own networks with their own optimisers (a discriminator) therefore take
the same step everywhere, and the EMA teacher, which follows the student, stays the same too. That
they do is checked at every Dice evaluation. The gradients are averaged by hand rather than by
wrapping the student in ``DistributedDataParallel``: the methods run the student several times a
step (two views, mixed slices, a teacher pass), which DDP's hooks allow only with a static graph.
Stopping (the time budget, Ctrl-C on any rank) is agreed by all ranks, so they stop at the same
step. Rank 0 alone writes checkpoints and progress; a checkpoint holds nothing per rank, so a run
resumes on any number of ranks. gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from .errors import TrainingError
from .training import Trainer


def world_size() -> int:
    """Processes in the run: torchrun's WORLD_SIZE, 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def setup(device: str = "auto", timeout_s: float = 1800.0) -> str:
    """Join torchrun's process group (gloo on CPU, NCCL on CUDA); return this rank's device."""
    from .devices import pick_device

    chosen = pick_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return str(chosen)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def after_rank_0() -> None:
    """With :func:`before_other_ranks`: what lies between the two runs on rank 0 first, then on the
    others (rank 0 fills a cache the others then read); nothing without a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()


def before_other_ranks() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_rank() == 0:
        dist.barrier()


def _all_reduce_mean(tensors: list[torch.Tensor | None], like: list[torch.Tensor]) -> list[torch.Tensor | None]:
    """The mean over ranks of each tensor (None: this rank has none; counted as zeros); None where no
    rank had one, so that an optimiser still skips a parameter no rank computed a gradient for."""
    if not like:
        return []
    flat = torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1).float() for t, p in zip(tensors, like)])
    present = torch.tensor([t is not None for t in tensors], dtype=torch.float32, device=flat.device)
    both = torch.cat([flat, present])
    dist.all_reduce(both)
    flat, present = both[: flat.numel()] / dist.get_world_size(), both[flat.numel():]
    out, at = [], 0
    for p, seen in zip(like, present.tolist()):
        n = p.numel()
        out.append(flat[at : at + n].view_as(p).to(p.dtype) if seen else None)
        at += n
    return out


def average_gradients(parameters) -> None:
    """Replace each parameter's gradient by its mean over the ranks (one all-reduce)."""
    params = [p for p in parameters if p.requires_grad]
    for p, g in zip(params, _all_reduce_mean([p.grad for p in params], params)):
        p.grad = g


def fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Sum and sum of squares of a module's parameters and buffers, in float64."""
    values = [t.detach().double() for t in (*module.parameters(), *module.buffers())]
    if not values:
        return torch.zeros(2, dtype=torch.float64)
    return torch.stack([sum(v.sum() for v in values), sum((v * v).sum() for v in values)]).cpu()


class DistributedTrainer(Trainer):
    """A :class:`~napari_sslseg.training.Trainer` that trains one share of a torchrun run's batches."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not dist.is_initialized():
            raise TrainingError("DistributedTrainer needs torch.distributed initialised (run under torchrun).")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        if self.rank != 0:
            self.checkpoint_path = None  # rank 0 writes the checkpoints
        self._stop_requested = False
        # one start for all: rank 0's weights (a resumed run loaded the same file everywhere anyway)
        for module in self._modules().values():
            for t in (*module.parameters(), *module.buffers()):
                dist.broadcast(t.data, src=0)
        # each rank its own slices, crops, augmentations and dropout
        seeds = np.random.SeedSequence([self.config.seed, self.rank]).generate_state(4)
        self.rng = np.random.default_rng(seeds[0])
        self.aug_labelled.set_random_state(int(seeds[1]))
        self.aug_unlabelled.set_random_state(int(seeds[2]))
        torch.manual_seed(int(seeds[3]))
        # a method's own optimisers (a discriminator's) average their gradients before each step
        for optimizer in self.method._optimizers().values():
            params = [p for g in optimizer.param_groups for p in g["params"]]
            optimizer.register_step_pre_hook(lambda *_, params=params: average_gradients(params))

    def _modules(self) -> dict[str, torch.nn.Module]:
        return {"student": self.model, **self.method.extra_models()}

    def _after_backward(self) -> None:
        # before the (scaled) step: a rank whose gradients overflowed spreads inf to all, so all skip it
        average_gradients(p for g in self.optimizer.param_groups for p in g["params"])

    def request_stop(self) -> None:
        """Stop after the current step once every rank has heard of it (see :meth:`time_spent`)."""
        self._stop_requested = True

    def time_spent(self) -> bool:
        """Agreed by all ranks, each step: the slowest rank's training time counts, and a stop asked
        of any rank stops them all."""
        flags = torch.tensor([self.train_seconds, float(self._stop_requested or self._stop)], dtype=torch.float64,
                             device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        self.train_seconds = float(flags[0])
        if flags[1] > 0:
            self._stop = True
        return super().time_spent()

    def evaluate(self):
        self.check_in_sync()
        return super().evaluate()

    def check_in_sync(self, rtol: float = 1e-5) -> None:
        """Raise if the student or a method's network (EMA teacher, discriminator ...) differs between ranks."""
        for name, module in self._modules().items():
            mine = fingerprint(module).to(self.device)
            gathered = [torch.zeros_like(mine) for _ in range(self.world_size)]
            dist.all_gather(gathered, mine)
            for r, theirs in enumerate(gathered):
                if not torch.allclose(theirs, gathered[0], rtol=rtol, atol=1e-8):
                    raise TrainingError(f"The {name} of rank {r} differs from rank 0's at step {self.step}: "
                                        "the ranks no longer train the same model.")
