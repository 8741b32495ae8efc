"""The paper's claims as measurements, one function per claim, and `all_claims`, the study's table.

Each scored claim becomes a list of paired differences d, one per (dataset, model, seed) or coarser
unit, never finer than the seed: two numbers from one trained network (two budget points of one run,
two OPT points one EANN meets) are not two pairs, so such numbers are averaged within their seed
first. The interval, the verdict and Holm's adjustment are `verdicts.py`'s; controls (rows of kind
"control", such as a small CONST ANN against the large CONST ANN of E3) are tests built so that only
the claim passes them.

Claims are scored per model family (ResANN, DenseANN, MSDNet), never pooled. The paper's numbers
(arXiv v3, Table 3a) are the mean over 12 ResANNs on CIFAR10, CIFAR100 and SVHN together, so they
stand beside our ResANN rows only. Only claims the paper makes are scored
(shared/reference/paper.md §10): HALF_END and SIEVE stay in the tables and figures but are not
claims. The loss-scale rows ask the same question as the first claim with CONST's and AdaLoss's sums
of weights made equal (weighting.py, "Loss scale").

E8 (beyond the paper, issue 20) asks the first claim of an early-exit transformer language model
(`lm_claims.py`); its rows are ours, in the Holm family beside the paper's.

Every function here is pure (tables in, table out); `report.py` only renders the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd

from .eann import theory_sup_factor
from .lm_claims import LM_FAMILY, LM_RUNS_IN, lm_claims
from .tables import BUDGET_NAMES, BUDGETS, LATE, PAPER_RELATIVE_TO_OPT, difficulty
from .verdicts import CLAIM_COLUMNS, NOT_RUN, Claim, paired_interval, scored, untestable, with_holm
from .weighting import label

__all__ = [
    "FAMILIES", "family_of", "late_budget_claims", "early_budget_claims", "loss_scale_claims", "small_vs_large_claims",
    "small_vs_large_summary", "budget_text", "member_cost_ratio", "eann_claims", "weights_claim", "final_exit_share",
    "all_claims",
]

FAMILIES = {"resann": "ResANN", "denseann": "DenseANN", "msdnet": "MSDNet"}
RUNS_ELSEWHERE = ("config/paper.yaml (GPU, CIFAR10, CIFAR100, SVHN)",)
IMAGES_RUN_IN = "every other profile (config/config.yaml, smoke.yaml, laptop.yaml, gpu_quick.yaml, paper.yaml)"
EARLY = 0.25


def family_of(models: Mapping[str, str]) -> Callable[[str], str]:
    """model -> its family's name (ResANN, DenseANN, MSDNet), given model -> arch; unknown models keep their name."""
    return lambda model: FAMILIES.get(models.get(model, ""), models.get(model, model))


def budget_text(budget: float, fractions: Sequence[float] | np.ndarray) -> str:
    """A budget point with the cost it really has: '1/4 (27 %)', or '1/4 (22-27 %)' over several models."""
    name = BUDGET_NAMES.get(budget, f"{budget:g}")
    f = np.asarray(fractions, dtype=float)
    f = f[~np.isnan(f)]
    if not len(f):
        return name
    low, high = round(100 * f.min()), round(100 * f.max())
    return f"{name} ({low} %)" if low == high else f"{name} ({low}-{high} %)"


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
        return f"no {family} number in the paper (arXiv v3 Table 3a has ResANNs only); the claim is qualitative"
    return (f"{pa:+.2f} vs {pb:+.2f}, difference {pa - pb:+.2f} (arXiv v3, Table 3a: mean over 12 ResANNs on "
            "CIFAR10, CIFAR100 and SVHN together)")


def _rel_claims(seeds: pd.DataFrame, families: Mapping[str, str], a: str, b: str, budgets: Sequence[float],
                claim: Callable[[str], str], paper_sign: int, paper: Callable[[str], str]) -> list[Claim]:
    seeds = seeds.assign(family=seeds["model"].map(family_of(families)))
    pairs = _rel_pairs(seeds, a, b, budgets)
    out = []
    for family in sorted(seeds["family"].unique()):
        p = pairs[pairs["family"] == family]
        if p.empty:
            continue
        mine = seeds[(seeds["family"] == family) & seeds["budget"].isin(budgets)]
        where = " and ".join(budget_text(x, mine.loc[mine["budget"] == x, "cost_fraction"]) for x in budgets)
        ours = (f"{label(a)} {p[a].mean():+.1f} vs {label(b)} {p[b].mean():+.1f} (% over OPT, mean over {len(p)} pairs "
                f"at {where} of the cost)")
        out.append(scored(claim(family), family, "dataset, model, seed", "percentage points of relative "
                           "increase over OPT", ours, paper(family), p["diff"].to_numpy(), paper_sign))
    return out


