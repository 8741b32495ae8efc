"""Exit heads: the layers that turn a unit's features into one exit's logits.

Source: official_code.md §2 "Predictors" (anytime_network.py:500-537, 597-636) and §3:
* `ExitHead`, the authors' default: ReLU -> global average pool -> FC. There is no BN before the
  ReLU, because ResANN feeds its raw residual sum.
* `bn_exit_head`, DenseANN's: BN-ReLU on the unit's concatenated features, then `ExitHead`
  (`DenseNet._compute_ll_feats`, in anytime_network.py:999-1059; the generic head's ReLU then
  repeats a ReLU, a no-op, so it is not doubled here).
* `MSDNetHead`, `--prediction_feature=msdense` (set by msdensenet-ann.py): ReLU, two conv3x3
  stride 2 with BN-ReLU (128 channels on CIFAR), GAP, FC, as MSDNet's classifiers.
"""

from __future__ import annotations

from torch import Tensor, nn

from .base import batch_norm, conv, conv_bn_relu

__all__ = ["ExitHead", "bn_exit_head", "MSDNetHead"]


class ExitHead(nn.Module):
    """ReLU -> global average pool -> Linear: (B, C, H, W) -> (B, num_classes)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        pooled = x.relu().mean(dim=(2, 3))  # (B, C)
        return self.linear(pooled)  # (B, num_classes)


def bn_exit_head(channels: int, num_classes: int) -> nn.Sequential:
    """DenseANN's head: BN, then `ExitHead` (whose ReLU completes the authors' BN-ReLU)."""
    return nn.Sequential(batch_norm(channels), ExitHead(channels, num_classes))


class MSDNetHead(nn.Sequential):
    """ReLU -> conv3x3 s2 + BN-ReLU -> conv3x3 s2 + BN -> `ExitHead` (its ReLU ends the BN-ReLU).

    The convs pad by 1, so a 2x2 or 1x1 map (8x8 images at the coarsest scale) still gives 1x1.
    """

    def __init__(self, channels: int, num_classes: int, head_channels: int) -> None:
        super().__init__(
            nn.ReLU(),  # the authors' generic pre-head ReLU; a no-op on MSDNet's BN-ReLU features
            conv_bn_relu(channels, head_channels, 3, stride=2),  # (B, Ch, ceil(H/2), ceil(W/2))
            conv(head_channels, head_channels, 3, stride=2),  # (B, Ch, ceil(H/4), ceil(W/4))
            batch_norm(head_channels),
            ExitHead(head_channels, num_classes),  # (B, num_classes)
        )
