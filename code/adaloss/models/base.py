"""`AnytimeNet`, the base class of every model, plus what the three families share.

Holds:
* `exit_units`: where the exits sit. The authors put a head after unit u iff its static weight is
  > 0, i.e. after every s-th unit *ending at the last one* (official_code.md §2 "Predictors",
  anytime_network.py:597-636, weights from `compute_cfg`, anytime_network.py:41-171), so
  K = (N - 1) // s + 1.
* `AnytimeNet`: stem -> units -> one head per exit; `forward(x, upto=k)` stops after exit k.
* the layer builders every family uses (bias-free convs, BN, pre-/post-activation pairs) and the
  authors' initialisation (§2 "Init": He normal, i.e. TF variance_scaling(2.0), for conv and FC,
  tensorpack/models/conv2d.py:33, fc.py:24; BN eps 1e-5, decay 0.9 = PyTorch momentum 0.1).

`min_predict_unit` (every family's option) is the authors' `--min_predict_unit` (anytime_network.py,
parser: "Min unit idx for anytime prediction, 0 based"): after the static weights are placed,
`weights[:min_predict_unit] = 0` (tensorpack/utils/anytime_loss.py:226-227), so no exit sits at a
unit whose 0-based index is below it. Their CIFAR MSDNet launches pass 4: depth 24 ([8, 8, 8]),
s=3 then has 7 exits (units 5, 8, ..., 23) instead of 8.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "AnytimeNet",
    "exit_units",
    "check_positive",
    "conv",
    "batch_norm",
    "bn_relu_conv",
    "conv_bn_relu",
    "init_weights",
]


def check_positive(**values: int | float) -> None:
    """Raise ValueError naming every option that is not > 0 (a zero width or depth fails later and
    far less clearly)."""
    bad = {name: v for name, v in values.items() if not v > 0}
    if bad:
        raise ValueError(f"options must be > 0, got {bad}")


def exit_units(num_units: int, s: int, min_unit: int = 0) -> list[int]:
    """0-based indices of the units followed by an exit: every `s`-th unit, aligned so that the
    last unit (the full network) always has one: (N-1)%s, (N-1)%s + s, ..., N-1, minus those
    below `min_unit` (the authors' `--min_predict_unit`, which drops the earliest heads). Only
    the last unit's exit is sure to survive, so a `min_unit` past N-1 is refused, not ignored."""
    check_positive(num_units=num_units, s=s)
    if isinstance(min_unit, bool) or not isinstance(min_unit, int) or min_unit < 0:
        raise ValueError(f"min_predict_unit must be an int >= 0, got {min_unit!r}")
    if min_unit >= num_units:
        raise ValueError(f"min_predict_unit {min_unit} leaves no exit: the network has "
                         f"{num_units} units, 0-based, so it must be <= {num_units - 1}")
    return [u for u in range((num_units - 1) % s, num_units, s) if u >= min_unit]


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 'same'-padded conv (the authors' argscope: no bias, identity activation).
    Padding kernel//2 with stride 2 gives ceil(H/2), as TF's 'same', so 1x1 maps stay 1x1."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """BN with the authors' settings: eps 1e-5 and TF decay 0.9, which is PyTorch momentum 0.1."""
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


def bn_relu_conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Pre-activation pair (ResANN branches, DenseNet layers and transitions)."""
    return nn.Sequential(batch_norm(c_in), nn.ReLU(), conv(c_in, c_out, kernel, stride))


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Post-activation pair, tensorpack's `Conv2D(..., activation=BNReLU)` (MSDNet, its head)."""
    return nn.Sequential(conv(c_in, c_out, kernel, stride), batch_norm(c_out), nn.ReLU())


def init_weights(module: nn.Module) -> None:
    """He-normal (fan_in, ReLU gain) conv and linear weights, zero linear biases, BN scale 1 and
    shift 0: the authors' initialisation, so training starts where theirs did."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class AnytimeNet(nn.Module):
    """A network with K exits: `stem`, then `units` in order, and a head after each unit listed by
    `exit_units(len(units), s)`. Subclasses build the stem and units and pass them here, so the
    exit rule, forward with `upto` and the initialisation exist once.

    A unit maps the running state to the next state (a tensor, or MSDNet's list of per-scale
    tensors); `exit_features` picks the head's input from a state, and `unit_channels[u]` is its
    channel count after unit u, from which `make_head` builds that exit's head. Units below
    `min_predict_unit` get no head (`exit_units`).
    """

    def __init__(
        self,
        stem: nn.Module,
        units: Sequence[nn.Module],
        unit_channels: Sequence[int],
        make_head: Callable[[int], nn.Module],
        s: int,
        input_shape: tuple[int, int, int],
        min_predict_unit: int = 0,
    ) -> None:
        super().__init__()
        check_positive(**dict(zip(("in_channels", "image_height", "image_width"), input_shape)))
        self.exit_after = tuple(exit_units(len(units), s, min_predict_unit))  # unit of each exit
        self.stem = stem
        self.units = nn.ModuleList(units)
        self.heads = nn.ModuleList(make_head(unit_channels[u]) for u in self.exit_after)
        self.input_shape = input_shape  # (C, H, W) the model was built for; exit_costs' default
        init_weights(self)

    @property
    def num_exits(self) -> int:
        """K, the number of exits (anytime predictions)."""
        return len(self.heads)

    def example_input(self, batch_size: int, shape: Sequence[int] | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
        """A random batch of what `forward` takes, on the model's device: (B, *shape) normal noise in
        the parameters' dtype, `shape` defaulting to `input_shape`. Cost counting and latency timing
        feed models through this, so they need not know whether a model reads images or tokens."""
        ref = next(self.parameters())
        dims = self.input_shape if shape is None else tuple(shape)
        return torch.randn(batch_size, *dims, device=ref.device, dtype=ref.dtype, generator=generator)

    def exit_features(self, state: Tensor | list) -> Tensor:
        """The head's input taken from a unit's output; the state itself unless overridden."""
        return state

    def forward(self, x: Tensor, upto: int | None = None) -> list[Tensor]:
        """Logits (B, num_classes) of exits 0..upto (all K when upto is None), cheapest first.
        Units past exit `upto` are not run, so this is the network up to exit `upto` on its own."""
        last = self.num_exits - 1 if upto is None else upto
        if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last < self.num_exits:
            raise ValueError(
                f"upto must be an int in [0, {self.num_exits - 1}] or None, got {upto!r}"
            )
        state = self.stem(x)
        logits: list[Tensor] = []
        for u in range(self.exit_after[last] + 1):
            state = self.units[u](state)
            if u == self.exit_after[len(logits)]:
                head = self.heads[len(logits)]
                logits.append(head(self.exit_features(state)))  # (B, num_classes)
        return logits
