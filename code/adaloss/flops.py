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

`opt_exits` gives, for f = 1/4, 1/2, 3/4, 1, the exit whose anytime cost is nearest f x the total
cost: the paper reports OPT "at 1/4, 1/2, 3/4, and 1 of the total ANN costs" (arXiv v3). The study
trains its OPT networks there and the relative-increase table compares against them, labelled with
the measured cost fraction (`cost_fractions`). The authors trained an OPT network at every exit and
picked the table's columns offline; this rule replaces our earlier one on the exit index,
floor(f (K - 1)), which put the "1/4" column of a 9-exit ResANN at 35-37 % of the cost
(docs/fidelity.md, D2).
"""

from __future__ import annotations

import csv
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
from .errors import InputError
from .models.base import AnytimeNet

__all__ = ["ExitCost", "exit_costs", "cached_exit_costs", "opt_exits", "cost_fractions", "COSTS_CACHE",
           "training_gpu_hours", "read_pack_throughput", "packed_tflops", "PACK_THROUGHPUT"]


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


def _reached_params(outputs: Sequence[torch.Tensor], seen: set[Any], params: dict[int, int]) -> int:
    """Parameters reached by autograd from `outputs` and from the graphs already in `seen`: exactly
    those the forward that made them used, whatever the architecture, found by walking the autograd
    graph (no backward pass is computed). Frozen (requires_grad=False) ones are not in the graph."""
    stack = [o.grad_fn for o in outputs]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)  # AccumulateGrad: a leaf, i.e. a parameter
        if variable is not None:
            params[id(variable)] = variable.numel()
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return sum(params.values())


def _flop_counter() -> Any:
    """`FlopCounterMode` that also counts attention on CPU. torch's registry has formulas for the
    CUDA attention kernels only, so on CPU `scaled_dot_product_attention` (which dispatches to
    `_scaled_dot_product_flash_attention_for_cpu`) counted 0 FLOPs (torch 2.14); we count it with
    torch's own formula, the two matmuls over the full T x T score matrix (the causal mask's
    skipped half is counted too, as on CUDA), so a transformer's cost does not depend on the device."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count  # here: a training job reading cached costs skips its 0.2 s import

    def cpu_attention(query_shape: Any, key_shape: Any, value_shape: Any, *_: Any, **__: Any) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention})


def exit_costs(model: AnytimeNet, input_shape: Sequence[int] | None = None) -> list[ExitCost]:
    """FLOPs and parameters of each exit, for one input of `input_shape` (default: `model.input_shape`):
    a (C, H, W) image, or a window of T tokens for the transformer (whose per-token cost is this / T).

    One forward pass counts them all: `AnytimeNet.forward(x, upto=k)` runs exactly the prefix of the
    full forward that ends with head k, so the running FLOP count when head k returns is the cost of
    `model(x, upto=k)`, and the parameters reached from logits 0..k are those it uses (a test checks
    both against truncated forwards). Runs in eval mode (BN on running statistics, no dropout) and
    restores the model's mode after.
    """
    ref = next(model.parameters())
    x = model.example_input(1, input_shape, torch.Generator(ref.device).manual_seed(0))  # (1, C, H, W) or (1, T)
    was_training = model.training
    model.eval()
    running: list[int] = []
    try:
        heads = _head_flops(model, x)
        with _flop_counter() as counter:  # counts the forward only: no backward runs
            hooks = [h.register_forward_hook(lambda *_: running.append(counter.get_total_flops()))
                     for h in model.heads]
            try:
                logits = model(x)
            finally:
                for h in hooks:
                    h.remove()
        seen: set[Any] = set()
        params: dict[int, int] = {}
        costs = [ExitCost(k, running[k], _reached_params(logits[k:k + 1], seen, params), running[k] - sum(heads[:k]))
                 for k in range(model.num_exits)]
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
    flops = []
    for head, features in zip(model.heads, inputs):
        with _flop_counter() as counter:
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


