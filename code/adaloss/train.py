"""Training an anytime network: the configuration, the hot loop, checkpoints and resume.

Protocol from the authors' code (official_code.md §5; `ann_app_utils.py:323-402`,
`anytime_network.py:579-588, 699-720`): SGD with momentum 0.9 (no Nesterov), batch 64, learning
rate 0.1 then x0.1 after 140/300, 210/300 and 250/300 of training ending at 2e-4, weight decay 2e-4
on conv kernels and the exits' linear layers (not BN). Everything is a field of `TrainConfig`.

Speed (issue 4): each split lives on the device as one uint8 tensor, augmentation is batched there
(`data.DeviceLoader`), and a step never waits for the device: per-exit loss sums, AdaLoss's
statistics and the NaN/inf guard stay on the device and are read once per epoch.

Reliability (issue 5): a checkpoint holding everything needed to continue bit-for-bit (model,
optimiser, weighting, loader and RNG states, the log so far) is written atomically after every
epoch; running the same command again resumes from it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import atomic
from .checkpoint import (CHECKPOINT, METRICS, CheckpointMismatchError, UnfinishedRunError, checkpoint_fits,
                         read_metrics, read_run_checkpoint)
from .data import DeviceLoader, ImageData, load_dataset
from .device import autocast_bf16, resolve_device
from .errors import InputError, check_name
from .evaluate import EXIT_COLUMNS, expected_calibration_error, exit_probabilities, exit_rows, top1_errors
from .flops import COSTS_CACHE, cached_exit_costs
from .graphed import GraphedStep
from .models import build_model
from .provenance import cpu_name
from .rundir import prepare_run_dir
from .sgd import SGD
from .step import ExitLosses, Optimizer, train_step
from .weighting import SCALES, WEIGHTINGS, LossWeighting, make_weighting, weighting_label

__all__ = [
    "TrainConfig", "Run", "make_step", "NonFiniteLossError", "CheckpointMismatchError", "make_optimizer",
    "fit", "lr_at", "evaluate_checkpoint", "decayed",
]


@dataclass
class TrainConfig:
    """One training run. Defaults are the authors' CIFAR protocol (official_code.md §5)."""

    dataset: str
    out: str  # run directory (see docs/architecture.md)
    arch: str = "resann"
    arch_opts: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""  # label in tables; defaults to `arch`
    weighting: str = "adaloss"
    scale: str = "sum"  # sum of the loss weights: the scheme's own, log2 K or K (weighting.SCALES)
    opt_exit: int | None = None  # for weighting "opt": train only up to this exit (0-based)
    gamma: float = 0.07  # AdaLoss mixing with constant weights (--adaloss_gamma)
    ada_momentum: float = 0.9  # AdaLoss EMA momentum (--adaloss_momentum)
    update_per: int = 100  # AdaLoss steps between weight updates (--adaloss_update_per)
    final_extra: float = 0.0  # AdaLoss extra weight on the final exit (--adaloss_final_extra)
    epochs: int = 300
    batch_size: int = 64
    lr: float = 0.1
    lr_milestones: tuple[float, ...] = (140 / 300, 210 / 300, 250 / 300)  # fractions of training
    lr_factors: tuple[float, ...] = (0.1, 0.01, 0.002)  # lr multipliers from each milestone on
    momentum: float = 0.9
    weight_decay: float = 2e-4
    seed: int = 0
    data_root: str = "data"
    download: bool = True  # fetch CIFAR/SVHN through torchvision when missing
    val_fraction: float = 0.0  # held out of the training set, never the test set
    train_subset: int = 0  # a class-balanced subset of this many training images (0 = all)
    test_subset: int = 0  # the same for the test set
    device: str = "auto"  # auto = CUDA when present, else CPU
    threads: int = 0  # CPU threads for torch; 0 = leave torch's default
    channels_last: bool = True  # NHWC memory format (faster on CUDA and, measured, on CPU for 32x32 inputs)
    bf16: bool = True  # bf16 autocast where the hardware has bf16 matrix units: CUDA, or a CPU with AMX
    compile: bool = False  # torch.compile the model (opt-in)
    compile_mode: str = "default"  # torch.compile mode, e.g. reduce-overhead (CUDA graphs)
    cuda_graph: bool = False  # CUDA only: the whole step (optimizer included) as one CUDA graph (opt-in)
    eval_every: int = 1  # epochs between test evaluations in the log (the last epoch always)
    progress: bool = True
    restart_on_change: bool = False  # a checkpoint from another config: start over instead of refusing
    force: bool = False  # write into a non-empty directory that is not an adaloss run (rundir.prepare_run_dir)

    def __post_init__(self) -> None:
        self.arch_opts = dict(self.arch_opts)
        self.lr_milestones = tuple(self.lr_milestones)
        self.lr_factors = tuple(self.lr_factors)
        self.model_name = self.model_name or self.arch
        check_name("dataset", self.dataset)
        check_name("model", self.model_name)
        if self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; valid: {', '.join(WEIGHTINGS)}")
        if self.scale not in SCALES:
            raise ValueError(f"unknown loss scale {self.scale!r}; valid: {', '.join(SCALES)}")
        if (self.weighting == "opt") != (self.opt_exit is not None):
            raise ValueError("weighting 'opt' needs opt_exit (the exit it trains), and only 'opt' takes it")
        if len(self.lr_milestones) != len(self.lr_factors):
            raise ValueError("lr_milestones and lr_factors must have the same length")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.cuda_graph and self.compile and "reduce-overhead" in self.compile_mode:
            raise ValueError("cuda_graph already graphs the whole step: combine it with compile mode "
                             "'default' or 'max-autotune-no-cudagraphs', not 'reduce-overhead'")

    @property
    def weighting_label(self) -> str:
        """The weighting as tables and paths name it: `weighting_label(weighting, scale)`."""
        return weighting_label(self.weighting, self.scale)

    @property
    def run_label(self) -> str:
        w = f"opt{self.opt_exit}" if self.weighting == "opt" else self.weighting_label
        return f"{self.dataset}/{self.model_name}/{w}/seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """The fields that define the result; a checkpoint made under other values is refused.
        Device, threads, speed switches and the progress bar are left out, so a run can resume on
        another machine: they move results only within rounding (bf16, which a CPU without AMX
        does not use, the most)."""
        skip = {"out", "device", "threads", "channels_last", "bf16", "compile", "compile_mode", "cuda_graph", "eval_every", "progress",
                "data_root", "download", "restart_on_change", "force"}
        return {k: v for k, v in self.as_dict().items() if k not in skip}

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lr_milestones"], d["lr_factors"] = list(self.lr_milestones), list(self.lr_factors)
        return d


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the message names the run, epoch, step and exit."""


