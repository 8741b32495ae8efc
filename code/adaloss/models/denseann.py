"""DenseANN: the authors' CIFAR DenseNet with an exit after every s-th dense layer.

Source: the authors' `DenseNet` (anytime_network.py:999-1059 at the public commit f2f04a83,
`--densenet_version=dense`; official_code.md §3, fidelity_review.md D1):
* stem: one conv3x3 to 2g channels, no BN/ReLU (`_compute_init_l_feats`, anytime_network.py:
  484-495, s_type 'basic'; `DenseNet.__init__` forces 2g unless `--use_init_ch`, :1010-1016);
* 3 dense blocks of n layers (`compute_block`, anytime_network.py:1019-1045). A layer is
  BN-ReLU-conv3x3(g)-dropout, its output concatenated onto its input (:1034-1044). There is no 1x1
  bottleneck by default: `--b_type` defaults to 'basic' (anytime_network.py:208) and only the
  ImageNet `--densenet_depth` presets force 'bottleneck' (compute_cfg, anytime_network.py:41-171);
  the paper's CIFAR launches pass neither (official_code.md §3). `bottleneck=True` gives their
  'bottleneck' layer (:1036-1040): BN-ReLU-conv1x1(4g)-dropout, then BN-ReLU-conv3x3(g)-dropout
  (DenseNet-BC with `reduction` 0.5);
* transitions between blocks (:1021-1028): BN-ReLU-conv1x1(int(C * reduction))-dropout-AvgPool 2
  ('same'). `--reduction_ratio` defaults to 1.0 (anytime_network.py:992), and even then the
  transition keeps its full C -> C conv1x1 and dropout (nothing in the code skips them);
* heads (`bn_exit_head`): BN-ReLU on each exit layer's concatenated output (`_compute_ll_feats`,
  :1056-1058), then the generic ReLU-GAP-FC (anytime_network.py:597-636), after layers
  (N-1)%s, ..., N-1 of the N = 3n layers (`exit_units`; the stem is not a unit), none below
  `min_predict_unit`.

Dropout: the authors' CIFAR driver sets keep-prob 0.8 (densenet-ann.py:25), i.e. dropout 0.2,
after every conv of a layer and of a transition. We default to 0.0 for speed and determinism;
pass dropout=0.2 to match them. Paper config n=12, g=32, s=6 at 3x32x32, 10 classes: 6 exits,
2.01 G multiply-adds and 7.46 M parameters (tests/test_flops.py counts them by hand).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import AnytimeNet, bn_relu_conv, check_positive, conv
from .heads import bn_exit_head

__all__ = ["DenseANN", "DenseLayer", "Transition"]

N_BLOCKS = 3  # the authors' CIFAR/SVHN `--n_blocks` default
BOTTLENECK_WIDTH = 4  # `--bottleneck_width`: the 1x1 conv of a bottleneck layer has 4g channels


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
    """One dense layer: BN-ReLU-conv3x3(g)-dropout, with `bottleneck` first BN-ReLU-conv1x1(4g)-
    dropout, concatenated onto its input. It is preceded by the block transition when it opens
    blocks 2 and 3, so the transition runs only when that layer does."""

    def __init__(self, c_in: int, growth: int, dropout: float, transition: nn.Module,
                 bottleneck: bool) -> None:
        super().__init__()
        self.transition = transition
        layers: list[nn.Module] = []
        c = c_in
        if bottleneck:
            c = BOTTLENECK_WIDTH * growth
            layers += [bn_relu_conv(c_in, c, 1), nn.Dropout(dropout)]  # (B, 4g, H, W)
        layers += [bn_relu_conv(c, growth, 3), nn.Dropout(dropout)]  # (B, g, H, W)
        self.new_features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.transition(x)  # (B, C, H, W)
        return torch.cat([x, self.new_features(x)], dim=1)  # (B, C + g, H, W)


class DenseANN(AnytimeNet):
    """DenseANN with options n (layers per block, default 6), growth (g, default 12),
    s (an exit every s layers, default 1), min_predict_unit (no exit before that 0-based layer,
    default 0), bottleneck (a conv1x1 to 4g before each 3x3, default False as in the authors'
    CIFAR runs), reduction (transition channel ratio, default 1.0 as theirs; DenseNet-BC is
    bottleneck=True, reduction=0.5) and dropout (default 0.0; the authors' CIFAR runs used 0.2)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        n: int = 6,
        growth: int = 12,
        s: int = 1,
        min_predict_unit: int = 0,
        bottleneck: bool = False,
        reduction: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        check_positive(num_classes=num_classes, n=n, growth=growth, reduction=reduction)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if reduction > 1.0:
            raise ValueError(f"reduction must be in (0, 1], got {reduction}")
        if not isinstance(bottleneck, bool):
            raise ValueError(f"bottleneck must be true or false, got {bottleneck!r}")
        units: list[nn.Module] = []
        channels: list[int] = []
        c = 2 * growth
        for block in range(N_BLOCKS):
            for k in range(n):
                transition: nn.Module = nn.Identity()
                if block > 0 and k == 0:
                    transition = Transition(c, int(c * reduction), dropout)
                    c = int(c * reduction)
                units.append(DenseLayer(c, growth, dropout, transition, bottleneck))
                c += growth
                channels.append(c)
        super().__init__(
            stem=conv(in_channels, 2 * growth, 3),  # (B, 2g, H, W)
            units=units,
            unit_channels=channels,
            make_head=lambda ch: bn_exit_head(ch, num_classes),
            s=s,
            input_shape=(in_channels, image_size, image_size),
            min_predict_unit=min_predict_unit,
        )
