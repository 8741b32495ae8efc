"""E8's claims (beyond the paper, issue 20): AdaLoss on an early-exit byte-level transformer language
model, in test bits per byte, against the static exit-loss scales LLM trainers ship (torchtune's
`tt_*`, CALM's geometric weights) and against OPT. Pure functions over lm_anytime.csv; the
statistics and verdicts are `verdicts.py`'s, and the rows join the paper's in one Holm family
(`claims.all_claims`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .flops import opt_exits
from .tables import LATE
from .verdicts import Claim, scored
from .weighting import STATIC_SCHEMES, label, split_label

__all__ = ["LM_FAMILY", "LM_RUNS_IN", "lm_late_bpb", "best_static_scale", "lm_claims"]

LM_RUNS_IN = "config/lm.yaml (the stdlib corpus on a CPU) and, tiny, config/smoke.yaml"
LM_FAMILY = "Transformer"
LM_BASELINE = "tt_uniform"  # torchtune's uniform scale: CONST up to the loss scale, which AdamW ignores
LM_UNIT = "bits per byte (test)"
LM_PAIRED_ON = "corpus, model, seed"
LM_PAPER = "not in the paper (issue 20): the paper's first claim asked of a byte-level transformer"


def lm_late_bpb(lm: pd.DataFrame, column: str = "bpb") -> pd.DataFrame:
    """Per anytime run (dataset, model, weighting, seed) of lm_anytime.csv: the mean of `column` (test
    `bpb`, or `val_bpb`) over the two exits whose FLOPs per token are nearest 3/4 and 1 of the
    model's (`flops.opt_exits`), the late budget points of claim 1 and of the OPT networks. Two
    points, not every exit past 3/4 of the depth, so that the statistic is claim 1's (Table 3a's 3/4
    and 1 columns) and its two exits have OPT networks beside them."""
    ann = lm[lm["weighting"] != "opt"]
    parts = []
    for _, group in ann.groupby(["dataset", "model"], sort=True):
        costs = group.groupby("exit")["flops"].first().sort_index()
        late = [int(costs.index[k]) for k in opt_exits(costs.tolist(), LATE)]
        # each budget point counts once, even where both fall on one exit (a 2-exit model)
        picked = pd.concat([group[group["exit"] == k] for k in late])
        parts.append(picked.groupby(["dataset", "model", "weighting", "seed"], as_index=False)[column].mean())
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["dataset", "model", "weighting", "seed", column])


Choice = str | Mapping[tuple[str, str], str]  # one weighting label, or one per (dataset, model)


def _rows_of(values: pd.DataFrame, w: Choice, column: str) -> pd.Series:
    """`column` of the rows of weighting `w` (per (dataset, model) when it is a mapping), by (dataset, model, seed)."""
    keep = [x == (w if isinstance(w, str) else w.get((d, m)))
            for d, m, x in zip(values["dataset"], values["model"], values["weighting"])]
    return values.loc[keep].set_index(["dataset", "model", "seed"])[column]


def _lm_diffs(values: pd.DataFrame, column: str, a: Choice, b: Choice) -> pd.DataFrame:
    """Per (dataset, model, seed): `column` of weighting a (column `a`) and of b (`b`) and their
    difference a - b (`diff`), in the seeds where both ran: seed s of a is paired with seed s of b."""
    both = pd.concat({"a": _rows_of(values, a, column), "b": _rows_of(values, b, column)}, axis=1)
    both = both.dropna().reset_index()
    return both.assign(diff=both["a"] - both["b"])


def best_static_scale(lm: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Per (dataset, model): the static scale (every trained weighting but AdaLoss's kind and OPT:
    torchtune's and CALM's scales, CONST, LINEAR, ...) with the lowest validation bits per byte at the
    late exits (`lm_late_bpb` of `val_bpb`), averaged over seeds; a tie goes to the first label.

    Chosen on validation, never on test, and once for all seeds rather than per seed: a choice per
    seed would hand each seed the scheme whose network happened to be best in it, and that luck
    carries over to test (the same network is scored on both splits), biasing the comparison towards
    the static scale; one choice from the mean over seeds is what a practitioner who swept the scales
    would ship. What bias remains favours the chosen scale, so a win for AdaLoss is not its artefact."""
    val = lm_late_bpb(lm, "val_bpb")
    static = val[val["weighting"].map(lambda w: split_label(w)[0] in STATIC_SCHEMES)]
    means = static.groupby(["dataset", "model", "weighting"], as_index=False)["val_bpb"].mean()
    best = means.sort_values(["dataset", "model", "val_bpb", "weighting"], kind="mergesort")
    return {(d, m): w for d, m, w in best.drop_duplicates(["dataset", "model"])[["dataset", "model", "weighting"]]
            .itertuples(index=False)}