def make_optimizer(groups: list[dict[str, Any]], lr: float, momentum: float, device: torch.device) -> Optimizer:
    """SGD for `device`: torch's fused kernel on CUDA (the CUDA graph captures it); on CPU `sgd.SGD`,
    the same update bit for bit without the 2 s `torch.optim` adds to every job's start-up."""
    if device.type == "cuda":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, fused=True)
    return SGD(groups, lr=lr, momentum=momentum)


def make_step(loss_fn: Callable[..., Tensor], weighting: LossWeighting, optimizer: Optimizer,
              upto: int | None = None, channels_last: bool = False,
              cuda_graph: bool = False) -> Callable[[Tensor, Tensor], Tensor]:
    """The training step on one batch, `step(x, y) -> per-exit losses`: the eager `train_step`, or
    with `cuda_graph` the whole step as one CUDA graph (graphed.GraphedStep)."""
    if cuda_graph:
        return GraphedStep(loss_fn, weighting, optimizer, upto, channels_last)
    return functools.partial(train_step, loss_fn, weighting, optimizer, upto=upto, channels_last=channels_last)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule scaled to `cfg.epochs`: epoch e (0-based) uses the factor of the last milestone
    ceil(fraction * epochs) that e has reached (ceil, so a short run starts at the base rate)."""
    factor = 1.0
    for frac, f in zip(cfg.lr_milestones, cfg.lr_factors):
        if epoch >= math.ceil(frac * cfg.epochs - 1e-9):
            factor = f
    return cfg.lr * factor


def decayed(module: nn.Module, name: str) -> bool:
    """Whether `module`'s own parameter `name` gets weight decay: conv kernels and the exits' linear
    layers (weight and bias), not BN, as the authors did."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and name == "weight")


