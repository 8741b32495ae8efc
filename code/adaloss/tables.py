"""The study's tables: per-run outputs gathered into tidy CSVs under `results/tables/`.

Each function here is pure (DataFrames in, DataFrame out); `python -m adaloss tables NAME` wraps one
of them for a Snakemake rule. The three interface tables and their columns are fixed:

* `anytime_errors.csv`  dataset, model, weighting, seed, exit, flops, own_head_flops, error (test
  error, %), ece (the exit's expected calibration error on the test set, %, 15 bins); `flops` is the
  anytime cost (every earlier head included), `own_head_flops` the authors' (backbone plus that
  exit's own head), see `flops.py`
* `relative_to_opt.csv` dataset, model, weighting, budget, cost_fraction (the measured share of the
  total cost at that budget's exit), rel_increase_pct (mean over seeds)
* `adaloss_weights.csv` dataset, model, seed, exit, weight (AdaLoss's final weights)

and beside them: `relative_to_opt_seeds.csv` (the per-seed pairs behind the means),
`weight_trajectories.csv`, `small_vs_large.csv`, `runs.csv` (scale and compute time per run),
`budgeted.csv` (E7: early exit at target average costs, thresholds fit on held-out training data),
`latency.csv` (measured milliseconds per image of every exit beside its FLOPs),
`paper_relative_to_opt.csv` (arXiv v3, Table 3a) and `paper_ilsvrc.csv` (arXiv v3, Table 3b).

E8 (beyond the paper, issue 20), from `python -m adaloss train-lm` runs: `lm_anytime.csv` (dataset =
the corpus, model, weighting, seed, exit, flops = anytime FLOPs per token, bpb = test bits per byte,
val_bpb, ms_per_token) and `lm_relative_to_opt.csv`, the relative increase in bits per byte over OPT
per seed, as E2's but on bpb; E8's runs are rows of `runs.csv` too (pool `lm_runs`).

Relative increase over OPT (paper.md §7): 100 * (err_scheme(k) - err_OPT(k)) / err_OPT(k) at the
exit k whose anytime cost is nearest f x the total cost, for f = 1/4, 1/2, 3/4, 1
(`flops.opt_exits`, the same rule that chose the OPT networks; docs/fidelity.md, D2), with the
measured fraction beside it; seed s of a scheme is paired with seed s of OPT. An OPT error of 0
leaves the ratio undefined (empty cell) rather than infinite.

Byte-stable output: rows are sorted on their key columns and floats written with `FLOAT_FORMAT`.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from . import atomic
from .flops import cost_fractions, opt_exits
from .plan import split_evenly
from .weighting import weighting_label

__all__ = [
    "ANYTIME_COLUMNS", "LM_ANYTIME_COLUMNS", "RELATIVE_COLUMNS", "WEIGHTS_COLUMNS", "BUDGETS", "BUDGET_NAMES",
    "PAPER_RELATIVE_TO_OPT", "read_csvs", "format_floats", "anytime_errors", "lm_anytime", "relative_to_opt",
    "final_weights",
    "weight_trajectories", "runs_table", "small_vs_large", "difficulty", "paper_table", "paper_ilsvrc_table",
    "budgeted", "latency_table",
]

ANYTIME_COLUMNS = ["dataset", "model", "weighting", "seed", "exit", "flops", "own_head_flops", "error", "ece"]
LM_ANYTIME_COLUMNS = ["dataset", "model", "weighting", "seed", "exit", "flops", "bpb", "val_bpb", "ms_per_token"]
RELATIVE_COLUMNS = ["dataset", "model", "weighting", "budget", "cost_fraction", "rel_increase_pct"]
WEIGHTS_COLUMNS = ["dataset", "model", "seed", "exit", "weight"]
BUDGETS = (0.25, 0.5, 0.75, 1.0)  # fractions of the total cost where OPT networks sit
BUDGET_NAMES = dict(zip(BUDGETS, ("1/4", "1/2", "3/4", "1")))  # how tables and figures name them
LATE = BUDGETS[2:]  # the late budget points of claim 1 (Table 3a's 3/4 and 1 columns)
FLOAT_FORMAT = "{:.6g}"

# arXiv v3, Table 3a (read digit by digit off the v3 table image; shared/reference/paper.md §8): the
# relative % increase in error over OPT at 1/4, 1/2, 3/4, 1 of the total ANN cost, averaged over 12
# ResANNs, (n, c) in {7, 9, 13, 17, 25} x {16, 32} plus (9, 64) and (9, 128), and over CIFAR10,
# CIFAR100 and SVHN together: one row per scheme, no per-data-set rows.
PAPER_RELATIVE_TO_OPT = {
    "const": (15.07, 16.40, 18.76, 18.90),
    "linear": (25.67, 13.02, 12.97, 12.65),
    "adaloss": (32.99, 9.97, 3.96, 2.73),
}
PAPER_SOURCE = "arXiv v3, Table 3a: mean over 12 ResANNs on CIFAR10, CIFAR100 and SVHN together"
# arXiv v3, Table 3b: ILSVRC2012 top-1 error (%) at 1/4, 1/2, 3/4, 1 of the cost (paper.md §8).
PAPER_ILSVRC = {
    ("ResANN50", "CONST"): (54.34, 35.61, 27.23, 25.14),
    ("ResANN50", "AdaLoss"): (54.98, 34.92, 26.59, 24.42),
    ("DenseANN169", "CONST"): (48.15, 45.00, 29.09, 25.60),
    ("DenseANN169", "AdaLoss"): (47.17, 44.64, 28.22, 24.07),
    ("MSDNet38", "MSDNet's own weights (Huang et al. 2017a)"): (33.9, 28.0, 25.7, 24.3),
    ("MSDNet38", "AdaLoss"): (35.75, 28.04, 25.82, 23.99),
}
PAPER_ILSVRC_SOURCE = "arXiv v3, Table 3b: ILSVRC2012 top-1 error (%), the paper's numbers, not ours"


def read_csvs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate CSV files, read in sorted path order so the result never depends on argument order."""
    frames = [pd.read_csv(p) for p in sorted(map(str, paths))]
    if not frames:
        raise ValueError("no input files")
    return pd.concat(frames, ignore_index=True)


