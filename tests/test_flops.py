"""Tests for adaloss.flops: per-exit FLOPs and parameters, checked against a hand count for a tiny
ResANN and against the full forward for every family; `opt_exits` on a hand-made cost list."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adaloss.flops import ExitCost, cost_fractions, exit_costs, opt_exits
from adaloss.models import build_model

TINY = [
    ("resann", dict(n=2, width=4, s=2)),
    ("denseann", dict(n=2, growth=4)),
    ("msdnet", dict(n=2, growth=2, head_channels=8)),
]


def conv3x3_flops(c_in: int, c_out: int, size_out: int) -> int:
    return 2 * c_in * c_out * 9 * size_out * size_out


def test_resann_closed_form() -> None:
    """n=1, width 4, 1x8x8, 10 classes: stem, then units at 8x8 (4 ch), 4x4 (8), 2x2 (16)."""
    model = build_model("resann", 1, 10, 8, n=1, width=4)
    stem = conv3x3_flops(1, 4, 8)
    units = [
        conv3x3_flops(4, 4, 8) + conv3x3_flops(4, 4, 8),
        conv3x3_flops(4, 8, 4) + conv3x3_flops(8, 8, 4),
        conv3x3_flops(8, 16, 2) + conv3x3_flops(16, 16, 2),
    ]
    heads = [2 * c * 10 for c in (4, 8, 16)]
    flops = [stem + sum(units[: k + 1]) + sum(heads[: k + 1]) for k in range(3)]
    assert flops == [41552, 69360, 97328]

    bn = lambda c: 2 * c  # noqa: E731  (scale and shift)
    unit_params = [
        bn(4) + 4 * 4 * 9 + bn(4) + 4 * 4 * 9 + bn(4),
        bn(4) + 4 * 8 * 9 + bn(8) + 8 * 8 * 9 + bn(8),
        bn(8) + 8 * 16 * 9 + bn(16) + 16 * 16 * 9 + bn(16),
    ]
    head_params = [c * 10 + 10 for c in (4, 8, 16)]
    params = [1 * 4 * 9 + sum(unit_params[: k + 1]) + sum(head_params[: k + 1]) for k in range(3)]

    own = [stem + sum(units[: k + 1]) + heads[k] for k in range(3)]  # the authors' cost: its own head only
    assert exit_costs(model, (1, 8, 8)) == [ExitCost(k, flops[k], params[k], own[k]) for k in range(3)]
    assert params[-1] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,opts", TINY)
@pytest.mark.parametrize("channels,size", [(1, 8), (3, 32)])
def test_costs_increase_and_end_at_full_model(arch: str, opts: dict, channels: int,
                                              size: int) -> None:
    model = build_model(arch, channels, 10, size, **opts)
    costs = exit_costs(model)  # default: the shape the model was built for
    assert [c.exit for c in costs] == list(range(model.num_exits))
    assert all(a.flops < b.flops for a, b in zip(costs, costs[1:]))
    assert all(a.params < b.params for a, b in zip(costs, costs[1:]))

    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, channels, size, size))
    assert costs[-1].flops == counter.get_total_flops()
    assert costs[-1].params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch,opts", TINY)
def test_one_pass_costs_equal_each_truncated_forward_counted_alone(arch: str, opts: dict) -> None:
    """exit_costs counts every exit in one full forward; each must equal model(x, upto=k) on its own:
    its FLOPs, and the parameters autograd reaches from its logits (a backward pass per exit)."""
    model = build_model(arch, 3, 10, 16, **opts).eval()
    x = torch.zeros(1, 3, 16, 16)
    for cost in exit_costs(model):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x, upto=cost.exit)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(sum(o.sum() for o in model(x, upto=cost.exit)), params, allow_unused=True)
        assert cost.flops == counter.get_total_flops()
        assert cost.params == sum(p.numel() for p, g in zip(params, grads) if g is not None)


def test_exit_costs_leaves_model_untouched() -> None:
    model = build_model("resann", 1, 10, 8, n=1, width=4).train()
    exit_costs(model)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("n,width,s,channels,size,units,fractions", [
    (3, 8, 1, 1, 8, [1, 3, 6, 8], [0.240, 0.445, 0.766, 1.0]),         # the default digits ResANN, 9 exits
    (9, 32, 3, 3, 32, [5, 11, 20, 26], [0.228, 0.444, 0.774, 1.0]),    # ResANN(9, 32, s=3), 9 exits
    (25, 32, 3, 3, 32, [17, 35, 56, 74], [0.242, 0.480, 0.759, 1.0]),  # ResANN(25, 32, s=3): the paper's 25 exits
])
def test_opt_exits_sit_nearest_each_fraction_of_the_total_cost(n, width, s, channels, size, units, fractions) -> None:
    model = build_model("resann", channels, 10, size, n=n, width=width, s=s)
    costs = [c.flops for c in exit_costs(model)]
    exits = opt_exits(costs)
    assert [model.exit_after[k] for k in exits] == units
    assert cost_fractions(costs, exits) == pytest.approx(fractions, abs=1e-3)
    # no other exit is nearer its fraction of the cost than the chosen one
    for f, k in zip((0.25, 0.5, 0.75, 1.0), exits):
        assert all(abs(c - f * costs[-1]) >= abs(costs[k] - f * costs[-1]) for c in costs)


def test_opt_exits_use_the_cost_not_the_exit_index() -> None:
    # 9 front-loaded exits: the index rule's "1/4" (exit 2) costs 60 %, exit 0 costs 25 %
    costs = [25, 50, 60, 80, 85, 90, 95, 98, 100]
    assert opt_exits(costs) == [0, 1, 3, 8]
    assert opt_exits([1.0]) == [0, 0, 0, 0]
    assert opt_exits([10, 30], fractions=(0.2,)) == [0]   # tie (|10 - 6| = 4 vs 24): the nearer, exit 0
    assert opt_exits([10, 20, 30, 40], fractions=(0.375,)) == [0]  # 15 is as far from 10 as from 20: the cheaper


def test_opt_exits_refuse_bad_costs_and_fractions() -> None:
    with pytest.raises(ValueError, match="at least one exit"):
        opt_exits([])
    with pytest.raises(ValueError, match="fractions"):
        opt_exits([1, 2], fractions=(1.5,))
    with pytest.raises(ValueError, match="non-decreasing"):
        opt_exits([3, 2, 1])


def test_own_head_cost_leaves_out_only_the_earlier_heads() -> None:
    model = build_model("msdnet", 1, 10, 8, n=1, growth=2, head_channels=4)
    costs = exit_costs(model)
    assert costs[0].own_head_flops == costs[0].flops  # no earlier head at the first exit
    heads = [c.flops - c.own_head_flops for c in costs]
    assert heads[1] > 0 and all(b > a for a, b in zip(heads, heads[1:]))  # one more head each time


def test_cached_exit_costs_count_once_and_key_on_the_model(tmp_path, monkeypatch):
    """The workflow asks for every model's costs in each Snakemake process: counted once, then read
    back; other options or a damaged file are counted anew."""
    import adaloss.flops as flops

    counted = []
    real = flops.exit_costs
    monkeypatch.setattr(flops, "exit_costs", lambda *a, **k: counted.append(1) or real(*a, **k))
    opts = {"n": 1, "width": 4}
    first = flops.cached_exit_costs("resann", 1, 10, 8, opts, tmp_path)
    assert flops.cached_exit_costs("resann", 1, 10, 8, opts, tmp_path) == first and len(counted) == 1
    assert first == real(build_model("resann", 1, 10, 8, **opts), (1, 8, 8))
    wider = flops.cached_exit_costs("resann", 1, 10, 8, {"n": 1, "width": 8}, tmp_path)
    assert len(counted) == 2 and wider[-1].flops > first[-1].flops
    for f in tmp_path.glob("*.json"):
        f.write_text("{ truncated")
    assert flops.cached_exit_costs("resann", 1, 10, 8, opts, tmp_path) == first and len(counted) == 3


# ---- the paper configs against closed-form hand counts (3x32x32, 10 classes) ------------------
# Parameters: conv weights (no biases), BN scale + shift, FC weights + biases. FLOPs: 2 x the
# multiply-adds of convs (each weight once per output pixel) and FC layers.

@pytest.mark.parametrize("n,w,s,head_channels", [
    (5, 16, 1, [16] * 5 + [32] * 5 + [64] * 5),  # exits after all 15 units
    (9, 32, 3, [32] * 3 + [64] * 3 + [128] * 3),  # 27 units, exits after units 2, 5, ..., 26
])
def test_paper_resann_costs_match_a_hand_count(n: int, w: int, s: int, head_channels: list) -> None:
    """Stem 3x3 conv 3 -> w; stages of n units at widths w, 2w, 4w on 32x32, 16x16, 8x8; a unit is
    two 3x3 convs c_in -> c_out -> c_out and 3 BNs (c_in, c_out, c_out). Conv weights per unit:
    stage 0: 18 w^2; stage 1: 9*w*2w + 9*(2w)^2 = 54 w^2 first, 72 w^2 after; stage 2: 216 w^2
    first, 288 w^2 after. BN per unit 2 (c_in + 2 c_out): 6 w, then 10 w and 12 w, then 20 w and
    24 w. Sums: conv weights 27 w + (378 n - 90) w^2, BN (42 n - 6) w; multiply-adds
    27 w 1024 + 18 n w^2 1024 + (54 + 72 (n-1)) w^2 256 + (216 + 288 (n-1)) w^2 64
    = 27648 w + (55296 n - 9216) w^2."""
    model = build_model("resann", 3, 10, 32, n=n, width=w, s=s)
    heads = sum(10 * c + 10 for c in head_channels)  # FC c -> 10 with bias
    params = 27 * w + (378 * n - 90) * w**2 + (42 * n - 6) * w + heads
    madds = 27648 * w + (55296 * n - 9216) * w**2 + sum(10 * c for c in head_channels)
    costs = exit_costs(model)
    assert len(costs) == len(head_channels)
    assert (costs[-1].params, costs[-1].flops) == (params, 2 * madds)
    paper = {(5, 16): (470_246, 68_867_552), (9, 32): (3_411_066, 501_062_208)}
    assert paper[n, w] == (params, madds)
    if s == 1:  # exit 0: stem, the first unit (18 w^2 conv weights, BNs 3 w) and its head
        first = (27 * w + 18 * w**2 + 6 * w + 10 * w + 10,
                 2 * (27648 * w + 18 * w**2 * 1024 + 10 * w))
        assert (costs[0].params, costs[0].flops) == first


def test_paper_denseann_costs_match_a_hand_count() -> None:
    """DenseANN n=12, g=32, s=6 (the authors' CIFAR DenseNet: basic layers, reduction 1.0).
    Block b's input has C_b = 2g + b n g channels (64, 448, 832) on a (32 / 2^b)^2 map; its
    layer k reads C_b + k g channels: a BN and a 3x3 conv to g, so block b holds
    S_b = sum_k (C_b + k g) = n C_b + g n (n-1) / 2 input channels (2880, 7488, 12096).
    The transitions before blocks 1 and 2 are BN + conv1x1 C_b -> C_b, run on the 32x32 and 16x16
    maps before pooling. Exits after layers 5, 11, ..., 35 see 256, 448, 640, 832, 1024, 1216
    channels: BN + FC each."""
    n, g = 12, 32
    c_in = [2 * g + b * n * g for b in range(3)]
    assert c_in == [64, 448, 832]
    sums = [n * c + g * n * (n - 1) // 2 for c in c_in]
    assert sums == [2880, 7488, 12096]
    pixels = [32 * 32, 16 * 16, 8 * 8]
    exit_channels = [256, 448, 640, 832, 1024, 1216]

    stem = 3 * 2 * g * 9
    convs = stem + 9 * g * sum(sums) + c_in[1] ** 2 + c_in[2] ** 2
    bns = 2 * sum(sums) + 2 * (c_in[1] + c_in[2])
    heads = sum(2 * c + 10 * c + 10 for c in exit_channels)
    madds = (stem * pixels[0] + sum(9 * g * sm * px for sm, px in zip(sums, pixels))
             + c_in[1] ** 2 * pixels[0] + c_in[2] ** 2 * pixels[1]
             + sum(10 * c for c in exit_channels))
    assert (convs + bns + heads, madds) == (7_464_828, 2_008_919_168)  # about 7.5 M and 2.0 G

    model = build_model("denseann", 3, 10, 32, n=n, growth=g, s=6, dropout=0.2)
    costs = exit_costs(model)
    assert [c.exit for c in costs] == list(range(6))
    assert (costs[-1].params, costs[-1].flops) == (convs + bns + heads, 2 * madds)
    # exit 0: stem, layers 0-5 of block 0 (sum of inputs 6*64 + 32*15 = 864) and one head
    first_params = stem + 9 * g * 864 + 2 * 864 + 12 * 256 + 10
    first_madds = (stem + 9 * g * 864) * pixels[0] + 10 * 256
    assert (costs[0].params, costs[0].flops) == (first_params, 2 * first_madds)


def _throughput_rows():
    """Two network sizes measured in packs of 1 and 8, as scripts/gpu_pack_check.sh writes them."""
    return [{"device_name": "GPU", "model": m, "forward_flops": f, "pack": p, "images_per_s": 0.0, "train_tflops": t}
            for m, f, p, t in (("small", 1e8, 1, 10.0), ("small", 1e8, 8, 40.0),
                               ("large", 1e10, 1, 100.0), ("large", 1e10, 8, 200.0))]


def test_packed_tflops_takes_the_largest_measured_pack_not_above_the_planned_one():
    from adaloss.flops import packed_tflops

    rows = _throughput_rows()
    assert packed_tflops(1e8, 21, rows) == 40.0  # packs of 21 unmeasured: 8's throughput, not more
    assert packed_tflops(1e8, 4, rows) == 10.0   # packs of 4 would not reach 8's
    assert packed_tflops(1e8, 8, []) is None


def test_packed_tflops_interpolates_in_log_flops_and_holds_images_per_s_below_the_smallest():
    from adaloss.flops import packed_tflops

    rows = _throughput_rows()
    assert packed_tflops(1e9, 8, rows) == pytest.approx(120.0)  # halfway in log FLOPs, not at 5.05e9
    assert packed_tflops(1e7, 8, rows) == pytest.approx(4.0)    # a 10x smaller launch-bound net: 10x fewer TFLOP/s
    assert packed_tflops(1e12, 8, rows) == 200.0


def test_a_throughput_table_without_its_columns_is_refused_naming_them(tmp_path):
    from adaloss.errors import InputError
    from adaloss.flops import read_pack_throughput

    assert read_pack_throughput(tmp_path / "absent.csv") == []
    bad = tmp_path / "t.csv"
    bad.write_text("model,pack\nx,1\n")
    with pytest.raises(InputError, match="missing device_name, forward_flops, images_per_s, train_tflops"):
        read_pack_throughput(bad)
