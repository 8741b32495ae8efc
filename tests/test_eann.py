"""EANN composition (adaloss.eann): budgets, selection on validation error, extra-cost factor."""

from __future__ import annotations

import pandas as pd
import pytest

from adaloss import cli
from adaloss.eann import compose, extra_cost, theory_sup_factor


def _member(model: str, flops: list[int], error: list[float], val_error: list[float], seed: int = 0,
            weighting: str = "adaloss") -> pd.DataFrame:
    return pd.DataFrame({
        "dataset": "toy", "model": model, "weighting": weighting, "seed": seed, "exit": range(len(flops)),
        "flops": flops, "params": 0, "error": error, "val_error": val_error,
    })


@pytest.fixture
def members() -> pd.DataFrame:
    # Listed largest first on purpose: the EANN must run them cheapest first.
    big = _member("big", [100, 200, 400], [30.0, 12.0, 5.0], [31.0, 13.0, 6.0])
    small = _member("small", [50, 100], [40.0, 20.0], [41.0, 21.0])
    return pd.concat([big, small], ignore_index=True)


def test_budgets_charge_the_full_cost_of_members_already_run(members):
    curve = compose(members, ["big", "small"])
    assert list(curve["member"]) == ["small", "small", "big", "big", "big"]
    assert list(curve["budget"]) == [50, 100, 200, 300, 500]  # big's exits after small's 100


def test_a_later_prediction_is_used_only_when_its_validation_error_is_lower(members):
    curve = compose(members, ["small", "big"])
    # big's first exit (val 31) is worse than small's last (val 21): small's answer is kept.
    assert list(zip(curve["chosen_model"], curve["chosen_exit"])) == [
        ("small", 0), ("small", 1), ("small", 1), ("big", 1), ("big", 2)]
    assert list(curve["error"]) == [40.0, 20.0, 20.0, 12.0, 5.0]


def test_selection_never_looks_at_the_test_error():
    # big's exit 0 has the better test error but the worse validation error: it must not be chosen.
    exits = pd.concat([_member("small", [10], [50.0], [10.0]), _member("big", [30], [1.0], [20.0])])
    curve = compose(exits, ["small", "big"])
    assert curve["chosen_model"].tolist() == ["small", "small"]
    assert curve["error"].tolist() == [50.0, 50.0]


def test_missing_validation_errors_and_members_are_errors(members):
    with pytest.raises(ValueError, match="val-fraction"):
        compose(members.assign(val_error=float("nan")), ["small", "big"])
    with pytest.raises(ValueError, match="ghost"):
        compose(members, ["small", "big", "ghost"])


def test_seeds_are_composed_separately(members):
    both = pd.concat([members, members.assign(seed=1, error=members["error"] + 1)], ignore_index=True)
    curve = compose(both, ["small", "big"])
    assert curve.groupby("seed").size().tolist() == [5, 5]
    assert (curve[curve["seed"] == 1]["error"].to_numpy() == curve[curve["seed"] == 0]["error"].to_numpy() + 1).all()


def test_extra_cost_factor(members):
    curve = compose(members, ["small", "big"])
    # an OPT network's cost is its own (own_head_flops), never the anytime cost of the ANN exit it sits at
    opt = pd.DataFrame({"dataset": "toy", "seed": 0, "exit": [0, 1, 2], "flops": [60, 230, 480],
                        "own_head_flops": [50, 200, 400], "error": [45.0, 15.0, 4.0]})
    cost = extra_cost(curve, opt)
    # 45% is reached at budget 50 (1x); 15% at 300 (1.5x); 4% never: budget of the lowest error, 500.
    assert cost["eann_budget"].tolist() == [50, 300, 500]
    assert cost["reached"].tolist() == [True, True, False]
    assert cost["factor"].tolist() == pytest.approx([1.0, 1.5, 1.25])


def test_a_tolerance_counts_an_eann_within_it_of_opt_as_reaching_it(members):
    curve = compose(members, ["small", "big"])
    opt = pd.DataFrame({"dataset": "toy", "seed": 0, "exit": [2], "own_head_flops": [400], "error": [4.0]})
    # 5% is within 25% of OPT's 4% (5 <= 1.25 * 4) but not within 10%
    assert extra_cost(curve, opt, tolerance=0.25)["reached"].tolist() == [True]
    assert extra_cost(curve, opt, tolerance=0.1)["reached"].tolist() == [False]
    with pytest.raises(ValueError, match="tolerance"):
        extra_cost(curve, opt, tolerance=-0.1)


def test_one_eann_per_member_weighting(members):
    const = members.assign(weighting="const", error=members["error"] + 2)
    curve = compose(pd.concat([members, const], ignore_index=True), ["small", "big"])
    assert curve.groupby("weighting").size().to_dict() == {"adaloss": 5, "const": 5}
    ada, con = (curve[curve["weighting"] == w].reset_index(drop=True) for w in ("adaloss", "const"))
    assert (con["error"] == ada["error"] + 2).all() and (con["member_error"] == ada["member_error"] + 2).all()
    opt = pd.DataFrame({"dataset": "toy", "seed": 0, "exit": [1], "own_head_flops": [200], "error": [15.0]})
    assert extra_cost(curve, opt)["weighting"].tolist() == ["adaloss", "const"]


def test_theory_bound():
    assert theory_sup_factor(2.0) == 3.0
    assert theory_sup_factor(3.0) == 2.5
    with pytest.raises(ValueError):
        theory_sup_factor(1.0)


def test_cli_writes_curve_and_cost(tmp_path, members):
    paths = []
    for model, frame in members.groupby("model"):
        paths.append(tmp_path / f"{model}.csv")
        frame.to_csv(paths[-1], index=False)
    anytime = pd.DataFrame({"dataset": "toy", "model": "big", "weighting": "opt", "seed": 0, "exit": [0, 2],
                            "flops": [110, 450], "own_head_flops": [100, 400], "error": [35.0, 6.0]})
    anytime.to_csv(tmp_path / "anytime.csv", index=False)
    args = ["eann", "--exits", *map(str, paths), "--members", "small", "big",
            "--anytime", str(tmp_path / "anytime.csv"), "--opt-model", "big",
            "--out", str(tmp_path / "eann.csv"), "--cost-out", str(tmp_path / "cost.csv")]
    assert cli.main(args) == 0
    cost = pd.read_csv(tmp_path / "cost.csv")
    assert cost["factor"].tolist() == pytest.approx([1.0, 500 / 400])
    assert len(pd.read_csv(tmp_path / "eann.csv")) == 5