def format_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """Float columns as fixed-format strings (NaN as empty), so identical inputs give identical bytes."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            out[col] = [("" if pd.isna(v) else FLOAT_FORMAT.format(v)) for v in out[col]]
    return out


def _sorted(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    return frame.sort_values(list(keys), kind="mergesort").reset_index(drop=True)


def anytime_errors(exits: pd.DataFrame, columns: Sequence[str] = ANYTIME_COLUMNS) -> pd.DataFrame:
    """The tidy anytime table (`columns`) from the runs' `exits.csv` rows; OPT networks appear as
    weighting "opt" with the one exit each was trained for."""
    dup = exits.duplicated(["dataset", "model", "weighting", "seed", "exit"])
    if dup.any():
        first = exits[dup].iloc[0]
        raise ValueError(f"run trained twice: {first['dataset']}/{first['model']}/{first['weighting']}/"
                         f"seed{first['seed']} exit {first['exit']}")
    return _sorted(exits[list(columns)], list(columns[:5]))


def lm_anytime(exits: pd.DataFrame) -> pd.DataFrame:
    """E8's anytime table from the language-model runs' `exits.csv` rows (`LM_ANYTIME_COLUMNS`)."""
    return anytime_errors(exits, LM_ANYTIME_COLUMNS)


def relative_to_opt(anytime: pd.DataFrame, column: str = "error") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(means over seeds, per-seed pairs) of the relative % increase in error (or another per-exit
    `column`, such as E8's bits per byte) over OPT, for every model that has OPT networks and every
    scheme it was trained with, at the exits nearest each budget's share of the total cost
    (`flops.opt_exits` on the model's anytime costs), with the measured share (`cost_fraction`)."""
    rows = []
    for (dataset, model), group in anytime.groupby(["dataset", "model"], sort=True):
        opt = group[group["weighting"] == "opt"].set_index(["seed", "exit"])[column]
        ann = group[group["weighting"] != "opt"]
        if opt.empty or ann.empty:
            continue
        costs = ann.groupby("exit")["flops"].first().sort_index()
        if list(costs.index) != list(range(len(costs))):
            raise ValueError(f"{dataset}/{model}: the anytime runs lack exits {sorted(set(range(len(costs))) - set(costs.index))}")
        exits = opt_exits(costs.tolist(), BUDGETS)
        fractions = cost_fractions(costs.tolist(), exits)
        for (weighting, seed), run in ann.groupby(["weighting", "seed"], sort=True):
            run = run.set_index("exit")
            for budget, k, fraction in zip(BUDGETS, exits, fractions):
                if (seed, k) not in opt.index:
                    raise ValueError(f"{dataset}/{model}: no OPT network for exit {k}, seed {seed}")
                o, e = float(opt[(seed, k)]), float(run.at[k, column])
                rows.append({"dataset": dataset, "model": model, "weighting": weighting, "seed": int(seed),
                             "budget": budget, "cost_fraction": fraction, "exit": k, "flops": int(run.at[k, "flops"]),
                             column: e, f"opt_{column}": o,
                             "rel_increase_pct": 100.0 * (e - o) / o if o > 0 else float("nan")})
    seeds = pd.DataFrame(rows, columns=["dataset", "model", "weighting", "seed", "budget", "cost_fraction", "exit",
                                        "flops", column, f"opt_{column}", "rel_increase_pct"])
    seeds = _sorted(seeds, ["dataset", "model", "weighting", "budget", "seed"])
    means = seeds.groupby(RELATIVE_COLUMNS[:5], sort=True)["rel_increase_pct"].mean().reset_index()
    return _sorted(means, RELATIVE_COLUMNS[:4]), seeds


