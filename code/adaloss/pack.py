"""Packed training: P runs of one architecture trained in lockstep as one fused model (issue 19).

Why: a small anytime network cannot fill a GPU. One step of ResANN(5, 16) is hundreds of tiny
kernels (every exit adds a head), so a run is launch-bound and the GPU trains one run at a time.
A study trains 21 runs of each (dataset, model): 3 weightings x 3 seeds and 4 OPT networks x 3
seeds, all with the same architecture, schedule and data. Fused, they are one model P times as
wide: `torch.func.stack_module_state` stacks the runs' parameters and buffers along a new leading
dimension, and `vmap(functional_call)` runs them at once, so each convolution becomes one grouped
convolution over the pack (what HFTA, Wang et al. MLSys 2021, builds by hand) and each kernel
launch does P runs' work.

Each run keeps everything that makes it itself, so the tables cannot tell a packed run from a solo
one (tests/test_pack.py trains both and compares):
* its own `train.Run`: data order and augmentation (its loader's generator, seeded by its seed),
  initial weights (built under its seed), weighting state (AdaLoss's EMA and weights), its slice of
  the optimiser's momentum, its BN statistics, its run directory and files;
* OPT: a run with `opt_exit` k uses only the layers up to exit k. The fused forward computes the
  later layers too (the pack shares one graph), but masks give them neither gradient nor weight
  decay and their BN statistics are not kept, so the run ends with exactly the parameters of the
  truncated network trained alone, the way the solo trainer trains OPT (docs/fidelity.md, D18).

Epochs stay in lockstep. A pack killed between two runs' checkpoints resumes with some runs one
epoch behind; those train that epoch on their own (a smaller pack) first, then the pack goes on
together, so every run ends as if it had never been killed.

Not packed: AdaLoss-grad (its statistic differentiates each exit's loss with respect to the run's
own parameters, which in a pack are slices of shared tensors). `fit_runs` trains such runs alone,
after the packs. A whole-step CUDA graph (`cuda_graph`) is not built for a pack; `compile` (with
mode reduce-overhead, CUDA graphs of the forward and backward) compiles the fused loss instead.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from .data import ImageData, load_dataset
from .plan import packs_of
from .train import NonFiniteLossError, Run, TrainConfig, decayed, lr_at, make_optimizer

__all__ = ["PER_RUN_FIELDS", "UNPACKABLE", "check_packable", "packed_loss", "FusedRuns", "train_packed_epoch", "fit_pack",
           "fit_runs"]

# The TrainConfig fields in which the runs of one pack may differ; every other field is shared.
PER_RUN_FIELDS = ("out", "weighting", "scale", "opt_exit", "seed", "gamma", "ada_momentum", "update_per",
                  "final_extra", "restart_on_change", "force")
UNPACKABLE = ("adaloss_grad",)  # trained alone (module docstring)


def check_packable(cfgs: Sequence[TrainConfig]) -> None:
    """Refuse a pack whose runs differ in anything but `PER_RUN_FIELDS`, naming the field, or that
    holds a weighting that cannot be packed."""
    if not cfgs:
        raise ValueError("a pack needs at least one run")
    first = cfgs[0].as_dict()
    for cfg in cfgs:
        if cfg.weighting in UNPACKABLE:
            raise ValueError(f"run {cfg.run_label}: weighting {cfg.weighting!r} cannot be packed (adaloss.pack); "
                             "train it alone")
        other = cfg.as_dict()
        diff = sorted(k for k in first if k not in PER_RUN_FIELDS and first[k] != other[k])
        if diff:
            raise ValueError(f"runs {cfgs[0].run_label} and {cfg.run_label} cannot share a pack: they differ in "
                             f"{', '.join(diff)} (a pack shares everything but {', '.join(PER_RUN_FIELDS)})")
    outs = [cfg.out for cfg in cfgs]
    if len(set(outs)) != len(outs):
        raise ValueError(f"two runs of a pack write to the same directory: {sorted(o for o in outs if outs.count(o) > 1)[0]}")


def _used_names(run: Run) -> tuple[set[str], set[str]]:
    """What one step of `run` alone touches: the parameters that get a gradient (SGD skips the others,
    weight decay included) and the buffers of the modules its forward calls (BN statistics). Found by
    one forward to the run's last exit on a blank batch, in train mode on a copy, so nothing changes."""
    model = copy.deepcopy(run.model).train()
    called: set[nn.Module] = set()
    for m in model.modules():
        m.register_forward_pre_hook(lambda mod, _: called.add(mod))
    param = next(model.parameters())
    logits = model(torch.zeros(2, *model.input_shape, device=param.device, dtype=param.dtype), upto=run.upto)
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(sum(z.sum() for z in logits), list(named.values()), allow_unused=True)
    params = {n for n, g in zip(named, grads) if g is not None}
    buffers = {f"{prefix}.{n}" if prefix else n
               for prefix, m in model.named_modules() if m in called for n, _ in m.named_buffers(recurse=False)}
    return params, buffers


