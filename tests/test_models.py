"""Tests for adaloss.models: exit counts and placement (`min_predict_unit` too), output shapes,
`upto`, the registry's errors, the option-A shortcut, the initialisation, the BN/ReLU/conv order of
every unit and head against a functional reference written in the authors' order, and that an OPT
network's loss reaches only its own exit and the units before it. Tiny widths keep it fast."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaloss.models import ARCHS, AnytimeNet, arch_options, build_model
from adaloss.models.base import exit_units
from adaloss.models.resann import OptionAShortcut
from adaloss.weighting import make_weighting

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
    ("denseann", dict(n=2, growth=4, bottleneck=True, reduction=0.5, min_predict_unit=2),
     4),  # N=6: 2, 3, 4, 5
    ("resann", dict(n=2, width=4, min_predict_unit=3), 3),  # N=6: units 3, 4, 5
    ("msdnet", dict(blocks=[3, 2, 2], growth=4, head_channels=8, s=2, min_predict_unit=3),
     2),  # N=7: 4, 6
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
    assert set(ARCHS) == {"resann", "denseann", "msdnet", "transformer"}  # the transformer: test_transformer.py
    assert arch_options("resann") == dict(n=5, width=16, s=1, min_predict_unit=0)
    assert arch_options("denseann") == dict(n=6, growth=12, s=1, min_predict_unit=0,
                                            bottleneck=False, reduction=1.0, dropout=0.0)
    assert arch_options("msdnet") == dict(blocks=None, n=None, s=1, scales=3, growth=6,
                                          head_channels=128, min_predict_unit=0)


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


def test_denseann_channels_and_layers() -> None:
    """The default is the authors' CIFAR DenseNet: one conv3x3 per layer and full-width
    transitions (reduction 1.0, still a C -> C conv1x1); bottleneck/reduction give DenseNet-BC."""
    model = tiny("denseann", dict(n=2, growth=4), 1, 8)
    # 2g=8 -> 12, 16 | transition int(16*1.0)=16 -> 20, 24 | 24 -> 28, 32; then BN + ExitHead
    assert [head[1].linear.in_features for head in model.heads] == [12, 16, 20, 24, 28, 32]
    convs = [(m.in_channels, m.out_channels, m.kernel_size[0])
             for m in model.units.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [(8, 4, 3), (12, 4, 3), (16, 16, 1), (16, 4, 3), (20, 4, 3), (24, 24, 1),
                     (24, 4, 3), (28, 4, 3)]

    bc = tiny("denseann", dict(n=2, growth=4, bottleneck=True, reduction=0.5), 1, 8)
    # 8 -> 12, 16 | int(16*0.5)=8 -> 12, 16 | 8 -> 12, 16
    assert [head[1].linear.in_features for head in bc.heads] == [12, 16, 12, 16, 12, 16]
    first = [(m.in_channels, m.out_channels, m.kernel_size[0])
             for m in bc.units[0].modules() if isinstance(m, nn.Conv2d)]
    assert first == [(8, 16, 1), (16, 4, 3)]  # conv1x1 to 4g, then conv3x3 to g


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


def test_exit_units_min_predict_unit() -> None:
    """The authors zero the static weights of units below --min_predict_unit (0-based,
    anytime_loss.py:226-227): their CIFAR MSDNet, depth 24 = 24 units, s=3, passes 4."""
    assert exit_units(24, 3) == [2, 5, 8, 11, 14, 17, 20, 23]
    assert exit_units(24, 3, 4) == [5, 8, 11, 14, 17, 20, 23]
    assert exit_units(24, 3, 5) == [5, 8, 11, 14, 17, 20, 23]  # unit 5 itself keeps its exit
    assert exit_units(24, 3, 6) == [8, 11, 14, 17, 20, 23]
    assert exit_units(24, 3, 23) == [23]
    for bad in (24, -1, 1.5, True):
        with pytest.raises(ValueError, match="min_predict_unit"):
            exit_units(24, 3, bad)


def test_min_predict_unit_in_every_family() -> None:
    msd = build_model("msdnet", 3, 10, 32, blocks=[8, 8, 8], growth=2, head_channels=4, s=3,
                      min_predict_unit=4)  # the authors' CIFAR depth-24 run, thinner
    assert msd.num_exits == len(msd.heads) == 7
    assert msd.exit_after == (5, 8, 11, 14, 17, 20, 23)
    res = build_model("resann", 3, 10, 32, n=3, width=2, s=2, min_predict_unit=3)  # N=9: 0,2,..,8
    assert res.exit_after == (4, 6, 8) and len(res.heads) == 3
    assert [h.linear.in_features for h in res.heads] == [4, 8, 8]  # stage widths 2, 4, 8
    dense = build_model("denseann", 3, 10, 32, n=2, growth=2, min_predict_unit=5)
    assert dense.exit_after == (5,)
    for arch, opts in [("resann", dict(n=1, width=2)), ("denseann", dict(n=1, growth=2)),
                       ("msdnet", dict(n=1, growth=2, head_channels=4))]:
        with pytest.raises(ValueError, match="min_predict_unit 3 leaves no exit"):
            build_model(arch, 3, 10, 32, min_predict_unit=3, **opts)  # 3 units: 0, 1, 2


# ---- BN/ReLU/conv order against a functional reference in the authors' order ----------------

def scrambled(model: AnytimeNet) -> AnytimeNet:
    """Random BN statistics and affine parameters (scales of both signs), in eval mode: with the
    initial identity BN a BN and a ReLU commute on many inputs, and a wrong order would pass."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
            m.weight.data.normal_(generator=g)
            m.bias.data.normal_(generator=g)
    return model.eval()