def _param_groups(model: nn.Module, weighting: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """One group of decayed parameters (`decayed`), one without, and the weighting's learned ones."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if decayed(module, name) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    learned = list(weighting.parameters())
    if learned:
        groups.append({"params": learned, "weight_decay": 0.0})
    return groups


class Run:
    """Everything one training run holds, built from a `TrainConfig`."""

    def __init__(self, cfg: TrainConfig, data: ImageData | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        prepare_run_dir(self.out, cfg.force)  # before any compute: an unusable --out fails now, not after an epoch
        self.device = resolve_device(cfg.device)
        self.saved = self._read_checkpoint()  # likewise a checkpoint that cannot be resumed, before the data is read
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.data = data if data is not None else load_dataset(
            cfg.dataset, cfg.data_root, download=cfg.download, val_fraction=cfg.val_fraction, seed=cfg.seed,
            train_subset=cfg.train_subset, test_subset=cfg.test_subset,
        )
        torch.manual_seed(cfg.seed)
        self.model = build_model(
            cfg.arch, self.data.in_channels, self.data.num_classes, self.data.image_size, **cfg.arch_opts
        )
        self.upto = cfg.opt_exit
        if self.upto is not None and not 0 <= self.upto < self.model.num_exits:
            raise ValueError(f"opt_exit {self.upto} is out of range: the model has {self.model.num_exits} exits")
        self.num_exits = self.model.num_exits if self.upto is None else self.upto + 1
        self.model.to(self.device)
        self.cuda = self.device.type == "cuda"
        if cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.weighting = self._make_weighting().to(self.device)
        self.optimizer = make_optimizer(_param_groups(self.model, self.weighting, cfg.weight_decay), cfg.lr,
                                        cfg.momentum, self.device)
        self.loader = DeviceLoader(
            self.data.x_train, self.data.y_train, cfg.batch_size, self.device, shuffle=True,
            crop_pad=self.data.crop_pad, flip=self.data.flip, mean=self.data.mean, std=self.data.std,
            seed=cfg.seed, drop_last=True,
        )
        self.bf16 = cfg.bf16 and autocast_bf16(self.model, self.device)
        loss_fn = ExitLosses(self.model, bf16=self.bf16)
        self.loss_fn = torch.compile(loss_fn, mode=cfg.compile_mode) if cfg.compile else loss_fn
        self.step = self._make_step()
        self.epoch = 0  # epochs completed
        self.log_rows: list[dict[str, Any]] = []
        self.weight_rows: list[dict[str, Any]] = []
        self.seconds = 0.0
        self.pack_size = 1  # runs trained together with this one (adaloss.pack sets it), for metrics.json

    def _make_step(self) -> Callable[[Tensor, Tensor], Tensor]:
        if self.cfg.cuda_graph and not self.cuda:  # refused before any training, not at the first batch
            raise ValueError(f"cuda_graph needs a CUDA device, but this run trains on {self.device}; "
                             "set cuda_graph false (train: {cuda_graph: false} in a config) to train here")
        return make_step(self.loss_fn, self.weighting, self.optimizer, self.upto, self.cfg.channels_last,
                         self.cfg.cuda_graph)

    def _make_weighting(self) -> LossWeighting:
        cfg = self.cfg
        opts: dict[str, Any] = {}
        if cfg.weighting == "opt":
            opts["exit"] = self.num_exits - 1
        if cfg.weighting in ("adaloss", "adaloss_grad"):
            opts.update(gamma=cfg.gamma, momentum=cfg.ada_momentum, update_per=cfg.update_per,
                        final_extra=cfg.final_extra)
        if cfg.weighting == "adaloss_grad":
            opts["params"] = list(self.model.parameters())
        return make_weighting(cfg.weighting, self.num_exits, scale=cfg.scale, **opts)

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "identity": self.cfg.identity(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "weighting": self.weighting.state_dict(),
            "loader": self.loader.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.cuda else None,
            "log_rows": self.log_rows,
            "weight_rows": self.weight_rows,
            "seconds": self.seconds,
        }

    def save_checkpoint(self) -> None:
        atomic.save_torch(self.out / CHECKPOINT, self.state_dict())

    def _read_checkpoint(self) -> dict[str, Any] | None:
        """The run directory's checkpoint if it is one of this config (checkpoint.read_run_checkpoint)."""
        return read_run_checkpoint(self.out, self.device, self.cfg.identity(), self.cfg.restart_on_change)

    def try_resume(self) -> bool:
        """Continue from the checkpoint read at construction, if there was one of this config."""
        state, self.saved = self.saved, None
        if state is None:
            return False
        with checkpoint_fits(self.out / CHECKPOINT):
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.weighting.load_state_dict(state["weighting"])
            self.loader.load_state_dict(state["loader"])
            torch.set_rng_state(state["torch_rng"].cpu())
            if self.cuda and state["cuda_rng"] is not None:
                torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
        self.epoch, self.seconds = state["epoch"], state["seconds"]
        self.log_rows, self.weight_rows = state["log_rows"], state["weight_rows"]
        return True

    # -- the hot loop --------------------------------------------------------------------------
    def train_one_epoch(self, bar: tqdm | None) -> Tensor:
        """One pass over the training set; returns the per-exit mean training loss (on device)."""
        self.start_epoch()
        for x, y in self.loader:
            self.after_step(self.step(x, y))
            if bar is not None:
                bar.update(1)
        return self.epoch_losses()

    def start_epoch(self) -> None:
        """Train mode, this epoch's learning rate, and zeroed per-epoch tallies (kept on the device)."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.cfg, self.epoch)
        self._loss_sum = torch.zeros(self.num_exits, device=self.device)
        self._first_bad = torch.full((self.num_exits,), -1, dtype=torch.long, device=self.device)
        self._steps = 0

    def after_step(self, losses: Tensor) -> None:
        """Tally one step's per-exit losses (K,) without a host sync, and log AdaLoss's weights when they change."""
        bad = ~torch.isfinite(losses)
        self._first_bad = torch.where(bad & (self._first_bad < 0), self._steps, self._first_bad)
        self._loss_sum += losses
        self._steps += 1
        if self.cfg.weighting in ("adaloss", "adaloss_grad") and self.weighting.calls % self.cfg.update_per == 0:
            self.record_weights(step=self.weighting.calls)

    def epoch_losses(self) -> Tensor:
        """The epoch's per-exit mean training loss; a NaN or inf met during the epoch is raised here."""
        self.check_finite(self._first_bad)
        return self._loss_sum / max(self._steps, 1)

    def record_weights(self, step: int) -> None:
        w = self.weighting.weights.detach().float().cpu().tolist()
        for i, wi in enumerate(w):
            self.weight_rows.append({"step": step, "epoch": self.epoch + 1, "exit": i, "weight": wi})

    def check_finite(self, first_bad: Tensor) -> None:
        bad = first_bad.cpu().tolist()
        for exit_, step in enumerate(bad):
            if step >= 0:
                raise NonFiniteLossError(
                    f"run {self.cfg.run_label}: the loss of exit {exit_} became non-finite (NaN or inf) "
                    f"at epoch {self.epoch + 1}, step {step + 1}; the last good checkpoint is kept in {self.out}"
                )

    def evaluate(self, split: str = "test") -> tuple[list[float], list[float]]:
        """Top-1 error (%) and expected calibration error (%, 15 bins) of each exit on `split`."""
        x, y = (self.data.x_test, self.data.y_test) if split == "test" else (self.data.x_val, self.data.y_val)
        probs = exit_probabilities(self.model, x, self.data.mean, self.data.std, self.device, upto=self.upto,
                                   channels_last=self.cfg.channels_last, bf16=self.bf16)
        return top1_errors(probs, y), expected_calibration_error(probs, y)

    def progress_bar(self, label: str, steps_per_epoch: int) -> tqdm:
        """One bar over the whole training (a pack's runs share one), starting at the epoch resumed from."""
        return tqdm(total=self.cfg.epochs * steps_per_epoch, initial=self.epoch * steps_per_epoch, desc=label,
                    unit="step", disable=not self.cfg.progress, mininterval=1.0)

    def run(self) -> dict[str, Any]:
        """Train to `cfg.epochs` (resuming if a checkpoint exists), then write the run's outputs."""
        cfg = self.cfg
        if self.try_resume():
            print(f"resumed {cfg.run_label} after epoch {self.epoch}", file=sys.stderr)
        bar = self.progress_bar(cfg.run_label, len(self.loader))
        while self.epoch < cfg.epochs:
            start = time.perf_counter()
            train_loss = self.train_one_epoch(bar)
            self.end_epoch(train_loss, time.perf_counter() - start, bar)
        bar.close()
        return self.write_outputs()

    def end_epoch(self, train_loss: Tensor, train_seconds: float, bar: tqdm | None = None) -> None:
        """What follows every epoch, alone or in a pack (`pack.train_packed_epoch`): the test evaluation
        when due, the log row, the epoch count and the checkpoint. `train_seconds` is this run's
        training time in the epoch (in a pack of P, its 1/P share of the pack's)."""
        cfg = self.cfg
        start = time.perf_counter()
        losses = train_loss.cpu().tolist()
        last = self.epoch + 1 == cfg.epochs
        unevaluated = [float("nan")] * self.num_exits
        errors, ece = self.evaluate() if last or (self.epoch + 1) % cfg.eval_every == 0 else (unevaluated, unevaluated)
        self.seconds += train_seconds + time.perf_counter() - start
        row: dict[str, Any] = {"epoch": self.epoch + 1, "lr": lr_at(cfg, self.epoch), "seconds": round(self.seconds, 3)}
        weights = self.weighting.weights.detach().float().cpu().tolist()
        for i in range(self.num_exits):
            row[f"train_loss_e{i}"] = losses[i]
            row[f"weight_e{i}"] = weights[i]
            row[f"test_error_e{i}"] = errors[i]
            row[f"test_ece_e{i}"] = ece[i]
        self.log_rows.append(row)
        self.epoch += 1
        if bar is not None:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", err=f"{errors[-1]:.2f}%")
        self.save_checkpoint()

    def write_outputs(self, reevaluate: bool = False) -> dict[str, Any]:
        """exits.csv, log.csv, weights.csv and metrics.json of the trained model. The test errors and
        calibration are the last epoch's, already in the log, unless `reevaluate` (e.g. on another
        device)."""
        cfg, data = self.cfg, self.data
        final = self.log_rows[-1] if self.log_rows else {}
        if final.get("epoch") == cfg.epochs and "test_ece_e0" in final and not reevaluate:
            test = [final[f"test_error_e{i}"] for i in range(self.num_exits)]
            ece = [final[f"test_ece_e{i}"] for i in range(self.num_exits)]
        else:
            test, ece = self.evaluate("test")
        val = self.evaluate("val")[0] if len(data.y_val) else [float("nan")] * self.num_exits
        costs = cached_exit_costs(cfg.arch, data.in_channels, data.num_classes, data.image_size, cfg.arch_opts,
                                  Path(cfg.data_root) / COSTS_CACHE)[: self.num_exits]
        labels = {"dataset": cfg.dataset, "model": cfg.model_name, "weighting": cfg.weighting_label, "seed": cfg.seed}
        rows = exit_rows(labels, costs, test, ece, val, only_last=cfg.weighting == "opt")
        atomic.write_rows(self.out / "exits.csv", rows, EXIT_COLUMNS)
        atomic.write_rows(self.out / "log.csv", self.log_rows, list(dict.fromkeys(k for r in self.log_rows for k in r)))
        atomic.write_rows(self.out / "weights.csv", self.weight_rows, ["step", "epoch", "exit", "weight"])
        metrics = {
            "config": cfg.as_dict(),
            "run": cfg.run_label,
            "num_exits": self.num_exits,
            "final_test_error": test,
            "final_test_ece": ece,
            "final_val_error": val,
            "final_weights": self.weighting.weights.detach().float().cpu().tolist(),
            "train_seconds": round(self.seconds, 3),
            "pack_size": self.pack_size,
            "device": str(self.device),
            "bf16": self.bf16,
            "device_name": torch.cuda.get_device_name(self.device) if self.cuda else cpu_name(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        atomic.write_json(self.out / "metrics.json", metrics)
        return metrics


def fit(cfg: TrainConfig, data: ImageData | None = None) -> dict[str, Any]:
    """Train (or resume) one run and write its outputs; returns the metrics dict."""
    return Run(cfg, data).run()


def evaluate_checkpoint(run_dir: str | Path, device: str = "auto") -> dict[str, Any]:
    """Re-evaluate a finished run from its checkpoint without training (`python -m adaloss evaluate`)."""
    run_path = Path(run_dir)
    config = read_metrics(run_path)["config"]
    # no training here, and a checkpoint of another config is refused, never replaced
    config.update(out=str(run_dir), device=device, progress=False, compile=False, cuda_graph=False,
                  restart_on_change=False)
    try:
        cfg = TrainConfig(**config)
    except (TypeError, ValueError) as exc:
        raise InputError(run_path / METRICS, f"its config is not a valid training config ({exc})",
                         "train the run again into a new --out") from exc
    run = Run(cfg)
    run.try_resume()
    if run.epoch < run.cfg.epochs:
        raise UnfinishedRunError(run_path / CHECKPOINT, f"is from epoch {run.epoch} of {run.cfg.epochs}",
                                 "finish training first (run the same train command again)")
    return run.write_outputs(reevaluate=True)
