"""The whole training step as one CUDA graph: forward, per-exit losses, backward and the SGD update.

Why: at CIFAR scale an anytime ResNet is tiny (0.4 GFLOP per training image), so a step at batch
128 is hundreds of small kernels and the GPU waits on Python to launch them. `torch.compile(mode=
"reduce-overhead")` graphs the forward and backward but leaves the optimizer, the weighting and
their launches outside; here one `torch.cuda.CUDAGraph.replay()` runs everything that depends on
the batch (after PyTorch's "whole-network capture", docs/notes/cuda.html#whole-network-capture).

How it stays the same training as `step.train_step`:
* the weighted total sum_i w_i L_i is differentiated as `losses.backward(w)`, with w copied from
  the weighting into a static tensor before each replay, so the gradient is the one of
  `weighting(losses).backward()` for every weighting whose total is linear in the losses with
  constant weights: the static schemes and AdaLoss (not AdaLoss's gradient variant, nor the
  learned uncertainty weights, which need autograd through the weighting);
* the weighting is then called on the step's losses outside the graph, so AdaLoss updates its
  running average and weights exactly as in the eager step;
* the first `warmup` steps run eagerly (a CUDA graph needs warmed allocators, momentum buffers and
  compiled kernels), then the step is captured; it is captured again whenever the learning rate
  changes, because a captured kernel holds the rate it was recorded with.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .step import train_step
from .weighting import AdaLoss, AdaLossGradNorm, LossWeighting, StaticWeighting

__all__ = ["GraphedStep", "weighted_backward_step"]


def weighted_backward_step(
    loss_fn: Callable[..., Tensor], optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, weights: Tensor,
    upto: int | None = None,
) -> Tensor:
    """One SGD step on sum_i weights_i * L_i, written without the weighting module, as the graph
    records it: returns the detached per-exit losses (K,)."""
    losses = loss_fn(x, y, upto=upto)  # (K,)
    losses.backward(weights.to(losses.dtype))
    optimizer.step()
    return losses.detach()


def supports_graph(weighting: LossWeighting) -> bool:
    """True for the weightings whose total is sum_i w_i L_i with w constant within a step."""
    return isinstance(weighting, (StaticWeighting, AdaLoss)) and not isinstance(weighting, AdaLossGradNorm)


class GraphedStep:
    """Drop-in for `step.train_step` on CUDA: `step(x, y)` trains on one batch and returns the
    detached per-exit losses (K,). Every batch must have the shape of the first (drop_last)."""

    def __init__(
        self,
        loss_fn: Callable[..., Tensor],
        weighting: LossWeighting,
        optimizer: torch.optim.Optimizer,
        upto: int | None = None,
        channels_last: bool = False,
        warmup: int = 3,
    ) -> None:
        if not supports_graph(weighting):
            raise ValueError(
                f"cuda_graph supports the static weightings and adaloss, not {type(weighting).__name__}: "
                "its total is not a constant-weighted sum of the exits' losses"
            )
        self.loss_fn, self.weighting, self.optimizer = loss_fn, weighting, optimizer
        self.upto, self.channels_last = upto, channels_last
        self.warmup_left = warmup
        self.graph: torch.cuda.CUDAGraph | None = None
        self._lrs: tuple[float, ...] = ()
        self.captures = 0

    def _learning_rates(self) -> tuple[float, ...]:
        return tuple(float(group["lr"]) for group in self.optimizer.param_groups)

    def _eager(self, x: Tensor, y: Tensor) -> Tensor:
        """A normal step on a side stream, as CUDA graph warm-up asks."""
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            losses = train_step(self.loss_fn, self.weighting, self.optimizer, x, y, self.upto, self.channels_last)
        torch.cuda.current_stream(x.device).wait_stream(side)
        return losses

    def _capture(self, x: Tensor, y: Tensor) -> None:
        self.graph = None  # release the previous capture's memory before recording anew
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        # the strides the eager step gives the model (with one channel, contiguous already counts as
        # channels-last): other strides would make torch.compile recompile inside the capture
        self._x = x.contiguous(memory_format=fmt).clone()
        self._y = torch.empty_like(y)
        self._w = self.weighting.weights.detach().clone().to(x.device)
        self.optimizer.zero_grad(set_to_none=True)  # gradients are then allocated inside the graph
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._losses = weighted_backward_step(self.loss_fn, self.optimizer, self._x, self._y, self._w, self.upto)
        self.graph, self._lrs = graph, self._learning_rates()
        self.captures += 1

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if x.device.type != "cuda":
            raise ValueError(f"cuda_graph needs a CUDA device; the batch is on {x.device}")
        if self.warmup_left > 0:
            self.warmup_left -= 1
            return self._eager(x, y)
        if self.graph is None or self._learning_rates() != self._lrs:
            self._capture(x, y)
        assert self.graph is not None
        if x.shape != self._x.shape:
            raise ValueError(f"a CUDA-graphed step needs batches of one shape {tuple(self._x.shape)}, got {tuple(x.shape)}")
        self._x.copy_(x)
        self._y.copy_(y)
        self._w.copy_(self.weighting.weights)
        self.graph.replay()
        losses = self._losses.clone()
        self.weighting(losses)  # AdaLoss's running average and weights, as after an eager step
        return losses
