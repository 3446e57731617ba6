"""The settings of the repository's runs: the package's BenchConfig and the probes' budgets."""

from __future__ import annotations

from dataclasses import dataclass, replace

from napari_sslseg.bench.config import BenchConfig
from napari_sslseg.config import DEFAULT_METHOD


@dataclass(frozen=True)
class ProbeConfig(BenchConfig):
    """A bench run with speed, memory and viewer latency measured after the accuracy."""

    speed: bool = True  # measure steps/s, first overlay, inference, memory and viewer latency
    speed_steps: int = 30  # timed steps per method (after warm-up steps)
    overlay_k: int = 4  # annotated slices for the time-to-first-useful-overlay
    overlay_method: str = DEFAULT_METHOD  # what the panel trains by default
    overlay_dice: float = 0.7  # "useful": mean Dice on the unannotated slices at least this
    overlay_check_every: int = 25  # steps between checks (the clock stops while checking)
    overlay_limit_s: float = 90.0  # give up after this much training time (1.5 times the 60 s target)
    overlay_slice_stride: int = 2  # the checks score every n-th unannotated slice (they cost no training time, but wall time)
    inference_mc_passes: int = 8  # MC-dropout passes for the whole-volume timing
    inference_slices: int = 0  # slices timed on the 181x217x181 volume; 0 = all, else extrapolated
    inference_all_slices: int = 16  # slices timed with dropout after every convolution, sampled everywhere (`--mc-scope all`), scaled; 0 = not timed
    memory_shape: tuple[int, int, int] = (300, 512, 512)  # (z, y, x) volume for peak memory
    memory_steps: int = 5  # training steps in the memory probe
    latency_seconds: float = 20.0  # probe time per phase (idle, training) in the viewer

    def quick(self) -> "ProbeConfig":
        """The package's quick budgets, and sampled timings."""
        return replace(
            super().quick(),
            speed_steps=8,
            overlay_limit_s=20.0,
            overlay_check_every=15,
            inference_slices=12,
            inference_all_slices=0,
            memory_steps=2,
            latency_seconds=10.0,
        )
