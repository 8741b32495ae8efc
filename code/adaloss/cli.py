"""Command line: `python -m adaloss {train,evaluate,costs,bench,tables,eann,report,budgeted,convergence} --help`.

The Snakemake rules call these commands; every flag of `train` is a field of `train.TrainConfig`,
generated from the dataclass so the two never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

import yaml

__all__ = ["main", "build_parser"]

# One line per TrainConfig field (tests check that none is missing); argparse appends the default.
_HELP = {
    "dataset": "cifar10, cifar100, svhn, digits, mnist5k, or NAME for DATA_ROOT/NAME.npz (a name of a-z, 0-9, _; "
               "a folder goes in --data-root)",
    "out": "run directory (checkpoint.pt, log.csv, exits.csv, weights.csv, metrics.json)",
    "arch": "resann, denseann or msdnet",
    "arch_opts": "architecture option, repeatable (e.g. n=3 width=16 s=1; see `python -m adaloss costs`)",
    "model_name": "label of the model in tables and paths (a-z, 0-9, _); empty means the arch",
    "weighting": "const, linear, half_end, sieve, opt, adaloss, adaloss_grad or uncertainty",
    "scale": "sum of the loss weights: sum (the scheme's own), log2 (sum log2 K) or matched (sum K, as CONST)",
    "opt_exit": "with --weighting opt: the exit (0-based) the OPT network is trained for",
    "gamma": "AdaLoss: weight of the constant part mixed into the adaptive weights (authors: 0.07)",
    "ada_momentum": "AdaLoss: momentum of the running average of each exit's loss (authors: 0.9)",
    "update_per": "AdaLoss: SGD steps between two weight updates (authors: 100 on CIFAR)",
    "final_extra": "AdaLoss: extra weight added to the final exit before normalising (authors: 0)",
    "epochs": "training epochs",
    "batch_size": "training batch size",
    "lr": "initial SGD learning rate",
    "lr_milestones": "fractions of training after which the lr factors apply",
    "lr_factors": "lr multipliers applied from each milestone on",
    "momentum": "SGD momentum (no Nesterov)",
    "weight_decay": "L2 weight decay on conv kernels and the exits' linear layers (not BN)",
    "seed": "seed of the initialisation, the batch order, augmentation and any hold-out split",
    "data_root": "folder of CIFAR/SVHN files and NAME.npz",
    "download": "let torchvision download CIFAR/SVHN when they are missing",
    "val_fraction": "fraction of the training set held out for validation (never the test set)",
    "train_subset": "train on a class-balanced subset of this many images, the same for every seed (0 = all)",
    "test_subset": "test on a class-balanced subset of this many images, the same for every seed (0 = all)",
    "device": "auto (CUDA when present), cpu, cuda, cuda:1, ...",
    "threads": "CPU threads for torch (0 = torch's default)",
    "channels_last": "NHWC memory format for the model and batches",
    "bf16": "bf16 autocast where the hardware computes bf16 natively (CUDA, CPUs with AMX or AVX512-BF16)",
    "compile": "torch.compile the forward and the per-exit losses",
    "compile_mode": "torch.compile mode: default, reduce-overhead, max-autotune-no-cudagraphs, ...",
    "cuda_graph": "CUDA only: capture the whole training step as one CUDA graph",
    "eval_every": "epochs between test evaluations in log.csv (the last epoch is always evaluated)",
    "progress": "show a progress bar",
    "restart_on_change": "a checkpoint made with another configuration: start over instead of refusing",
    "force": "write into a non-empty --out that is not an adaloss run (its files of our names are replaced)",
}


def _parse_opt(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.replace("-", "_"), yaml.safe_load(value)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from .train import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        tp = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if required else (f.default if f.default is not dataclasses.MISSING else f.default_factory())
        help_text = _HELP[f.name] + (" (required)" if required else "")
        if f.name == "arch_opts":
            parser.add_argument("--arch-opt", dest="arch_opts", action="append", type=_parse_opt, default=[],
                                metavar="KEY=VALUE", help=help_text)
        elif tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(tp) is tuple:
            parser.add_argument(flag, type=float, nargs="+", default=list(default), help=help_text)
        else:
            base = int if tp in (int, int | None) else float if tp is float else str
            parser.add_argument(flag, type=base, required=required,
                                default=argparse.SUPPRESS if required else default, help=help_text)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _parse_run(text: str) -> tuple[dict[str, Any], str, int]:
    """`LABEL:SEED` of `--runs` -> (TrainConfig fields, label, seed): LABEL is a weighting label as paths
    spell it (`adaloss`, `const_log2`) or `opt{k}`, OPT at exit k."""
    from .weighting import split_label

    label, sep, seed = text.rpartition(":")
    if not sep or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected WEIGHTING:SEED (e.g. adaloss:0, opt4:1), got {text!r}")
    if (opt := re.fullmatch(r"opt(\d+)", label)) is not None:
        return {"weighting": "opt", "opt_exit": int(opt.group(1)), "scale": "sum"}, label, int(seed)
    try:
        name, scale = split_label(label)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return {"weighting": name, "scale": scale, "opt_exit": None}, label, int(seed)


def _cmd_train(args: argparse.Namespace) -> int:
    from .pack import fit_runs
    from .train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["arch_opts"] = dict(args.arch_opts)
    if runs := getattr(args, "runs", None):
        if "{seed}" not in values["out"] or "{weighting}" not in values["out"]:
            raise ValueError(f"--runs needs an --out holding {{weighting}} and {{seed}}, got {values['out']!r}")
    else:
        seeds = getattr(args, "seeds", [values["seed"]])
        if len(seeds) > 1 and "{seed}" not in values["out"]:
            raise ValueError(f"--seeds {' '.join(map(str, seeds))} needs an --out holding {{seed}}, got {values['out']!r}")
        from .weighting import weighting_label

        opt = values["weighting"] == "opt"
        label = f"opt{values['opt_exit']}" if opt else weighting_label(values["weighting"], values["scale"])
        runs = [({}, label, seed) for seed in seeds]
    cfgs = [TrainConfig(**{**values, **fields_, "seed": seed,
                           "out": values["out"].replace("{seed}", str(seed)).replace("{weighting}", label)})
            for fields_, label, seed in runs]
    # in this process: `import torch` and the data set's first read are paid once; with --pack, fused
    for metrics in fit_runs(cfgs, args.pack):
        err = ", ".join(f"{e:.2f}" for e in metrics["final_test_error"])
        print(f"{metrics['run']}: test error per exit (%): {err}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .train import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.run_dir, device=args.device)
    print(json.dumps({"run": metrics["run"], "final_test_error": metrics["final_test_error"]}, indent=2))
    return 0


# The batch sizes `costs --latency` times: one image, as an anytime model answers a single request,
# and the study's batch size, as batched evaluation runs it.
_LATENCY_BATCHES = (1, 64)


def _cmd_costs(args: argparse.Namespace) -> int:
    import csv

    import torch

    from .data import dataset_info
    from .flops import exit_costs
    from .models import build_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    channels, size, classes = dataset_info(args.dataset, args.data_root)
    model = build_model(args.arch, channels, classes, size, **dict(args.arch_opts))
    header: list[str] = ["exit", "flops", "params"]
    rows: list[list[Any]] = [[c.exit, c.flops, c.params] for c in exit_costs(model, (channels, size, size))]
    if args.latency:
        from .latency import exit_latency

        times = exit_latency(model, _LATENCY_BATCHES, device=args.device)
        ms = {(t.exit, t.batch_size): t.ms_per_image for t in times}
        header += [f"ms_per_image_b{b}" for b in _LATENCY_BATCHES] + ["device"]
        for row in rows:
            row += [f"{ms[row[0], b]:.4g}" for b in _LATENCY_BATCHES] + [times[0].device]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; only `command`'s module is imported among the extra commands,
    so a command starts fast and one module's fault cannot break the others."""
    parser = argparse.ArgumentParser(prog="python -m adaloss", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one anytime network (resumes from its checkpoint)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_config_flags(p)
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED", default=argparse.SUPPRESS,
                   help="train these seeds one after another in this process instead of --seed (start-up paid "
                        "once); --out must hold {seed}, e.g. runs/x/seed{seed}; each run keeps its own directory, "
                        "checkpoint and resume")
    p.add_argument("--runs", type=_parse_run, nargs="+", metavar="WEIGHTING:SEED", default=argparse.SUPPRESS,
                   help="train these runs instead of --weighting/--seed: WEIGHTING is a weighting label as paths "
                        "spell it (adaloss, const_log2) or opt{k} (OPT at exit k); --out must hold {weighting} and "
                        "{seed}, e.g. runs/x/{weighting}/seed{seed}")
    p.add_argument("--pack", type=_positive, default=1, metavar="N",
                   help="train up to N of the runs at once as one fused model (adaloss.pack: same results up to "
                        "rounding, each run keeps its own directory, checkpoint and resume); 1 = one after another")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="re-evaluate a finished run from its checkpoint, without training")
    p.add_argument("run_dir", help="a run directory written by `train`")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("costs", help="print the cumulative FLOPs (2 x multiply-adds) and parameters per exit")
    p.add_argument("--dataset", required=True, help=_HELP["dataset"])
    p.add_argument("--data-root", default="data", help="data folder (default: data)")
    p.add_argument("--arch", default="resann", help=_HELP["arch"] + " (default: resann)")
    p.add_argument("--arch-opt", dest="arch_opts", action="append", type=_parse_opt, default=[], metavar="KEY=VALUE")
    p.add_argument("--latency", action="store_true",
                   help="also time each exit: median ms per image at batch "
                        f"{' and '.join(map(str, _LATENCY_BATCHES))}, and the device (takes seconds)")
    p.add_argument("--device", default="cpu", help="with --latency: auto, cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    p.set_defaults(func=_cmd_costs)

    for name, (module, help_text) in _EXTRA_COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if name == command:
            mod = importlib.import_module(f"adaloss.{module}")
            mod.add_arguments(p)
            p.set_defaults(func=mod.run_cli)
    return parser


# Commands whose arguments live with their implementation: name -> (module, help).
_EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("bench", "training speed: our step against a plain PyTorch loop, in one run"),
    "tables": ("tables", "gather the runs' outputs into the study's tidy tables (results/tables/)"),
    "eann": ("eann", "compose the EANN anytime curve and its extra-cost factor from member runs"),
    "report": ("report", "check the paper's claims on the tables and write the self-contained HTML report"),
    "budgeted": ("budgeted", "budgeted batch classification of a trained run: early-exit thresholds fit on its "
                             "held-out split, test error at each target average cost (never retrains)"),
    "convergence": ("convergence", "is a training length long enough? OPT's final error at L epochs against 2L, "
                                   "over seeds, with a profile's settings"),
    "train-lm": ("lm_train", "train the byte-level early-exit transformer language model with any weighting "
                             "(resumes from its checkpoint; bits per byte per exit)"),
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    # InputError (a ValueError) is the one line for an unusable file, directory or name; OSError
    # catches what the file system refuses (e.g. a table's --out losing its write permission)
    except (ValueError, OSError, FloatingPointError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
