"""Tests for adaloss.early_exit: MSDNet's geometric exit proportions and the thresholds that hit them,
the refusal to fit on the test split, simulated early exit at its two extremes and as the budget
falls, the real batch-mode early exit against the simulated one on all three families (and the
unit evaluations it saves), and anytime prediction within a budget. Tiny models on random 1x8x8
'digits' images, or hand-made tables, keep it fast."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from adaloss.augment import normalize
from adaloss.early_exit import (
    AnytimeClassifier,
    ExitOutputs,
    TestSplitError,
    apply_thresholds,
    collect,
    fit_thresholds,
    fixed_rule,
    geometric_proportions,
    geometric_rule,
    max_probability,
    negative_entropy,
)
from adaloss.evaluate import top1_errors
from adaloss.flops import exit_costs
from adaloss.models import AnytimeNet, build_model

COSTS = [1.0, 2.0, 4.0, 8.0]  # mean 3.75
MEAN, STD = torch.tensor([0.5]), torch.tensor([0.25])  # (C,) for 1-channel images
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def random_outputs(num_exits: int, n: int, classes: int, seed: int, split: str = "val") -> ExitOutputs:
    """Seeded softmax outputs whose later exits are sharper, as a trained network's are."""
    g = torch.Generator().manual_seed(seed)
    sharpness = torch.linspace(1.0, 3.0, num_exits)[:, None, None]  # (K, 1, 1)
    logits = torch.randn(num_exits, n, classes, generator=g) * sharpness  # (K, N, C)
    return ExitOutputs(logits.softmax(dim=2), torch.randint(classes, (n,), generator=g), split)