def opt_exits(costs: Sequence[float], fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0)) -> list[int]:
    """For each fraction f, the exit whose cost (cheapest exit first, the last one the whole
    network's) is nearest f x the total cost; on a tie the cheaper exit. ResANN(3, 8) on 8x8
    digits, 9 exits: exits 1, 3, 6, 8 at 24, 44, 77 and 100 % of the cost, where the old index
    rule floor(f (K - 1)) gave 2, 4, 6, 8 (35 % at "1/4")."""
    costs = [float(c) for c in costs]
    if not costs:
        raise ValueError("opt_exits needs the cost of at least one exit")
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1], got {list(fractions)}")
    if any(b < a for a, b in zip(costs, costs[1:])) or costs[0] < 0:
        raise ValueError(f"exit costs must be non-negative and non-decreasing, got {costs}")
    total = costs[-1]
    return [min(range(len(costs)), key=lambda k: (abs(costs[k] - f * total), k)) for f in fractions]


def cost_fractions(costs: Sequence[float], exits: Sequence[int]) -> list[float]:
    """The measured share of the total cost at each of `exits` (what "1/4" really costs)."""
    total = float(costs[-1])
    return [float(costs[k]) / total if total > 0 else float("nan") for k in exits]


# Training throughput we measured for ResANN(5, 16) at batch 128 on one H100, compiled and with the
# whole step as one CUDA graph, the paper profile's setting (docs/speed.md): 14.48 TFLOP/s of
# forward+backward FLOPs. Small networks are launch-bound, so larger ones reach more: an estimate
# from it errs on the high side.
MEASURED_TRAIN_TFLOPS = 14.48


# Where scripts/gpu_pack_check.sh writes the packed throughput it measures on a GPU, one row per
# (model, pack size); the dry run's estimate uses it when it exists (`packed_tflops`).
PACK_THROUGHPUT = "docs/measurements/gpu_pack_throughput.csv"
PACK_THROUGHPUT_COLUMNS = ("device_name", "model", "forward_flops", "pack", "images_per_s", "train_tflops")


def read_pack_throughput(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a packed-throughput table (`PACK_THROUGHPUT`); none when the file does not exist
    (no GPU has measured it yet). A table without the expected columns is refused, naming them."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in PACK_THROUGHPUT_COLUMNS if rows and c not in rows[0]]
    if missing or not rows:
        raise InputError(path, f"is not a packed-throughput table (missing {', '.join(missing) or 'rows'})",
                         "rerun scripts/gpu_pack_check.sh or delete the file")
    return [{"device_name": r["device_name"], "model": r["model"], "forward_flops": float(r["forward_flops"]),
             "pack": int(r["pack"]), "images_per_s": float(r["images_per_s"]), "train_tflops": float(r["train_tflops"])}
            for r in rows]


def packed_tflops(forward_flops: float, pack: int, rows: Sequence[dict[str, Any]]) -> float | None:
    """Training TFLOP/s (3 x forward FLOPs x images/s, summed over a pack) expected for a network of
    `forward_flops` per image trained in packs of `pack`, from measured `rows`; None without rows.

    Conservative on purpose: the largest measured pack size not above `pack`; between two measured
    network sizes, interpolated in log FLOPs; below the smallest, images/s held at the smallest's
    (a smaller network is launch-bound: it is not trained faster in images/s); above the largest,
    its TFLOP/s (a larger network reaches at least as much)."""
    sizes = sorted({r["pack"] for r in rows if r["pack"] <= pack})
    if not sizes:
        return None
    points = sorted((r["forward_flops"], r["train_tflops"]) for r in rows if r["pack"] == sizes[-1])
    (f0, t0), (f1, t1) = points[0], points[-1]
    if forward_flops < f0:
        return t0 * forward_flops / f0
    if forward_flops >= f1:
        return t1
    for (fa, ta), (fb, tb) in zip(points, points[1:]):
        if fa <= forward_flops <= fb:
            w = (math.log(forward_flops) - math.log(fa)) / (math.log(fb) - math.log(fa)) if fb > fa else 0.0
            return ta + w * (tb - ta)
    raise AssertionError("unreachable: forward_flops lies within the measured range")


def training_gpu_hours(forward_flops: int, images: int, epochs: int,
                       tflops: float = MEASURED_TRAIN_TFLOPS) -> float:
    """GPU-hours to train a network whose forward pass costs `forward_flops` per image (backward
    counted as twice the forward, the usual rule) on `images` images for `epochs` epochs."""
    return 3 * forward_flops * images * epochs / (tflops * 1e12) / 3600
