"""Measured wall-clock time per image of each exit, beside the FLOPs `flops.exit_costs` counts.

FLOPs are what an exit costs on paper. The small networks of this study are bound by kernel
launches and memory traffic more than by arithmetic, so the time of `model(x, upto=k)` neither
grows as exit k's FLOPs do nor stays the same per image from batch 1 to batch 64. `exit_latency`
measures it: for each batch size b and exit k, the median of `repeats` timed calls of
`model(x, upto=k)` on a random input of b images (b windows of tokens for the transformer: an
"image" below is then one window) after `warmup` untimed ones, in eval mode under
`torch.no_grad`, synchronising CUDA around each call so the clock sees the kernels finish
(airbench's timing discipline, style.md §2). Each time is named with the hardware it was taken on,
and on CPU the torch threads it used, since a CPU time scales with them.

Why the median: on a shared machine the times of one call have a long right tail (another process,
an interrupt, the allocator growing), which a mean takes in and a median of a few calls ignores.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .device import resolve_device
from .models.base import AnytimeNet
from .provenance import cpu_name

__all__ = ["ExitLatency", "exit_latency", "device_label", "DEFAULT_REPEATS", "DEFAULT_WARMUP"]

# Timed and untimed calls per (exit, batch size): the study's 9-exit digits models (1x8x8) take
# 0.4 s (ResANN, DenseANN) to 1 s (MSDNet) for batches 1 and 64 on one thread of an AMD EPYC. The
# first calls pay for oneDNN's kernel selection and the allocator, hence the warm-up; 7 timed calls
# let the median ignore up to 3 outliers.
DEFAULT_REPEATS = 7
DEFAULT_WARMUP = 2


@dataclass(frozen=True)
class ExitLatency:
    """Median wall-clock milliseconds per image of `model(x, upto=exit)` on a batch of `batch_size`,
    measured on `device` (the hardware's name, see `device_label`)."""

    exit: int
    batch_size: int
    ms_per_image: float
    device: str


def device_label(device: torch.device) -> str:
    """Where a time was measured: the GPU's name, or the CPU's with the torch threads it ran on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({threads} thread{'s' if threads > 1 else ''})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def exit_latency(
    model: AnytimeNet,
    batch_sizes: Sequence[int] = (1, 64),
    device: str | torch.device = "cpu",
    repeats: int = DEFAULT_REPEATS,
    warmup: int = DEFAULT_WARMUP,
    channels_last: bool = False,
    bf16: bool = False,
) -> list[ExitLatency]:
    """Time every exit at every batch size (see the module docstring), batch sizes outermost.

    A copy of the model is timed, placed on `device` ("auto" = CUDA when present) in the memory
    format asked for, so the caller's model is neither moved, converted nor left in eval mode.
    `bf16` runs the calls under bf16 autocast, as evaluation does with it.
    """
    if not batch_sizes or min(batch_sizes) < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch sizes >= 1, repeats >= 1 and warmup >= 0, got "
                         f"batch_sizes={list(batch_sizes)}, repeats={repeats}, warmup={warmup}")
    dev = resolve_device(device) if isinstance(device, str) else device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    timed = copy.deepcopy(model).to(dev, memory_format=fmt).eval()
    label = device_label(dev)
    noise = torch.Generator(dev).manual_seed(0)  # leaves the global RNG where the caller had it
    results = []
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):  # entered once, not timed
        for b in batch_sizes:
            x = timed.example_input(b, generator=noise).contiguous(memory_format=fmt)  # (B, C, H, W) or (B, T)
            for k in range(timed.num_exits):
                seconds = []
                for i in range(warmup + repeats):
                    _sync(dev)
                    start = time.perf_counter()
                    timed(x, upto=k)
                    _sync(dev)
                    if i >= warmup:
                        seconds.append(time.perf_counter() - start)
                results.append(ExitLatency(k, b, statistics.median(seconds) * 1e3 / b, label))
    return results