def of_type(module: nn.Module, kind: type) -> list:
    """Submodules of one kind in definition order (not in the order the module applies them)."""
    return [m for m in module.modules() if isinstance(m, kind)]


def bn(x: Tensor, m: nn.BatchNorm2d) -> Tensor:
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def bn_relu(x: Tensor, m: nn.BatchNorm2d) -> Tensor:
    return F.relu(bn(x, m))


def conv(x: Tensor, m: nn.Conv2d, stride: int = 1) -> Tensor:
    assert m.bias is None
    return F.conv2d(x, m.weight, stride=stride, padding=m.kernel_size[0] // 2)


def gap_fc(x: Tensor, fc: nn.Linear) -> Tensor:
    return F.linear(x.mean(dim=(2, 3)), fc.weight, fc.bias)  # (B, num_classes)


def close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_resann_order_matches_the_authors() -> None:
    """Stem: bare conv3x3. Unit (`residual_basic`, anytime_network.py:758-810): BN-ReLU-conv3x3(s)-
    BN-ReLU-conv3x3-BN plus the shortcut (AvgPool 2, in_ch//2 zero channels each side when the
    stride is 2), no ReLU after the add. Head: ReLU-GAP-FC on the raw sum."""
    model = scrambled(tiny("resann", dict(n=1, width=4), 3, 8))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        h = model.stem(x)
        assert close(h, conv(x, model.stem))
        for u, (unit, stride) in enumerate(zip(model.units, (1, 2, 2))):
            bn0, bn1, bn2 = of_type(unit, nn.BatchNorm2d)
            conv1, conv2 = of_type(unit, nn.Conv2d)
            branch = bn(conv(bn_relu(conv(bn_relu(h, bn0), conv1, stride), bn1), conv2), bn2)
            short = h
            if stride == 2:
                pad = h.shape[1] // 2
                short = F.pad(F.avg_pool2d(h, 2), (0, 0, 0, 0, pad, pad))
            out = unit(h)
            assert close(out, branch + short)
            assert (out < 0).any()  # no ReLU after the add
            head = model.heads[u]  # s=1: exit u follows unit u
            assert close(head(out), gap_fc(F.relu(out), head.linear))
            h = out


@pytest.mark.parametrize("bottleneck", [False, True])
def test_denseann_order_matches_the_authors(bottleneck: bool) -> None:
    """`DenseNet.compute_block` (anytime_network.py:1019-1045): transition BN-ReLU-conv1x1-dropout-
    AvgPool 2; layer BN-ReLU-[conv1x1(4g)-dropout-BN-ReLU]-conv3x3(g)-dropout, concatenated after
    its input. Head: BN-ReLU (:1056-1058), then ReLU-GAP-FC. Dropout is the identity in eval."""
    opts = dict(n=2, growth=4, dropout=0.2, bottleneck=bottleneck,
                reduction=0.5 if bottleneck else 1.0)
    model = scrambled(tiny("denseann", opts, 3, 8))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        h = model.stem(x)
        assert close(h, conv(x, model.stem))
        for u, unit in enumerate(model.units):
            bns, convs = of_type(unit, nn.BatchNorm2d), of_type(unit, nn.Conv2d)
            y = h
            if u in (2, 4):  # the first layer of blocks 2 and 3 runs the transition first
                trans_bn, trans_conv = bns.pop(0), convs.pop(0)
                assert trans_conv.out_channels == int(h.shape[1] * opts["reduction"])
                y = F.avg_pool2d(conv(bn_relu(y, trans_bn), trans_conv), 2)
            new = y
            if bottleneck:
                new = conv(bn_relu(new, bns.pop(0)), convs.pop(0))  # (B, 4g, H, W)
            (last_bn,), (conv3,) = bns, convs
            new = conv(bn_relu(new, last_bn), conv3)  # (B, g, H, W)
            assert conv3.kernel_size == (3, 3)
            out = unit(h)
            assert close(out, torch.cat([y, new], dim=1))
            head = model.heads[u]  # s=1: exit u follows layer u
            (head_bn,) = of_type(head, nn.BatchNorm2d)
            assert close(head(out), gap_fc(bn_relu(out, head_bn), head[1].linear))
            h = out


def test_msdnet_order_matches_the_authors() -> None:
    """`AnytimeMultiScaleDenseNet` (anytime_network.py:1589-1700), all post-activation: stem
    conv3x3(s2 past scale 0)-BN-ReLU per scale; an edge conv1x1-BN-ReLU, conv3x3(s)-BN-ReLU; a
    layer concatenates [same, normal edge, down edge from the finer scale]; a transition is
    conv1x1-BN-ReLU per scale. Head (`msdense`): ReLU, conv3x3 s2-BN-ReLU twice, GAP, FC."""
    model = scrambled(tiny("msdnet", dict(blocks=[2, 2, 2], growth=4, head_channels=8), 3, 16))
    x = torch.randn(2, 3, 16, 16)

    def edge(f: Tensor, e: nn.Module, stride: int) -> Tensor:
        (bn1, bn3), (c1, c3) = of_type(e, nn.BatchNorm2d), of_type(e, nn.Conv2d)
        return bn_relu(conv(bn_relu(conv(f, c1), bn1), c3, stride), bn3)

    with torch.no_grad():
        stem = model.units[0]
        feats, f = [], x
        for w, layer in enumerate(stem.convs):
            (b,), (c,) = of_type(layer, nn.BatchNorm2d), of_type(layer, nn.Conv2d)
            f = bn_relu(conv(f, c, 1 if w == 0 else 2), b)
            feats.append(f)
        state = stem(x)
        assert all(close(a, b) for a, b in zip(state, feats))
        for unit in list(model.units)[1:]:
            out = unit(state)
            if hasattr(unit, "scales"):  # a dense layer over scales unit.first..S-1
                for w, grow in enumerate(unit.scales, start=unit.first):
                    new = [state[w], edge(state[w], grow.normal, 1)]
                    if grow.down is not None:
                        new.append(edge(state[w - 1], grow.down, 2))
                    assert close(out[w], torch.cat(new, dim=1))
            else:  # a transition
                for layer, f, o in zip(unit.convs, state[unit.first:], out[unit.first:]):
                    (b,), (c,) = of_type(layer, nn.BatchNorm2d), of_type(layer, nn.Conv2d)
                    assert close(o, bn_relu(conv(f, c), b))
            assert out[: unit.first] == [None] * unit.first
            state = out
        head = model.heads[-1]
        (b1, b2), (c1, c2) = of_type(head, nn.BatchNorm2d), of_type(head, nn.Conv2d)
        f = bn_relu(conv(bn_relu(conv(F.relu(state[-1]), c1, 2), b1), c2, 2), b2)
        (fc,) = of_type(head, nn.Linear)
        assert close(head(state[-1]), gap_fc(f, fc))


# ---- OPT networks: gradient reaches only the chosen exit and what it depends on -------------

OPT_NETS = [  # (arch, options, every parameter up to the exit gets gradient)
    ("resann", dict(n=2, width=4), True),
    ("msdnet", dict(blocks=[2, 2, 2], growth=2, head_channels=8), False),
]


def grads(module: nn.Module) -> list[Tensor | None]:
    return [p.grad for p in module.parameters()]


def is_zero(g: Tensor | None) -> bool:
    return g is None or not g.any()


@pytest.mark.parametrize("arch,opts,every_param", OPT_NETS)
def test_opt_weighting_sends_no_gradient_past_its_exit(arch: str, opts: dict,
                                                       every_param: bool) -> None:
    """OPT (one-hot weight at exit k) on the losses of all exits: the other heads and the units
    after exit k get exactly zero gradient; head k, the stem and the units up to exit k get some.
    every_param: each of their parameter tensors gets some, else each unit some (MSDNet: the
    finer scales of the units just before exit k never reach its coarsest-scale head)."""
    model = tiny(arch, opts, 1, 8).train()
    k = 2
    e = model.exit_after[k]
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 5, (4,))
    losses = torch.stack([F.cross_entropy(z, y) for z in model(x)])  # (K,)
    make_weighting("opt", model.num_exits, exit=k)(losses).backward()
    for j, head in enumerate(model.heads):
        if j == k:
            assert not any(is_zero(g) for g in grads(head))
        else:
            assert all(is_zero(g) for g in grads(head)), f"head {j}"
    check = all if every_param else any
    for module in [model.stem, *model.units[: e + 1]]:
        if grads(module):  # MSDNet's stem is the Identity: its multi-scale stem is unit 0
            assert check(not is_zero(g) for g in grads(module))
    for u in range(e + 1, len(model.units)):
        assert all(is_zero(g) for g in grads(model.units[u])), f"unit {u}"


