"""The paper's claims as measurements: paired per-seed differences, a 95% interval, and a verdict.

Each scored claim becomes a list of paired differences d, one per (dataset, model, seed) or finer
unit that both sides share, so run-to-run noise common to a pair cancels. The test is Student's t on
the mean of d (`paired_interval`), and the verdict (`verdict`) is

* "reproduced" when the 95% interval lies on the paper's side of zero,
* "contradicted" when it lies on the other side,
* "inconclusive" otherwise, and always with fewer than two pairs (one seed decides nothing),
* "not testable" when the study lacks what the claim needs (no such runs, too few datasets).

Claims are scored per model family (ResANN, DenseANN, MSDNet), never pooled, since the paper
reports each family in rows of its own; its (unverified) numbers exist for the ResANN rows only.
Only claims the paper makes are scored (shared/reference/paper.md §10): HALF_END and SIEVE stay in
the tables and figures but are not claims. The loss-scale rows ask the same question as the first
claim with CONST's and AdaLoss's sums of weights made equal (weighting.py, "Loss scale").

Every function here is pure (tables in, table out); `report.py` only renders the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .eann import theory_sup_factor
from .tables import BUDGETS, PAPER_RELATIVE_TO_OPT, difficulty
from .weighting import label

__all__ = [
    "CLAIM_COLUMNS", "FAMILIES", "Interval", "family_of", "paired_interval", "verdict", "late_budget_claims",
    "early_budget_claims", "loss_scale_claims", "small_vs_large_claim", "small_vs_large_summary",
    "member_cost_ratio", "eann_claims", "weights_claim", "final_exit_share", "all_claims",
]

FAMILIES = {"resann": "ResANN", "denseann": "DenseANN", "msdnet": "MSDNet"}
CONFIDENCE = 0.95
TEST = "paired t, 95% CI"
LATE = (0.75, 1.0)
EARLY = 0.25
CLAIM_COLUMNS = ["claim", "family", "paired_on", "unit", "ours", "paper", "mean_diff", "ci_low", "ci_high",
                 "pairs", "test", "verdict"]


@dataclass(frozen=True)
class Interval:
    """Mean of n paired differences and its two-sided t interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int


def paired_interval(diffs: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval on the mean of paired differences; missing values are dropped."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def verdict(interval: Interval, paper_sign: int) -> str:
    """The verdict rule of the module docstring; `paper_sign` is the sign the paper predicts for d."""
    if paper_sign not in (-1, 1):
        raise ValueError(f"paper_sign must be -1 or +1, got {paper_sign}")
    if interval.n < 2 or math.isnan(interval.low):
        return "inconclusive"
    paper_side = interval.high < 0 if paper_sign < 0 else interval.low > 0
    other_side = interval.low > 0 if paper_sign < 0 else interval.high < 0
    return "reproduced" if paper_side else "contradicted" if other_side else "inconclusive"


@dataclass
class _Claim:
    claim: str
    family: str
    paired_on: str
    unit: str
    ours: str
    paper: str
    mean_diff: float
    ci_low: float
    ci_high: float
    pairs: int
    test: str
    verdict: str


def _scored(claim: str, family: str, paired_on: str, unit: str, ours: str, paper: str,
            diffs: Sequence[float] | np.ndarray, paper_sign: int) -> _Claim:
    iv = paired_interval(diffs)
    return _Claim(claim, family, paired_on, unit, ours, paper, iv.mean, iv.low, iv.high, iv.n, TEST,
                  verdict(iv, paper_sign))


def _untestable(claim: str, family: str, why: str, paper: str) -> _Claim:
    nan = math.nan
    return _Claim(claim, family, "", "", why, paper, nan, nan, nan, 0, TEST, "not testable")


def family_of(models: Mapping[str, str]) -> Callable[[str], str]:
    """model -> its family's name (ResANN, DenseANN, MSDNet), given model -> arch; unknown models keep their name."""
    return lambda model: FAMILIES.get(models.get(model, ""), models.get(model, model))


# -- claim 1: AdaLoss against CONST and LINEAR, late and early -----------------------------------

def _rel_pairs(seeds: pd.DataFrame, a: str, b: str, budgets: Sequence[float]) -> pd.DataFrame:
    """Per (family, dataset, model, seed): a's and b's relative increase over OPT averaged over
    `budgets`, and their difference (a - b), for the pairs where both were trained."""
    rel = seeds[seeds["budget"].isin(budgets)]
    wide = rel.pivot_table(index=["family", "dataset", "model", "seed"], columns="weighting",
                           values="rel_increase_pct", aggfunc="mean")
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=["family", "dataset", "model", "seed", a, b, "diff"])
    wide = wide[[a, b]].dropna().reset_index()
    return wide.assign(diff=wide[a] - wide[b])


