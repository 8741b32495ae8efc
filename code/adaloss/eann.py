"""EANN: a sequence of exponentially deepening anytime networks, composed from their per-exit tables.

Paper §5.6 (Hu et al. 2019; shared/reference/paper.md §5.6, Fig. 3b): ANNs whose costs grow about
geometrically (1, b, b^2, ...) run one after another, smallest first; a larger one starts only after
the smaller ones finish. At any budget the EANN answers with the best prediction computed so far,
where "best" is judged on a validation set. Proposition (paper): if every ANN of depth L is
near-optimal past depth L/b, the EANN is near-optimal at every budget B for cost B/C with
sup_B C = 2 + 1/(b - 1) (= 3 for b = 2).

Everything here is a pure function of tidy per-exit tables (the members' `exits.csv`): no training,
no model. Choices, stated because they matter:
* "Best so far" is the lowest `val_error`, the error on the hold-out split of the *training* set
  (`--val-fraction`); the test error is never used to choose (ties keep the earlier prediction).
* The budget of member m's exit k charges the full cost of every member run before m, plus the
  cumulative cost of m up to k.
* Members run in order of their total cost, whatever order the configuration lists them in.
* One EANN per member weighting (the study trains AdaLoss and CONST members), so the two can be
  compared at equal budgets.
* Extra-cost factor: for each OPT point (cost c, the OPT network's own cost `own_head_flops`: its
  backbone and its one head, no head it never runs; test error e), the smallest EANN budget B whose EANN
  test error is <= (1 + tolerance) * e; if the EANN never gets there, the budget of its lowest
  error (and `reached` is false). The factor is B / c; the paper's bound is the sup of that ratio.
  `tolerance` (default 0: match OPT exactly) makes "competitive with OPT" a stated criterion.
* The members are trained with a hold-out split (the other runs use the whole training set), so
  they see fewer training images than the OPT networks they are measured against.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import pandas as pd

from . import atomic
from .tables import format_floats, read_csvs

__all__ = ["compose", "extra_cost", "theory_sup_factor", "EANN_COLUMNS", "COST_COLUMNS"]

EANN_COLUMNS = ["dataset", "weighting", "seed", "budget", "member", "exit", "member_flops", "member_error",
                "chosen_model", "chosen_exit", "val_error", "error"]
COST_COLUMNS = ["dataset", "weighting", "seed", "opt_exit", "opt_flops", "opt_error", "tolerance",
                "eann_budget", "eann_error", "reached", "factor"]


def theory_sup_factor(b: float) -> float:
    """The paper's worst-case cost inflation of an EANN with base b: 2 + 1/(b - 1)."""
    if b <= 1:
        raise ValueError(f"the EANN base b must be > 1, got {b}")
    return 2.0 + 1.0 / (b - 1.0)


def _member_order(group: pd.DataFrame, members: Sequence[str]) -> list[str]:
    """Members sorted by total cost (the EANN runs the cheapest first); every member must be present."""
    present = set(group["model"])
    missing = [m for m in members if m not in present]
    if missing:
        raise ValueError(f"EANN members without exits rows: {missing}")
    total = group.groupby("model")["flops"].max()
    return sorted(members, key=lambda m: (total[m], list(members).index(m)))


