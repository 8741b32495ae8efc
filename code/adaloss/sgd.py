"""SGD with momentum and L2 weight decay for CPU training, without `torch.optim`'s start-up cost.

Why it exists: the first use of any `torch.optim` optimizer imports `torch._dynamo` (2.1 s on a
2-core build machine), even when nothing is compiled, and the study runs hundreds of training jobs
of a few seconds each (docs/speed.md, "Per-job start-up"). This class applies the authors' update
(official_code.md §5: momentum 0.9, no Nesterov, no dampening, weight decay added to the gradient)
with the same `torch._foreach_*` operations in the same order as `torch.optim.SGD`'s multi-tensor
path, so both give bit-identical parameters (tests/test_sgd.py), and its `state_dict` has
`torch.optim`'s layout, so a checkpoint moves between the two (CUDA training keeps `torch.optim.SGD`
for its fused kernel and CUDA-graph capture).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["SGD"]

# The other keys of a torch.optim.SGD group, at the values this class implements, so that
# torch.optim.SGD.load_state_dict accepts our state.
_TORCH_GROUP_KEYS = {"dampening": 0, "nesterov": False, "maximize": False, "foreach": None,
                     "differentiable": False, "fused": None}


class SGD:
    """`torch.optim.SGD(groups, lr, momentum)` for the subset the trainer uses: per-group `lr` and
    `weight_decay`, one `momentum` for all, no Nesterov or dampening. Parameters without a gradient
    are skipped, as torch does."""

    def __init__(self, groups: Iterable[dict[str, Any]], lr: float, momentum: float = 0.0) -> None:
        if lr < 0 or momentum < 0:
            raise ValueError(f"lr and momentum must be >= 0, got lr={lr}, momentum={momentum}")
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            self.param_groups.append({"lr": lr, "momentum": momentum, "weight_decay": 0.0, **group,
                                      "params": list(group["params"])})
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["momentum"] != 0:
                bufs = [self.state.get(p, {}).get("momentum_buffer") for p in params]
                if all(b is not None for b in bufs):
                    torch._foreach_mul_(bufs, group["momentum"])
                    torch._foreach_add_(bufs, grads)
                else:
                    for i, (p, g) in enumerate(zip(params, grads)):
                        if bufs[i] is None:
                            bufs[i] = torch.clone(g).detach()
                            self.state[p] = {"momentum_buffer": bufs[i]}
                        else:
                            bufs[i].mul_(group["momentum"]).add_(g)
                grads = bufs
            torch._foreach_add_(params, grads, alpha=-group["lr"])

    def _index(self) -> dict[Tensor, int]:
        order = (p for group in self.param_groups for p in group["params"])
        return {p: i for i, p in enumerate(order)}

    def state_dict(self) -> dict[str, Any]:
        """`torch.optim.Optimizer.state_dict`'s layout: states and groups refer to parameter indices."""
        index = self._index()
        groups, start = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**_TORCH_GROUP_KEYS, **{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(start, start + n))})
            start += n
        state = {index[p]: {k: v.clone() for k, v in s.items()} for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state has other parameter groups than this model's")
        params = [p for group in self.param_groups for p in group["params"]]
        for mine, saved in zip(self.param_groups, groups):
            mine.update({k: v for k, v in saved.items() if k in ("lr", "momentum", "weight_decay")})
        self.state = {params[int(i)]: {"momentum_buffer": s["momentum_buffer"].to(params[int(i)], copy=True)}
                      for i, s in state_dict["state"].items() if s.get("momentum_buffer") is not None}
