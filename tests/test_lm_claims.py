"""E8's claims (adaloss.lm_claims): AdaLoss on an early-exit transformer, in test bits per byte.
Each statistic has a case where the wrong method (pairing across seeds, the final exit alone, a
choice on test or per seed) gives another answer."""

from __future__ import annotations

import pandas as pd
import pytest
from test_claims import FAMILIES, _seeds

from adaloss import claims, lm_claims
from adaloss.verdicts import Claim, paired_interval, verdict

LM_FLOPS = [10, 20, 30, 40]  # a 4-exit transformer: the late budget points (3/4 and 1) are exits 2 and 3


def _lm(bpb: dict[str, list[list[float]]], val: dict[str, list[list[float]]] | None = None,
        opt: dict[int, list[float]] | None = None) -> pd.DataFrame:
    """lm_anytime rows: bpb[weighting][seed] = test bits per byte of exits 0..3, val likewise (default:
    the test values); opt[k][seed] = the bits per byte of the OPT network trained for exit k."""
    val = val or bpb
    rows = [{"dataset": "stdlib", "model": "tf", "weighting": w, "seed": s, "exit": k, "flops": LM_FLOPS[k],
             "bpb": b, "val_bpb": val[w][s][k], "ms_per_token": 0.1}
            for w, per_seed in bpb.items() for s, exits in enumerate(per_seed) for k, b in enumerate(exits)]
    rows += [{"dataset": "stdlib", "model": "tf", "weighting": "opt", "seed": s, "exit": k, "flops": LM_FLOPS[k],
              "bpb": b, "val_bpb": b, "ms_per_token": 0.1} for k, per_seed in (opt or {}).items()
             for s, b in enumerate(per_seed)]
    return pd.DataFrame(rows)


def _lm_rows(lm: pd.DataFrame) -> dict[str, Claim]:
    return {c.claim.split(": ", 1)[1].split(" (")[0]: c for c in lm_claims.lm_claims(lm)}


def test_lm_claims_pair_seed_s_with_seed_s_whatever_the_row_order():
    base, gain = [2.0, 1.5, 2.5], [-0.010, -0.012, -0.009]  # the seeds differ far more than the schemes do
    lm = _lm({"tt_uniform": [[b + 1, b + 0.5, b, b] for b in base],
              "adaloss": [[b + 1, b + 0.5, b + g, b + g] for b, g in zip(base, gain)]}).sample(frac=1, random_state=0)
    late = _lm_rows(lm)["AdaLoss beats torchtune uniform at late exits"]
    assert late.pairs == 3 and late.mean_diff == pytest.approx(-0.031 / 3) and late.verdict == "reproduced"
    assert late.paired_on == "corpus, model, seed" and late.unit == "bits per byte (test)"
    # pairing seed 0 of AdaLoss with seed 1 of uniform (and so on) would leave the verdict to the seeds' spread
    across = [b + g - base[(s + 1) % 3] for s, (b, g) in enumerate(zip(base, gain))]
    assert verdict(paired_interval(across), -1) == "inconclusive"


def test_lm_late_exits_are_the_mean_of_the_3_4_and_1_budget_points_not_the_final_exit_alone():
    # AdaLoss: far better at exit 1 (before 3/4, not counted), 0.06 worse at exit 2, 0.02 better at exit 3
    lm = _lm({"tt_uniform": [[4.0, 3.5, 3.0, 2.9 + e] for e in (0.0, 0.01, 0.02)],
              "adaloss": [[4.0, 2.5, 3.06, 2.88 + e] for e in (0.0, 0.012, 0.021)]})
    late = lm_claims.lm_late_bpb(lm)
    assert late.loc[late["weighting"] == "adaloss", "bpb"].tolist() == pytest.approx([2.97, 2.976, 2.9805])
    row = _lm_rows(lm)["AdaLoss beats torchtune uniform at late exits"]
    assert row.verdict == "contradicted" and row.mean_diff == pytest.approx(0.0205)  # the final exit alone: -0.019


def test_the_best_static_scale_is_chosen_on_validation_never_on_test():
    late = lambda x: [[5.0, 4.0, x, x]] * 3  # noqa: E731  (the same in every seed)
    jitter = [[0, 0, e, e] for e in (0.0, 0.004, -0.003)]
    test = {"tt_uniform": late(3.2), "tt_linear_l": late(3.05), "tt_sum_l": late(2.90),
            "adaloss": [[a + b for a, b in zip(row, j)] for row, j in zip(late(3.00), jitter)]}
    val = {**test, "tt_linear_l": late(3.0), "tt_sum_l": late(3.1)}  # linear_l best on validation, sum_l on test
    lm = _lm(test, val)
    assert lm_claims.best_static_scale(lm) == {("stdlib", "tf"): "tt_linear_l"}
    row = _lm_rows(lm)["AdaLoss beats the best static scale at late exits"]
    assert row.verdict == "reproduced" and row.mean_diff == pytest.approx(-0.05 + 0.001 / 3)
    assert "tf: torchtune l" in row.ours  # the scale it was compared with, named
    # against the scale that is best on test (sum_l) AdaLoss would be contradicted
    assert all(a[3] - 2.90 > 0 for a in test["adaloss"])