def _lmscored(claim: str, ours: str, diffs: pd.DataFrame, paper_sign: int, kind: str = "claim") -> Claim:
    return scored(f"{LM_FAMILY}: {claim}", LM_FAMILY, LM_PAIRED_ON, LM_UNIT, ours, LM_PAPER, diffs["diff"].to_numpy(),
                   paper_sign, kind)


def lm_claims(lm: pd.DataFrame) -> list[Claim]:
    """E8's rows from lm_anytime.csv, each one paired difference in test bits per byte per (corpus,
    model, seed), the seed being the unit (two exits of one run are averaged first, `lm_late_bpb`):
    (a) AdaLoss beats torchtune's uniform scale at late exits, d = AdaLoss - uniform < 0;
    (b) AdaLoss beats the best static scale at late exits, chosen once on validation (`best_static_scale`),
        d = AdaLoss - best < 0;
    (c) AdaLoss pays at the earliest exit (exit 0) against uniform, d > 0;
    and the control (the premise, not a claim): OPT, the transformer truncated at the final exit and
    trained for it alone, beats uniform there, d = OPT - uniform < 0."""
    ann = lm[lm["weighting"] != "opt"]
    late = lm_late_bpb(lm)
    best = best_static_scale(lm)
    last = lm.merge(ann.groupby(["dataset", "model"], as_index=False)["exit"].max(), on=["dataset", "model"],
                    suffixes=("", "_last"))
    final = last[last["exit"] == last["exit_last"]]  # every scheme's final exit and the OPT network trained for it
    first = ann[ann["exit"] == 0]
    diffs = {
        "late": _lm_diffs(late, "bpb", "adaloss", LM_BASELINE),
        "best": _lm_diffs(late, "bpb", "adaloss", best),
        "early": _lm_diffs(first, "bpb", "adaloss", LM_BASELINE),
        "premise": _lm_diffs(final, "bpb", "opt", LM_BASELINE),
    }

    def ours(key: str, a: str, b: str, where: str) -> str:
        d = diffs[key]
        if d.empty:
            return f"no seed has both {a} and {b}"
        return f"{a} {d['a'].mean():.4f} vs {b} {d['b'].mean():.4f} bits per byte ({where}, mean over {len(d)} pairs)"

    chosen = "; ".join(f"{m}: {label(w)}" for (_, m), w in sorted(best.items())) or "no static scale trained"
    late_where = "mean of the exits nearest 3/4 and 1 of the FLOPs per token"
    uniform = label(LM_BASELINE)
    return [
        _lmscored(f"AdaLoss beats {uniform} at late exits (3/4 and 1)",
                   ours("late", "AdaLoss", uniform, late_where), diffs["late"], -1),
        _lmscored("AdaLoss beats the best static scale at late exits (3/4 and 1; chosen on validation)",
                   ours("best", "AdaLoss", "the best static scale", late_where) + f"; chosen once on validation bits "
                   f"per byte, mean over seeds: {chosen}", diffs["best"], -1),
        _lmscored(f"AdaLoss pays at the earliest exit (exit 0) against {uniform}",
                   ours("early", "AdaLoss", uniform, "exit 0"), diffs["early"], +1),
        _lmscored(f"control: OPT beats {uniform} at the final exit (the premise; not a claim)",
                   ours("premise", "OPT", uniform, "final exit"), diffs["premise"], -1, kind="control"),
    ]
