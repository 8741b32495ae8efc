"""The claims' statistics (adaloss.claims) on hand-made tables: intervals, verdicts, pairing, families."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from adaloss import claims
from adaloss.claims import Interval, paired_interval, verdict

FAMILIES = {"res": "resann", "dense": "denseann"}


def _seeds(rel: dict[tuple[str, str], list[float]], budgets=(0.25, 0.75, 1.0)) -> pd.DataFrame:
    """relative_to_opt_seeds rows: rel[(model, weighting)] = per-seed relative increase, the same at every budget."""
    rows = [{"dataset": "toy", "model": m, "weighting": w, "seed": s, "budget": b, "rel_increase_pct": v}
            for (m, w), values in rel.items() for s, v in enumerate(values) for b in budgets]
    return pd.DataFrame(rows)


def test_paired_interval_is_the_student_t_interval():
    iv = paired_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2) * sd 1 / sqrt(3)
    assert (iv.mean, iv.n) == (2.0, 3)
    assert iv.low == pytest.approx(2.0 - half) and iv.high == pytest.approx(2.0 + half)


def test_one_pair_has_no_interval_and_is_always_inconclusive():
    iv = paired_interval([-50.0])
    assert iv.n == 1 and math.isnan(iv.low) and verdict(iv, -1) == "inconclusive"
    assert paired_interval([float("nan")]).n == 0


@pytest.mark.parametrize("low,high,sign,expected", [
    (-3.0, -1.0, -1, "reproduced"), (1.0, 3.0, -1, "contradicted"), (-1.0, 1.0, -1, "inconclusive"),
    (1.0, 3.0, +1, "reproduced"), (-3.0, -1.0, +1, "contradicted"), (-1.0, 1.0, +1, "inconclusive"),
])
def test_the_verdict_follows_the_side_of_zero_the_interval_lies_on(low, high, sign, expected):
    assert verdict(Interval((low + high) / 2, low, high, 3), sign) == expected


def test_late_budget_claim_is_reproduced_when_adaloss_is_better_in_every_seed():
    seeds = _seeds({("res", "adaloss"): [3.0, 4.0, 2.0], ("res", "const"): [18.0, 20.0, 19.0],
                    ("res", "linear"): [2.0, 5.0, 2.5]})
    rows = {c.claim: c for c in claims.late_budget_claims(seeds, FAMILIES)}
    const = rows["ResANN: AdaLoss beats CONST at late budgets (3/4 and 1)"]
    assert const.verdict == "reproduced" and const.pairs == 3 and const.mean_diff == pytest.approx(-16.0)
    assert "ResANN rows, UNVERIFIED" in const.paper
    linear = rows["ResANN: AdaLoss beats LINEAR at late budgets (3/4 and 1)"]
    assert linear.verdict == "inconclusive"  # differences +1, -1, -0.5 straddle zero


def test_late_budget_claim_is_contradicted_when_adaloss_is_worse_in_every_seed():
    seeds = _seeds({("res", "adaloss"): [10.0, 12.0, 11.0], ("res", "const"): [2.0, 3.0, 2.5]})
    [row] = claims.late_budget_claims(seeds, FAMILIES, competitors=("const",))
    assert row.verdict == "contradicted" and row.ci_low > 0


def test_families_are_never_pooled_and_half_end_is_not_scored():
    seeds = _seeds({("res", "adaloss"): [1.0, 2.0], ("res", "const"): [5.0, 6.0],
                    ("dense", "adaloss"): [9.0, 9.5], ("dense", "const"): [1.0, 1.5],
                    ("res", "half_end"): [50.0, 60.0]})
    rows = claims.late_budget_claims(seeds, FAMILIES)
    by_family = {r.family: r for r in rows}
    assert set(by_family) == {"ResANN", "DenseANN"} and len(rows) == 2  # no LINEAR runs, HALF_END never a claim
    assert by_family["ResANN"].verdict == "reproduced" and by_family["DenseANN"].verdict == "contradicted"
    assert "no DenseANN number" in by_family["DenseANN"].paper
    assert not any("HALF_END" in r.claim for r in rows)


def test_pairs_are_formed_only_where_both_schemes_have_the_seed():
    seeds = _seeds({("res", "adaloss"): [1.0, 2.0, 3.0], ("res", "const"): [5.0, 6.0]})
    [row] = claims.late_budget_claims(seeds, FAMILIES, competitors=("const",))
    assert row.pairs == 2


def test_the_early_budget_price_is_scored_with_the_opposite_sign():
    seeds = _seeds({("res", "adaloss"): [30.0, 33.0, 31.0], ("res", "const"): [15.0, 14.0, 16.0]})
    [row] = claims.early_budget_claims(seeds, FAMILIES)
    assert row.verdict == "reproduced" and row.mean_diff == pytest.approx(16.333, abs=1e-3)


def test_loss_scale_rows_compare_matched_adaloss_with_const():
    seeds = _seeds({("res", "adaloss_matched"): [3.0, 4.0, 2.0], ("res", "const"): [18.0, 20.0, 19.0],
                    ("res", "adaloss"): [3.0, 4.0, 2.0], ("res", "const_log2"): [3.5, 3.0, 2.5]})
    matched, log2 = claims.loss_scale_claims(seeds, FAMILIES)
    assert "CONST's loss scale" in matched.claim and matched.verdict == "reproduced"
    assert "log2 K" in log2.claim
    assert log2.verdict == "inconclusive" and "AdaLoss" in log2.ours and "CONST (sum log2 K)" in log2.ours


def _svl(small_errors: list[float], large_errors_at_cost: list[float]) -> pd.DataFrame:
    rows = []
    for seed, (s, l) in enumerate(zip(small_errors, large_errors_at_cost)):
        rows += [{"dataset": "toy", "role": "small", "model": "a", "weighting": "adaloss", "seed": seed, "exit": 0,
                  "flops": 50, "error": s + 10},
                 {"dataset": "toy", "role": "small", "model": "a", "weighting": "adaloss", "seed": seed, "exit": 1,
                  "flops": 100, "error": s},
                 {"dataset": "toy", "role": "large", "model": "b", "weighting": "const", "seed": seed, "exit": 0,
                  "flops": 90, "error": l},
                 {"dataset": "toy", "role": "large", "model": "b", "weighting": "const", "seed": seed, "exit": 1,
                  "flops": 200, "error": s - 1}]
    return pd.DataFrame(rows)


def test_small_vs_large_pairs_the_small_final_error_with_the_large_error_at_that_cost():
    row = claims.small_vs_large_claim(_svl([5.0, 6.0, 5.5], [9.0, 8.0, 9.5]), "ResANN")
    assert row.verdict == "reproduced" and row.pairs == 3 and row.mean_diff == pytest.approx(-10 / 3)
    summary = claims.small_vs_large_summary(_svl([5.0], [9.0]))
    assert summary["large_error_at_cost"].tolist() == [9.0] and summary["large_cost_to_match"].tolist() == [2.0]


def _curve(weighting: str, seed: int, errors: list[float]) -> pd.DataFrame:
    """Two members costing 10 and 20 (b = 2, bound 3): budgets 5, 10 (member 1), 20, 30 (member 2)."""
    return pd.DataFrame({"dataset": "toy", "weighting": weighting, "seed": seed, "budget": [5, 10, 20, 30],
                         "member": ["m1", "m1", "m2", "m2"], "exit": [0, 1, 0, 1], "error": errors})


def test_eann_claims_measure_the_error_at_the_bounded_extra_cost_and_against_const_members():
    curve = pd.concat([_curve("adaloss", s, [40, 20, 12, 9 + s]) for s in (0, 1, 2)]
                      + [_curve("const", s, [42, 25, 15, 13]) for s in (0, 1, 2)], ignore_index=True)
    opt = pd.DataFrame([{"dataset": "toy", "seed": s, "exit": k, "flops": f, "error": e}
                        for s in (0, 1, 2) for k, f, e in ((0, 2, 50.0), (1, 10, 12.0))])
    compete, beats = claims.eann_claims(curve, opt, tolerance=0.1, family="ResANN")
    # b = 2, bound 3: OPT at cost 2 -> budget 6, before the first member ends (10): not a point;
    # OPT at cost 10 -> budget 30, EANN error 9 + s against 1.1 * 12 = 13.2
    assert compete.pairs == 3 and compete.verdict == "reproduced"
    assert compete.mean_diff == pytest.approx(10 - 13.2)
    # AdaLoss vs CONST EANN only at OPT points past the first member (cost >= 10): 20 - 25 per seed
    assert beats.pairs == 3 and beats.mean_diff == pytest.approx(-5.0)


def _weights_and_anytime(opt_errors: dict[str, list[float]], shares: dict[str, list[float]]):
    weights, anytime = [], []
    for d, errs in opt_errors.items():
        for seed, e in enumerate(errs):
            anytime.append({"dataset": d, "model": "res", "weighting": "opt", "seed": seed, "exit": 1, "flops": 1,
                            "error": e})
            share = shares[d][seed]
            weights += [{"dataset": d, "model": "res", "seed": seed, "exit": 0, "weight": 1 - share},
                        {"dataset": d, "model": "res", "seed": seed, "exit": 1, "weight": share}]
    return pd.DataFrame(weights), pd.DataFrame(anytime)


def test_weights_vs_difficulty_needs_three_datasets_ordered_beyond_their_spread():
    two = _weights_and_anytime({"easy": [1.0, 1.1, 0.9], "hard": [20.0, 21.0, 19.0]},
                               {"easy": [0.3, 0.3, 0.3], "hard": [0.6, 0.6, 0.6]})
    assert claims.weights_claim(*two).verdict == "not testable"
    overlapping = _weights_and_anytime({"a": [1.0, 5.0, 3.0], "b": [4.0, 2.0, 3.5], "c": [30.0, 31.0, 29.0]},
                                       {"a": [0.2] * 3, "b": [0.4] * 3, "c": [0.6] * 3})
    assert claims.weights_claim(*overlapping).verdict == "not testable"
    ordered = _weights_and_anytime({"a": [1.0, 1.2, 0.8], "b": [10.0, 11.0, 9.5], "c": [30.0, 31.0, 29.0]},
                                   {"a": [0.2, 0.25, 0.22], "b": [0.4, 0.38, 0.41], "c": [0.6, 0.62, 0.59]})
    row = claims.weights_claim(*ordered)
    assert row.verdict == "reproduced" and row.pairs == 6


def test_all_claims_has_the_documented_columns():
    seeds = _seeds({("res", "adaloss"): [3.0, 4.0], ("res", "const"): [18.0, 20.0]})
    curve = pd.concat([_curve("adaloss", s, [40, 20, 12, 9]) for s in (0, 1)], ignore_index=True)
    anytime = pd.DataFrame([{"dataset": "toy", "model": "res", "weighting": "opt", "seed": s, "exit": 1, "flops": 10,
                             "error": 12.0} for s in (0, 1)])
    weights, _ = _weights_and_anytime({"toy": [12.0, 12.0]}, {"toy": [0.5, 0.5]})
    frame = claims.all_claims(seeds, FAMILIES, _svl([5.0, 6.0], [9.0, 8.0]), "res", curve, anytime, "res", 0.1,
                              weights)
    assert list(frame.columns) == claims.CLAIM_COLUMNS
    assert set(frame["verdict"]) <= {"reproduced", "contradicted", "inconclusive", "not testable"}
    assert frame.loc[frame["claim"].str.contains("harder data"), "verdict"].item() == "not testable"
