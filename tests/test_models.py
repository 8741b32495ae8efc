"""Tests for adaloss.models: exit counts and placement, output shapes, `upto`, the registry's
errors, the option-A shortcut and the initialisation. Tiny widths keep the file fast on a CPU."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaloss.models import ARCHS, AnytimeNet, arch_options, build_model
from adaloss.models.base import exit_units
from adaloss.models.resann import OptionAShortcut

# (arch, tiny options, expected number of exits)
CASES = [
    ("resann", dict(n=1, width=4), 3),
    ("resann", dict(n=2, width=4, s=2), 3),  # N=6: units 1, 3, 5
    ("resann", dict(n=3, width=4, s=4), 3),  # N=9: units 0, 4, 8
    ("denseann", dict(n=2, growth=4), 6),
    ("denseann", dict(n=3, growth=4, s=3, dropout=0.2), 3),
    ("msdnet", dict(n=2, growth=2, head_channels=8), 6),
    ("msdnet", dict(blocks=[3, 2, 2], growth=4, head_channels=8, s=2), 4),  # N=7: 0, 2, 4, 6
    ("msdnet", dict(blocks=[2, 2], scales=2, growth=2, head_channels=8), 4),
]
SHAPES = [(1, 8), (3, 32)]  # (channels, size): sklearn digits and CIFAR


def tiny(arch: str, opts: dict, channels: int, size: int, classes: int = 5) -> AnytimeNet:
    torch.manual_seed(0)
    return build_model(arch, channels, classes, size, **opts)


@pytest.mark.parametrize("arch,opts,k", CASES)
@pytest.mark.parametrize("channels,size", SHAPES)
def test_exits_and_shapes(arch: str, opts: dict, k: int, channels: int, size: int) -> None:
    model = tiny(arch, opts, channels, size)
    assert model.num_exits == k
    logits = model(torch.randn(2, channels, size, size))
    assert [tuple(t.shape) for t in logits] == [(2, 5)] * k


@pytest.mark.parametrize("arch,opts,k", CASES)
def test_upto_matches_full_forward(arch: str, opts: dict, k: int) -> None:
    model = tiny(arch, opts, 1, 8).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        full = model(x)
        for upto in range(k):
            part = model(x, upto=upto)
            assert len(part) == upto + 1
            for a, b in zip(part, full):
                torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch,opts,k", CASES[:1] + CASES[3:4] + CASES[5:6])
def test_upto_skips_later_units(arch: str, opts: dict, k: int) -> None:
    model = tiny(arch, opts, 1, 8)
    ran: list[int] = []
    for u, unit in enumerate(model.units):
        unit.register_forward_hook(lambda *_, u=u: ran.append(u))
    model(torch.randn(2, 1, 8, 8), upto=1)  # batch 2: BN trains on MSDNet heads' 1x1 maps
    assert ran == list(range(model.exit_after[1] + 1))


@pytest.mark.parametrize("bad", [-1, 3, 1.0, True, "0"])
def test_upto_out_of_range_raises(bad: object) -> None:
    model = tiny("resann", dict(n=1, width=4), 1, 8)
    with pytest.raises(ValueError, match="upto"):
        model(torch.randn(1, 1, 8, 8), upto=bad)


def test_msdnet_on_28x28() -> None:
    model = tiny("msdnet", dict(n=2, growth=2, head_channels=8), 1, 28)
    assert len(model(torch.randn(2, 1, 28, 28))) == model.num_exits


def test_exit_units_rule() -> None:
    assert exit_units(15, 1) == list(range(15))
    assert exit_units(75, 3) == list(range(2, 75, 3))  # n=25, s=3: 25 exits
    assert exit_units(6, 2) == [1, 3, 5]
    assert exit_units(9, 4) == [0, 4, 8]
    assert exit_units(4, 10) == [3]
    with pytest.raises(ValueError, match="s"):
        exit_units(4, 0)


def test_unknown_arch_and_option() -> None:
    with pytest.raises(ValueError, match="vgg.*denseann.*msdnet.*resann"):
        build_model("vgg", 3, 10, 32)
    with pytest.raises(ValueError, match="depth.*width"):
        build_model("resann", 3, 10, 32, depth=20)


def test_invalid_option_values() -> None:
    with pytest.raises(ValueError, match="either blocks or n"):
        build_model("msdnet", 3, 10, 32, n=3, blocks=[3, 3, 3])
    with pytest.raises(ValueError, match="blocks"):
        build_model("msdnet", 3, 10, 32, blocks=[2, 2, 2, 2])  # more blocks than scales
    with pytest.raises(ValueError, match="width"):
        build_model("resann", 3, 10, 32, width=0)
    with pytest.raises(ValueError, match="dropout"):
        build_model("denseann", 3, 10, 32, dropout=1.0)


def test_arch_options_defaults() -> None:
    assert set(ARCHS) == {"resann", "denseann", "msdnet"}
    assert arch_options("resann") == dict(n=5, width=16, s=1)
    assert arch_options("denseann") == dict(n=6, growth=12, s=1, reduction=0.5, dropout=0.0)
    assert arch_options("msdnet") == dict(blocks=None, n=None, s=1, scales=3, growth=6,
                                          head_channels=128)


def test_default_resann_has_15_exits() -> None:
    assert build_model("resann", 3, 10, 32, width=2).num_exits == 15  # n=5, s=1 (§2 example)


def test_option_a_shortcut() -> None:
    x = torch.randn(2, 4, 8, 8)
    y = OptionAShortcut(4, 8)(x)
    assert y.shape == (2, 8, 4, 4)
    torch.testing.assert_close(y[:, 2:6], nn.functional.avg_pool2d(x, 2))
    assert y[:, :2].abs().sum() == 0 and y[:, 6:].abs().sum() == 0
    assert OptionAShortcut(4, 8)(torch.randn(1, 4, 7, 7)).shape == (1, 8, 4, 4)  # ceil, as conv


def test_resann_stage_widths() -> None:
    model = tiny("resann", dict(n=1, width=4), 1, 8)
    assert [head.linear.in_features for head in model.heads] == [4, 8, 16]


def test_denseann_channels() -> None:
    model = tiny("denseann", dict(n=2, growth=4), 1, 8)
    # 2g=8 -> 12, 16 | transition int(16*0.5)=8 -> 12, 16 | 8 -> 12, 16; then BN + ExitHead
    assert [head[1].linear.in_features for head in model.heads] == [12, 16, 12, 16, 12, 16]


def test_msdnet_structure() -> None:
    """growth 6, scales 3: stem 12/24/48 channels; a layer adds 6/12/24 per scale; transitions
    halve. Units: stem, L, T, L, L, T, L (blocks [2, 3, 2]: stem and transitions count)."""
    model = tiny("msdnet", dict(blocks=[2, 3, 2], head_channels=8), 3, 32)
    assert model.num_exits == 7
    assert [head[1][0].in_channels for head in model.heads] == [48, 72, 36, 60, 84, 42, 66]
    # down edges: wherever the input still has the finer scale
    assert model.units[1].scales[0].down is None  # block 0, scale 0: nothing finer
    assert model.units[1].scales[1].down is not None
    assert model.units[3].scales[0].down is not None  # block 1's first layer: transitioned scale 0
    assert model.units[4].scales[0].down is None  # scale 0 was dropped by then
    assert model.units[6].scales[0].down is not None
    # first layer of block 0 at scale 1: g=12 -> 6 normal (bottleneck 2*6) + 6 down (1*6)
    normal, down = model.units[1].scales[1].normal, model.units[1].scales[1].down
    assert (normal[0][0].out_channels, normal[1][0].out_channels) == (12, 6)
    assert (down[0][0].out_channels, down[1][0].out_channels, down[1][0].stride) == (6, 6, (2, 2))


def test_initialisation() -> None:
    model = tiny("resann", dict(n=2, width=32), 3, 8)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.eps, m.momentum) == (1e-5, 0.1)
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
        if isinstance(m, nn.Linear):
            assert torch.all(m.bias == 0)
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
    conv = model.units[-1].branch[1][2]  # 128 -> 128 channels, 3x3: std sqrt(2 / 1152)
    assert abs(conv.weight.std().item() / (2 / (128 * 9)) ** 0.5 - 1) < 0.05