@pytest.mark.parametrize("arch,opts,every_param", OPT_NETS)
def test_trainer_opt_path_runs_nothing_past_its_exit(arch: str, opts: dict,
                                                     every_param: bool) -> None:
    """The trainer's OPT path, model(x, upto=k) with a one-hot over its k+1 exits, never runs a
    later unit or head, so they get no gradient at all (grad None)."""
    model = tiny(arch, opts, 1, 8).train()
    k = 2
    ran_units: list[int] = []
    ran_heads: list[int] = []
    for u, unit in enumerate(model.units):
        unit.register_forward_hook(lambda *_, u=u: ran_units.append(u))
    for j, head in enumerate(model.heads):
        head.register_forward_hook(lambda *_, j=j: ran_heads.append(j))
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 5, (4,))
    losses = torch.stack([F.cross_entropy(z, y) for z in model(x, upto=k)])  # (k+1,)
    make_weighting("opt", k + 1, exit=k)(losses).backward()
    e = model.exit_after[k]
    assert ran_units == list(range(e + 1)) and ran_heads == list(range(k + 1))
    assert all(g is None for u in range(e + 1, len(model.units)) for g in grads(model.units[u]))
    assert all(g is None for head in model.heads[k + 1:] for g in grads(head))
    assert not any(is_zero(g) for g in grads(model.heads[k]))
