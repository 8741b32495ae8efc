"""DenseANN: DenseNet-BC with an exit after every s-th dense layer.

Source: official_code.md §3 (`DenseNet`, anytime_network.py:999-1059, `--densenet_version=dense`):
* stem: one conv3x3 to 2g channels, no BN/ReLU (`_compute_init_l_feats`, anytime_network.py:484-495;
  DenseNet forces 2g unless `--use_init_ch`);
* 3 dense blocks of n layers, each BN-ReLU-conv1x1(4g)-dropout-BN-ReLU-conv3x3(g)-dropout, its
  output concatenated onto its input;
* transitions between blocks: BN-ReLU-conv1x1(int(C * reduction))-dropout-AvgPool 2 ('same');
* heads (`bn_exit_head`: BN-ReLU on the concatenated features, then ReLU-GAP-FC) after layers
  (N-1)%s, ..., N-1 of the N = 3n layers (`exit_units`; the stem is not a unit).

Dropout: the authors' CIFAR driver (densenet-ann.py) sets keep-prob 0.8, i.e. dropout 0.2. We
default to 0.0 for speed and determinism; pass dropout=0.2 to match them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import AnytimeNet, bn_relu_conv, check_positive, conv
from .heads import bn_exit_head

__all__ = ["DenseANN", "DenseLayer", "Transition"]

N_BLOCKS = 3  # the authors' CIFAR/SVHN `--n_blocks` default
BOTTLENECK_WIDTH = 4  # `--bottleneck_width`: the 1x1 conv has 4g channels (DenseNet-BC)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 to int(C * reduction) channels, dropout, 2x2 average pool. ceil_mode keeps
    odd sizes (28 -> 14 -> 7 -> 4) and averages only valid pixels, as TF's 'same' pooling."""

    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__(
            bn_relu_conv(c_in, c_out, 1),  # (B, C_out, H, W)
            nn.Dropout(dropout),
            nn.AvgPool2d(2, ceil_mode=True),  # (B, C_out, ceil(H/2), ceil(W/2))
        )


class DenseLayer(nn.Module):
    """One DenseNet-BC layer, preceded by the block transition when it opens blocks 2 and 3 (so
    the transition runs only when that layer does)."""

    def __init__(self, c_in: int, growth: int, dropout: float, transition: nn.Module) -> None:
        super().__init__()
        self.transition = transition
        self.new_features = nn.Sequential(
            bn_relu_conv(c_in, BOTTLENECK_WIDTH * growth, 1),  # (B, 4g, H, W)
            nn.Dropout(dropout),
            bn_relu_conv(BOTTLENECK_WIDTH * growth, growth, 3),  # (B, g, H, W)
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.transition(x)  # (B, C, H, W)
        return torch.cat([x, self.new_features(x)], dim=1)  # (B, C + g, H, W)


class DenseANN(AnytimeNet):
    """DenseANN with options n (layers per block, default 6), growth (g, default 12),
    s (an exit every s layers, default 1), reduction (transition channel ratio, default 0.5) and
    dropout (default 0.0; the authors' CIFAR runs used 0.2)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        n: int = 6,
        growth: int = 12,
        s: int = 1,
        reduction: float = 0.5,
        dropout: float = 0.0,
    ) -> None:
        check_positive(num_classes=num_classes, n=n, growth=growth, reduction=reduction)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if reduction > 1.0:
            raise ValueError(f"reduction must be in (0, 1], got {reduction}")
        units: list[nn.Module] = []
        channels: list[int] = []
        c = 2 * growth
        for block in range(N_BLOCKS):
            for k in range(n):
                transition: nn.Module = nn.Identity()
                if block > 0 and k == 0:
                    transition = Transition(c, int(c * reduction), dropout)
                    c = int(c * reduction)
                units.append(DenseLayer(c, growth, dropout, transition))
                c += growth
                channels.append(c)
        super().__init__(
            stem=conv(in_channels, 2 * growth, 3),  # (B, 2g, H, W)
            units=units,
            unit_channels=channels,
            make_head=lambda ch: bn_exit_head(ch, num_classes),
            s=s,
            input_shape=(in_channels, image_size, image_size),
        )
