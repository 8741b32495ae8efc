"""Anytime evaluation: the test error of every exit, and the tidy per-exit table of a run.

The authors measured top-1 error of every predictor on the test set after the last epoch
(`ClassificationError` per head, official_code.md §6); so do we. Nothing is selected on the test set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .data import normalize
from .flops import ExitCost

if TYPE_CHECKING:
    from .train import TrainConfig

__all__ = ["anytime_errors", "exit_rows", "EXIT_COLUMNS", "evaluate_checkpoint"]

EXIT_COLUMNS = ["dataset", "model", "weighting", "seed", "exit", "flops", "own_head_flops", "params", "error",
                "val_error"]


@torch.no_grad()
def anytime_errors(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    mean: Tensor,
    std: Tensor,
    device: torch.device,
    upto: int | None = None,
    batch_size: int = 1000,
    channels_last: bool = False,
    bf16: bool = False,
) -> list[float]:
    """Top-1 error (%) of each exit on uint8 images `x` (N, C, H, W); one device sync at the end."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty split")
    was_training = model.training
    model.eval()
    wrong: Tensor | None = None
    mean, std = mean.to(device), std.to(device)
    for i in range(0, len(y), batch_size):
        xb = normalize(x[i : i + batch_size].to(device, non_blocking=True), mean, std)  # (B, C, H, W)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        yb = y[i : i + batch_size].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(xb, upto=upto)
        batch_wrong = torch.stack([(z.argmax(1) != yb).sum() for z in logits])  # (K,)
        wrong = batch_wrong if wrong is None else wrong + batch_wrong
    model.train(was_training)
    assert wrong is not None
    return (wrong.double() * 100.0 / len(y)).cpu().tolist()


def exit_rows(
    cfg: TrainConfig,
    costs: Sequence[ExitCost],
    test_error: Sequence[float],
    val_error: Sequence[float],
    only_last: bool = False,
) -> list[dict[str, Any]]:
    """The rows of the tidy per-exit table of one run (`exits.csv`, columns EXIT_COLUMNS). An OPT run
    reports only the exit it trained."""
    rows = [
        {
            "dataset": cfg.dataset,
            "model": cfg.model_name,
            "weighting": cfg.weighting_label,
            "seed": cfg.seed,
            "exit": c.exit,
            "flops": c.flops,
            "own_head_flops": c.own_head_flops,
            "params": c.params,
            "error": round(float(test_error[c.exit]), 6),
            "val_error": round(float(val_error[c.exit]), 6),
        }
        for c in costs
    ]
    return rows[-1:] if only_last else rows


def evaluate_checkpoint(run_dir: str | Path, device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a finished run from its checkpoint without training (`python -m adaloss evaluate`)."""
    from .train import Run, TrainConfig  # local import: train imports this module

    metrics_path = Path(run_dir) / "metrics.json"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: train the run first (python -m adaloss train)")
    config = json.loads(metrics_path.read_text())["config"]
    config.update(out=str(run_dir), device=device, progress=False, compile=False, cuda_graph=False)  # no training here
    run = Run(TrainConfig(**config))
    if not run.try_resume() or run.epoch < run.cfg.epochs:
        raise RuntimeError(f"{run_dir} holds no finished checkpoint; resume training with the same command")
    return run.write_outputs(reevaluate=True)
