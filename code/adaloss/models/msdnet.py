"""MSDNet-ANN: the authors' multi-scale DenseNet with exits on the coarsest scale.

Source: official_code.md §3 (`AnytimeMultiScaleDenseNet`, anytime_network.py:1589-1700; CIFAR
driver msdensenet-ann.py: growth 6, 3 scales, reduction 0.5, `msdense` heads); Huang et al. 2017a.
* Scale w has growth g * [1,2,4,4][w] and bottleneck factor [1,2,4,4][w].
* Stem (unit 0): scale 0 is conv3x3 of the image, each coarser scale conv3x3 stride 2 of the finer
  one, all BN-ReLU, with 2g * [1,2,4,4][w] channels.
* A layer of block b computes scales b..S-1 (block b drops the finest b scales). At scale w the
  new features are a "normal" edge from scale w (conv1x1 bottleneck BN-ReLU, conv3x3 BN-ReLU) and,
  where the input has the finer scale w-1, a stride-2 "down" edge from it, each then giving half
  of g_w (g_w//2 normal, the rest down); they are concatenated onto scale w's running features.
* Between blocks: per-scale conv1x1 to int(0.5 * C) channels, BN-ReLU.
* The stem and the transitions count as units, so a block config [n_0, n_1, ...] has
  N = sum(n_b) units: stem, n_0 - 1 layers, transition, n_1 - 1 layers, ... Exits (`MSDNetHead`
  on the coarsest scale) follow `exit_units(N, s, min_predict_unit)`; with s=1 the stem has one
  too. The authors' CIFAR launches pass `--min_predict_unit=4` (official_code.md §5:
  `msdensenet-ann.py --msdensenet_depth {18,24,45} -s {2,3,6} --min_predict_unit=4`): depth 24 =
  blocks [8, 8, 8] with s=3 then has 7 exits, at units 5, 8, ..., 23, not 8 (unit 2 loses its).

Simplifications: only the CIFAR stem (the ImageNet conv7x7 s2 + max-pool stem is omitted) and no
dropout (the authors' MSDNet default keep-prob is 1). The structure is the authors' TF version,
not Huang et al.'s reference code, where they differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import AnytimeNet, check_positive, conv_bn_relu
from .heads import MSDNetHead

__all__ = ["MSDNet", "MSDStem", "MSDLayer", "MSDTransition"]

GROWTH_FACTORS = (1, 2, 4, 4)  # per-scale growth multipliers, anytime_network.py:1589-1700
BOTTLENECK_FACTORS = (1, 2, 4, 4)  # per-scale bottleneck width / edge output channels
REDUCTION = 0.5  # msdensenet-ann.py `reduction_ratio`

# per-scale state: None for a dropped (finer) scale, else (B, C_w, H_w, W_w)
Scales = list[Tensor | None]


def _edge(c_in: int, c_out: int, bottleneck: int, stride: int) -> nn.Sequential:
    """conv1x1 to int(bottleneck * c_out) + BN-ReLU, then conv3x3(stride) to c_out + BN-ReLU."""
    width = int(bottleneck * c_out)
    return nn.Sequential(conv_bn_relu(c_in, width, 1), conv_bn_relu(width, c_out, 3, stride))


class MSDStem(nn.Module):
    """Unit 0: one feature map per scale, each half the size of the previous one."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        super().__init__()
        c_ins = [in_channels, *channels[:-1]]
        self.convs = nn.ModuleList(
            conv_bn_relu(c_in, c_out, 3, stride=1 if w == 0 else 2)
            for w, (c_in, c_out) in enumerate(zip(c_ins, channels))
        )

    def forward(self, x: Tensor) -> Scales:
        feats = []
        for layer in self.convs:
            x = layer(x)  # (B, C_w, ceil(H/2^w), ceil(W/2^w))
            feats.append(x)
        return feats


class _ScaleGrowth(nn.Module):
    """New features of one scale: the normal edge, plus the down edge where a finer input exists."""

    def __init__(self, w: int, c_same: int, c_finer: int | None, growth: int) -> None:
        super().__init__()
        g = growth * GROWTH_FACTORS[w]
        g_same = g if c_finer is None else g // 2
        self.normal = _edge(c_same, g_same, BOTTLENECK_FACTORS[w], stride=1)
        self.down = None
        if c_finer is not None:
            self.down = _edge(c_finer, g - g_same, BOTTLENECK_FACTORS[w - 1], stride=2)

    def forward(self, same: Tensor, finer: Tensor | None) -> Tensor:
        new = [self.normal(same)]  # (B, g_same, H_w, W_w)
        if self.down is not None:
            new.append(self.down(finer))  # (B, g - g_same, H_w, W_w)
        return torch.cat([same, *new], dim=1)  # (B, C_w + g, H_w, W_w)