def test_the_best_static_scale_is_chosen_once_from_the_mean_over_seeds_not_seed_by_seed():
    ada = [[5.0, 4.0, 2.95, 2.95], [5.0, 4.0, 2.94, 2.94], [5.0, 4.0, 2.96, 2.96]]
    test = {"tt_uniform": [[5.0, 4.0, 3.2, 3.2]] * 3, "tt_linear_l": [[5.0, 4.0, 3.0, 3.0]] * 3,
            "tt_sum_l": [[5.0, 4.0, 2.75, 2.75], [5.0, 4.0, 3.3, 3.3], [5.0, 4.0, 3.3, 3.3]], "adaloss": ada}
    val = {**test, "tt_linear_l": [[5.0, 4.0, 3.0, 3.0]] * 3,
           "tt_sum_l": [[5.0, 4.0, 2.99, 2.99], [5.0, 4.0, 3.2, 3.2], [5.0, 4.0, 3.2, 3.2]]}  # sum_l wins seed 0 only
    lm = _lm(test, val)
    assert lm_claims.best_static_scale(lm) == {("stdlib", "tf"): "tt_linear_l"}  # mean 3.0 against 3.13
    row = _lm_rows(lm)["AdaLoss beats the best static scale at late exits"]
    assert row.pairs == 3 and row.mean_diff == pytest.approx(-0.05) and row.verdict == "reproduced"
    # chosen per seed, seed 0 would meet sum_l (+0.20) and the interval would straddle zero
    assert verdict(paired_interval([2.95 - 2.75, 2.94 - 3.0, 2.96 - 3.0]), -1) == "inconclusive"


def test_the_lm_price_is_paid_at_exit_0_and_has_the_positive_sign():
    lm = _lm({"tt_uniform": [[4.0 + e, 3.5, 3.0, 2.9] for e in (0.0, 0.01, 0.03)],
              "adaloss": [[4.2 + e, 3.0, 2.5, 2.0] for e in (0.0, 0.02, 0.02)]})
    row = _lm_rows(lm)["AdaLoss pays at the earliest exit"]
    assert row.mean_diff == pytest.approx(0.2) and row.verdict == "reproduced"  # d > 0 is the claim
    assert "exit 0" in row.claim


def test_the_lm_control_pairs_opt_with_uniform_at_the_final_exit_and_stays_out_of_holm():
    lm = _lm({"tt_uniform": [[4.0, 3.5, 3.0, 2.9 + e] for e in (0.0, 0.01, 0.02)],
              "adaloss": [[4.1, 3.5, 3.0, 2.9] for _ in range(3)]},
             opt={1: [9.0, 9.0, 9.0], 3: [2.85, 2.855, 2.871]})  # OPT at exit 1 is worse: not the final exit
    row = _lm_rows(lm)["control: OPT beats torchtune uniform at the final exit"]
    assert row.kind == "control" and row.verdict == "reproduced"
    assert row.mean_diff == pytest.approx((-0.05 - 0.055 - 0.049) / 3)
    frame = claims.all_claims(None, {}, None, None, None, None, 0.1, None, lm)
    assert frame.loc[frame["kind"] == "control", "p_holm"].isna().all()


def test_lm_claims_with_one_seed_are_inconclusive():
    lm = _lm({"tt_uniform": [[4.0, 3.5, 3.0, 3.0]], "adaloss": [[4.5, 3.5, 2.0, 2.0]]}, opt={3: [2.0]})
    assert [c.verdict for c in lm_claims.lm_claims(lm)] == ["inconclusive"] * 4
    assert "not testable" in {c.verdict for c in lm_claims.lm_claims(lm[lm["weighting"] != "opt"])}  # no OPT: no control


def test_a_profile_without_image_experiments_or_without_e8_says_what_was_not_run_and_where_it_runs():
    lm = _lm({"tt_uniform": [[4.0, 3.5, 3.0, 2.9 + e] for e in (0.0, 0.01, 0.02)],
              "adaloss": [[4.1 + e, 3.5, 2.9, 2.8 + e] for e in (0.0, 0.015, 0.02)]})
    alone = claims.all_claims(None, {}, None, None, None, None, 0.1, None, lm)
    skipped = alone[alone["verdict"] == "not run in this profile"]
    assert skipped["ours"].iloc[0].startswith("E1 and E2 are not run in this profile; they run in every other")
    assert len(skipped) == 4  # E1/E2 (with the ablation), E3, E4, E5
    scored = alone[(alone["kind"] == "claim") & alone["p_value"].notna()]
    assert set(scored["family"]) == {"Transformer"} and len(scored) == 3  # the Holm family: E8's three claims
    without = claims.all_claims(_seeds({("res", "adaloss"): [1.0, 2.0], ("res", "const"): [5.0, 6.5]}),
                                FAMILIES, None, None, None, None, 0.1, None)
    e8 = without.iloc[-1]
    assert e8["verdict"] == e8["verdict_holm"] == "not run in this profile" and "config/lm.yaml" in e8["ours"]