def _run_labels(metrics_path: Path) -> dict[str, object]:
    """dataset (an E8 run's corpus), model, weighting label (opt{k} for OPT) and seed of a run, from its
    metrics.json."""
    cfg = json.loads(metrics_path.read_text())["config"]
    weighting = f"opt{cfg['opt_exit']}" if cfg["weighting"] == "opt" else weighting_label(cfg["weighting"],
                                                                                          cfg["scale"])
    dataset = cfg["corpus"] if _is_lm(cfg) else cfg["dataset"]
    return {"dataset": dataset, "model": cfg["model_name"], "weighting": weighting, "seed": cfg["seed"]}


def _is_lm(cfg: Mapping[str, object]) -> bool:
    """Whether a run's config is E8's (`python -m adaloss train-lm`, lm_train.LMConfig: it reads a corpus)."""
    return "corpus" in cfg


def _scale_fields(cfg: Mapping[str, Any]) -> dict[str, object]:
    """A run's arch, options and length: an image run's `epochs`, an E8 run's `steps` (and its
    transformer's options, which LMConfig keeps as fields of their own)."""
    if _is_lm(cfg):
        opts = {k: cfg[k] for k in ("layers", "width", "heads", "context", "shared_head")}
        return {"arch": "transformer", "arch_opts": json.dumps(opts, sort_keys=True), "epochs": math.nan,
                "steps": cfg["steps"]}
    return {"arch": cfg["arch"], "arch_opts": json.dumps(cfg["arch_opts"], sort_keys=True), "epochs": cfg["epochs"],
            "steps": math.nan}


def _data_text(info: Mapping[str, Any] | None) -> str:
    """An E8 run's corpus split (metrics.json `data`, textdata.TextCorpus.info) in one line, with the
    first 12 hex digits of each split's SHA-256, so the report can say whether every run read the same
    bytes; empty for an image run."""
    if not info:
        return ""
    splits = ", ".join(f"{s} {info['files'][s]} files {info['bytes'][s]} B {info['sha256'][s][:12]}"
                       for s in ("train", "val", "test"))
    python = f", Python {info['python']}" if info["python"] else ""
    return f"{info['corpus']} ({info['source']}{python}, split by {info['split_by']}): {splits}"