class MSDLayer(nn.Module):
    """A dense layer over scales `first`..S-1; finer scales are dropped (None) from its output."""

    def __init__(self, channels: Sequence[int | None], first: int, growth: int) -> None:
        super().__init__()
        self.first = first
        self.scales = nn.ModuleList(
            _ScaleGrowth(w, channels[w], channels[w - 1] if w > 0 else None, growth)
            for w in range(first, len(channels))
        )

    def forward(self, feats: Scales) -> Scales:
        out: Scales = [None] * self.first
        for w, grow in enumerate(self.scales, start=self.first):
            out.append(grow(feats[w], feats[w - 1] if grow.down is not None else None))
        return out


class MSDTransition(nn.Module):
    """Per-scale conv1x1 to int(0.5 * C) channels + BN-ReLU on every scale still present."""

    def __init__(self, channels: Sequence[int | None]) -> None:
        super().__init__()
        self.first = next(w for w, c in enumerate(channels) if c is not None)
        self.convs = nn.ModuleList(
            conv_bn_relu(c, int(c * REDUCTION), 1) for c in channels[self.first:]
        )

    def forward(self, feats: Scales) -> Scales:
        reduced = [layer(f) for layer, f in zip(self.convs, feats[self.first:])]  # (B, C_w/2, ..)
        return [None] * self.first + reduced


class MSDNet(AnytimeNet):
    """MSDNet-ANN with options blocks (units per block, default [4] * scales) or n (the same as
    blocks=[n] * scales), s (an exit every s units, default 1), scales (S, 1..4, default 3),
    growth (g, default 6), head_channels (the head convs' width, default 128 as on CIFAR) and
    min_predict_unit (no exit before that 0-based unit, default 0; 4 in the authors' CIFAR runs).
    The authors' CIFAR presets are blocks [5,5,5] .. [15,15,15] (depth 15 .. 45)."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        blocks: Sequence[int] | None = None,
        n: int | None = None,
        s: int = 1,
        scales: int = 3,
        growth: int = 6,
        head_channels: int = 128,
        min_predict_unit: int = 0,
    ) -> None:
        check_positive(num_classes=num_classes, scales=scales, head_channels=head_channels)
        if blocks is not None and n is not None:
            raise ValueError("give either blocks or n, not both")
        if not 1 <= scales <= len(GROWTH_FACTORS):
            raise ValueError(f"scales must be in [1, {len(GROWTH_FACTORS)}], got {scales}")
        if growth < 2:
            raise ValueError(f"growth must be >= 2 (an edge gets growth//2 channels), got {growth}")
        blocks = list(blocks) if blocks is not None else [4 if n is None else n] * scales
        check_positive(**{f"blocks[{b}]": units for b, units in enumerate(blocks)})
        if not 1 <= len(blocks) <= scales:
            raise ValueError(f"need 1 to {scales} (= scales) blocks, block b drops b scales; "
                             f"got blocks={blocks}")

        channels: list[int | None] = [2 * growth * GROWTH_FACTORS[w] for w in range(scales)]
        units: list[nn.Module] = [MSDStem(in_channels, channels)]
        coarsest = [channels[-1]]
        for b, n_units in enumerate(blocks):
            if b > 0:
                units.append(MSDTransition(channels))
                channels = [None if c is None else int(c * REDUCTION) for c in channels]
                coarsest.append(channels[-1])
            for _ in range(n_units - 1):
                units.append(MSDLayer(channels, first=b, growth=growth))
                channels = [None if w < b else c + growth * GROWTH_FACTORS[w]
                            for w, c in enumerate(channels)]
                coarsest.append(channels[-1])
        super().__init__(
            stem=nn.Identity(),  # the multi-scale stem is unit 0, so that it can carry an exit
            units=units,
            unit_channels=coarsest,
            make_head=lambda ch: MSDNetHead(ch, num_classes, head_channels),
            s=s,
            input_shape=(in_channels, image_size, image_size),
            min_predict_unit=min_predict_unit,
        )
        self.blocks = tuple(blocks)  # units per block, stem and transitions included

    def exit_features(self, state: Scales) -> Tensor:
        """Exits read the coarsest scale."""
        return state[-1]  # (B, C_{S-1}, H_{S-1}, W_{S-1})