PackedLoss = Callable[[dict[str, Tensor], dict[str, Tensor], Tensor, Tensor], Tensor]


def packed_loss(model: nn.Module, bf16: bool, compile: bool = False, compile_mode: str = "default") -> PackedLoss:
    """(params, buffers, x (P, B, ...), y (P, B)) -> every run's per-exit losses (P, K), vmapped over the
    runs of a pack of `model`'s architecture. Built once per pack and kept across epochs, so a
    compiled one is compiled once, not at every epoch's restacking."""
    template = copy.deepcopy(model).to("meta").train()  # structure only: functional_call supplies every tensor
    device_type = next(model.parameters()).device.type

    def one(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        logits = functional_call(template, (params, buffers), (x,))
        return torch.stack([F.cross_entropy(z.float(), y) for z in logits])

    fused = vmap(one)

    def losses(params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            return fused(params, buffers, x, y)

    return torch.compile(losses, mode=compile_mode) if compile else losses


class FusedRuns:
    """The P runs' state stacked into one fused model for a stretch of training (an epoch), then written
    back into each `Run`. Stacking per epoch lets a pack change members (stragglers after a resume)
    and keeps checkpoints, evaluation and outputs the solo trainer's own."""

    def __init__(self, runs: Sequence[Run], loss_fn: PackedLoss | None = None) -> None:
        self.runs = list(runs)
        models = [r.model for r in self.runs]
        base = models[0]
        params, buffers = stack_module_state(models)
        self.params = {n: p.detach().requires_grad_() for n, p in params.items()}
        self.buffers = buffers
        cfg = self.runs[0].cfg
        # masks (P, 1, ...) for parameters a run alone would not update (an OPT run's later layers, a
        # branch no exit reads): no gradient and no weight decay there, as SGD skips them alone
        used = [_used_names(r) for r in self.runs]
        self.used_params, self.used_buffers = [u[0] for u in used], [u[1] for u in used]
        shape = {n: (len(self.runs),) + (1,) * (p.dim() - 1) for n, p in self.params.items()}
        self.masks = {
            n: torch.tensor([float(n in u) for u in self.used_params], device=p.device).view(shape[n])
            for n, p in self.params.items() if any(n not in u for u in self.used_params)
        }
        decay = {f"{prefix}.{n}" if prefix else n for prefix, m in base.named_modules()
                 for n, _ in m.named_parameters(recurse=False) if decayed(m, n)}
        self.decay = {n: cfg.weight_decay if n in decay else 0.0 for n in self.params}
        groups: dict[tuple[bool, float], list[Tensor]] = {}
        for n, p in self.params.items():  # masked tensors get their decay by hand, masked (`step`)
            groups.setdefault((n in self.masks, 0.0 if n in self.masks else self.decay[n]), []).append(p)
        param_groups = [{"params": ps, "weight_decay": wd} for (_, wd), ps in groups.items()]
        learned = [p for r in self.runs for p in r.weighting.parameters()]
        if learned:
            param_groups.append({"params": learned, "weight_decay": 0.0})
        self.optimizer = make_optimizer(param_groups, lr_at(cfg, self.runs[0].epoch), cfg.momentum, self.runs[0].device)
        self._stack_momentum(learned)
        self.loss_fn = loss_fn or packed_loss(base, self.runs[0].bf16)

    def _stack_momentum(self, learned: list[Tensor]) -> None:
        """Each run's momentum buffers, stacked (zeros where a run has none yet: 0.9 * 0 + g = g, as a
        first step's copy of g)."""
        for n, stacked in self.params.items():
            bufs = [r.optimizer.state.get(dict(r.model.named_parameters())[n], {}).get("momentum_buffer")
                    for r in self.runs]
            if any(b is not None for b in bufs):
                self.optimizer.state[stacked] = {"momentum_buffer": torch.stack(
                    [torch.zeros_like(stacked[0]) if b is None else b for b in bufs])}
        for r in self.runs:
            for p in r.weighting.parameters():
                if p in r.optimizer.state:
                    self.optimizer.state[p] = r.optimizer.state[p]

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """One SGD step of every run on its own batch (x (P, B, C, H, W), y (P, B)); returns the
        detached losses (P, K). Each run's weighting sees only its own exits' losses."""
        losses = self.loss_fn(self.params, self.buffers, x, y)
        total = sum(r.weighting(losses[i, : r.num_exits]) for i, r in enumerate(self.runs))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        with torch.no_grad():  # the solo update's decay term, only where the run uses the tensor
            masked = [n for n in self.masks if self.params[n].grad is not None]
            for wd in {self.decay[n] for n in masked} - {0.0}:  # one foreach op per decay value, not per tensor
                same = [n for n in masked if self.decay[n] == wd]
                torch._foreach_add_([self.params[n].grad for n in same], [self.params[n] for n in same], alpha=wd)
            if masked:
                torch._foreach_mul_([self.params[n].grad for n in masked], [self.masks[n] for n in masked])
        self.optimizer.step()
        return losses.detach()

    @torch.no_grad()
    def write_back(self) -> None:
        """Each run's slice into its own model and optimiser, leaving alone what the run alone would not
        touch (an OPT run's later layers stay as the truncated network alone has them)."""
        for i, r in enumerate(self.runs):
            for n, p in r.model.named_parameters():
                if n in self.used_params[i]:
                    p.copy_(self.params[n][i])
                    state = self.optimizer.state.get(self.params[n], {})
                    if "momentum_buffer" in state:
                        r.optimizer.state[p] = {"momentum_buffer": state["momentum_buffer"][i].clone()}
            for n, b in r.model.named_buffers():
                if n in self.used_buffers[i]:
                    b.copy_(self.buffers[n][i])
            for p in r.weighting.parameters():
                if p in self.optimizer.state:
                    r.optimizer.state[p] = self.optimizer.state[p]


def train_packed_epoch(runs: Sequence[Run], bar: tqdm | None = None, loss_fn: PackedLoss | None = None) -> None:
    """One epoch of `runs` (all at the same epoch) as one fused model, then each run's own end of
    epoch (evaluation when due, log row, checkpoint). A run whose loss became non-finite is raised
    after the others' epoch is saved."""
    start = time.perf_counter()
    for r in runs:
        r.start_epoch()
    fused = FusedRuns(runs, loss_fn)
    for batches in zip(*(r.loader for r in runs)):
        x = torch.stack([b[0] for b in batches])
        y = torch.stack([b[1] for b in batches])
        losses = fused.step(x, y)
        for i, r in enumerate(runs):
            r.after_step(losses[i, : r.num_exits])
        if bar is not None:
            bar.update(1)
    fused.write_back()
    share = (time.perf_counter() - start) / len(runs)
    failed: NonFiniteLossError | None = None
    for r in runs:
        try:
            r.end_epoch(r.epoch_losses(), share, bar)
        except NonFiniteLossError as exc:
            failed = failed or exc
    if failed is not None:
        raise failed


def _solo_settings(cfg: TrainConfig) -> TrainConfig:
    """A pack member's own `Run` trains nothing itself: no compiled loss or CUDA graph of its own
    (neither is part of a run's identity, so checkpoints stay interchangeable with solo runs)."""
    return dataclasses.replace(cfg, compile=False, cuda_graph=False)


def _shared_data(cfgs: Sequence[TrainConfig], data: ImageData | None) -> Callable[[TrainConfig], ImageData | None]:
    """The data each run trains on: one copy for all when nothing holds out a split (the training set
    is then the same for every seed), else each run loads its own seeded split."""
    if data is not None or cfgs[0].val_fraction > 0:
        return lambda cfg: data
    cfg = cfgs[0]
    shared = load_dataset(cfg.dataset, cfg.data_root, download=cfg.download, val_fraction=0.0, seed=cfg.seed,
                          train_subset=cfg.train_subset, test_subset=cfg.test_subset)
    return lambda _: shared


def fit_pack(cfgs: Sequence[TrainConfig], data: ImageData | None = None) -> list[dict[str, Any]]:
    """Train (or resume) the runs `cfgs` as one pack and write each run's outputs; returns their
    metrics in order. Epochs advance in lockstep; runs behind (a pack killed between checkpoints)
    catch up first (module docstring)."""
    check_packable(cfgs)
    if cfgs[0].cuda_graph:
        print("pack: the whole-step CUDA graph is not built for a pack; the fused loss is compiled instead "
              "when compile is on", file=sys.stderr)
    data_for = _shared_data(cfgs, data)
    runs = [Run(_solo_settings(cfg), data_for(cfg)) for cfg in cfgs]
    for r in runs:
        r.pack_size = len(runs)
        if r.try_resume():
            print(f"resumed {r.cfg.run_label} after epoch {r.epoch}", file=sys.stderr)
    steps = len(runs[0].loader)
    label = f"{cfgs[0].dataset}/{cfgs[0].model_name}: pack of {len(runs)}"
    bar = tqdm(total=sum(r.cfg.epochs - r.epoch for r in runs) * steps // len(runs), desc=label, unit="step",
               disable=not cfgs[0].progress, mininterval=1.0)
    loss_fn = packed_loss(runs[0].model, runs[0].bf16, cfgs[0].compile, cfgs[0].compile_mode)
    while todo := [r for r in runs if r.epoch < r.cfg.epochs]:
        behind = min(r.epoch for r in todo)
        train_packed_epoch([r for r in todo if r.epoch == behind], bar, loss_fn)
    bar.close()
    metrics = []
    for r in runs:
        r.cfg = dataclasses.replace(r.cfg, compile=cfgs[0].compile, cuda_graph=cfgs[0].cuda_graph)  # as asked
        metrics.append(r.write_outputs())
    return metrics


def fit_runs(cfgs: Sequence[TrainConfig], pack: int = 1) -> list[dict[str, Any]]:
    """Train every run of `cfgs` in this process: in balanced packs of up to `pack` (`plan.packs_of`), or one
    after another when `pack` is 1; runs that cannot be packed (`UNPACKABLE`) train alone, last."""
    from .train import fit

    packable = [c for c in cfgs if c.weighting not in UNPACKABLE] if pack > 1 else []
    alone = [c for c in cfgs if c not in packable]
    metrics = [m for group in packs_of(packable, pack) for m in fit_pack(group)] if packable else []
    return metrics + [fit(c) for c in alone]
