"""Tests for adaloss.flops: per-exit FLOPs and parameters, checked against a hand count for a tiny
ResANN and against the full forward for every family; `opt_exits` on a hand-made cost list."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from adaloss.flops import ExitCost, exit_costs, opt_exits
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

    assert exit_costs(model, (1, 8, 8)) == [ExitCost(k, flops[k], params[k]) for k in range(3)]
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


def test_exit_costs_leaves_model_untouched() -> None:
    model = build_model("resann", 1, 10, 8, n=1, width=4).train()
    exit_costs(model)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_opt_exits() -> None:
    costs = [ExitCost(k, f, 0) for k, f in enumerate([10, 30, 50, 75, 100])]
    assert opt_exits(costs) == [1, 2, 3, 4]  # 25 -> 30, 50, 75, 100
    assert opt_exits(costs, fractions=(0.1, 0.6)) == [0, 2]  # 10 -> 10; 60 -> 50 (10 vs 15)
    tie = [ExitCost(k, f, 0) for k, f in enumerate([20, 30, 100])]
    assert opt_exits(tie, fractions=(0.25,)) == [0]  # 25 is 5 from both: the cheaper exit
    with pytest.raises(ValueError, match="empty"):
        opt_exits([])


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
