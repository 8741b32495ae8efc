"""Inference cost of each exit: FLOPs and parameters of `model(x, upto=k)` for one image.

Unit: FLOPs = 2 x multiply-adds of the conv and linear layers, as
`torch.utils.flop_counter.FlopCounterMode` counts them (BN, ReLU, pooling, concat and bias adds are
not counted). This is twice the authors' "flops (multi-add)" log lines (official_code.md §6,
tensorpack/models/registry.py:131-134, conv2d.py:75-87), which they summed offline per head.

Every exit carries two costs (docs/fidelity.md, review D6):
* `flops`, the anytime cost: the backbone up to exit k *and every head run before it*, what a
  deployed anytime network pays to reach exit k (docs/architecture.md "Cost contract"); the last
  exit's is the whole model's. Figures and tables use it unless they say otherwise.
* `own_head_flops`, the authors' cost: the backbone up to exit k plus exit k's head alone, as the
  authors summed their per-layer FLOP logs per predictor; an OPT network's cost.

`opt_exits` gives the predictor indices floor(f * (K - 1)) for f = 1/4, 1/2, 3/4, 1 (e.g.
ResANN(9, 32, s=3): units 8, 14, 20, 26), where the study trains its OPT networks and where the
relative-increase table compares against them. The authors trained an OPT network at every exit and
picked the table's columns offline; this fixed rule is ours (docs/fidelity.md, D2).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .models.base import AnytimeNet

__all__ = ["ExitCost", "exit_costs", "cached_exit_costs", "opt_exits", "COSTS_CACHE"]


@dataclass(frozen=True)
class ExitCost:
    """Cost of predicting at `exit` (0-based), cumulative over everything run before it.

    flops: FLOPs (2 x multiply-adds) of `model(x, upto=exit)` for one image: the anytime cost.
    params: number of parameters that `model(x, upto=exit)` uses (earlier heads included).
    own_head_flops: the backbone up to this exit plus its own head only (the authors' cost).
    """

    exit: int
    flops: int
    params: int
    own_head_flops: int


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
    from torch.utils.flop_counter import FlopCounterMode  # here: a training job reading cached costs skips its 0.2 s import

    shape = model.input_shape if input_shape is None else input_shape
    ref = next(model.parameters())
    x = torch.zeros(1, *shape, device=ref.device, dtype=ref.dtype)  # (1, C, H, W)
    was_training = model.training
    model.eval()
    costs = []
    try:
        heads = _head_flops(model, x)
        for k in range(model.num_exits):
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                model(x, upto=k)
            total = counter.get_total_flops()
            costs.append(ExitCost(k, total, _used_params(model, x, k), total - sum(heads[:k])))
    finally:
        model.train(was_training)
    return costs


@torch.no_grad()
def _head_flops(model: AnytimeNet, x: torch.Tensor) -> list[int]:
    """FLOPs of each head alone, on the input it gets in a full forward pass."""
    inputs: list[torch.Tensor] = []
    hooks = [head.register_forward_pre_hook(lambda _, args: inputs.append(args[0])) for head in model.heads]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    from torch.utils.flop_counter import FlopCounterMode

    flops = []
    for head, features in zip(model.heads, inputs):
        with FlopCounterMode(display=False) as counter:
            head(features)
        flops.append(counter.get_total_flops())
    return flops


# Where the costs of each model are remembered, under the data folder (beside the data cache): the
# DAG counts them when it is built, and every training job of that model then reads them.
COSTS_CACHE = ".adaloss_cache/costs"


def _code_fingerprint() -> str:
    """Hash of the code that decides a model's costs (this file and the models package)."""
    files = [Path(__file__), *sorted((Path(__file__).parent / "models").glob("*.py"))]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def cached_exit_costs(arch: str, in_channels: int, num_classes: int, image_size: int,
                      options: dict[str, Any], cache_dir: str | Path) -> list[ExitCost]:
    """`exit_costs` of `build_model(arch, ...)`, remembered in `cache_dir` (one JSON file per model).

    Why: the workflow needs every model's costs to know its OPT exits, and every Snakemake process
    rebuilds the DAG: each Slurm job, each rerun; every training job then writes them into its
    exits.csv. Building and tracing the paper's models takes seconds each, and the FLOP counter
    imports torch._dynamo (2 s) on first use; a cache hit reads one small file. The key holds a
    hash of the model code, so an edited architecture is never served stale costs.
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


def opt_exits(num_exits: int, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> list[int]:
    """The predictor index floor(f * (K - 1)) for each fraction f, the budget points of the OPT
    networks and of the relative-increase table: ResANN(9, 32, s=3), 9 exits: indices 2, 4, 6, 8,
    i.e. units 8, 14, 20, 26; ResANN(32, 32, s=1): units 23, 47, 71, 95 (docs/fidelity.md, D2)."""
    if num_exits < 1:
        raise ValueError(f"num_exits must be >= 1, got {num_exits}")
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {list(fractions)}")
    return [math.floor(f * (num_exits - 1) + 1e-9) for f in fractions]


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
