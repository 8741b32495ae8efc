"""One training step: the per-exit losses of a batch and the SGD update on their weighted sum.

Its own module so that the eager trainer (`train.Run`) and the CUDA-graphed step (`graphed`) share
it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .sgd import SGD
from .weighting import LossWeighting

__all__ = ["ExitLosses", "train_step", "Optimizer"]

Optimizer = torch.optim.Optimizer | SGD  # what a training step updates the parameters with


class ExitLosses(nn.Module):
    """model + per-exit cross-entropy as one module, so `torch.compile` captures (and with
    mode="reduce-overhead" CUDA-graphs) the whole forward, losses included. Each exit's loss is the
    mean over every prediction: one per image (logits (B, classes)), or one per token of a language
    model (logits (B, T, vocab), targets (B, T))."""

    def __init__(self, model: nn.Module, bf16: bool = False) -> None:
        super().__init__()
        self.model, self.bf16 = model, bf16

    def forward(self, x: Tensor, y: Tensor, upto: int | None = None) -> Tensor:
        # no autocast cache: each weight is cast once per forward anyway, and a CUDA graph
        # (graphed.py) must not keep casts cached from its capture
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            logits = self.model(x, upto=upto)
        return torch.stack([F.cross_entropy(z.float().flatten(0, -2), y.flatten()) for z in logits])  # (K,)


def train_step(
    loss_fn: Callable[..., Tensor],
    weighting: LossWeighting,
    optimizer: Optimizer,
    x: Tensor,
    y: Tensor,
    upto: int | None = None,
    channels_last: bool = False,
) -> Tensor:
    """One SGD step on a normalised batch; returns the detached per-exit losses (K,) without
    reading them on the host, so the device never waits for Python."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    losses = loss_fn(x, y, upto=upto)
    total = weighting(losses)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return losses.detach()