def _paper_rel(weighting: str, budgets: Sequence[float]) -> float | None:
    if weighting not in PAPER_RELATIVE_TO_OPT:
        return None
    return float(np.mean([PAPER_RELATIVE_TO_OPT[weighting][BUDGETS.index(b)] for b in budgets]))


def _paper_text(family: str, a: str, b: str, budgets: Sequence[float]) -> str:
    pa, pb = _paper_rel(a, budgets), _paper_rel(b, budgets)
    if family != "ResANN" or pa is None or pb is None:
        return f"no {family} number in our notes (paper.md §8); the claim is qualitative"
    return f"{pa:+.2f} vs {pb:+.2f}, difference {pa - pb:+.2f} (ResANN rows, UNVERIFIED recollection)"


def _rel_claims(seeds: pd.DataFrame, families: Mapping[str, str], a: str, b: str, budgets: Sequence[float],
                claim: Callable[[str], str], paper_sign: int, paper: Callable[[str], str]) -> list[_Claim]:
    seeds = seeds.assign(family=seeds["model"].map(family_of(families)))
    pairs = _rel_pairs(seeds, a, b, budgets)
    where = " / ".join(f"{x:g}" for x in budgets)
    out = []
    for family in sorted(seeds["family"].unique()):
        p = pairs[pairs["family"] == family]
        if p.empty:
            continue
        ours = (f"{label(a)} {p[a].mean():+.1f} vs {label(b)} {p[b].mean():+.1f} (% over OPT, mean over {len(p)} pairs "
                f"at {where} of the cost)")
        out.append(_scored(claim(family), family, "dataset, model, seed", "percentage points of relative "
                           "increase over OPT", ours, paper(family), p["diff"].to_numpy(), paper_sign))
    return out


def late_budget_claims(seeds: pd.DataFrame, families: Mapping[str, str],
                       competitors: Sequence[str] = ("const", "linear")) -> list[_Claim]:
    """Claim 1 (paper §10.1, Table 1): AdaLoss's relative increase in error over OPT, averaged over
    3/4 and 1 of the cost, is lower than CONST's and LINEAR's; d = AdaLoss - competitor < 0."""
    out = []
    for c in competitors:
        out += _rel_claims(seeds, families, "adaloss", c, LATE,
                           lambda f, c=c: f"{f}: AdaLoss beats {label(c)} at late budgets (3/4 and 1)", -1,
                           lambda f, c=c: _paper_text(f, "adaloss", c, LATE))
    return out


def early_budget_claims(seeds: pd.DataFrame, families: Mapping[str, str]) -> list[_Claim]:
    """Claim 1's price (Table 1): at 1/4 of the cost AdaLoss is worse than CONST; d = AdaLoss - CONST > 0."""
    return _rel_claims(seeds, families, "adaloss", "const", (EARLY,),
                       lambda f: f"{f}: AdaLoss pays a little at the earliest budget (1/4) against CONST", +1,
                       lambda f: _paper_text(f, "adaloss", "const", (EARLY,)))


