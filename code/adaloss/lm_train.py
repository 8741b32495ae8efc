"""Training the byte-level early-exit transformer with any exit weighting: config, loop, resume, outputs.

Beyond the paper (issue 20): does AdaLoss's result carry over to a language model? The model is
`models/transformer.py`, the data `textdata.py` (the Python standard library's own source by
default), the weightings every scheme of `weighting.py`: the paper's, AdaLoss and its variants, and
the static scales LLM trainers ship (torchtune's `tt_*`, `calm_geometric`). OPT at exit k is a
transformer truncated after block k and trained for that exit only (`--weighting opt --opt-exit k`).

Protocol (nanoGPT's small-model recipe, train.py and config/train_shakespeare_char.py): AdamW with
betas (0.9, 0.99) and weight decay 0.1 on matrices and embeddings only, linear warm-up then cosine
decay to `min_lr`, random windows of the training split. No gradient clipping: Adam's update does
not change when the total loss is multiplied by a constant, so without a clipping threshold the
loss scale of a weighting (weighting.SCALES) acts only through the balance between exits, and
clipping would bring back a scale effect that differs between schemes.

Metrics per exit: bits per byte (mean cross-entropy in bits over every predicted byte of fixed
evaluation windows, `textdata.eval_windows`) on validation, where schemes may be chosen, and on test,
which is reported only; FLOPs per token (`flops.exit_costs` over a window of `context` tokens,
divided by `context`); and latency per token (`latency.exit_latency` of one window at batch 1,
divided by `context`: a prefill's time per token, not a KV-cached decoding step's).

The run directory is the image trainer's (train.py, docs/architecture.md): checkpoint.pt after every
`eval_every` steps (atomic; the same command resumes bit-for-bit), log.csv, exits.csv, weights.csv
and metrics.json, which records the Python version and the corpus split (`TextCorpus.info`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import atomic
from .checkpoint import CHECKPOINT, checkpoint_fits, read_run_checkpoint
from .device import bf16_native, resolve_device
from .errors import check_name
from .flops import ExitCost, exit_costs
from .latency import exit_latency
from .models import build_model
from .models.transformer import TransformerANN
from .provenance import cpu_name
from .rundir import prepare_run_dir
from .step import ExitLosses, train_step
from .textdata import VOCAB, TextCorpus, WindowSampler, eval_windows, load_corpus
from .train import NonFiniteLossError
from .weighting import SCALES, TORCHTUNE_SCHEMES, WEIGHTINGS, LossWeighting, make_weighting, weighting_label

__all__ = ["LMConfig", "LMRun", "fit_lm", "lr_at", "token_costs", "bits_per_byte", "LM_EXIT_COLUMNS",
           "LM_CHECKPOINT_TYPES", "add_arguments", "run_cli"]

ADAM_BETAS = (0.9, 0.99)  # nanoGPT's shakespeare_char: beta2 0.99 for its small batches of tokens
EVAL_BATCH = 64  # evaluation windows per forward pass
LM_EXIT_COLUMNS = ["dataset", "model", "weighting", "seed", "exit", "flops", "own_head_flops", "params", "bpb",
                   "val_bpb", "ms_per_token"]
# What `LMRun.state_dict` writes, with its types (checkpoint.load_checkpoint checks them on resume).
LM_CHECKPOINT_TYPES: dict[str, type | tuple[type, ...]] = {
    "identity": dict, "step": int, "model": dict, "optimizer": dict, "weighting": dict, "sampler": dict,
    "torch_rng": torch.Tensor, "cuda_rng": (list, type(None)), "log_rows": list, "weight_rows": list,
    "seconds": (int, float),
}


@dataclass
class LMConfig:
    """One language-model training run; every field is a flag of `python -m adaloss train-lm`."""

    out: str  # run directory
    corpus: str = "stdlib"  # textdata.load_corpus: stdlib, or NAME for DATA_ROOT/NAME.txt or DATA_ROOT/NAME/
    model_name: str = "transformer"  # label in tables and paths
    layers: int = 12  # transformer blocks, one exit after each
    width: int = 128
    heads: int = 4
    context: int = 128  # tokens (bytes) a window holds
    shared_head: bool = True  # one final norm and a tied LM head for every exit (LayerSkip); False: per exit
    weighting: str = "adaloss"
    scale: str = "sum"  # sum of the loss weights: the scheme's own, log2 K or K (weighting.SCALES)
    opt_exit: int | None = None  # for weighting "opt": train the transformer truncated at this exit (0-based)
    e_scale: float = 1.0  # torchtune's scales: factor on every exit but the last (torchtune's default 1)
    gamma: float = 0.07  # AdaLoss mixing with constant weights (the authors' --adaloss_gamma)
    ada_momentum: float = 0.9  # AdaLoss EMA momentum (--adaloss_momentum)
    update_per: int = 100  # AdaLoss steps between weight updates (--adaloss_update_per)
    final_extra: float = 0.0  # AdaLoss extra weight on the final exit (--adaloss_final_extra)
    steps: int = 2000  # optimiser steps
    batch_size: int = 32  # windows per step
    lr: float = 1e-3  # AdamW peak learning rate (nanoGPT's small character model)
    min_lr: float = 1e-4  # end of the cosine decay, lr / 10 as nanoGPT
    warmup_steps: int = 100  # linear warm-up from lr / warmup_steps to lr
    weight_decay: float = 0.1  # AdamW's decoupled decay, on matrices and embeddings (not LayerNorm)
    seed: int = 0  # initialisation and batch order
    data_root: str = "data"
    val_fraction: float = 0.05  # of the corpus's files (or bytes, for one .txt file)
    test_fraction: float = 0.05
    eval_every: int = 250  # steps between a log row (validation bits per byte) and a checkpoint
    eval_windows: int = 128  # evaluation windows per split (0: the whole split)
    latency: bool = True  # time every exit per token at the end (seconds on a CPU)
    device: str = "auto"  # auto = CUDA when present, else CPU
    threads: int = 0  # CPU threads for torch; 0 = torch's default
    bf16: bool = True  # bf16 autocast on CUDA and AMX CPUs (AVX512-BF16 alone was slower, see bf16_native)
    progress: bool = True
    restart_on_change: bool = False  # a checkpoint from another config: start over instead of refusing
    force: bool = False  # write into a non-empty directory that is not an adaloss run

    def __post_init__(self) -> None:
        check_name("model", self.model_name)
        positive = {k: getattr(self, k) for k in ("layers", "width", "heads", "context", "steps", "batch_size",
                                                  "eval_every", "update_per")}
        if bad := {k: v for k, v in positive.items() if v < 1}:
            raise ValueError(f"these must be positive integers: {bad}")
        if self.warmup_steps < 0 or self.eval_windows < 0:
            raise ValueError(f"warmup_steps and eval_windows must be >= 0, got {self.warmup_steps} and "
                             f"{self.eval_windows}")
        if not 0.0 < self.min_lr <= self.lr:
            raise ValueError(f"need 0 < min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if self.scale not in SCALES:
            raise ValueError(f"unknown loss scale {self.scale!r}; valid: {', '.join(SCALES)}")
        if (self.weighting == "opt") != (self.opt_exit is not None):
            raise ValueError("weighting 'opt' needs opt_exit (the exit it trains), and only 'opt' takes it")
        if self.opt_exit is not None and not 0 <= self.opt_exit < self.layers:
            raise ValueError(f"opt_exit {self.opt_exit} is out of range: {self.layers} layers have exits "
                             f"0..{self.layers - 1}")
        if self.e_scale != 1.0 and self.weighting not in TORCHTUNE_SCHEMES:
            raise ValueError(f"e_scale is an option of torchtune's scales ({', '.join(TORCHTUNE_SCHEMES)}), "
                             f"not of {self.weighting!r}")

    @property
    def weighting_label(self) -> str:
        return weighting_label(self.weighting, self.scale)

    @property
    def run_label(self) -> str:
        w = f"opt{self.opt_exit}" if self.weighting == "opt" else self.weighting_label
        return f"{self.corpus}/{self.model_name}/{w}/seed{self.seed}"

    @property
    def arch_opts(self) -> dict[str, Any]:
        return {"layers": self.layers, "width": self.width, "heads": self.heads, "shared_head": self.shared_head}

    def identity(self) -> dict[str, Any]:
        """The fields that define the trained model; a checkpoint made under other values is refused.
        Where it runs, how often it logs and how it is measured are left out, so a run can resume
        on another machine or with another evaluation."""
        skip = {"out", "data_root", "eval_every", "eval_windows", "latency", "device", "threads", "bf16",
                "progress", "restart_on_change", "force"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}


def lr_at(cfg: LMConfig, step: int) -> float:
    """The learning rate of step `step` (0-based), nanoGPT's `get_lr`: 1) linear warm-up over
    `warmup_steps`, 2) then cosine decay from `lr` to `min_lr` at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - 1 - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (cfg.lr - cfg.min_lr)


