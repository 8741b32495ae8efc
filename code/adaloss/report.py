"""The study's report: one self-contained HTML page rendering the tables and the claims' verdicts.

`python -m adaloss report` reads only `results/tables/` and the figures the notebooks drew, and writes
`report/report.html` (figures embedded as base64 PNG, tables as HTML) plus `results/tables/claims.csv`.
The claims and their paired statistics are computed in `claims.py`; this module only renders them,
beside the paper's numbers (arXiv v3, Table 3a and 3b, verified against the v3 table image).

The notebooks share the few plotting helpers here (labels, order, style, atomic PNG saving), so every
figure names schemes the same way.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import platform
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from . import atomic
from .claims import all_claims, budget_text, family_of, final_exit_share, small_vs_large_summary
from .lm_claims import LM_FAMILY
from .plan import LM_POOL
from .provenance import cpu_name
from .tables import BUDGET_NAMES, difficulty, format_floats
from .verdicts import CLAIM_COLUMNS
from .weighting import LABELS, SCALES, label, split_label

__all__ = [
    "LABELS", "BUDGET_NAMES", "budget_text", "family_of", "label", "ordered", "save_figure", "log_error_axis",
    "mean_std", "mean_std_table",
    "final_error_table", "e2_table", "paper_3a_display", "paper_ilsvrc_display", "budgeted_table", "families", "study_claims", "build_html",
    "lm_bpb_table", "lm_relative_table",
]



def ordered(weightings: Any) -> list[str]:
    """Weighting labels in the paper's order (CONST, LINEAR, ..., OPT), each scheme's scaled
    variants (`const_log2`, `adaloss_matched`) right after it; unknown labels last, by name."""
    def key(w: str) -> tuple[int, int, str]:
        try:
            name, scale = split_label(w)
        except ValueError:
            return (len(LABELS), 0, w)
        return (list(LABELS).index(name), SCALES.index(scale), w)

    return sorted(set(weightings), key=key)


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


def final_error_table(anytime: pd.DataFrame, column: str = "error") -> pd.DataFrame:
    """E1 for display: each run's deepest exit's test error (or another per-exit `column`, such as
    `ece`), mean ± std over seeds, per dataset and model, one column per scheme (OPT: its deepest
    network)."""
    keys = ["dataset", "model", "weighting"]
    last = anytime[anytime["exit"] == anytime.groupby(keys)["exit"].transform("max")]
    table = last.groupby(keys)[column].apply(mean_std).unstack("weighting")
    table = table[ordered(table.columns)].rename(columns=label)
    return table.rename_axis(columns=None).reset_index()


def families(runs: pd.DataFrame) -> dict[str, str]:
    """model -> arch of the study's runs (runs.csv), which decides each model's family."""
    return dict(zip(runs["model"], runs["arch"]))


PAPER_ROW = "arXiv v3, Table 3a"
COST_COLUMN = "budget points (measured % of the cost)"


def e2_table(seeds: pd.DataFrame, paper: pd.DataFrame, model_arch: dict[str, str]) -> pd.DataFrame:
    """E2 for display: relative % increase over OPT (mean ± std over seeds) per dataset, model and
    scheme; the mean per model family and scheme (families are never pooled); and arXiv v3 Table 3a
    (12 ResANNs on CIFAR10, CIFAR100 and SVHN together). Every row names the measured share of the
    total cost at its four budget points, e.g. '1/4 (24 %), 1/2 (44 %), ...'."""
    def pivot(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        t = frame.groupby([*keys, "budget"])["rel_increase_pct"].apply(mean_std).unstack("budget")
        t = t.rename(columns=BUDGET_NAMES).rename_axis(columns=None)
        if "cost_fraction" in frame:
            t[COST_COLUMN] = frame.groupby(keys).apply(
                lambda g: ", ".join(budget_text(b, f["cost_fraction"]) for b, f in g.groupby("budget")))
        return t

    order = {label(w): i for i, w in enumerate(ordered(set(seeds["weighting"]) | set(paper["weighting"])))}
    seeds = seeds.assign(scheme=seeds["weighting"].map(label),
                         family=seeds["model"].map(family_of(model_arch)))
    ours = pivot(seeds, ["dataset", "model", "scheme"]).reset_index()
    mean = pivot(seeds, ["family", "scheme"]).reset_index()
    mean = mean.assign(dataset="mean (this run)", model=mean["family"] + "s").drop(columns="family")
    out = pd.concat([ours, mean, paper_3a_display(paper)], ignore_index=True)
    out = out.assign(_o=out["scheme"].map(order)).sort_values(["dataset", "model", "_o"], kind="mergesort")
    return out[["dataset", "model", "scheme", *BUDGET_NAMES.values(), COST_COLUMN]].reset_index(drop=True)


def paper_3a_display(paper: pd.DataFrame) -> pd.DataFrame:
    """arXiv v3 Table 3a (paper_relative_to_opt.csv) as rows of the E2 table: one per scheme."""
    t = paper.pivot_table(index="weighting", columns="budget", values="rel_increase_pct")
    t = t.loc[ordered(t.index)].rename(columns=BUDGET_NAMES).rename_axis(columns=None)
    t = t.map(lambda v: f"{v:.2f}").reset_index()
    return t.assign(scheme=t["weighting"].map(label), dataset=PAPER_ROW,
                    model="mean of 12 ResANNs, CIFAR10 + CIFAR100 + SVHN",
                    **{COST_COLUMN: "1/4, 1/2, 3/4, 1 of the total ANN cost (the paper's words)"}).drop(columns="weighting")


def paper_ilsvrc_display(ilsvrc: pd.DataFrame) -> pd.DataFrame:
    """arXiv v3 Table 3b as the paper prints it: one row per model and scheme, one column per budget."""
    t = ilsvrc.pivot_table(index=["model", "scheme"], columns="budget", values="top1_error", sort=False)
    return t.rename(columns=BUDGET_NAMES).rename_axis(columns=None).reset_index()


def budgeted_table(budgeted: pd.DataFrame) -> pd.DataFrame:
    """E7 for display: per dataset, model and target budget (fraction of the full cost), the test error
    of each scheme (mean ± std over seeds), and the average MFLOPs per test image reached (mean)."""
    keys = ["dataset", "model", "budget_fraction"]
    error = budgeted.groupby([*keys, "weighting"])["error"].apply(mean_std).unstack("weighting")
    error = error[ordered(error.columns)].rename(columns=lambda w: f"{label(w)} error")
    reached = budgeted.groupby([*keys, "weighting"])["avg_flops"].mean().div(1e6).unstack("weighting")
    reached = reached[ordered(reached.columns)].rename(columns=lambda w: f"{label(w)} MFLOPs")
    return error.join(reached).rename_axis(columns=None).reset_index()


def lm_bpb_table(lm: pd.DataFrame) -> pd.DataFrame:
    """E8 for display: test bits per byte of every exit (mean ± std over seeds), one column per scheme
    (OPT at the exits it was trained for), beside each exit's kFLOPs per token and median milliseconds
    per token over the runs."""
    keys = ["dataset", "model", "exit"]
    bpb = lm.groupby([*keys, "weighting"])["bpb"].apply(lambda v: mean_std(v, "{:.4f}")).unstack("weighting")
    bpb = bpb[ordered(bpb.columns)].rename(columns=label)
    cost = lm[lm["weighting"] != "opt"].groupby(keys).agg(kflops_per_token=("flops", "first"),
                                                          ms_per_token=("ms_per_token", "median"))
    cost["kflops_per_token"] = cost["kflops_per_token"] / 1e3
    return cost.join(bpb).rename_axis(columns=None).reset_index()


def lm_relative_table(rel: pd.DataFrame) -> pd.DataFrame:
    """E8's relative % increase in bits per byte over OPT (lm_relative_to_opt.csv, per seed) for display:
    mean ± std over seeds per scheme, one column per budget point named with its measured share."""
    table = rel.groupby(["dataset", "model", "weighting", "budget"])["rel_increase_pct"].apply(
        lambda v: mean_std(v, "{:+.2f}")).unstack("budget")
    table.columns = [budget_text(b, rel.loc[rel["budget"] == b, "cost_fraction"]) for b in table.columns]
    table = table.reset_index()
    order = {w: i for i, w in enumerate(ordered(table["weighting"]))}
    table = table.assign(_o=table["weighting"].map(order)).sort_values(["dataset", "model", "_o"], kind="mergesort")
    return table.assign(weighting=table["weighting"].map(label)).drop(columns="_o").rename(
        columns={"weighting": "scheme"}).reset_index(drop=True)


def mean_std_table(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Every numeric column but `by` and seed, as 'mean ± std' over the other rows of each `by` group."""
    cols = [c for c in frame.select_dtypes(["number", "bool"]).columns if c not in (*by, "seed")]
    return frame.groupby(by, sort=True)[cols].agg(lambda v: mean_std(v.astype(float))).reset_index()


