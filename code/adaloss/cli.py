"""Command line: `python -m adaloss {train,evaluate,costs,bench,tables,eann,report} --help`.

The Snakemake rules call these commands; every flag of `train` is a field of `train.TrainConfig`,
generated from the dataclass so the two never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

import yaml

__all__ = ["main", "build_parser"]

_HELP = {
    "dataset": "cifar10, cifar100, svhn, digits, mnist5k, or NAME for data/NAME.npz",
    "out": "run directory (checkpoint.pt, log.csv, exits.csv, weights.csv, metrics.json)",
    "arch": "resann, denseann or msdnet",
    "model_name": "label of the model in tables (default: the arch)",
    "weighting": "const, linear, half_end, sieve, opt, adaloss, adaloss_grad or uncertainty",
    "opt_exit": "with --weighting opt: the exit (0-based) the OPT network is trained for",
    "lr_milestones": "fractions of training after which the lr factors apply",
    "lr_factors": "lr multipliers applied from each milestone on",
    "val_fraction": "fraction of the training set held out for validation",
    "device": "auto (CUDA when present), cpu, cuda, cuda:1, ...",
    "threads": "CPU threads for torch (0 = torch's default)",
    "eval_every": "epochs between test evaluations in log.csv",
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
        help_text = _HELP.get(f.name, f.name.replace("_", " "))
        if f.name == "arch_opts":
            parser.add_argument("--arch-opt", dest="arch_opts", action="append", type=_parse_opt, default=[],
                                metavar="KEY=VALUE", help="architecture option, repeatable (e.g. n=3 width=16 s=1)")
        elif tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{help_text} (default: {default})")
        elif typing.get_origin(tp) is tuple:
            parser.add_argument(flag, type=float, nargs="+", default=default, help=f"{help_text} (default: {default})")
        else:
            base = int if tp in (int, int | None) else float if tp is float else str
            parser.add_argument(flag, type=base, required=required, default=default,
                                help=f"{help_text}" + ("" if required else f" (default: {default})"))


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, fit

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    values["arch_opts"] = dict(args.arch_opts)
    metrics = fit(TrainConfig(**values))
    err = ", ".join(f"{e:.2f}" for e in metrics["final_test_error"])
    print(f"{metrics['run']}: test error per exit (%): {err}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(args.run_dir, device=args.device)
    print(json.dumps({"run": metrics["run"], "final_test_error": metrics["final_test_error"]}, indent=2))
    return 0


def _cmd_costs(args: argparse.Namespace) -> int:
    from .data import dataset_info
    from .flops import exit_costs
    from .models import build_model

    channels, size, classes = dataset_info(args.dataset, args.data_root)
    model = build_model(args.arch, channels, classes, size, **dict(args.arch_opts))
    print("exit,flops,params")
    for c in exit_costs(model, (channels, size, size)):
        print(f"{c.exit},{c.flops},{c.params}")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; only `command`'s module is imported among the extra commands,
    so a command starts fast and one module's fault cannot break the others."""
    parser = argparse.ArgumentParser(prog="python -m adaloss", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one anytime network (resumes from its checkpoint)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_config_flags(p)
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
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (ValueError, FileNotFoundError, FloatingPointError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
