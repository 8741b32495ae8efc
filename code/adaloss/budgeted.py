"""`python -m adaloss budgeted RUN_DIR`: budgeted batch classification of one trained run.

The second way anytime networks are evaluated (MSDNet's "budgeted batch classification", beside the
paper's anytime prediction): each test image leaves at the first exit confident enough, and the
thresholds are set so that the *average* cost per image meets a budget. Here they are always fit
on the run's held-out share of the training set (split "val", never seen in training), then
applied once to the test set, and every row says so. The checkpoint is read, never retrained.

Writes RUN_DIR/budgeted.csv, one row per target budget (BUDGETED_COLUMNS): the target, the average
FLOPs reached on the held-out split and on the test set, test and held-out error, and the test
exit histogram. A budget below the first exit's cost cannot be met and is skipped with a note.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import atomic
from .checkpoint import load_trained_model
from .data import load_dataset
from .device import resolve_device
from .early_exit import apply_thresholds, collect, fit_thresholds
from .errors import InputError, reason
from .weighting import weighting_label

__all__ = ["BUDGETED_COLUMNS", "DEFAULT_BUDGETS", "budgeted_rows", "add_arguments", "run_cli"]

BUDGETED_COLUMNS = ["dataset", "model", "weighting", "seed", "budget_fraction", "budget", "avg_flops",
                    "avg_flops_heldout", "error", "error_heldout", "exits", "thresholds_from"]
# Fractions of the full network's anytime cost: from the cheap end, where most images must leave
# at the first exits, to nearly the whole network.
DEFAULT_BUDGETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _exit_costs(run_dir: Path) -> list[float]:
    """The anytime cost (FLOPs) of each exit, as training recorded it in exits.csv; a file without
    them is an InputError naming it."""
    path, fix = run_dir / "exits.csv", f"rewrite it with python -m adaloss evaluate {run_dir}"
    try:
        with open(path, newline="") as fh:
            rows = sorted(csv.DictReader(fh), key=lambda r: int(r["exit"]))
        costs = [float(r["flops"]) for r in rows]
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"holds no per-exit costs ({reason(exc)})", fix) from exc
    if not costs:
        raise InputError(path, "holds no exits", fix)
    return costs


def budgeted_rows(run_dir: str | Path, budgets: Sequence[float] = DEFAULT_BUDGETS,
                  device: str = "cpu") -> list[dict[str, Any]]:
    """One row per budget (a fraction of the last exit's cost) that the first exit can meet."""
    run = Path(run_dir)
    dev = resolve_device(device)
    model, metrics = load_trained_model(run, dev)
    cfg = metrics["config"]
    if cfg["weighting"] == "opt":
        raise ValueError(f"{run} is an OPT network (one exit): early exit needs an anytime network")
    if not cfg["val_fraction"] > 0:
        raise ValueError(f"{run} holds out no training images (val_fraction 0): its thresholds would be fit on "
                         "images it learned from; train with --val-fraction > 0 (the DAG's eann_runs pool does)")
    data = load_dataset(cfg["dataset"], cfg["data_root"], download=False, val_fraction=cfg["val_fraction"],
                        seed=cfg["seed"], train_subset=cfg["train_subset"], test_subset=cfg["test_subset"])
    costs = _exit_costs(run)
    held_out = collect(model, data.x_val, data.y_val, data.mean, data.std, dev, split="val")
    test = collect(model, data.x_test, data.y_test, data.mean, data.std, dev, split="test")
    source = f"held-out {cfg['val_fraction']:g} of the training set"
    rows = []
    for fraction in budgets:
        target = fraction * costs[-1]
        if target < costs[0]:
            print(f"budget {fraction:g} of the full cost ({target:.4g} FLOPs) is below the first exit's "
                  f"{costs[0]:.4g}: skipped", file=sys.stderr)
            continue
        thresholds = fit_thresholds(held_out, costs, target)
        on_held_out, on_test = apply_thresholds(held_out, thresholds, costs), apply_thresholds(test, thresholds, costs)
        rows.append({
            "dataset": cfg["dataset"], "model": cfg["model_name"], "weighting": weighting_label(cfg["weighting"], cfg["scale"]),
            "seed": cfg["seed"], "budget_fraction": fraction, "budget": round(target),
            "avg_flops": round(on_test.avg_cost, 1), "avg_flops_heldout": round(on_held_out.avg_cost, 1),
            "error": round(on_test.error, 6), "error_heldout": round(on_held_out.error, 6),
            "exits": " ".join(map(str, on_test.histogram(len(costs)).tolist())), "thresholds_from": source,
        })
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished run directory whose training held out a validation split")
    parser.add_argument("--budgets", nargs="+", type=float, default=list(DEFAULT_BUDGETS),
                        help="target average costs, as fractions of the full network's anytime cost "
                             f"(default: {' '.join(map(str, DEFAULT_BUDGETS))})")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1, ... (default: cpu)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    parser.add_argument("--out", help="where to write the table (default: RUN_DIR/budgeted.csv)")


def run_cli(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    bad = [b for b in args.budgets if not 0 < b <= 1]
    if bad:
        raise ValueError(f"budgets are fractions of the full cost in (0, 1], got {bad}")
    out = Path(args.out) if args.out else Path(args.run_dir) / "budgeted.csv"
    if out.is_dir():  # before any compute, not after it
        raise InputError(out, "is a directory", "--out names the table file to write")
    rows = budgeted_rows(args.run_dir, args.budgets, args.device)
    atomic.write_rows(out, rows, BUDGETED_COLUMNS)
    for r in rows:
        print(f"budget {r['budget_fraction']:g}: {r['avg_flops']:.4g} FLOPs per test image "
              f"(held-out {r['avg_flops_heldout']:.4g}), test error {r['error']:.2f}%, exits {r['exits']}")
    return 0