def _read(tables: Path, name: str) -> pd.DataFrame | None:
    """A table of the study, or None when this profile's experiments do not make it."""
    path = tables / f"{name}.csv"
    return pd.read_csv(path) if path.exists() else None


def study_claims(tables: Path, small_vs_large: bool, opt_model: str | None, tolerance: float,
                 image_study: bool = True, lm: bool = False) -> pd.DataFrame:
    """`claims.all_claims` on the study's tables in `tables` (E3's and E4's claims only when they ran,
    the image claims only when an image experiment ran, E8's only when `lm`)."""
    runs = pd.read_csv(tables / "runs.csv")
    runs = runs[runs["pool"] == "runs"]
    svl = _read(tables, "small_vs_large") if small_vs_large else None
    curve = _read(tables, "eann") if opt_model else None
    image = {"seeds": "relative_to_opt_seeds", "anytime": "anytime_errors", "weights": "adaloss_weights"}
    read = {k: _read(tables, name) if image_study else None for k, name in image.items()}
    return all_claims(read["seeds"], families(runs), svl, curve, read["anytime"], opt_model, tolerance,
                      read["weights"], pd.read_csv(tables / "lm_anytime.csv") if lm else None)


# -- the page ---------------------------------------------------------------------------------

EXPERIMENTS = {
    "e1_anytime": ("E1 Anytime error", "Test error of every exit against its anytime cost (cumulative FLOPs, "
                   "earlier heads included), per dataset and model, for each weighting scheme; OPT (one network "
                   "per budget point) as stars."),
    "e2_relative_to_opt": ("E2 Relative increase in error over OPT", "At the exit whose anytime cost is nearest "
                           "1/4, 1/2, 3/4 and 1 of the total cost, where the OPT networks sit (docs/fidelity.md, D2); "
                           "the last column gives the share of the cost each budget point really has. Seed s of a "
                           "scheme is paired with seed s of OPT. The paper's row is arXiv v3 Table 3a, the mean over "
                           "12 ResANNs on CIFAR10, CIFAR100 and SVHN together, so it compares with our ResANN mean."),
    "e3_small_vs_large": ("E3 Small AdaLoss ANN against a large CONST ANN", "Error against FLOPs of each small ANN "
                          "with AdaLoss, the same small ANN with CONST (the control) and a ~2x larger ANN with CONST. "
                          "The claim compares final errors: the large ANN at its full cost."),
    "e4_eann": ("E4 EANN", "ANNs of exponentially increasing depth run one after another, one EANN of AdaLoss "
                "members and one of CONST members; at each budget the prediction with the lowest validation error "
                "(hold-out of the members' training set) so far, charging the full cost of the members already "
                "run; against OPT (trained on the whole training set) and the single ANNs. The table gives, per "
                "OPT point, the EANN budget that comes within the stated tolerance of OPT's error."),
    "e5_weights_vs_difficulty": ("E5 Final AdaLoss weights against dataset difficulty", "Final weight per exit "
                                 "(normalised to sum 1), datasets ordered by OPT's final error."),
    "e6_weight_trajectories": ("E6 AdaLoss weights during training", "Weight of each exit at every update."),
    "e7_budgeted": ("E7 Budgeted batch classification (early exit)", "Each test image leaves at the first exit "
                    "whose top softmax probability clears that exit's threshold. The thresholds are fit on each "
                    "run's held-out share of the training set, never on the test set, so that the exit shares "
                    "follow MSDNet's geometric rule for the target average cost; test error against the average "
                    "FLOPs per test image reached, OPT networks (anytime prediction) as stars."),
    "e8_lm": ("E8 Beyond the paper: AdaLoss on an early-exit transformer language model", "Test bits per byte "
              "of every exit of a byte-level transformer with an exit after every layer, against its anytime cost "
              "(FLOPs per token, earlier exits' heads included), for AdaLoss and the static exit-loss scales LLM "
              "trainers ship (torchtune's tt_*, CALM's geometric); OPT networks (the transformer truncated at an exit "
              "and trained for it alone) as stars. The relative increase over OPT is in bits per byte, at the exits "
              "nearest 1/4, 1/2, 3/4 and 1 of the cost (for this transformer, of the depth). Its claims are ours, "
              "not the paper's; they are the last rows of the claims table and repeated below."),
}