def loss_scale_claims(seeds: pd.DataFrame, families: Mapping[str, str]) -> list[_Claim]:
    """Claim 1 with the loss scale controlled: AdaLoss rescaled to CONST's sum K (adaloss_matched)
    against CONST, and AdaLoss against the authors' earlier CONST summing to log2 K (const_log2)."""
    none = "not in the paper: our control for the step size a weighted sum implies"
    out = []
    for a, b, what in (("adaloss_matched", "const", "CONST's loss scale (AdaLoss rescaled to sum K, as CONST)"),
                       ("adaloss", "const_log2", "the authors' earlier loss scale (CONST summing to log2 K, "
                        "as before 2018-04-23)")):
        out += _rel_claims(seeds, families, a, b, LATE,
                           lambda f, what=what: f"{f}: AdaLoss beats CONST at late budgets at {what}", -1,
                           lambda f: none)
    return out


# -- claim 2: a small AdaLoss ANN against a larger CONST ANN --------------------------------------

def small_vs_large_summary(svl: pd.DataFrame) -> pd.DataFrame:
    """E3 per dataset and seed: the small ANN's final error and cost, the large ANN's error at that
    cost (its latest exit within it), and the cost the large ANN needs to match the small one's final
    error, as a multiple of the small one's cost (empty if it never does)."""
    rows = []
    for (dataset, seed), g in svl.groupby(["dataset", "seed"], sort=True):
        small = g[g["role"] == "small"].sort_values("exit")
        large = g[g["role"] == "large"].sort_values("exit")
        if small.empty or large.empty:
            continue
        cost, err = small["flops"].iloc[-1], small["error"].iloc[-1]
        within = large[large["flops"] <= cost]
        match = large[large["error"] <= err]
        rows.append({"dataset": dataset, "seed": seed, "small_mflops": cost / 1e6, "small_error": err,
                     "large_error_at_cost": within["error"].iloc[-1] if len(within) else math.nan,
                     "large_final_error": large["error"].iloc[-1],
                     "large_cost_to_match": match["flops"].iloc[0] / cost if len(match) else math.nan})
    return pd.DataFrame(rows, columns=["dataset", "seed", "small_mflops", "small_error", "large_error_at_cost",
                                       "large_final_error", "large_cost_to_match"])


def small_vs_large_claim(svl: pd.DataFrame, family: str) -> _Claim:
    """Claim 2 (paper §10.2): at the small ANN's full cost, the small AdaLoss ANN's error is below the
    larger CONST ANN's error there; d = small - large < 0 per (dataset, seed)."""
    claim = f"{family}: a small AdaLoss ANN beats a larger CONST ANN at equal cost"
    paper = "competitive with ANNs 50-100% larger; 'effectively double the speed' (v2 abstract)"
    s = small_vs_large_summary(svl)
    if s.empty or s["large_error_at_cost"].isna().all():
        return _untestable(claim, family, "the large ANN has no exit within the small one's cost", paper)
    ratio = svl.groupby("role")["flops"].max()
    ours = (f"{s['small_error'].mean():.2f}% vs {s['large_error_at_cost'].mean():.2f}% at the small ANN's "
            f"cost (mean of {len(s)}); the large ANN costs {ratio['large'] / ratio['small']:.2f}x in all")
    return _scored(claim, family, "dataset, seed", "percentage points of test error", ours, paper,
                   (s["small_error"] - s["large_error_at_cost"]).to_numpy(), -1)


# -- claims 3 and 4: the EANN ----------------------------------------------------------------------

def member_cost_ratio(curve: pd.DataFrame) -> float:
    """The EANN's measured base b: geometric mean of successive members' cost ratios."""
    one = curve[(curve["dataset"] == curve["dataset"].iloc[0]) & (curve["seed"] == curve["seed"].iloc[0])
                & (curve["weighting"] == curve["weighting"].iloc[0])]
    ends = one.groupby("member", sort=False)["budget"].max().sort_values()
    costs = ends.diff().fillna(ends.iloc[0]).to_numpy()
    return float((costs[-1] / costs[0]) ** (1.0 / (len(costs) - 1)))


