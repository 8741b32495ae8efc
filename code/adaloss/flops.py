"""Inference cost of each exit: FLOPs and parameters of `model(x, upto=k)` for one image.

Unit: FLOPs = 2 x multiply-adds of the conv and linear layers, as
`torch.utils.flop_counter.FlopCounterMode` counts them (BN, ReLU, pooling, concat and bias adds are
not counted). This is twice the authors' "flops (multi-add)" log lines (official_code.md §6,
tensorpack/models/registry.py:131-134, conv2d.py:75-87), which they summed offline per head.

The cost of exit k is that of anytime inference up to exit k, *including the earlier exits' heads*
(docs/architecture.md "Cost contract"), so the last exit's cost is the whole model's.
`opt_exits` picks the exits nearest 1/4, 1/2, 3/4 and 1 of the final cost, where the paper compares
against OPT networks (paper.md §7 "Evaluation protocol", official_code.md §6 "Tables and plots").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import atomic
from .models.base import AnytimeNet

__all__ = ["ExitCost", "exit_costs", "cached_exit_costs", "opt_exits"]


@dataclass(frozen=True)
class ExitCost:
    """Cost of predicting at `exit` (0-based), cumulative over everything run before it.

    flops: FLOPs (2 x multiply-adds) of `model(x, upto=exit)` for one image.
    params: number of parameters that `model(x, upto=exit)` uses (earlier heads included).
    """

    exit: int
    flops: int
    params: int


def _used_params(model: AnytimeNet, x: torch.Tensor, upto: int) -> int:
    """Parameters reached by autograd from the returned logits: exactly those the truncated
    forward uses, whatever the architecture. Frozen (requires_grad=False) ones are not counted."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(logits.sum() for logits in model(x, upto=upto))  # scalar
    grads = torch.autograd.grad(total, params, allow_unused=True)
    return sum(p.numel() for p, g in zip(params, grads) if g is not None)


def exit_costs(model: AnytimeNet,
               input_shape: tuple[int, int, int] | None = None) -> list[ExitCost]:
    """FLOPs and parameters of each exit, for one (C, H, W) image (default: `model.input_shape`).

    Runs in eval mode (BN on running statistics, no dropout) and restores the model's mode after.
    """
    shape = model.input_shape if input_shape is None else input_shape
    ref = next(model.parameters())
    x = torch.zeros(1, *shape, device=ref.device, dtype=ref.dtype)  # (1, C, H, W)
    was_training = model.training
    model.eval()
    costs = []
    try:
        for k in range(model.num_exits):
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x, upto=k)
            costs.append(ExitCost(k, counter.get_total_flops(), _used_params(model, x, k)))
    finally:
        model.train(was_training)
    return costs


def _code_fingerprint() -> str:
    """Hash of the code that decides a model's costs (this file and the models package)."""
    files = [Path(__file__), *sorted((Path(__file__).parent / "models").glob("*.py"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def cached_exit_costs(arch: str, in_channels: int, num_classes: int, image_size: int,
                      options: dict[str, Any], cache_dir: str | Path) -> list[ExitCost]:
    """`exit_costs` of `build_model(arch, ...)`, remembered in `cache_dir` (one JSON file per model).

    Why: the workflow needs every model's costs to know its OPT exits, and every Snakemake process
    rebuilds the DAG: each Slurm job, each rerun. Building and tracing the paper's models takes
    seconds each; a cache hit reads one small file. The key holds a hash of the model code, so
    an edited architecture is never served stale costs.
    """
    from .models import build_model

    spec = {"arch": arch, "in_channels": in_channels, "num_classes": num_classes, "image_size": image_size,
            "options": options, "code": _code_fingerprint()}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{arch}_{key}.json"
    try:
        return [ExitCost(**c) for c in json.loads(path.read_text())["costs"]]
    except (OSError, ValueError, KeyError, TypeError):  # absent or unreadable: count again
        pass
    costs = exit_costs(build_model(arch, in_channels, num_classes, image_size, **options),
                       (in_channels, image_size, image_size))
    atomic.write_json(path, {"spec": spec, "costs": [dataclasses.asdict(c) for c in costs]})
    return costs


def opt_exits(costs: Sequence[ExitCost],
              fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> list[int]:
    """For each fraction of the final exit's FLOPs, the exit whose FLOPs are nearest to it (ties go
    to the cheaper exit): where the paper's OPT networks sit (1/4, 1/2, 3/4, 1 of the total)."""
    if not costs:
        raise ValueError("costs is empty")
    total = costs[-1].flops
    return [min(costs, key=lambda c: (abs(c.flops - f * total), c.flops)).exit for f in fractions]


# Training throughput we measured for ResANN(5, 16) at batch 128 on one H100, compiled and with the
# whole step as one CUDA graph, the paper profile's setting (docs/speed.md): 14.48 TFLOP/s of
# forward+backward FLOPs. Small networks are launch-bound, so larger ones reach more: an estimate
# from it errs on the high side.
MEASURED_TRAIN_TFLOPS = 14.48


def training_gpu_hours(forward_flops: int, images: int, epochs: int,
                       tflops: float = MEASURED_TRAIN_TFLOPS) -> float:
    """GPU-hours to train a network whose forward pass costs `forward_flops` per image (backward
    counted as twice the forward, the usual rule) on `images` images for `epochs` epochs."""
    return 3 * forward_flops * images * epochs / (tflops * 1e12) / 3600