def _table(frame: pd.DataFrame) -> Markup:
    return Markup(format_floats(frame).to_html(index=False, border=0, classes="t", na_rep="", escape=True))


def training_span(benchmark_dir: Path, runs: pd.DataFrame) -> float | None:
    """Seconds from the first training job's start to the last one's end, from the Snakemake benchmark
    files of `runs` ({pool}/{dataset}/{model}/{weighting}/seed{seed}.tsv, or {weighting}.tsv for a job
    that trained every seed; written at each job's end; start = end - its wall seconds); None when
    any is missing."""
    def job_file(r: Any) -> Path:
        one = benchmark_dir / r.pool / r.dataset / r.model / r.weighting / f"seed{r.seed}.tsv"
        return one if one.exists() else benchmark_dir / r.pool / r.dataset / r.model / f"{r.weighting}.tsv"

    paths = sorted({job_file(r) for r in runs.itertuples()})
    if not paths or not all(p.exists() for p in paths):
        return None
    ends = [p.stat().st_mtime for p in paths]
    starts = [e - float(pd.read_csv(p, sep="\t")["s"].iloc[0]) for p, e in zip(paths, ends)]
    return max(ends) - min(starts)


def _scale(runs: pd.DataFrame) -> pd.DataFrame:
    """Scale per pool, dataset and model: arch, options, epochs (E8: steps), batch, AdaLoss update
    period, hold-out (E8: the corpus's validation share), runs, time."""
    g = runs.groupby(["pool", "dataset", "model"], sort=True)
    return g.agg(arch=("arch", "first"), options=("arch_opts", "first"), epochs=("epochs", "first"),
                 steps=("steps", "first"), batch_size=("batch_size", "first"), update_per=("update_per", "first"),
                 val_fraction=("val_fraction", "first"), runs=("seed", "size"),
                 train_seconds=("train_seconds", "sum")).reset_index()