def token_costs(model: TransformerANN) -> list[ExitCost]:
    """`flops.exit_costs` per token: the FLOPs of each exit over one window of the model's context,
    divided by the context (every counted operation is a multiple of it, so the division is exact)."""
    (context,) = model.input_shape
    return [dataclasses.replace(c, flops=c.flops // context, own_head_flops=c.own_head_flops // context)
            for c in exit_costs(model)]


@torch.no_grad()
def bits_per_byte(loss_fn: ExitLosses, windows: Tensor, device: torch.device, upto: int | None = None) -> list[float]:
    """Mean cross-entropy in bits of each exit 0..upto over every predicted byte of `windows`
    (N, T + 1) uint8; a byte is a token, so this is bits per byte. Eval mode, restored after."""
    model = loss_fn.model
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), device=device)
        for i in range(0, len(windows), EVAL_BATCH):
            w = windows[i:i + EVAL_BATCH].to(device).long()  # (B, T+1)
            total = total + loss_fn(w[:, :-1], w[:, 1:], upto=upto) * len(w)  # (K,) summed over windows
    finally:
        model.train(was_training)
    return (total / len(windows) / math.log(2)).tolist()


def _param_groups(model: nn.Module, weighting: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups as nanoGPT's `configure_optimizers`: decay every matrix and embedding (dim >= 2),
    not LayerNorm; a learned weighting's parameters (uncertainty) undecayed."""
    params = list(model.parameters())  # the tied head appears once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    if learned := list(weighting.parameters()):
        groups.append({"params": learned, "weight_decay": 0.0})
    return groups


class LMRun:
    """Everything one language-model run holds, built from an `LMConfig` (and optionally a loaded corpus)."""

    def __init__(self, cfg: LMConfig, corpus: TextCorpus | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        prepare_run_dir(self.out, cfg.force)  # before any compute: an unusable --out fails now
        self.device = resolve_device(cfg.device)
        self.saved = self._read_checkpoint()
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.corpus = corpus if corpus is not None else load_corpus(cfg.corpus, cfg.data_root, cfg.val_fraction,
                                                                    cfg.test_fraction)
        self.corpus.check_windows(cfg.context)
        torch.manual_seed(cfg.seed)
        self.model = build_model("transformer", 1, VOCAB, cfg.context, **cfg.arch_opts).to(self.device)
        self.upto = cfg.opt_exit
        self.num_exits = self.model.num_exits if self.upto is None else self.upto + 1
        self.weighting = self._make_weighting().to(self.device)
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, self.weighting, cfg.weight_decay), lr=cfg.lr,
                                           betas=ADAM_BETAS)
        self.sampler = WindowSampler(self.corpus.splits["train"], cfg.context, cfg.batch_size, cfg.seed, self.device)
        self.windows = {s: eval_windows(self.corpus.splits[s], cfg.context, cfg.eval_windows) for s in ("val", "test")}
        self.bf16 = cfg.bf16 and bf16_native(self.device, matrix_units_only=True)
        self.loss_fn = ExitLosses(self.model, bf16=self.bf16)
        self.steps_done = 0
        self.log_rows: list[dict[str, Any]] = []
        self.weight_rows: list[dict[str, Any]] = []
        self.seconds = 0.0

    def _make_weighting(self) -> LossWeighting:
        cfg = self.cfg
        opts: dict[str, Any] = {}
        if cfg.weighting == "opt":
            opts["exit"] = self.num_exits - 1
        if cfg.weighting in TORCHTUNE_SCHEMES:
            opts["e_scale"] = cfg.e_scale
        if cfg.weighting in ("adaloss", "adaloss_grad"):
            opts.update(gamma=cfg.gamma, momentum=cfg.ada_momentum, update_per=cfg.update_per,
                        final_extra=cfg.final_extra)
        if cfg.weighting == "adaloss_grad":
            opts["params"] = list(self.model.parameters())
        return make_weighting(cfg.weighting, self.num_exits, scale=cfg.scale, **opts)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "identity": self.cfg.identity(), "step": self.steps_done, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "weighting": self.weighting.state_dict(),
            "sampler": self.sampler.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "log_rows": self.log_rows, "weight_rows": self.weight_rows, "seconds": self.seconds,
        }

    def save_checkpoint(self) -> None:
        atomic.save_torch(self.out / CHECKPOINT, self.state_dict())

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The run directory's checkpoint if it is one of this config (checkpoint.read_run_checkpoint)."""
        return read_run_checkpoint(self.out, self.device, self.cfg.identity(), self.cfg.restart_on_change, LM_CHECKPOINT_TYPES)

    def try_resume(self) -> bool:
        """Continue from the checkpoint read at construction, if there was one of this config."""
        state, self.saved = self.saved, None
        if state is None:
            return False
        with checkpoint_fits(self.out / CHECKPOINT):
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.weighting.load_state_dict(state["weighting"])
            self.sampler.load_state_dict(state["sampler"])
            torch.set_rng_state(state["torch_rng"].cpu())
            if self.device.type == "cuda" and state["cuda_rng"] is not None:
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.steps_done, self.seconds = state["step"], state["seconds"]
        self.log_rows, self.weight_rows = state["log_rows"], state["weight_rows"]
        return True

    # -- the hot loop --------------------------------------------------------------------------
    def train_steps(self, count: int, bar: tqdm) -> Tensor:
        """`count` optimiser steps; returns the per-exit mean training loss (nats, on the device).
        Losses stay on the device; the NaN/inf guard is read once, at the end."""
        cfg = self.cfg
        self.model.train()
        loss_sum = torch.zeros(self.num_exits, device=self.device)
        first_bad = torch.full((self.num_exits,), -1, dtype=torch.long, device=self.device)
        for i in range(count):
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(cfg, self.steps_done)
            x, y = self.sampler.next_batch()
            losses = train_step(self.loss_fn, self.weighting, self.optimizer, x, y, upto=self.upto)
            first_bad = torch.where(~torch.isfinite(losses) & (first_bad < 0), self.steps_done + 1, first_bad)
            loss_sum += losses
            self.steps_done += 1
            if cfg.weighting in ("adaloss", "adaloss_grad") and self.weighting.calls % cfg.update_per == 0:
                w = self.weighting.weights.detach().float().cpu().tolist()
                self.weight_rows += [{"step": self.steps_done, "exit": k, "weight": wk} for k, wk in enumerate(w)]
            bar.update(1)
        for exit_, step in enumerate(first_bad.cpu().tolist()):
            if step >= 0:
                raise NonFiniteLossError(f"run {cfg.run_label}: the loss of exit {exit_} became non-finite (NaN or "
                                         f"inf) at step {step}; the last good checkpoint is kept in {self.out}")
        return loss_sum / count

    def evaluate(self, split: str) -> list[float]:
        """Bits per byte of each exit on the evaluation windows of `split` ("val" or "test")."""
        return bits_per_byte(self.loss_fn, self.windows[split], self.device, self.upto)

    def run(self) -> dict[str, Any]:
        """Train to `cfg.steps` (resuming if a checkpoint exists), then write the run's outputs."""
        cfg = self.cfg
        if self.try_resume():
            print(f"resumed {cfg.run_label} after step {self.steps_done}", file=sys.stderr)
        bar = tqdm(total=cfg.steps, initial=self.steps_done, desc=cfg.run_label, unit="step",
                   disable=not cfg.progress, mininterval=1.0)
        while self.steps_done < cfg.steps:
            start = time.perf_counter()
            train_loss = self.train_steps(min(cfg.eval_every, cfg.steps - self.steps_done), bar).cpu().tolist()
            val = self.evaluate("val")
            self.seconds += time.perf_counter() - start
            weights = self.weighting.weights.detach().float().cpu().tolist()
            row: dict[str, Any] = {"step": self.steps_done, "lr": lr_at(cfg, self.steps_done - 1),
                                   "seconds": round(self.seconds, 3)}
            for k in range(self.num_exits):
                row.update({f"train_loss_e{k}": train_loss[k], f"weight_e{k}": weights[k], f"val_bpb_e{k}": val[k]})
            self.log_rows.append(row)
            bar.set_postfix(loss=f"{train_loss[-1]:.3f}", val_bpb=f"{val[-1]:.3f}")
            self.save_checkpoint()
        bar.close()
        return self.write_outputs()

    def write_outputs(self) -> dict[str, Any]:
        """exits.csv, log.csv, weights.csv and metrics.json of the trained model (module docstring)."""
        cfg = self.cfg
        test, val = self.evaluate("test"), self.evaluate("val")
        costs = token_costs(self.model)[: self.num_exits]
        ms = [float("nan")] * self.num_exits
        latency_device = ""
        if cfg.latency:
            times = exit_latency(self.model, (1,), device=self.device, bf16=self.bf16)[: self.num_exits]
            ms = [t.ms_per_image / cfg.context for t in times]  # one window at batch 1, per token
            latency_device = times[0].device
        rows = [{"dataset": cfg.corpus, "model": cfg.model_name, "weighting": cfg.weighting_label, "seed": cfg.seed,
                 "exit": c.exit, "flops": c.flops, "own_head_flops": c.own_head_flops, "params": c.params,
                 "bpb": round(test[c.exit], 6), "val_bpb": round(val[c.exit], 6), "ms_per_token": float(f"{ms[c.exit]:.4g}")}
                for c in costs]
        atomic.write_rows(self.out / "exits.csv", rows[-1:] if cfg.weighting == "opt" else rows, LM_EXIT_COLUMNS)
        atomic.write_rows(self.out / "log.csv", self.log_rows, list(dict.fromkeys(k for r in self.log_rows for k in r)))
        atomic.write_rows(self.out / "weights.csv", self.weight_rows, ["step", "exit", "weight"])
        metrics = {
            "config": dataclasses.asdict(cfg),
            "run": cfg.run_label,
            "num_exits": self.num_exits,
            "final_test_bpb": test,
            "final_val_bpb": val,
            "final_weights": self.weighting.weights.detach().float().cpu().tolist(),
            "steps": self.steps_done,
            "tokens_seen": self.steps_done * cfg.batch_size * cfg.context,
            "train_seconds": round(self.seconds, 3),
            "data": self.corpus.info(),
            "device": str(self.device),
            "bf16": self.bf16,
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_name(),
            "latency_device": latency_device,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        atomic.write_json(self.out / "metrics.json", metrics)
        return metrics


def fit_lm(cfg: LMConfig, corpus: TextCorpus | None = None) -> dict[str, Any]:
    """Train (or resume) one language-model run and write its outputs; returns the metrics dict."""
    return LMRun(cfg, corpus).run()


# -- command line: `python -m adaloss train-lm` ------------------------------------------------
# One line per LMConfig field (a test checks that none is missing); the default is appended.
_HELP = {
    "out": "run directory (checkpoint.pt, log.csv, exits.csv, weights.csv, metrics.json) (required)",
    "corpus": "stdlib (the .py files of this Python's standard library) or NAME for DATA_ROOT/NAME.txt or "
              "DATA_ROOT/NAME/ (a folder of text files)",
    "model_name": "label of the model in tables and paths (a-z, 0-9, _)",
    "layers": "transformer blocks, with an exit after each",
    "width": "model width (channels of the residual stream)",
    "heads": "attention heads (must divide --width)",
    "context": "bytes per training and evaluation window",
    "shared_head": "one final LayerNorm and an LM head tied to the embedding for every exit (LayerSkip); "
                   "--no-shared-head: a norm and an untied head per exit",
    "weighting": ", ".join(WEIGHTINGS),
    "scale": "sum of the loss weights: sum (the scheme's own), log2 (sum log2 K) or matched (sum K, as CONST)",
    "opt_exit": "with --weighting opt: train the transformer truncated after this exit (0-based) for it alone",
    "e_scale": "torchtune's scales (tt_*): factor on the loss weight of every exit but the last, before normalising",
    "gamma": "AdaLoss: weight of the constant part mixed into the adaptive weights",
    "ada_momentum": "AdaLoss: momentum of the running average of each exit's loss",
    "update_per": "AdaLoss: optimiser steps between two weight updates",
    "final_extra": "AdaLoss: extra weight added to the final exit before normalising",
    "steps": "optimiser steps",
    "batch_size": "windows per step",
    "lr": "AdamW peak learning rate, reached after the warm-up",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_steps": "steps of linear warm-up",
    "weight_decay": "AdamW decoupled weight decay on matrices and embeddings (not LayerNorm)",
    "seed": "seed of the initialisation and of the batches",
    "data_root": "folder of user corpora (NAME.txt or NAME/)",
    "val_fraction": "share of the corpus's files (of its bytes for one .txt file) held out for validation",
    "test_fraction": "share held out for test",
    "eval_every": "steps between a log row (validation bits per byte) and a checkpoint",
    "eval_windows": "evaluation windows per split, evenly spread (0: the whole split)",
    "latency": "time each exit per token at the end (--no-latency: skip)",
    "device": "auto (CUDA when present), cpu, cuda, cuda:1, ...",
    "threads": "CPU threads for torch (0: torch's default)",
    "bf16": "bf16 autocast where it speeds this transformer up (CUDA, CPUs with AMX); on CPUs with only "
            "AVX512-BF16 it was 1.4x slower than fp32, so they train in fp32",
    "progress": "show a progress bar",
    "restart_on_change": "a checkpoint made with another configuration: start over instead of refusing",
    "force": "write into a non-empty --out that is not an adaloss run (its files of our names are replaced)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `LMConfig` field, typed from its annotation, its help from `_HELP`."""
    hints = typing.get_type_hints(LMConfig)
    for f in dataclasses.fields(LMConfig):
        flag, tp = "--" + f.name.replace("_", "-"), hints[f.name]
        if f.default is dataclasses.MISSING:
            parser.add_argument(flag, required=True, help=_HELP[f.name])
        elif tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f"{_HELP[f.name]} (default: {f.default})")
        else:
            kind = int if tp in (int, int | None) else float if tp is float else str
            parser.add_argument(flag, type=kind, default=f.default, help=f"{_HELP[f.name]} (default: {f.default})")


def run_cli(args: argparse.Namespace) -> int:
    fields = {f.name for f in dataclasses.fields(LMConfig)}
    metrics = fit_lm(LMConfig(**{k: v for k, v in vars(args).items() if k in fields}))
    bpb = ", ".join(f"{b:.3f}" for b in metrics["final_test_bpb"])
    print(f"{metrics['run']}: test bits per byte per exit: {bpb}")
    return 0