def _error_at(curve: pd.DataFrame, budget: float) -> float:
    """The EANN's test error with `budget` FLOPs: its latest prediction within it (NaN before any)."""
    within = curve[curve["budget"] <= budget]
    return float(within.sort_values("budget")["error"].iloc[-1]) if len(within) else math.nan


def _first_member_cost(curve: pd.DataFrame) -> float:
    return float(curve[curve["member"] == curve.sort_values("budget")["member"].iloc[0]]["budget"].max())


def eann_claims(curve: pd.DataFrame, opt: pd.DataFrame, tolerance: float, family: str,
                ada: str = "adaloss", const: str = "const") -> list[_Claim]:
    """Claim 3 (paper §10.4, Proposition): an EANN is competitive with OPT for a constant fraction of
    extra cost. Measured: at every OPT point (cost c, error e) whose budget C c lies past the first
    member (C = 2 + 1/(b - 1), b the members' measured cost ratio), d = EANN error at budget C c
    - (1 + tolerance) e < 0. Claim 4 (paper §5.6): an EANN of AdaLoss ANNs beats one of CONST ANNs;
    d = AdaLoss EANN's error - CONST EANN's at each OPT point's cost c (past the first member) < 0."""
    compete = f"{family}: an EANN is competitive with OPT at every budget for a constant fraction of extra cost"
    beats = f"{family}: an EANN of AdaLoss ANNs beats an EANN of CONST ANNs"
    if ada not in set(curve["weighting"]):
        return [_untestable(compete, family, "no AdaLoss EANN in this study", "")]
    bound = theory_sup_factor(member_cost_ratio(curve))
    rows, pairs = [], []
    for (dataset, seed), o in opt.groupby(["dataset", "seed"], sort=True):
        curves = {w: c for w, c in curve[(curve["dataset"] == dataset) & (curve["seed"] == seed)].groupby("weighting")}
        if ada not in curves:
            continue
        first = _first_member_cost(curves[ada])
        for r in o.itertuples():
            if bound * r.flops >= first:
                rows.append(_error_at(curves[ada], bound * r.flops) - (1 + tolerance) * r.error)
            if r.flops >= first and const in curves:
                pairs.append(_error_at(curves[ada], r.flops) - _error_at(curves[const], r.flops))
    paper = f"sup C = 2 + 1/(b-1) = {bound:.2f} for the measured b (Proposition; no measured number known)"
    out = [_scored(compete, family, "dataset, seed, OPT point", "percentage points of test error",
                   f"EANN error at {bound:.2f}x each OPT point's cost minus (1 + {tolerance:g}) x OPT's error, "
                   f"mean {np.nanmean(rows) if rows else math.nan:+.2f} over {len(rows)} points", paper, rows, -1)]
    if const in set(curve["weighting"]):
        out.append(_scored(beats, family, "dataset, seed, OPT point", "percentage points of test error",
                           f"AdaLoss EANN minus CONST EANN at each OPT point's cost, mean "
                           f"{np.nanmean(pairs) if pairs else math.nan:+.2f} over {len(pairs)} points",
                           "AdaLoss EANNs better than CONST EANNs on ILSVRC (paper.md §5.6, qualitative)",
                           pairs, -1))
    return out


# -- claim 5: weights versus difficulty -----------------------------------------------------------

def final_exit_share(weights: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, model, seed): AdaLoss's final-exit weight as a share of all its weights."""
    keys = ["dataset", "model", "seed"]
    last = weights[weights["exit"] == weights.groupby(keys)["exit"].transform("max")].set_index(keys)["weight"]
    share = last / weights.groupby(keys)["weight"].sum()
    return share.rename("final_exit_share").reset_index()