def _lm_section(t: Path, runs: pd.DataFrame, claim_frame: pd.DataFrame) -> Markup:
    """E8's text and tables under its figure: the data every run read (the corpus split and its
    SHA-256 prefixes, so a reader sees whether every run read the same bytes), the scale, the per-exit
    bits per byte, the relative increase over OPT, and E8's rows of the claims table."""
    lm_runs = runs[runs["pool"] == LM_POOL]
    data = sorted(lm_runs["data"].dropna().unique())
    read = (f"all {len(lm_runs)} runs read the same bytes: {data[0]}" if len(data) == 1 else
            f"the runs read {len(data)} different splits: {'; '.join(data)}")
    scale = []
    for model, g in lm_runs.groupby("model"):
        opts, steps, batch = json.loads(g["arch_opts"].iloc[0]), int(g["steps"].max()), int(g["batch_size"].iloc[0])
        head = "one final norm and LM head shared by every exit" if opts["shared_head"] else "a head per exit"
        scale.append(f"{model}: {opts['layers']} layers (an exit after each) of width {opts['width']}, "
                     f"{opts['heads']} heads, context {opts['context']} bytes, {head}; {steps} AdamW steps of "
                     f"{batch} windows ({steps * batch * opts['context']:,} bytes seen per run)")
    devices = ", ".join(sorted(set(lm_runs["device"] + " (" + lm_runs["device_name"].fillna("?") + ")")))
    text = (f"<p>Data: {html.escape(read)}.</p><p>Scale: {html.escape('; '.join(scale))}; trained on "
            f"{html.escape(devices)}, {lm_runs['train_seconds'].sum() / 60:.1f} min in training loops over "
            f"{len(lm_runs)} runs.</p><p>Test bits per byte per exit (mean ± std over seeds), kFLOPs and median "
            "milliseconds per token (one window at batch 1, divided by the context):</p>")
    return (Markup(text) + _table(lm_bpb_table(pd.read_csv(t / "lm_anytime.csv")))
            + Markup("<p>Relative % increase in test bits per byte over OPT (mean ± std over seeds):</p>")
            + _table(lm_relative_table(pd.read_csv(t / "lm_relative_to_opt.csv")))
            + Markup("<p>E8's verdicts (their rows of the claims table):</p>")
            + claims_html(claim_frame[claim_frame["family"] == LM_FAMILY]))