def compose(exits: pd.DataFrame, members: Sequence[str]) -> pd.DataFrame:
    """The EANN anytime curve per (dataset, weighting, seed) from the members' per-exit rows.

    `exits` holds at least dataset, model, weighting, seed, exit, flops, error, val_error. Returns one
    row per member exit, in running order: the budget spent when that exit's prediction is ready, that
    exit's own cost and test error within its member (member_flops, member_error: the member alone),
    and the prediction the EANN gives then (chosen_model, chosen_exit, its val_error and test error).
    """
    exits = exits[exits["model"].isin(members)]
    if exits["val_error"].isna().any():
        raise ValueError("EANN selection needs validation errors: train the members with --val-fraction > 0")
    rows = []
    for (dataset, weighting, seed), group in exits.groupby(["dataset", "weighting", "seed"], sort=True):
        spent = 0
        best: pd.Series | None = None
        for member in _member_order(group, members):
            runs = group[group["model"] == member].sort_values("exit")
            for _, r in runs.iterrows():
                if best is None or r["val_error"] < best["val_error"]:
                    best = r
                rows.append({
                    "dataset": dataset, "weighting": weighting, "seed": int(seed), "budget": int(spent + r["flops"]),
                    "member": member, "exit": int(r["exit"]), "member_flops": int(r["flops"]),
                    "member_error": float(r["error"]),
                    "chosen_model": best["model"], "chosen_exit": int(best["exit"]),
                    "val_error": float(best["val_error"]), "error": float(best["error"]),
                })
            spent += int(runs["flops"].max())
    return pd.DataFrame(rows, columns=EANN_COLUMNS)


def extra_cost(curve: pd.DataFrame, opt: pd.DataFrame, tolerance: float = 0.0) -> pd.DataFrame:
    """Per EANN weighting and OPT point, the EANN budget needed to come within (1 + tolerance) x the
    OPT network's test error, and the ratio of that budget to the OPT network's cost.

    `curve` is `compose`'s output; `opt` holds dataset, seed, exit, own_head_flops (the OPT network's
    own cost) and error of the OPT networks. Pairs are matched on (dataset, seed).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    rows = []
    for weighting, curves in curve.groupby("weighting", sort=True):
        for _, o in opt.sort_values(["dataset", "seed", "exit"]).iterrows():
            c = curves[(curves["dataset"] == o["dataset"]) & (curves["seed"] == o["seed"])].sort_values("budget")
            if c.empty:
                raise ValueError(f"no {weighting} EANN curve for dataset {o['dataset']!r}, seed {o['seed']}")
            good = c[c["error"] <= (1.0 + tolerance) * o["error"]]
            reached = not good.empty
            hit = good.iloc[0] if reached else c.loc[c["error"].idxmin()]
            rows.append({
                "dataset": o["dataset"], "weighting": weighting, "seed": int(o["seed"]), "opt_exit": int(o["exit"]),
                "opt_flops": int(o["own_head_flops"]), "opt_error": float(o["error"]), "tolerance": float(tolerance),
                "eann_budget": int(hit["budget"]), "eann_error": float(hit["error"]),
                "reached": bool(reached), "factor": float(hit["budget"]) / float(o["own_head_flops"]),
            })
    return pd.DataFrame(rows, columns=COST_COLUMNS)


# -- command line: `python -m adaloss eann` ------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exits", nargs="+", required=True, help="the members' exits.csv files")
    parser.add_argument("--members", nargs="+", required=True, help="the member model names")
    parser.add_argument("--anytime", required=True, help="anytime_errors.csv (for the OPT points)")
    parser.add_argument("--opt-model", required=True, help="the model whose OPT networks are the reference")
    parser.add_argument("--tolerance", type=float, default=0.0,
                        help="relative slack on OPT's error that still counts as reaching it (0.1 = 10%%)")
    parser.add_argument("--out", required=True, help="the EANN curve (eann.csv)")
    parser.add_argument("--cost-out", required=True, help="the extra-cost factor per OPT point (eann_cost.csv)")


def run_cli(args: argparse.Namespace) -> int:
    curve = compose(read_csvs(args.exits), args.members)
    anytime = pd.read_csv(args.anytime)
    opt = anytime[(anytime["model"] == args.opt_model) & (anytime["weighting"] == "opt")]
    opt = opt[opt["dataset"].isin(curve["dataset"])]
    if opt.empty:
        raise ValueError(f"no OPT rows for model {args.opt_model!r} in {args.anytime}")
    atomic.write_csv(args.out, format_floats(curve))
    atomic.write_csv(args.cost_out, format_floats(extra_cost(curve, opt, args.tolerance)))
    return 0
