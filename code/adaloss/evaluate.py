"""Anytime evaluation: the test error and calibration of every exit, and the per-exit table of a run.

Free of training imports: the trainer, the early-exit code and the CLI all evaluate through here.

The authors measured top-1 error of every predictor on the test set after the last epoch
(`ClassificationError` per head, official_code.md §6); so do we. Nothing is selected on the test set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .data import normalize
from .flops import ExitCost

__all__ = ["exit_probabilities", "top1_errors", "expected_calibration_error", "exit_rows",
           "EXIT_COLUMNS"]

EXIT_COLUMNS = ["dataset", "model", "weighting", "seed", "exit", "flops", "own_head_flops", "params", "error",
                "ece", "val_error"]


@torch.no_grad()
def exit_probabilities(
    model: nn.Module,
    x: Tensor,
    mean: Tensor,
    std: Tensor,
    device: torch.device,
    upto: int | None = None,
    batch_size: int = 1000,
    channels_last: bool = False,
    bf16: bool = False,
) -> Tensor:
    """Softmax outputs (K, N, num_classes), float32 on `device`, of exits 0..upto on uint8 images `x`
    (N, C, H, W), in eval mode (the model's mode is restored). Every per-exit measure (error,
    calibration, early exit) is computed from these, so each split is run through the model once."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty split")
    was_training = model.training
    model.eval()
    mean, std = mean.to(device), std.to(device)
    batches = []
    try:
        for i in range(0, len(x), batch_size):
            xb = normalize(x[i : i + batch_size].to(device, non_blocking=True), mean, std)  # (B, C, H, W)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(xb, upto=upto)
            batches.append(torch.stack([z.float().softmax(1) for z in logits]))  # (K, B, classes)
    finally:
        model.train(was_training)
    return torch.cat(batches, dim=1)


def top1_errors(probs: Tensor, y: Tensor) -> list[float]:
    """Top-1 error (%) of each exit from softmax outputs (K, N, classes) and labels (N,)."""
    wrong = (probs.argmax(2) != y.to(probs.device)).sum(1)  # (K,)
    return (wrong.double() * 100.0 / len(y)).cpu().tolist()


def expected_calibration_error(probs: Tensor, y: Tensor, bins: int = 15) -> list[float]:
    """Expected calibration error (%) of each exit (Guo et al. 2017): the images are binned by their
    top probability into `bins` equal-width bins of (0, 1], and the gaps |accuracy - mean confidence|
    of the bins are averaged, weighted by the bins' sizes. Early-exit thresholds rest on these
    confidences, so a poorly calibrated exit sends the wrong images onwards."""
    confidence, prediction = probs.max(2)  # (K, N)
    correct = (prediction == y.to(probs.device)).double()
    # bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 cannot occur
    which = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1  # (K, N)
    ece = []
    for k in range(probs.shape[0]):
        count = torch.bincount(which[k], minlength=bins).double()
        conf_sum = torch.bincount(which[k], weights=confidence[k].double(), minlength=bins)
        correct_sum = torch.bincount(which[k], weights=correct[k], minlength=bins)
        ece.append(float((correct_sum - conf_sum).abs().sum() * 100.0 / len(y)))
    return ece


def exit_rows(
    labels: Mapping[str, Any],
    costs: Sequence[ExitCost],
    test_error: Sequence[float],
    test_ece: Sequence[float],
    val_error: Sequence[float],
    only_last: bool = False,
) -> list[dict[str, Any]]:
    """The rows of the tidy per-exit table of one run (`exits.csv`, columns EXIT_COLUMNS), each
    starting with the run's `labels` (dataset, model, weighting, seed). An OPT run reports only the
    exit it trained."""
    rows = [
        {
            **{key: labels[key] for key in ("dataset", "model", "weighting", "seed")},
            "exit": c.exit,
            "flops": c.flops,
            "own_head_flops": c.own_head_flops,
            "params": c.params,
            "error": round(float(test_error[c.exit]), 6),
            "ece": round(float(test_ece[c.exit]), 6),
            "val_error": round(float(val_error[c.exit]), 6),
        }
        for c in costs
    ]
    return rows[-1:] if only_last else rows
