"""The study's report: the paper's claims checked against our tables, and one self-contained HTML page.

`python -m adaloss report` reads only `results/tables/` and the figures the notebooks drew, and writes
`report/report.html` (figures embedded as base64 PNG, tables as HTML) plus `results/tables/claims.csv`.
For each headline claim of the paper (shared/reference/paper.md §10) it puts our number beside the
paper's and says whether this run reproduces it; every number of ours is computed here from the
tables. The paper's numbers are recollections flagged UNVERIFIED in paper.md and are labelled so.

The notebooks share the few plotting helpers at the top (labels, style, atomic PNG saving), so every
figure names schemes the same way.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import atomic
from .eann import theory_sup_factor
from .provenance import cpu_name
from .tables import BUDGETS, PAPER_RELATIVE_TO_OPT, difficulty, format_floats

__all__ = [
    "LABELS", "BUDGET_NAMES", "label", "save_figure", "log_error_axis", "mean_std", "mean_std_table",
    "final_error_table", "e2_table", "small_vs_large_summary", "final_exit_share", "weights_vs_difficulty",
    "member_cost_ratio", "claims", "build_html",
]

LABELS = {"const": "CONST", "linear": "LINEAR", "half_end": "HALF_END", "sieve": "SIEVE", "adaloss": "AdaLoss",
          "adaloss_grad": "AdaLoss-grad", "uncertainty": "Uncertainty", "opt": "OPT"}
BUDGET_NAMES = dict(zip(BUDGETS, ("1/4", "1/2", "3/4", "1")))
LATE = (0.75, 1.0)


def label(weighting: str) -> str:
    """The paper's name of a weighting (figures and tables only; files use the lower-case name)."""
    return LABELS.get(weighting, weighting)


def save_figure(fig: Any, path: str | os.PathLike[str]) -> None:
    """Save a matplotlib figure as PNG atomically (a reader never sees half a file)."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})


def log_error_axis(ax: Any) -> None:
    """A log-scaled test-error axis with plain labels (1, 2, 5, 10, 20, 50): late exits' small errors
    stay readable beside early exits' large ones."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def mean_std(values: pd.Series, fmt: str = "{:.2f}") -> str:
    """'mean ± std' over the non-missing values ('mean' alone for one value, 'n/a' for none); a sign
    in `fmt` applies to the mean only."""
    v = values.dropna()
    if v.empty:
        return "n/a"
    return fmt.format(v.mean()) + ("" if len(v) < 2 else " ± " + fmt.replace("+", "").format(v.std()))


def final_error_table(anytime: pd.DataFrame) -> pd.DataFrame:
    """E1 for display: each run's deepest exit's test error (mean ± std over seeds) per dataset and model,
    one column per scheme (OPT: its deepest network)."""
    keys = ["dataset", "model", "weighting"]
    last = anytime[anytime["exit"] == anytime.groupby(keys)["exit"].transform("max")]
    table = last.groupby(keys)["error"].apply(mean_std).unstack("weighting")
    table = table[[w for w in LABELS if w in table.columns]].rename(columns=label)
    return table.rename_axis(columns=None).reset_index()


