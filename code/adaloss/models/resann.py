"""ResANN: the authors' CIFAR-style pre-activation ResNet with an exit after every s-th unit.

Source: official_code.md §2 (`AnytimeResNet`, anytime_network.py:754-900):
* stem (anytime_network.py:484-495): one conv3x3 to `width` channels, with no BN/ReLU and no bias;
* basic unit (`residual_basic`, anytime_network.py:758-810): BN-ReLU-conv3x3(stride)-BN-ReLU-
  conv3x3-BN added to the shortcut, no ReLU after the add;
* 3 stages of n units at widths w, 2w, 4w; the first unit of stages 2 and 3 has stride 2 and the
  option-A shortcut (AvgPool 2 + zero-padded channels);
* heads (`ExitHead`) after units (N-1)%s, ..., N-1 of the N = 3n units (`exit_units`), none
  below unit `min_predict_unit` (base.py).

Paper configs: n=5..25, width 16..128; e.g. n=5, s=1 gives 15 exits.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import AnytimeNet, batch_norm, bn_relu_conv, check_positive, conv
from .heads import ExitHead

__all__ = ["ResANN", "ResidualUnit", "OptionAShortcut"]

N_STAGES = 3  # the authors' CIFAR/SVHN `--n_blocks` default; widths w, 2w, 4w


class OptionAShortcut(nn.Module):
    """Parameter-free downsampling shortcut: 2x2 average pool, then zero channels padded on both
    sides (the authors pad in_ch//2 each side when doubling). ceil_mode keeps odd sizes in step
    with the stride-2 conv (ceil(H/2)), averaging only the valid pixels as TF 'same' does."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        if c_out < c_in:
            raise ValueError(f"option-A shortcut cannot shrink channels ({c_in} -> {c_out})")
        self.pad_before = (c_out - c_in) // 2
        self.pad_after = c_out - c_in - self.pad_before
        self.pool = nn.AvgPool2d(2, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x)  # (B, C_in, ceil(H/2), ceil(W/2))
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))  # (B, C_out, H', W')


class ResidualUnit(nn.Module):
    """Basic pre-activation unit; stride 2 doubles as the stage transition (option-A shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            bn_relu_conv(c_in, c_out, 3, stride),
            bn_relu_conv(c_out, c_out, 3),
            batch_norm(c_out),
        )
        self.shortcut = OptionAShortcut(c_in, c_out) if stride != 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.branch(x) + self.shortcut(x)  # (B, C_out, H/stride, W/stride), no ReLU after


class ResANN(AnytimeNet):
    """ResANN with options n (units per stage, default 5), width (stem channels, default 16),
    s (an exit every s units, default 1) and min_predict_unit (no exit before that 0-based unit,
    default 0)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        n: int = 5,
        width: int = 16,
        s: int = 1,
        min_predict_unit: int = 0,
    ) -> None:
        check_positive(num_classes=num_classes, n=n, width=width)
        units: list[nn.Module] = []
        channels: list[int] = []
        c = width
        for stage in range(N_STAGES):
            for k in range(n):
                stride = 2 if stage > 0 and k == 0 else 1
                c_out = width * 2**stage
                units.append(ResidualUnit(c, c_out, stride))
                c = c_out
                channels.append(c)
        super().__init__(
            stem=conv(in_channels, width, 3),  # (B, w, H, W)
            units=units,
            unit_channels=channels,
            make_head=lambda ch: ExitHead(ch, num_classes),
            s=s,
            input_shape=(in_channels, image_size, image_size),
            min_predict_unit=min_predict_unit,
        )