def _extra_tables(t: Path, anytime: pd.DataFrame | None, model_arch: dict[str, str]) -> dict[str, Markup]:
    """The table shown under each image experiment's figure, computed from the tables (for the
    experiments that ran; `anytime` is None when none did)."""
    if anytime is None:
        return {}
    extra = {
        "e1_anytime": Markup("<p>Final-exit test error (%), mean ± std over seeds (OPT: its deepest network), "
                             "then the final exit's expected calibration error (%, 15 bins, test set).</p>")
                      + _table(final_error_table(anytime)) + _table(final_error_table(anytime, "ece")),
        "e2_relative_to_opt": _table(e2_table(pd.read_csv(t / "relative_to_opt_seeds.csv"),
                                              pd.read_csv(t / "paper_relative_to_opt.csv"), model_arch)),
    }
    if (svl := _read(t, "small_vs_large")) is not None:
        extra["e3_small_vs_large"] = _table(mean_std_table(small_vs_large_summary(svl), ["dataset", "pair"]))
    if (cost := _read(t, "eann_cost")) is not None:
        extra["e4_eann"] = _table(mean_std_table(cost, ["dataset", "weighting", "opt_exit"]))
    if (weights := _read(t, "adaloss_weights")) is not None:
        extra["e5_weights_vs_difficulty"] = _table(difficulty(anytime).merge(
            mean_std_table(final_exit_share(weights), ["dataset"]), on="dataset"))
    if (budgeted := _read(t, "budgeted")) is not None:
        sources = "; ".join(sorted(budgeted["thresholds_from"].unique()))
        extra["e7_budgeted"] = (Markup(f"<p>Thresholds fit on the {html.escape(sources)} (split <code>val</code>); "
                                       "test error (%) and MFLOPs per test image reached, mean over seeds.</p>")
                                + _table(budgeted_table(budgeted)))
    if (traj := _read(t, "weight_trajectories")) is not None:
        updates = traj.groupby(["dataset", "model", "seed"])["step"].nunique().max() if len(traj) else 0
        extra["e6_weight_trajectories"] = Markup(f"<p>{updates} weight updates per run at most.</p>")
    return extra


def _bench_table(bench_dir: Path | None) -> Markup | None:
    files = sorted(bench_dir.glob("*.json")) if bench_dir is not None and bench_dir.is_dir() else []
    if not files:
        return None
    frame = pd.DataFrame({f.stem: pd.Series(json.loads(f.read_text())).astype(str) for f in files})
    return Markup(frame.rename_axis("quantity").reset_index().to_html(index=False, border=0, classes="t"))


CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
       "img{max-width:100%}table.t{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
       "table.t td,table.t th{border:1px solid #ccc;padding:2px 6px}.contradicted{color:#b00}"
       ".reproduced{color:#070}.inconclusive,.not{color:#666}")