def random_images(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """uint8 images (N, 1, 8, 8) and labels (N,) in [0, 10)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)  # (N, 1, 8, 8)
    return x, torch.randint(10, (n,), generator=g)


def tiny(arch: str, opts: dict, device: str = "cpu") -> AnytimeNet:
    torch.manual_seed(0)
    return build_model(arch, 1, 10, 8, **opts).to(device).eval()


# -- geometric proportions -----------------------------------------------------------------------


@pytest.mark.parametrize("budget", [1.0, 1.5, 3.75, 6.0, 8.0])
def test_geometric_proportions_sum_to_one_and_cost_the_budget(budget: float) -> None:
    p = geometric_proportions(COSTS, budget)
    assert p.shape == (len(COSTS),) and (p >= 0).all()
    assert float(p.sum()) == pytest.approx(1.0, rel=1e-9)
    assert float(p @ torch.tensor(COSTS, dtype=torch.float64)) == pytest.approx(budget, rel=1e-6)


@pytest.mark.parametrize("budget,above_one", [(5.0, True), (2.0, False)])
def test_geometric_ratio_is_above_one_iff_budget_above_mean_cost(budget: float, above_one: bool) -> None:
    p = geometric_proportions(COSTS, budget)
    ratios = p[1:] / p[:-1]  # q, the same between every pair of exits
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-9)
    assert (float(ratios[0]) > 1.0) == above_one


def test_geometric_proportions_are_uniform_at_the_mean_cost() -> None:
    p = geometric_proportions(COSTS, sum(COSTS) / len(COSTS))
    assert torch.allclose(p, torch.full_like(p, 0.25), atol=1e-9)


@pytest.mark.parametrize("budget", [0.5, 8.5])
def test_geometric_proportions_refuse_an_unreachable_budget(budget: float) -> None:
    with pytest.raises(ValueError, match=rf"budget {budget} .*\[1\.0, 8\.0\]"):
        geometric_proportions(COSTS, budget)


# -- fitting thresholds --------------------------------------------------------------------------


def test_geometric_rule_sends_the_target_share_to_each_exit() -> None:
    n, costs, budget = 100, [1.0, 2.0, 4.0], 2.2
    g = torch.Generator().manual_seed(1)
    table = (torch.randperm(3 * n, generator=g).float() / (3 * n)).reshape(3, n)  # (K, N) distinct
    outputs = ExitOutputs(torch.full((3, n, 2), 0.5), torch.zeros(n, dtype=torch.long), "val")
    thresholds = fit_thresholds(outputs, costs, budget, geometric_rule, confidence=lambda _: table)
    result = apply_thresholds(outputs, thresholds, costs, confidence=lambda _: table)
    target = torch.floor(geometric_proportions(costs, budget) * n).long()  # (K,)
    assert (target[:-1] > 0).all()  # every exit gets some, so a wrong threshold shows
    histogram = result.histogram(3)
    assert histogram[:-1].tolist() == target[:-1].tolist()
    assert int(histogram[-1]) == n - int(target[:-1].sum())
    assert thresholds[-1] == -math.inf


def test_geometric_rule_with_no_share_at_an_exit_lets_none_leave_there() -> None:
    n = 10  # budget near the last cost: floor(p_0 * 10) = 0
    table = torch.rand(3, n, generator=torch.Generator().manual_seed(2))  # (K, N)
    thresholds = geometric_rule(table, [1.0, 2.0, 4.0], 3.99)
    assert thresholds[0] == math.inf


def test_fit_thresholds_refuses_the_test_split_and_accepts_val() -> None:
    with pytest.raises(TestSplitError, match=r"'test'.*held-out training data"):
        fit_thresholds(random_outputs(4, 50, 10, seed=0, split="test"), COSTS, 3.0)
    thresholds = fit_thresholds(random_outputs(4, 50, 10, seed=0, split="val"), COSTS, 3.0)
    assert thresholds.shape == (4,)
    assert issubclass(TestSplitError, ValueError)


def test_exit_outputs_refuse_mismatched_labels() -> None:
    with pytest.raises(ValueError, match="N = len"):
        ExitOutputs(torch.rand(2, 5, 3), torch.zeros(4, dtype=torch.long), "val")


# -- applying thresholds -------------------------------------------------------------------------


@pytest.mark.parametrize("value,stop", [(math.inf, 3), (-math.inf, 0)])
def test_constant_thresholds_stop_every_image_at_one_exit(value: float, stop: int) -> None:
    outputs = random_outputs(4, 200, 10, seed=3)
    errors = top1_errors(outputs.probs, outputs.labels)
    assert errors[0] != errors[-1]  # else the error would not tell the exits apart
    thresholds = fit_thresholds(outputs, COSTS, COSTS[0], rule=fixed_rule(value))
    result = apply_thresholds(outputs, thresholds, COSTS)
    assert result.exit.eq(stop).all()
    assert result.error == pytest.approx(errors[stop])
    assert result.avg_cost == COSTS[stop]


def test_average_cost_falls_with_the_budget() -> None:
    costs = [1.0, 3.0, 6.0, 10.0, 15.0]
    outputs = random_outputs(len(costs), 1000, 10, seed=4)
    budgets = torch.linspace(costs[-1], costs[0], 8).tolist()
    avg = [apply_thresholds(outputs, fit_thresholds(outputs, costs, b), costs).avg_cost for b in budgets]
    assert all(a > b for a, b in zip(avg, avg[1:])), avg
    # on the images they were fitted on, only the floor(p_k N) rounding separates cost from budget
    slack = sum(costs[-1] - c for c in costs) / len(outputs.labels)
    assert all(abs(a - b) <= slack for a, b in zip(avg, budgets)), (avg, budgets)


def test_negative_entropy_is_zero_when_certain_and_lowest_when_uniform() -> None:
    probs = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.25] * 4, [0.7, 0.1, 0.1, 0.1]]])  # (1, 3, 4)
    conf = negative_entropy(probs)[0]  # (3,)
    assert conf[0] == 0.0
    assert float(conf[1]) == pytest.approx(-math.log(4))
    assert conf[1] < conf[2] < conf[0]


# -- the deployed classifier -----------------------------------------------------------------------

FAMILIES = [
    ("resann", dict(n=2, width=8)),
    ("resann", dict(n=2, width=8, s=2)),  # units without an exit between exits
    ("denseann", dict(n=2, growth=4)),
    ("msdnet", dict(n=2, growth=2, head_channels=8)),
    ("msdnet", dict(blocks=[3, 2, 2], growth=4, head_channels=8, s=2, min_predict_unit=3)),  # exits 4, 6
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("confidence", [max_probability, negative_entropy])
@pytest.mark.parametrize("arch,opts", FAMILIES)
def test_batch_early_exit_matches_simulated_and_runs_fewer_units(
    arch: str, opts: dict, confidence: Callable[[Tensor], Tensor], device: str
) -> None:
    model = tiny(arch, opts, device)
    costs = exit_costs(model)
    flops = [c.flops for c in costs]
    # thresholds from other images than those classified, so none sits exactly on a threshold
    held_out = collect(model, *random_images(200, seed=5), MEAN, STD, torch.device(device), "val")
    thresholds = fit_thresholds(held_out, costs, (flops[0] + flops[-1]) / 2, confidence=confidence)
    x, y = random_images(100, seed=6)
    simulated = apply_thresholds(collect(model, x, y, MEAN, STD, torch.device(device), "test"),
                                 thresholds, costs, confidence)
    real = AnytimeClassifier(model, costs).predict_early_exit(
        normalize(x.to(device), MEAN, STD), thresholds, confidence)
    assert torch.equal(real.exit, simulated.exit)
    assert torch.equal(real.prediction, simulated.prediction)
    assert torch.equal(real.cost, simulated.cost)
    assert (real.exit < model.num_exits - 1).any()  # some leave early ...
    units_per_image = torch.tensor(model.exit_after, device=device)[real.exit] + 1  # (N,)
    assert real.unit_runs == int(units_per_image.sum())  # ... and skip the units past their exit
    assert real.unit_runs < len(x) * len(model.units)


def test_batch_early_exit_stops_once_every_image_has_left() -> None:
    model = tiny("resann", dict(n=2, width=8))
    x = normalize(random_images(20, seed=7)[0], MEAN, STD)
    thresholds = torch.full((model.num_exits,), -math.inf)
    out = AnytimeClassifier(model, exit_costs(model)).predict_early_exit(x, thresholds)
    assert out.exit.eq(0).all()
    assert out.unit_runs == len(x) * (model.exit_after[0] + 1)
    with torch.no_grad():
        assert torch.equal(out.prediction, model(x, upto=0)[0].argmax(1))


def test_predict_uses_the_deepest_affordable_exit() -> None:
    model = tiny("resann", dict(n=2, width=8))
    flops = [c.flops for c in exit_costs(model)]
    x = normalize(random_images(64, seed=8)[0], MEAN, STD)
    with torch.no_grad():
        answers = [logits.argmax(1) for logits in model(x)]  # (N,) per exit
    assert not torch.equal(answers[0], answers[-1])  # else a wrong exit could pass unseen
    classifier = AnytimeClassifier(model, flops)
    for k, cost in enumerate(flops):
        assert torch.equal(classifier.predict(x, cost), answers[k])
        between = cost + (flops[k + 1] - cost) / 2 if k + 1 < len(flops) else 10 * cost
        assert torch.equal(classifier.predict(x, between), answers[k])
    with pytest.raises(ValueError, match="below the cheapest exit"):
        classifier.predict(x, flops[0] - 1)