def late_budget_claims(seeds: pd.DataFrame, families: Mapping[str, str],
                       competitors: Sequence[str] = ("const", "linear")) -> list[Claim]:
    """Claim 1 (paper §10.1, Table 3a): AdaLoss's relative increase in error over OPT, averaged over
    3/4 and 1 of the cost, is lower than CONST's and LINEAR's; d = AdaLoss - competitor < 0."""
    out = []
    for c in competitors:
        out += _rel_claims(seeds, families, "adaloss", c, LATE,
                           lambda f, c=c: f"{f}: AdaLoss beats {label(c)} at late budgets (3/4 and 1)", -1,
                           lambda f, c=c: _paper_text(f, "adaloss", c, LATE))
    return out


def early_budget_claims(seeds: pd.DataFrame, families: Mapping[str, str]) -> list[Claim]:
    """Claim 1's price (Table 3a): at 1/4 of the cost AdaLoss is worse than CONST; d = AdaLoss - CONST > 0."""
    return _rel_claims(seeds, families, "adaloss", "const", (EARLY,),
                       lambda f: f"{f}: AdaLoss pays a little at the earliest budget (1/4) against CONST", +1,
                       lambda f: _paper_text(f, "adaloss", "const", (EARLY,)))


def loss_scale_claims(seeds: pd.DataFrame, families: Mapping[str, str]) -> list[Claim]:
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
    """E3 per dataset, pair and seed: the small ANN's final error and cost, the large ANN's final
    error and cost (as a multiple of the small one's), the control's final error (the small ANN with
    the large one's scheme), the large ANN's error at the small one's cost (its latest exit within
    it), and the cost the large ANN needs to match the small one's final error, as a multiple of
    the small one's cost (empty if it never does)."""
    rows = []
    for (dataset, pair, seed), g in svl.groupby(["dataset", "pair", "seed"], sort=True):
        curves = {role: part.sort_values("exit") for role, part in g.groupby("role")}
        if "small" not in curves or "large" not in curves:
            continue
        small, large = curves["small"], curves["large"]
        cost, err = small["flops"].iloc[-1], small["error"].iloc[-1]
        within = large[large["flops"] <= cost]
        match = large[large["error"] <= err]
        control = curves.get("control")
        rows.append({"dataset": dataset, "pair": pair, "seed": seed, "small_mflops": cost / 1e6, "small_error": err,
                     "control_error": control["error"].iloc[-1] if control is not None else math.nan,
                     "large_final_error": large["error"].iloc[-1], "large_cost_ratio": large["flops"].iloc[-1] / cost,
                     "large_error_at_cost": within["error"].iloc[-1] if len(within) else math.nan,
                     "large_cost_to_match": match["flops"].iloc[0] / cost if len(match) else math.nan})
    return pd.DataFrame(rows, columns=["dataset", "pair", "seed", "small_mflops", "small_error", "control_error",
                                       "large_final_error", "large_cost_ratio", "large_error_at_cost",
                                       "large_cost_to_match"])