def final_weights(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """AdaLoss's weights at the end of training, one row per exit (from each run's metrics.json)."""
    rows = []
    for path in map(Path, metrics_paths):
        labels = _run_labels(path)
        if labels["weighting"] != "adaloss":
            raise ValueError(f"{path} is a {labels['weighting']!r} run, not an AdaLoss one")
        for k, w in enumerate(json.loads(path.read_text())["final_weights"]):
            rows.append({**labels, "exit": k, "weight": float(w)})
    frame = pd.DataFrame(rows, columns=["dataset", "model", "weighting", "seed", "exit", "weight"])
    return _sorted(frame[WEIGHTS_COLUMNS], WEIGHTS_COLUMNS[:4])


def weight_trajectories(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """The weights over training (`weights.csv` beside each metrics.json), labelled with their run."""
    frames = []
    for path in map(Path, metrics_paths):
        labels = _run_labels(path)
        w = pd.read_csv(path.parent / "weights.csv")
        frames.append(w.assign(dataset=labels["dataset"], model=labels["model"], seed=labels["seed"]))
    cols = ["dataset", "model", "seed", "step", "epoch", "exit", "weight"]
    frame = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    return _sorted(frame, cols[:4] + ["exit"])


def _run_key(path: Path) -> tuple[str, str, str, str, int]:
    """(pool, dataset, model, weighting, seed) of a run directory `.../{pool}/{dataset}/{model}/{weighting}/seed{seed}`."""
    pool, dataset, model, weighting, seed = path.parts[-5:]
    return pool, dataset, model, weighting, int(seed.removeprefix("seed"))


def _job_key(path: Path) -> tuple[str, str, str, str, int | None]:
    """The runs a training job's benchmark file covers, from its layout (adaloss.plan.TrainJob): one run
    (`{pool}/{dataset}/{model}/{weighting}/seed{seed}.tsv`), every seed of it when seeds are packed
    (`{pool}/{dataset}/{model}/{weighting}.tsv`, seed None), or a pack of the model's runs
    (`{pool}/{dataset}/{model}/pack{i}.tsv`, `pack{i}` in place of the weighting, seed None)."""
    if path.name.startswith("seed"):
        pool, dataset, model, weighting = path.parts[-5:-1]
        return pool, dataset, model, weighting, int(path.stem.removeprefix("seed"))
    pool, dataset, model = path.parts[-4:-1]
    return pool, dataset, model, path.stem, None


def _benchmark_seconds(paths: Iterable[str | Path]) -> dict[tuple[str, str, str, str, int | None], float]:
    """Job wall seconds from Snakemake benchmark files laid out as their run directories."""
    return {_job_key(Path(p)): float(pd.read_csv(p, sep="\t")["s"].iloc[0]) for p in paths}


def _pack_seconds(frame: pd.DataFrame, job: Mapping[tuple[str, str, str, str, int | None], float]) -> pd.Series:
    """Each run's equal share of the seconds of the pack that trained it (its runs train in lockstep,
    so each costs the same). The packs of a (pool, dataset, model) are its runs in sorted order, split
    evenly into as many packs as it has benchmark files (adaloss.plan.split_evenly, as the plan split
    them), so `frame` must hold every run of a model that was packed, as the study's runs table does."""
    packs: dict[tuple[str, str, str], int] = {}
    for pool, dataset, model, name, _ in job:
        if name.startswith("pack"):  # no weighting label does
            packs[pool, dataset, model] = max(packs.get((pool, dataset, model), 0), int(name[4:]) + 1)
    seconds = pd.Series(float("nan"), index=frame.index)
    for key, runs in frame.groupby(["pool", "dataset", "model"]):
        if key in packs:
            order = list(runs.sort_values(["weighting", "seed"]).index)
            for i, members in enumerate(split_evenly(order, packs[key])):
                seconds[members] = job.get((*key, f"pack{i}", None), float("nan")) / len(members)
    return seconds


def runs_table(metrics_paths: Iterable[str | Path], benchmark_paths: Iterable[str | Path] = ()) -> pd.DataFrame:
    """One row per run: its pool (`runs`, `eann_runs` for EANN members, `lm_runs` for E8), scale (arch,
    options, epochs or E8's steps, batch; E8's corpus split as `data`) and what it cost: seconds in the
    training loop, seconds of the whole job (imports, data, evaluation; from the benchmark files, if
    given; a job that trained several seeds one after another is shared among them in proportion to
    their training seconds, a pack's equally among its runs, so the column still sums to the jobs'
    wall time), the device and precision."""
    job = _benchmark_seconds(benchmark_paths)
    rows = []
    for path in map(Path, metrics_paths):
        m = json.loads(path.read_text())
        cfg, labels = m["config"], _run_labels(path)
        pool = _run_key(path.parent)[0]
        rows.append({
            "pool": pool, **labels, **_scale_fields(cfg), "batch_size": cfg["batch_size"],
            "update_per": cfg["update_per"], "val_fraction": cfg["val_fraction"],
            "train_seconds": float(m["train_seconds"]), "job_seconds": job.get((pool, *labels.values()), float("nan")),
            "device": m["device"], "device_name": m["device_name"], "bf16": bool(m["bf16"]),
            "torch": m["torch"], "data": _data_text(m.get("data")),
        })
    frame = pd.DataFrame(rows)
    if len(frame):
        keys = ["pool", "dataset", "model", "weighting"]
        packed = frame[keys].apply(lambda r: job.get((*r, None), float("nan")), axis=1)
        share = frame["train_seconds"] / frame.groupby(keys)["train_seconds"].transform("sum")
        frame["job_seconds"] = frame["job_seconds"].fillna(packed * share).fillna(_pack_seconds(frame, job))
    return _sorted(frame, ["pool", "dataset", "model", "weighting", "seed"])


def small_vs_large(anytime: pd.DataFrame, pairs: Sequence[tuple[str, str]], small_weighting: str,
                   large_weighting: str) -> pd.DataFrame:
    """E3's curves per (small, large) pair: the small ANN with `small_weighting` (role `small`), the
    large one with `large_weighting` (role `large`) and, as the control that tells a claim about the
    weighting from one about depth, the small ANN with the large one's weighting (role `control`,
    when it was trained). `pair` names the pair as "small vs large"."""
    parts = []
    for small, large in pairs:
        roles = [("small", small, small_weighting), ("large", large, large_weighting)]
        if small_weighting != large_weighting:
            roles.append(("control", small, large_weighting))
        for role, model, weighting in roles:
            part = anytime[(anytime["model"] == model) & (anytime["weighting"] == weighting)]
            if part.empty and role != "control":
                raise ValueError(f"no anytime rows for the {role} model {model!r} with {weighting!r}")
            parts.append(part.assign(pair=f"{small} vs {large}", role=role))
    cols = ["dataset", "pair", "role", *ANYTIME_COLUMNS[1:]]
    return _sorted(pd.concat(parts)[cols], ["dataset", "pair", "role", "seed", "exit"])


def difficulty(anytime: pd.DataFrame) -> pd.DataFrame:
    """Datasets ordered from easiest to hardest by OPT's final error (the most expensive OPT network of
    each model, mean over seeds, then over models): dataset, opt_final_error, rank (0 = easiest)."""
    opt = anytime[anytime["weighting"] == "opt"]
    if opt.empty:
        raise ValueError("difficulty needs OPT networks in the anytime table")
    last = opt[opt["exit"] == opt.groupby(["dataset", "model"])["exit"].transform("max")]
    per_model = last.groupby(["dataset", "model"])["error"].mean()
    frame = per_model.groupby("dataset").mean().rename("opt_final_error").reset_index()
    frame = frame.sort_values(["opt_final_error", "dataset"], kind="mergesort").reset_index(drop=True)
    return frame.assign(rank=range(len(frame)))


def budgeted(frame: pd.DataFrame) -> pd.DataFrame:
    """E7's tidy table from the runs' budgeted.csv: one row per run and target budget (test error and
    average FLOPs per test image, with the held-out split's beside them)."""
    return _sorted(frame, ["dataset", "model", "weighting", "seed", "budget_fraction"])


def latency_table(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Per-exit latency of every model, from `python -m adaloss costs --latency` tables laid out as
    `.../{dataset}/{model}.csv`: dataset, model, exit, flops, params, batch_size, ms_per_image, device."""
    frames = []
    for path in sorted(map(Path, paths)):
        wide = pd.read_csv(path)
        times = [c for c in wide.columns if c.startswith("ms_per_image_b")]
        long = wide.melt(id_vars=["exit", "flops", "params", "device"], value_vars=times,
                         var_name="batch_size", value_name="ms_per_image")
        long["batch_size"] = long["batch_size"].str.removeprefix("ms_per_image_b").astype(int)
        frames.append(long.assign(dataset=path.parent.name, model=path.stem))
    if not frames:
        raise ValueError("no latency tables given")
    cols = ["dataset", "model", "exit", "flops", "params", "batch_size", "ms_per_image", "device"]
    return _sorted(pd.concat(frames)[cols], ["dataset", "model", "batch_size", "exit"])


def paper_table() -> pd.DataFrame:
    """arXiv v3 Table 3a (the mean over 12 ResANNs and the three data sets), with its source."""
    rows = [{"model": "resann", "weighting": w, "budget": b, "rel_increase_pct": v, "source": PAPER_SOURCE}
            for w, values in PAPER_RELATIVE_TO_OPT.items() for b, v in zip(BUDGETS, values)]
    return _sorted(pd.DataFrame(rows), ["weighting", "budget"])


def paper_ilsvrc_table() -> pd.DataFrame:
    """arXiv v3 Table 3b (ILSVRC2012 top-1 error at 1/4, 1/2, 3/4, 1 of the cost), with its source:
    the paper's numbers, for the report's reference section; no profile of ours trains on ILSVRC."""
    rows = [{"model": model, "scheme": scheme, "budget": b, "top1_error": v, "source": PAPER_ILSVRC_SOURCE}
            for (model, scheme), values in PAPER_ILSVRC.items() for b, v in zip(BUDGETS, values)]
    return pd.DataFrame(rows)


# -- command line: `python -m adaloss tables NAME` ------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="table", required=True)
    p = sub.add_parser("anytime", help="anytime_errors.csv from the runs' exits.csv")
    p.add_argument("--exits", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p = sub.add_parser("lm", help="lm_anytime.csv and lm_relative_to_opt.csv (E8) from the LM runs' exits.csv")
    p.add_argument("--exits", nargs="+", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--relative-out", required=True, help="where to write lm_relative_to_opt.csv (per seed)")
    p = sub.add_parser("relative", help="relative_to_opt.csv (+ per-seed pairs) from anytime_errors.csv")
    p.add_argument("--anytime", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seeds-out", required=True)
    for name, text in (("weights", "adaloss_weights.csv"), ("trajectories", "weight_trajectories.csv"),
                       ("runs", "runs.csv")):
        p = sub.add_parser(name, help=f"{text} from the runs' metrics.json")
        p.add_argument("--metrics", nargs="+", required=True)
        p.add_argument("--out", required=True)
    p.add_argument("--benchmarks", nargs="*", default=[], help="Snakemake benchmark files of the training jobs")
    p = sub.add_parser("small-vs-large", help="small_vs_large.csv (E3) from anytime_errors.csv")
    p.add_argument("--anytime", required=True)
    p.add_argument("--pairs", nargs="+", required=True, metavar="SMALL:LARGE",
                   help="the model pairs, small ANN first (e.g. resann:resann_2x)")
    p.add_argument("--small-weighting", default="adaloss", help="the small ANNs' scheme")
    p.add_argument("--large-weighting", default="const", help="the large ANNs' scheme (also the control's)")
    p.add_argument("--out", required=True)
    p = sub.add_parser("paper", help="paper_relative_to_opt.csv (arXiv v3 Table 3a) and paper_ilsvrc.csv (Table 3b)")
    p.add_argument("--out", required=True)
    p.add_argument("--ilsvrc-out", required=True, help="where to write Table 3b")
    p = sub.add_parser("budgeted", help="budgeted.csv (E7) from the runs' budgeted.csv")
    p.add_argument("--files", nargs="+", required=True, help="the runs' budgeted.csv")
    p.add_argument("--out", required=True)
    p = sub.add_parser("latency", help="latency.csv from per-model `costs --latency` tables ({dataset}/{model}.csv)")
    p.add_argument("--files", nargs="+", required=True, help="the per-model latency tables")
    p.add_argument("--out", required=True)


def run_cli(args: argparse.Namespace) -> int:
    if args.table == "anytime":
        frame = anytime_errors(read_csvs(args.exits))
    elif args.table == "lm":
        frame = lm_anytime(read_csvs(args.exits))
        atomic.write_csv(args.relative_out, format_floats(relative_to_opt(frame, "bpb")[1]))
    elif args.table == "relative":
        frame, seeds = relative_to_opt(pd.read_csv(args.anytime))
        atomic.write_csv(args.seeds_out, format_floats(seeds))
    elif args.table == "small-vs-large":
        pairs = [tuple(p.split(":")) for p in args.pairs]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"--pairs takes SMALL:LARGE, got {args.pairs}")
        frame = small_vs_large(pd.read_csv(args.anytime), pairs, args.small_weighting, args.large_weighting)
    elif args.table == "paper":
        frame = paper_table()
        atomic.write_csv(args.ilsvrc_out, format_floats(paper_ilsvrc_table()))
    elif args.table == "budgeted":
        frame = budgeted(read_csvs(args.files))
    elif args.table == "latency":
        frame = latency_table(args.files)
    elif args.table == "runs":
        frame = runs_table(args.metrics, args.benchmarks)
    else:
        build = {"weights": final_weights, "trajectories": weight_trajectories}
        frame = build[args.table](args.metrics)
    atomic.write_csv(args.out, format_floats(frame))
    return 0