def claims_html(claim_frame: pd.DataFrame) -> Markup:
    """The claims table: the headline (Holm-adjusted) verdict first, then the claim's own 95% verdict
    and interval [low, high], its p-values, then what was measured."""
    def interval(r: Any) -> str:
        if r.pairs == 0:
            return ""
        if math.isnan(r.ci_low):
            return f"{r.mean_diff:+.2f} ({'one pair' if r.pairs < 2 else 'no spread in too few pairs'}: no interval)"
        return f"{r.mean_diff:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"

    def badge(v: str) -> str:
        return f'<span class="{v.split()[0]}">{html.escape(v)}</span>' if v else ""

    def p_text(p: float) -> str:
        return "" if math.isnan(p) else f"{p:.3g}"

    rows = [{"verdict (Holm)": badge(r.verdict_holm), "claim": html.escape(r.claim),
             "verdict (this claim alone)": badge(r.verdict), "mean difference [95% CI]": interval(r),
             "p": p_text(r.p_value), "p (Holm)": p_text(r.p_holm), "pairs": r.pairs,
             "paired on": html.escape(str(r.paired_on)), "unit": html.escape(str(r.unit)),
             "ours": html.escape(str(r.ours)), "paper": html.escape(str(r.paper))}
            for r in claim_frame.fillna({"paired_on": "", "unit": "", "verdict_holm": ""}).itertuples()]
    return Markup(pd.DataFrame(rows).to_html(index=False, border=0, classes="t", escape=False))


def build_html(tables: Path, figures: list[Path], profile: str, configfiles: str, bench_dir: Path | None,
               claim_frame: pd.DataFrame, span: float | None = None, image_study: bool = True) -> str:
    """The whole report page as one string (no external resources), rendered from
    templates/report.html.j2: this module gathers the numbers, the template lays them out.
    `image_study` False: no image experiment ran (E8 alone), so there are no image tables."""
    runs = pd.read_csv(tables / "runs.csv")
    anytime = pd.read_csv(tables / "anytime_errors.csv") if image_study else None
    study = runs[runs["pool"] == "runs"]
    held_out = runs.loc[runs["pool"] == "eann_runs", "val_fraction"]
    lengths = [f"; {what} " + ", ".join(f"{d}: {int(n)}" for d, n in per_dataset.items())
               for what in ("epochs", "steps")  # E8's runs train for steps, on a corpus
               if len(per_dataset := runs.groupby("dataset")[what].max().dropna())]
    scale_note = (f"profile {profile}; datasets {', '.join(sorted(runs['dataset'].unique()))}; "
                  f"seeds {', '.join(map(str, sorted(runs['seed'].unique())))}" + "".join(lengths))
    extra = _extra_tables(tables, anytime, families(study))
    if any(f.stem == "e8_lm" for f in figures):
        extra["e8_lm"] = _lm_section(tables, runs, claim_frame)
    sections = []
    for fig in figures:
        title, text = EXPERIMENTS.get(fig.stem, (fig.stem, ""))
        sections.append({"name": fig.stem, "title": title, "caption": text, "table": extra.get(fig.stem, ""),
                         "image": base64.b64encode(fig.read_bytes()).decode("ascii")})
    context = {
        "css": CSS, "profile": profile, "scale_note": scale_note, "configfiles": configfiles,
        "n_runs": len(runs),
        "devices": ", ".join(sorted(set(runs["device"] + " (" + runs["device_name"].fillna("?") + ")"))),
        "torch_versions": ", ".join(sorted(runs["torch"].unique())), "report_cpu": cpu_name(),
        "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "train_minutes": runs["train_seconds"].sum() / 60, "job_minutes": runs["job_seconds"].sum() / 60,
        "span_minutes": None if span is None else span / 60,
        "update_per": "/".join(map(str, sorted(runs.loc[runs["pool"] != LM_POOL, "update_per"].unique()))),
        "lm_update_per": "/".join(map(str, sorted(runs.loc[runs["pool"] == LM_POOL, "update_per"].unique()))),
        "image_study": image_study,
        "held_out": "/".join(map(str, sorted(held_out.unique()))) or "none",
        "n_seeds": runs["seed"].nunique(), "scale_table": _table(_scale(runs)),
        "claims_table": claims_html(claim_frame), "sections": sections, "bench_table": _bench_table(bench_dir),
        "n_claims": int(((claim_frame["kind"] == "claim") & claim_frame["p_value"].notna()).sum()),
        "paper_3a": _table(paper_3a_display(pd.read_csv(tables / "paper_relative_to_opt.csv"))
                           [["scheme", *BUDGET_NAMES.values()]]),
        "paper_3b": _table(paper_ilsvrc_display(pd.read_csv(tables / "paper_ilsvrc.csv"))),
        **_latency_context(tables),
    }
    return _template().render(**context)