def e2_table(seeds: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """E2 for display: relative % increase over OPT (mean ± std over seeds) per dataset, model and
    scheme; the mean over datasets and models per scheme; and the paper's ResANN row (unverified)."""
    def pivot(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        t = frame.groupby([*keys, "budget"])["rel_increase_pct"].apply(mean_std).unstack("budget")
        return t.rename(columns=BUDGET_NAMES).rename_axis(columns=None)

    seeds = seeds.assign(scheme=seeds["weighting"].map(label))
    ours = pivot(seeds, ["dataset", "model", "scheme"]).reset_index()
    mean = pivot(seeds, ["scheme"]).reset_index().assign(dataset="mean (this run)", model="all")
    pub = paper.assign(scheme=paper["weighting"].map(label))
    pub = pivot(pub, ["scheme"]).reset_index().assign(dataset="paper (UNVERIFIED)", model="ResANNs")
    return pd.concat([ours, mean, pub], ignore_index=True)[["dataset", "model", "scheme", *BUDGET_NAMES.values()]]


# -- claims -----------------------------------------------------------------------------------

@dataclass
class Claim:
    claim: str
    ours: str
    paper: str
    reproduced: str  # "yes", "no" or "not testable"


def _verdict(ok: bool | None) -> str:
    return "not testable" if ok is None else ("yes" if ok else "no")


def _late_budget_claims(seeds: pd.DataFrame) -> list[Claim]:
    """Claim 1 (paper §10.1, Table 1): AdaLoss's relative increase in error over OPT is lower than each
    static scheme's at 3/4 and 1 of the cost; and its price (Table 1): higher than CONST's at 1/4."""
    rel = seeds.groupby(["weighting", "budget"])["rel_increase_pct"]
    mean, cell = rel.mean(), rel.apply(lambda v: mean_std(v, "{:+.1f}"))

    def paper(w: str, budgets: tuple[float, ...]) -> str:
        if w not in PAPER_RELATIVE_TO_OPT:
            return "not in the paper's table"
        return " / ".join(f"{PAPER_RELATIVE_TO_OPT[w][BUDGETS.index(b)]:+.2f}" for b in budgets)

    def ours(w: str, budgets: tuple[float, ...]) -> str:
        return " / ".join(cell.get((w, b), "n/a") for b in budgets)

    out = []
    if "adaloss" not in mean.index.get_level_values(0):
        return out
    for w in sorted(set(seeds["weighting"]) - {"adaloss"}, key=list(LABELS).index):
        values = [(mean.get(("adaloss", b)), mean.get((w, b))) for b in LATE]
        ok = None if any(pd.isna(a) or pd.isna(o) for a, o in values) else all(a < o for a, o in values)
        out.append(Claim(
            f"AdaLoss's relative increase in error over OPT is lower than {label(w)}'s at 3/4 and 1 of the cost",
            f"AdaLoss {ours('adaloss', LATE)} vs {label(w)} {ours(w, LATE)} (%, at 3/4 / 1; mean ± std over "
            "datasets, models and seeds)",
            f"AdaLoss {paper('adaloss', LATE)} vs {label(w)} {paper(w, LATE)} (ResANNs, UNVERIFIED)",
            _verdict(ok)))
    if "const" in mean.index.get_level_values(0):
        a, c = mean.get(("adaloss", 0.25)), mean.get(("const", 0.25))
        out.append(Claim(
            "AdaLoss pays at the earliest budget: a higher relative increase over OPT than CONST's at 1/4 of the cost",
            f"AdaLoss {ours('adaloss', (0.25,))} vs CONST {ours('const', (0.25,))}",
            f"AdaLoss {paper('adaloss', (0.25,))} vs CONST {paper('const', (0.25,))} (ResANNs, UNVERIFIED)",
            _verdict(None if pd.isna(a) or pd.isna(c) else a > c)))
    return out


def small_vs_large_summary(svl: pd.DataFrame) -> pd.DataFrame:
    """E3 per dataset and seed: the small ANN's final error and cost, the large ANN's error at that
    cost (its latest exit within it), and the cost the large ANN needs to match the small one's final
    error, as a multiple of the small one's cost (empty if it never does)."""
    rows = []
    for (dataset, seed), g in svl.groupby(["dataset", "seed"], sort=True):
        small = g[g["role"] == "small"].sort_values("exit")
        large = g[g["role"] == "large"].sort_values("exit")
        cost, err = small["flops"].iloc[-1], small["error"].iloc[-1]
        within = large[large["flops"] <= cost]
        match = large[large["error"] <= err]
        rows.append({"dataset": dataset, "seed": seed, "small_mflops": cost / 1e6, "small_error": err,
                     "large_error_at_cost": within["error"].iloc[-1] if len(within) else float("nan"),
                     "large_final_error": large["error"].iloc[-1],
                     "large_cost_to_match": match["flops"].iloc[0] / cost if len(match) else float("nan")})
    return pd.DataFrame(rows)


def _small_vs_large_claim(svl: pd.DataFrame) -> Claim:
    s = small_vs_large_summary(svl).groupby("dataset").mean(numeric_only=True)
    ok = None if s["large_error_at_cost"].isna().any() else bool((s["small_error"] <= s["large_error_at_cost"]).all())
    total = svl.groupby("role")["flops"].max()
    ours = f"large/small cost {total['large'] / total['small']:.2f}x; " + "; ".join(
        f"{d}: {r.small_error:.2f}% vs {r.large_error_at_cost:.2f}% at {r.small_mflops:.3g} MFLOPs "
        f"(large needs {'never' if pd.isna(r.large_cost_to_match) else f'{r.large_cost_to_match:.2f}x'})"
        for d, r in s.iterrows())
    return Claim("A small ANN with AdaLoss beats a larger (~2x cost) ANN with CONST at equal cost",
                 ours, "competitive with ANNs 50-100% larger; 'effectively double the speed' (v2 abstract)",
                 _verdict(ok))


def member_cost_ratio(curve: pd.DataFrame) -> float:
    """The EANN's measured base b: geometric mean of successive members' cost ratios."""
    one = curve[(curve["dataset"] == curve["dataset"].iloc[0]) & (curve["seed"] == curve["seed"].iloc[0])]
    ends = one.groupby("member", sort=False)["budget"].max().sort_values()
    costs = ends.diff().fillna(ends.iloc[0]).to_numpy()
    return float((costs[-1] / costs[0]) ** (1.0 / (len(costs) - 1)))


def _eann_claim(curve: pd.DataFrame, cost: pd.DataFrame) -> Claim:
    b = member_cost_ratio(curve)
    bound = theory_sup_factor(b)
    reached = cost["reached"].astype(str).str.lower().eq("true")
    ok = bool(reached.all() and cost["factor"].max() <= bound)
    ours = (f"extra-cost factor mean {cost['factor'].mean():.2f}x, max {cost['factor'].max():.2f}x over "
            f"{len(cost)} OPT points ({int(reached.sum())} reached); members' cost ratio b = {b:.2f}, "
            f"so the bound is 2 + 1/(b-1) = {bound:.2f}")
    return Claim("An EANN is near-optimal at every budget for a constant fraction of extra cost",
                 ours, "sup C = 2 + 1/(b-1) = 3 for b = 2 (Proposition; no measured number known)", _verdict(ok))


def final_exit_share(weights: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, model, seed): AdaLoss's final-exit weight as a share of all its weights."""
    keys = ["dataset", "model", "seed"]
    last = weights[weights["exit"] == weights.groupby(keys)["exit"].transform("max")].set_index(keys)["weight"]
    share = last / weights.groupby(keys)["weight"].sum()
    return share.rename("final_exit_share").reset_index()


def mean_std_table(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Every numeric column but `by` and seed, as 'mean ± std' over the other rows of each `by` group."""
    cols = [c for c in frame.select_dtypes(["number", "bool"]).columns if c not in (*by, "seed")]
    return frame.groupby(by, sort=True)[cols].agg(lambda v: mean_std(v.astype(float))).reset_index()


def weights_vs_difficulty(weights: pd.DataFrame, anytime: pd.DataFrame) -> pd.DataFrame:
    """Datasets easiest first (OPT's final error) with the final-exit share (mean over models and seeds)."""
    share = final_exit_share(weights).groupby("dataset")["final_exit_share"].mean().reset_index()
    return difficulty(anytime).merge(share, on="dataset")


def _weights_claim(weights: pd.DataFrame, anytime: pd.DataFrame) -> Claim:
    order = weights_vs_difficulty(weights, anytime)
    shares = order["final_exit_share"].to_numpy()
    ok = None if len(order) < 2 else bool((shares[1:] > shares[:-1]).all())
    ours = " -> ".join(f"{r.dataset} (OPT error {r.opt_final_error:.2f}%): {r.final_exit_share:.3f}"
                      for r in order.itertuples()) + " (final-exit share of AdaLoss's weights, easiest first)"
    return Claim("AdaLoss's final weights concentrate more on late exits on harder data",
                 ours, "more weight on the final exits from SVHN to CIFAR10 to CIFAR100 (Fig. 5c, qualitative)",
                 _verdict(ok))


def claims(tables: str | os.PathLike[str]) -> pd.DataFrame:
    """Every claim checked on the tables in `tables`: claim, ours, paper, reproduced."""
    t = {name: pd.read_csv(Path(tables) / f"{name}.csv") for name in (
        "relative_to_opt_seeds", "small_vs_large", "eann", "eann_cost", "adaloss_weights", "anytime_errors")}
    found = [*_late_budget_claims(t["relative_to_opt_seeds"]),
             _small_vs_large_claim(t["small_vs_large"]),
             _eann_claim(t["eann"], t["eann_cost"]),
             _weights_claim(t["adaloss_weights"], t["anytime_errors"])]
    return pd.DataFrame([asdict(c) for c in found])


# -- the page ---------------------------------------------------------------------------------

EXPERIMENTS = {
    "e1_anytime": ("E1 Anytime error", "Test error of every exit against its cumulative FLOPs, per dataset and "
                   "model, for each weighting scheme; OPT (one network per depth) as stars."),
    "e2_relative_to_opt": ("E2 Relative increase in error over OPT", "At the exits nearest 1/4, 1/2, 3/4 and 1 of "
                           "the total cost; seed s of a scheme is paired with seed s of OPT."),
    "e3_small_vs_large": ("E3 Small AdaLoss ANN against a large CONST ANN", "Error against FLOPs of the small ANN "
                          "with AdaLoss and a ~2x larger ANN with CONST."),
    "e4_eann": ("E4 EANN", "ANNs of exponentially increasing depth run one after another; at each budget the "
                "prediction with the lowest validation error (hold-out of the training set) so far, charging the "
                "full cost of the members already run; against OPT and the single ANNs."),
    "e5_weights_vs_difficulty": ("E5 Final AdaLoss weights against dataset difficulty", "Final weight per exit "
                                 "(normalised to sum 1), datasets ordered by OPT's final error."),
    "e6_weight_trajectories": ("E6 AdaLoss weights during training", "Weight of each exit at every update."),
}


def _table(frame: pd.DataFrame) -> str:
    return format_floats(frame).to_html(index=False, border=0, classes="t", na_rep="", escape=True)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def training_span(benchmark_dir: Path, runs: pd.DataFrame) -> float | None:
    """Seconds from the first training job's start to the last one's end, from the Snakemake benchmark
    files of `runs` ({dataset}/{model}/{weighting}/seed{seed}.tsv, written at each job's end; start =
    end - its wall seconds); None when any is missing."""
    paths = [benchmark_dir / r.dataset / r.model / r.weighting / f"seed{r.seed}.tsv" for r in runs.itertuples()]
    if not paths or not all(p.exists() for p in paths):
        return None
    ends = [p.stat().st_mtime for p in paths]
    starts = [e - float(pd.read_csv(p, sep="\t")["s"].iloc[0]) for p, e in zip(paths, ends)]
    return max(ends) - min(starts)


def _scale(runs: pd.DataFrame) -> pd.DataFrame:
    """Scale per dataset and model: arch, options, epochs, batch, AdaLoss update period, runs, time."""
    g = runs.groupby(["dataset", "model"], sort=True)
    return g.agg(arch=("arch", "first"), options=("arch_opts", "first"), epochs=("epochs", "first"),
                 batch_size=("batch_size", "first"), update_per=("update_per", "first"),
                 val_fraction=("val_fraction", "first"), runs=("seed", "size"),
                 train_seconds=("train_seconds", "sum")).reset_index()


def _extra_tables(t: Path, anytime: pd.DataFrame) -> dict[str, str]:
    """The table shown under each figure, computed from the tables."""
    cost = pd.read_csv(t / "eann_cost.csv")
    weights = pd.read_csv(t / "adaloss_weights.csv")
    traj = pd.read_csv(t / "weight_trajectories.csv")
    return {
        "e1_anytime": "<p>Final-exit test error (%), mean ± std over seeds (OPT: its deepest network).</p>"
                      + _table(final_error_table(anytime)),
        "e2_relative_to_opt": _table(e2_table(pd.read_csv(t / "relative_to_opt_seeds.csv"),
                                              pd.read_csv(t / "paper_relative_to_opt.csv"))),
        "e3_small_vs_large": _table(mean_std_table(small_vs_large_summary(pd.read_csv(t / "small_vs_large.csv")),
                                                   ["dataset"])),
        "e4_eann": _table(mean_std_table(cost, ["dataset", "opt_exit"])),
        "e5_weights_vs_difficulty": _table(difficulty(anytime).merge(
            mean_std_table(final_exit_share(weights), ["dataset"]), on="dataset")),
        "e6_weight_trajectories": f"<p>{traj.groupby(['dataset', 'model', 'seed'])['step'].nunique().max()} "
                                  "weight updates per run at most.</p>",
    }


def _bench_section(bench_dir: Path) -> str:
    files = sorted(bench_dir.glob("*.json")) if bench_dir.is_dir() else []
    if not files:
        return ""
    frame = pd.DataFrame({f.stem: pd.Series(json.loads(f.read_text())).astype(str) for f in files})
    return ("<h2>Training speed benchmark (python -m adaloss bench)</h2>"
            + frame.rename_axis("quantity").reset_index().to_html(index=False, border=0, classes="t"))


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
       "img{max-width:100%}table.t{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
       "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px}.no{color:#b00}.yes{color:#070}")


def build_html(tables: Path, figures: list[Path], profile: str, configfiles: str, bench_dir: Path,
               claim_frame: pd.DataFrame, span: float | None = None) -> str:
    """The whole report page as one string (no external resources)."""
    runs = pd.read_csv(tables / "runs.csv")
    anytime = pd.read_csv(tables / "anytime_errors.csv")
    devices = ", ".join(sorted(set(runs["device"] + " (" + runs["device_name"].fillna("?") + ")")))
    scale_note = (f"profile <b>{html.escape(profile)}</b>; datasets {', '.join(sorted(runs['dataset'].unique()))}; "
                  f"seeds {', '.join(map(str, sorted(runs['seed'].unique())))}; epochs "
                  + ", ".join(f"{d}: {e}" for d, e in runs.groupby("dataset")["epochs"].max().items()))
    verdicts = claim_frame.copy()
    verdicts["reproduced"] = [f'<span class="{v.split()[0]}">{v}</span>' for v in verdicts["reproduced"]]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>AdaLoss study: {html.escape(profile)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>Anytime predictions with AdaLoss: reproduction study (profile {html.escape(profile)})</h1>",
        "<p>Hu, Dey, Hebert, Bagnell, <i>Learning Anytime Predictions in Neural Networks via Adaptive Loss "
        "Balancing</i>, AAAI 2019. Every number below is computed from <code>results/tables/</code> of this run. "
        "The paper's numbers are recollections flagged UNVERIFIED in our reference notes (paper.md §8, §10).</p>",
        "<h2>What produced these results</h2><ul>",
        f"<li>Configuration: {scale_note} (config files: {html.escape(configfiles)})</li>",
        f"<li>{len(runs)} training runs, each trained once; training device(s): {html.escape(devices)}; "
        f"torch {html.escape(', '.join(sorted(runs['torch'].unique())))}; report built on {html.escape(cpu_name())}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}</li>",
        f"<li>Compute: {runs['train_seconds'].sum() / 60:.1f} min in training loops (sum of train_seconds), "
        f"{runs['job_seconds'].sum() / 60:.1f} min of training-job wall time (sum over jobs, from Snakemake "
        "benchmarks: imports, data, FLOP counting and evaluation included; jobs run in parallel)"
        + ("" if span is None else f"; {span / 60:.1f} min wall time from the first training's start to the "
           "last one's end (benchmark file times; tables, notebooks and report add about a minute)") + "</li>",
        f"<li>AdaLoss updates its weights every {'/'.join(map(str, sorted(runs['update_per'].unique())))} SGD "
        "steps (<code>update_per</code>; the authors' CIFAR/SVHN setting is 100, about 7 updates per CIFAR epoch; a "
        "smaller value suits smaller data). EANN predictions are chosen on the validation error of a hold-out of "
        f"{'/'.join(map(str, sorted(runs['val_fraction'].unique())))} of the training set, never on test error.</li>",
        "<li>One seed: no spread is shown, and differences of a few test images are within noise.</li>"
        if runs["seed"].nunique() == 1 else "",
        "</ul>",
        _table(_scale(runs)),
        "<h2>The paper's claims: do we reproduce them?</h2>",
        verdicts.to_html(index=False, border=0, classes="t", escape=False),
    ]
    extra = _extra_tables(tables, anytime)
    for fig in figures:
        title, text = EXPERIMENTS.get(fig.stem, (fig.stem, ""))
        parts += [f"<h2>{html.escape(title)}</h2>", _img(fig),
                  f"<p>{html.escape(text)} Produced by {scale_note}.</p>", extra.get(fig.stem, "")]
    parts += [_bench_section(bench_dir), "</body></html>"]
    return "\n".join(parts) + "\n"


# -- command line: `python -m adaloss report` --------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tables", default="results/tables", help="folder of the study's tables")
    parser.add_argument("--figures", nargs="+", required=True, help="the experiments' PNG figures")
    parser.add_argument("--profile", required=True, help="name of the configuration profile")
    parser.add_argument("--configfiles", nargs="*", default=[], help="the config files used (stated in the report)")
    parser.add_argument("--bench-dir", default="results/bench", help="optional `adaloss bench` JSON files")
    parser.add_argument("--benchmarks", default="results/benchmarks/train",
                        help="Snakemake benchmark files of the training jobs (for the wall time)")
    parser.add_argument("--claims-out", required=True, help="where to write claims.csv")
    parser.add_argument("--out", required=True, help="the HTML report")


def run_cli(args: argparse.Namespace) -> int:
    claim_frame = claims(args.tables)
    atomic.write_csv(args.claims_out, claim_frame)
    page = build_html(Path(args.tables), [Path(f) for f in args.figures], args.profile,
                      " ".join(args.configfiles) or "(none)", Path(args.bench_dir), claim_frame,
                      training_span(Path(args.benchmarks), pd.read_csv(Path(args.tables) / "runs.csv")))
    atomic.write_text(args.out, page)
    for c in claim_frame.itertuples():
        print(f"[{c.reproduced}] {c.claim}: {c.ours}")
    return 0