def _opt_final_errors(anytime: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and seed: OPT's final error, the deepest OPT network of each model averaged over models."""
    opt = anytime[anytime["weighting"] == "opt"]
    last = opt[opt["exit"] == opt.groupby(["dataset", "model"])["exit"].transform("max")]
    return last.groupby(["dataset", "seed"])["error"].mean().rename("opt_error").reset_index()


def weights_claim(weights: pd.DataFrame, anytime: pd.DataFrame, min_datasets: int = 3) -> _Claim:
    """Claim 5 (paper §10.5): on harder data the final AdaLoss weights concentrate on the last exits.
    Testable only with >= `min_datasets` datasets whose OPT final errors are ordered beyond their seed
    spread (the paired per-seed difference of each adjacent pair has an interval above zero). Then
    d = final-exit share on the harder dataset - on the easier one, per adjacent pair, model and
    seed, > 0."""
    claim = "AdaLoss's final weights concentrate more on late exits on harder data"
    paper = "more weight on the final exits from SVHN to CIFAR10 to CIFAR100 (Fig. 5c, qualitative)"
    if anytime[anytime["weighting"] == "opt"].empty:
        return _untestable(claim, "all", "no OPT networks, so no difficulty order", paper)
    order = list(difficulty(anytime)["dataset"])
    errors = _opt_final_errors(anytime).pivot(index="seed", columns="dataset", values="opt_error")
    gaps = [paired_interval((errors[hard] - errors[easy]).to_numpy()) for easy, hard in zip(order, order[1:])]
    ordered = len(order) >= min_datasets and all(g.n >= 2 and g.low > 0 for g in gaps)
    shares = final_exit_share(weights)
    text = " < ".join(f"{d} ({errors[d].mean():.2f}%)" for d in order)
    if not ordered:
        why = (f"not testable at this scale: needs >= {min_datasets} datasets whose OPT errors are ordered "
               f"beyond their seed spread; OPT final error {text}")
        return _untestable(claim, "all", why, paper)
    wide = shares.pivot_table(index=["model", "seed"], columns="dataset", values="final_exit_share")
    diffs = np.concatenate([(wide[hard] - wide[easy]).dropna().to_numpy() for easy, hard in zip(order, order[1:])])
    ours = f"final-exit share of AdaLoss's weights, harder minus easier dataset; OPT final error {text}"
    return _scored(claim, "all", "adjacent dataset pair, model, seed", "share of the weights", ours, paper,
                   diffs, +1)


# -- all of them ------------------------------------------------------------------------------------

def all_claims(seeds: pd.DataFrame, families: Mapping[str, str], svl: pd.DataFrame | None, small_model: str | None,
               curve: pd.DataFrame | None, anytime: pd.DataFrame, opt_model: str | None, tolerance: float,
               weights: pd.DataFrame | None) -> pd.DataFrame:
    """Every scored claim of the study, in the paper's order, as a `CLAIM_COLUMNS` table.

    `seeds`: relative_to_opt_seeds.csv; `families`: model -> arch; `svl`: small_vs_large.csv;
    `curve`: eann.csv; `anytime`: anytime_errors.csv; `weights`: adaloss_weights.csv. A profile
    that does not run E3, E4 or E5 passes None there, and those claims are "not testable".
    """
    family = family_of(families)
    why = "not testable in this profile: it does not run {}"
    found = [*late_budget_claims(seeds, families), *early_budget_claims(seeds, families),
             *loss_scale_claims(seeds, families)]
    if svl is None or small_model is None:
        found.append(_untestable("a small AdaLoss ANN beats a larger CONST ANN at equal cost", "", why.format("E3"), ""))
    else:
        found.append(small_vs_large_claim(svl, family(small_model)))
    if curve is None or opt_model is None:
        found.append(_untestable("an EANN is competitive with OPT for a constant fraction of extra cost", "",
                                 why.format("E4"), ""))
    else:
        opt = anytime[(anytime["model"] == opt_model) & (anytime["weighting"] == "opt")]
        found += eann_claims(curve, opt, tolerance, family(opt_model))
    if weights is None:
        found.append(_untestable("AdaLoss's final weights concentrate more on late exits on harder data", "all",
                                 why.format("E5"), ""))
    else:
        found.append(weights_claim(weights, anytime))
    return pd.DataFrame([asdict(c) for c in found], columns=CLAIM_COLUMNS)