def small_vs_large_claims(svl: pd.DataFrame, families: Mapping[str, str]) -> list[Claim]:
    """Claim 2 (paper §10.2, Fig. 4): a small AdaLoss ANN's final error is below a larger (about 2x)
    CONST ANN's final error, even at the large one's full cost; d = small final - large final < 0,
    one d per (dataset, seed) of a family, the mean over that seed's pairs.

    The control: the same difference with the small ANN trained with CONST. A large ANN's exit at
    the small one's cost is early in its second stage, so comparing there would pass for CONST too;
    at full cost the deeper CONST ANN should win against a small CONST ANN (control not reproduced)
    while the small AdaLoss ANN wins (claim reproduced): only then is it a claim about AdaLoss."""
    claim = "{}: a small AdaLoss ANN beats a CONST ANN of about twice its cost, even at that ANN's full cost"
    control = "{} control: a small CONST ANN against the same larger CONST ANN at its full cost (not a claim)"
    paper = ("small AdaLoss ANNs beat CONST ANNs of about twice the cost (Fig. 4; at 2x the FLOPs CONST is still "
             "about 22 % worse on CIFAR10, 2-3 % on CIFAR100 and SVHN)")
    s = small_vs_large_summary(svl)
    small_model = svl[svl["role"] == "small"].drop_duplicates("pair").set_index("pair")["model"]
    s = s.assign(family=s["pair"].map(small_model).map(family_of(families)))
    out = []
    for family in sorted(s["family"].unique()):
        f = s[s["family"] == family]
        per_seed = f.groupby(["dataset", "seed"])[["small_error", "control_error", "large_final_error"]].mean()
        ratio = f["large_cost_ratio"].mean()
        ours = (f"{f['small_error'].mean():.2f}% (small, AdaLoss) vs {f['large_final_error'].mean():.2f}% (large, CONST, "
                f"{ratio:.2f}x the cost) over {f['pair'].nunique()} pair(s); control {f['control_error'].mean():.2f}% "
                "(small, CONST)")
        out.append(scored(claim.format(family), family, "dataset, seed (mean over pairs)",
                           "percentage points of test error", ours, paper,
                           (per_seed["small_error"] - per_seed["large_final_error"]).to_numpy(), -1))
        if per_seed["control_error"].notna().any():
            out.append(scored(control.format(family), family, "dataset, seed (mean over pairs)",
                               "percentage points of test error", ours,
                               "the paper's claim needs this to fail: the larger CONST ANN beats a small CONST ANN",
                               (per_seed["control_error"] - per_seed["large_final_error"]).to_numpy(), -1,
                               kind="control"))
    return out


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
                ada: str = "adaloss", const: str = "const") -> list[Claim]:
    """Claim 3 (paper §10.4, Proposition): an EANN is competitive with OPT for a constant fraction of
    extra cost. At every OPT point (cost c: the OPT network's own cost, `own_head_flops`, which
    counts no head it never runs; error e) whose budget C c lies past the first member
    (C = 2 + 1/(b - 1), b the members' measured cost ratio): EANN error at budget C c - (1 +
    tolerance) e. Claim 4 (paper §5.6): an EANN of AdaLoss ANNs beats one of CONST ANNs: AdaLoss
    EANN's error - CONST EANN's at each OPT point's cost past the first member. Both give one d per
    (dataset, seed), the mean over that seed's OPT points (they share the same members), < 0."""
    compete = f"{family}: an EANN is competitive with OPT at every budget for a constant fraction of extra cost"
    beats = f"{family}: an EANN of AdaLoss ANNs beats an EANN of CONST ANNs"
    if ada not in set(curve["weighting"]):
        return [untestable(compete, family, "no AdaLoss EANN in this study", "")]
    bound = theory_sup_factor(member_cost_ratio(curve))
    gaps, wins, points = [], [], 0
    for (dataset, seed), o in opt.groupby(["dataset", "seed"], sort=True):
        curves = {w: c for w, c in curve[(curve["dataset"] == dataset) & (curve["seed"] == seed)].groupby("weighting")}
        if ada not in curves:
            continue
        first = _first_member_cost(curves[ada])
        gap = [_error_at(curves[ada], bound * r.own_head_flops) - (1 + tolerance) * r.error
               for r in o.itertuples() if bound * r.own_head_flops >= first]
        win = [_error_at(curves[ada], r.own_head_flops) - _error_at(curves[const], r.own_head_flops)
               for r in o.itertuples() if r.own_head_flops >= first and const in curves]
        points += len(gap)
        gaps.append(float(np.mean(gap)) if gap else math.nan)
        wins.append(float(np.mean(win)) if win else math.nan)
    paper = f"sup C = 2 + 1/(b-1) = {bound:.2f} for the measured b (Proposition; no measured number known)"
    ours = (f"EANN error at {bound:.2f}x each OPT network's own cost minus (1 + {tolerance:g}) x OPT's error, "
            f"mean {np.nanmean(gaps):+.2f} over {points} OPT points in {int(np.sum(~np.isnan(gaps)))} seeds"
            if points else f"no OPT point whose budget {bound:.2f}x its cost lies past the first member")
    out = [scored(compete, family, "dataset, seed (mean over its OPT points)", "percentage points of test error",
                   ours, paper, gaps, -1)]
    if const in set(curve["weighting"]):
        measured = np.any(~np.isnan(wins))
        out.append(scored(beats, family, "dataset, seed (mean over its OPT points)", "percentage points of test error",
                           f"AdaLoss EANN minus CONST EANN at each OPT network's own cost, mean {np.nanmean(wins):+.2f}"
                           if measured else "no OPT network costs as much as the first member: nothing to compare",
                           "AdaLoss EANNs better than CONST EANNs (Fig. 5a, qualitative)", wins, -1))
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


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x (NaN with fewer than 3 points or no spread in x)."""
    if len(x) < 3 or np.ptp(x) == 0:
        return math.nan
    return float(np.polyfit(x, y, 1)[0])


def weights_claim(weights: pd.DataFrame, anytime: pd.DataFrame, min_datasets: int = 3) -> Claim:
    """Claim 5 (paper §10.5): on harder data the final AdaLoss weights concentrate on the last exits.
    Testable only with >= `min_datasets` datasets whose OPT final errors are ordered beyond their seed
    spread (the paired per-seed difference of each adjacent pair has an interval above zero). Then
    d = the least-squares slope of the final-exit share over the datasets' difficulty rank, one per
    (model, seed), > 0 (adjacent-pair differences would use a middle dataset twice)."""
    claim = "AdaLoss's final weights concentrate more on late exits on harder data"
    paper = "more weight on the final exits from SVHN to CIFAR10 to CIFAR100 (Fig. 5c, qualitative)"
    if anytime[anytime["weighting"] == "opt"].empty:
        return untestable(claim, "all", "no OPT networks, so no difficulty order", paper)
    order = list(difficulty(anytime)["dataset"])
    errors = _opt_final_errors(anytime).pivot(index="seed", columns="dataset", values="opt_error")
    gaps = [paired_interval((errors[hard] - errors[easy]).to_numpy()) for easy, hard in zip(order, order[1:])]
    ordered = len(order) >= min_datasets and all(g.n >= 2 and g.low > 0 for g in gaps)
    text = " < ".join(f"{d} ({errors[d].mean():.2f}%)" for d in order)
    if not ordered:
        why = (f"not testable in this profile: needs >= {min_datasets} datasets whose OPT errors are ordered "
               f"beyond their seed spread (the paper profile has three); OPT final error {text}")
        return untestable(claim, "all", why, paper)
    rank = {d: i for i, d in enumerate(order)}
    shares = final_exit_share(weights)
    slopes = [_slope(g["dataset"].map(rank).to_numpy(float), g["final_exit_share"].to_numpy(float))
              for _, g in shares.groupby(["model", "seed"])]
    ours = f"slope of the final-exit share of AdaLoss's weights over difficulty rank; OPT final error {text}"
    return scored(claim, "all", "model, seed", "share of the weights per rank", ours, paper, slopes, +1)


# -- all of them ------------------------------------------------------------------------------------

def all_claims(seeds: pd.DataFrame | None, families: Mapping[str, str], svl: pd.DataFrame | None,
               curve: pd.DataFrame | None, anytime: pd.DataFrame | None, opt_model: str | None, tolerance: float,
               weights: pd.DataFrame | None, lm: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every scored claim of the study, in the paper's order, then E8's, as a `CLAIM_COLUMNS` table.

    `seeds`: relative_to_opt_seeds.csv; `families`: model -> arch; `svl`: small_vs_large.csv;
    `curve`: eann.csv; `anytime`: anytime_errors.csv; `weights`: adaloss_weights.csv; `lm`:
    lm_anytime.csv. A profile that does not run E3, E4, E5 or E8 passes None there, one that runs
    no image experiment (E8 alone) None for `seeds` too, and those claims are "not run in this profile".
    """
    family = family_of(families)
    why = "{} is not run in this profile; it runs in " + ", ".join(RUNS_ELSEWHERE)
    if seeds is None:
        found = [untestable("AdaLoss beats CONST and LINEAR at late budgets and pays a little at the earliest", "",
                             f"E1 and E2 are not run in this profile; they run in {IMAGES_RUN_IN}", "", NOT_RUN)]
    else:
        found = [*late_budget_claims(seeds, families), *early_budget_claims(seeds, families)]
        found += loss_scale_claims(seeds, families) or [untestable(
            "AdaLoss beats CONST at late budgets with the loss scale controlled (ours)", "",
            why.format("The loss-scale ablation"), "", NOT_RUN)]
    if svl is None:
        found.append(untestable("a small AdaLoss ANN beats a CONST ANN of about twice its cost", "", why.format("E3"),
                                 "", NOT_RUN))
    else:
        found += small_vs_large_claims(svl, families)
    if curve is None or opt_model is None:
        found.append(untestable("an EANN is competitive with OPT for a constant fraction of extra cost", "",
                                 why.format("E4"), "", NOT_RUN))
    else:
        opt = anytime[(anytime["model"] == opt_model) & (anytime["weighting"] == "opt")]
        found += eann_claims(curve, opt, tolerance, family(opt_model))
    if weights is None:
        found.append(untestable("AdaLoss's final weights concentrate more on late exits on harder data", "all",
                                 why.format("E5"), "", NOT_RUN))
    else:
        found.append(weights_claim(weights, anytime))
    found += lm_claims(lm) if lm is not None else [untestable(
        "AdaLoss beats torchtune's uniform and the best static scale on an early-exit transformer (ours)",
        LM_FAMILY, f"E8 is not run in this profile; it runs in {LM_RUNS_IN}", "", NOT_RUN)]
    return pd.DataFrame([asdict(c) for c in with_holm(found)], columns=CLAIM_COLUMNS)