def _template() -> Any:
    """The report's Jinja2 template; autoescaping on, so only tables built here (Markup) pass as HTML."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("adaloss", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("report.html.j2")


def _latency_context(tables: Path) -> dict[str, Any]:
    """The per-exit latency table (latency.csv: ms per image at each batch size beside FLOPs), if measured;
    each device label names the CPU threads it was timed with."""
    latency = _read(tables, "latency")
    if latency is None or latency.empty:
        return {"latency_table": None, "latency_devices": ""}
    wide = latency.pivot_table(index=["dataset", "model", "exit", "flops"], columns="batch_size",
                               values="ms_per_image", aggfunc="first")
    wide.columns = [f"ms/image at batch {b}" for b in wide.columns]
    return {"latency_table": _table(wide.reset_index()),
            "latency_devices": ", ".join(sorted(latency["device"].unique()))}


# -- command line: `python -m adaloss report` --------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tables", default="results/tables", help="folder of the study's tables")
    parser.add_argument("--figures", nargs="+", required=True, help="the experiments' PNG figures")
    parser.add_argument("--profile", required=True, help="name of the configuration profile")
    parser.add_argument("--configfiles", nargs="*", default=[], help="the config files used (stated in the report)")
    parser.add_argument("--bench-dir", help="folder of `adaloss bench` JSON files (absent: no benchmark section)")
    parser.add_argument("--benchmarks", default="results/benchmarks",
                        help="folder of the training jobs' Snakemake benchmark files (for the wall time)")
    parser.add_argument("--small-vs-large", action="store_true",
                        help="E3 ran: score its claim from small_vs_large.csv (absent: 'not run in this profile')")
    parser.add_argument("--opt-model", help="E4's reference model, whose OPT networks the EANN meets; absent: E4 did not run")
    parser.add_argument("--eann-tolerance", type=float, default=0.1,
                        help="relative slack on OPT's error that still counts as 'competitive' (0.1 = 10%%)")
    parser.add_argument("--image-study", action=argparse.BooleanOptionalAction, default=True,
                        help="an image experiment (E1-E7) ran; --no-image-study: E8 alone, whose claims are the "
                             "only ones scored (default: True)")
    parser.add_argument("--lm", action="store_true", help="E8 ran: score its claims from lm_anytime.csv")
    parser.add_argument("--claims-out", required=True, help="where to write claims.csv")
    parser.add_argument("--out", required=True, help="the HTML report")


def run_cli(args: argparse.Namespace) -> int:
    claim_frame = study_claims(Path(args.tables), args.small_vs_large, args.opt_model, args.eann_tolerance,
                               args.image_study, args.lm)
    atomic.write_csv(args.claims_out, format_floats(claim_frame[CLAIM_COLUMNS]))
    page = build_html(Path(args.tables), [Path(f) for f in args.figures], args.profile,
                      " ".join(args.configfiles) or "(none)", args.bench_dir and Path(args.bench_dir), claim_frame,
                      training_span(Path(args.benchmarks), pd.read_csv(Path(args.tables) / "runs.csv")),
                      args.image_study)
    atomic.write_text(args.out, page)
    for c in claim_frame.itertuples():
        print(f"[{c.verdict_holm} (Holm); {c.verdict} alone] {c.claim}: {c.ours} (pairs {c.pairs}, "
              f"mean {c.mean_diff:+.3g}, 95% CI [{c.ci_low:+.3g}, {c.ci_high:+.3g}])")
    return 0
