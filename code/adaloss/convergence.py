"""Is a training length long enough? OPT at L epochs against OPT at 2L, over seeds.

A verdict on AdaLoss only means something on networks that have finished learning, so every model a
profile trains must pass this rule at the length the profile gives it (config/README.md keeps the
table behind each choice):

    OPT's final-exit test error at L epochs, mean over seeds, is at most RATIO (1.15) x the mean error
    of the same OPT trained for 2L epochs, or within SLACK (0.5) points of it where both means are
    below SMALL (3 %), since a small test set moves in coarse steps there (360 digits test images:
    0.28 points per image).

OPT at the final exit is the network trained for the last exit alone, the one every relative
increase is measured against. The learning-rate schedule is given in fractions of training, so 2L
stretches the same schedule over twice the steps.

`python -m adaloss convergence` trains those networks (each seed and length in its own run directory
under `--out`, so a rerun reuses finished ones) and prints the table and the verdict; the training
settings come from a profile's `train` and `dataset_train` (read as data), as the study trains them.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import atomic

__all__ = ["RATIO", "SLACK", "SMALL", "Convergence", "converged", "profile_options", "add_arguments", "run_cli"]

RATIO = 1.15
SLACK = 0.5
SMALL = 3.0


@dataclass(frozen=True)
class Convergence:
    """Mean OPT final errors at L and 2L (%), and whether L passes the rule, with the reason."""

    error_l: float
    error_2l: float
    passed: bool
    reason: str


def converged(errors_l: Sequence[float], errors_2l: Sequence[float], ratio: float = RATIO, slack: float = SLACK,
              small: float = SMALL) -> Convergence:
    """The rule of the module docstring on per-seed errors (%) at L and 2L (means over seeds are compared)."""
    if not errors_l or not errors_2l:
        raise ValueError("converged needs at least one error at each length")
    a, b = sum(errors_l) / len(errors_l), sum(errors_2l) / len(errors_2l)
    if a <= ratio * b:
        return Convergence(a, b, True, f"{a:.2f} <= {ratio:g} x {b:.2f}")
    if max(a, b) < small and a - b <= slack:
        return Convergence(a, b, True, f"{a:.2f} within {slack:g} points of {b:.2f} (both below {small:g} %)")
    return Convergence(a, b, False, f"{a:.2f} > {ratio:g} x {b:.2f}" + (f" and more than {slack:g} points above it"
                                                                       if max(a, b) < small else ""))


def profile_options(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The TrainConfig fields a profile gives every run on `dataset`: `train`, then `dataset_train`."""
    return {**config.get("train", {}), **config.get("dataset_train", {}).get(dataset, {})}


def _train_opt(dataset: str, model: str, spec: dict[str, Any], options: dict[str, Any], epochs: int, seed: int,
               out: Path, data: Any) -> float:
    """Train (or reuse) OPT for the last exit of `spec` for `epochs` epochs; its final test error (%)."""
    from .models import build_model
    from .train import TrainConfig, fit

    arch_opts = {k: v for k, v in spec.items() if k != "arch"}
    last = build_model(spec["arch"], data.in_channels, data.num_classes, data.image_size, **arch_opts).num_exits - 1
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in options.items() if k in fields and k not in ("epochs", "seed")},
                      dataset=dataset, out=str(out / f"e{epochs}" / f"seed{seed}"), arch=spec["arch"],
                      arch_opts=arch_opts, model_name=model, weighting="opt", opt_exit=last, epochs=epochs,
                      seed=seed, progress=False)
    return float(fit(cfg, data)["final_test_error"][-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="a profile (e.g. config/config.yaml): its `models`, "
                        "`train` and `dataset_train` give the model and how it trains")
    parser.add_argument("--dataset", required=True, help="a dataset of the profile")
    parser.add_argument("--model", required=True, help="a model name of the profile's `models`")
    parser.add_argument("--epochs", type=int, nargs="+", required=True,
                        help="candidate lengths L; each is trained for L and 2L epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: 1)")
    parser.add_argument("--out", default="results/convergence", help="run directories go under "
                        "OUT/DATASET/MODEL/eEPOCHS/seedS, reused when rerun (default: results/convergence)")


def run_cli(args: argparse.Namespace) -> int:
    import torch

    from .data import load_dataset

    config = yaml.safe_load(Path(args.config).read_text())
    if not isinstance(config, dict) or args.model not in config.get("models", {}):
        raise ValueError(f"{args.config}: no model {args.model!r} under `models`")
    if any(e < 1 for e in args.epochs):
        raise ValueError(f"--epochs must be positive, got {args.epochs}")
    torch.set_num_threads(args.threads)
    options = {**profile_options(config, args.dataset), "threads": args.threads}
    data = load_dataset(args.dataset, options.get("data_root", "data"))
    out = Path(args.out) / args.dataset / args.model
    rows = []
    for length in args.epochs:
        errors = {e: [_train_opt(args.dataset, args.model, config["models"][args.model], options, e, s, out, data)
                      for s in args.seeds] for e in (length, 2 * length)}
        verdict = converged(errors[length], errors[2 * length])
        rows.append({"dataset": args.dataset, "model": args.model, "epochs": length,
                     "errors_l": " ".join(f"{e:.2f}" for e in errors[length]), "error_l": round(verdict.error_l, 3),
                     "errors_2l": " ".join(f"{e:.2f}" for e in errors[2 * length]),
                     "error_2l": round(verdict.error_2l, 3), "converged": verdict.passed, "why": verdict.reason})
        print(f"{args.dataset}/{args.model}: OPT final error at {length} epochs {verdict.error_l:.2f} %, at "
              f"{2 * length} {verdict.error_2l:.2f} % (mean of seeds {args.seeds}): "
              f"{'converged' if verdict.passed else 'NOT converged'} ({verdict.reason})")
    atomic.write_rows(out / "convergence.csv", rows, list(rows[0]))
    return 0
