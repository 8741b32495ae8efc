"""`python -m adaloss bench`: our training step against a plain PyTorch loop, in the same run.

Both sides train the same ResANN (same initial weights, AdaLoss, SGD) on the same synthetic uint8
images for the same number of steps, after the same warm-up:

* ours: the library's step (`train.make_step`: `train_step`, or with --cuda-graph
  `graphed.GraphedStep`) fed by `augment.DeviceLoader` (one uint8 tensor on the device, batched
  crop/flip/normalise there, no host sync per step; channels_last, and bf16 autocast where
  `device.autocast_bf16` allows it);
* plain: what a typical PyTorch script does: torchvision per-sample transforms in a `Dataset`, a
  `DataLoader`, fp32, and `.item()` on the loss every step.

Where our step runs in bf16 it is also timed in fp32 in the same run (`bf16_speedup`). It prints
images/s of each, their ratio, and our achieved GFLOP/s (training FLOPs counted by
`torch.utils.flop_counter` on one forward+backward) as a fraction of this machine's measured dense
matmul GFLOP/s in the precision our step runs in (bf16 or fp32), and writes the numbers to `results/bench/<device>.json`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from . import atomic
from .augment import DeviceLoader, ReferenceDataset, reference_transform
from .flops import PACK_THROUGHPUT_COLUMNS, exit_costs, read_pack_throughput
from .models import build_model
from .provenance import cpu_name
from .device import autocast_bf16, resolve_device
from .step import ExitLosses
from .train import make_optimizer, make_step
from .weighting import AdaLoss

__all__ = ["add_arguments", "run_cli", "BenchSetting", "benchmark", "benchmark_pack", "append_throughput", "matmul_gflops"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """Measured dense matmul throughput in `dtype` (the one our step computes in): the machine's
    practical ceiling for our FLOPs."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _train_flops_per_image(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        losses = torch.stack([F.cross_entropy(z, y) for z in model(x)])
        losses.sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(y)


def _timed(steps: int, warmup: int, step: Callable[[], None], device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class BenchSetting:
    """What both benchmarks share: the ResANN, the synthetic data, the steps and the step's switches."""

    n: int = 5
    width: int = 16
    batch_size: int = 128
    steps: int = 50
    warmup: int = 5
    images: int = 4096
    image_size: int = 32
    channels: int = 3
    classes: int = 10
    device: str = "auto"
    compile: bool = False
    compile_mode: str = "default"
    cuda_graph: bool = False
    seed: int = 0

    def images_and_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Seeded uint8 images (N, C, H, W) and labels (N,): the same for every side of a benchmark."""
        g = torch.Generator().manual_seed(self.seed)
        shape = (self.images, self.channels, self.image_size, self.image_size)
        return (torch.randint(0, 256, shape, dtype=torch.uint8, generator=g),
                torch.randint(0, self.classes, (self.images,), generator=g))

    def header(self, dev: torch.device) -> dict[str, Any]:
        """The lines every result starts with: where and what was measured."""
        return {
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
            "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "model": f"resann(n={self.n}, width={self.width})",
            "input": [self.channels, self.image_size, self.image_size],
            "batch_size": self.batch_size,
            "steps": self.steps,
            "warmup": self.warmup,
            "compile": self.compile_mode if self.compile else False,
        }


def benchmark(workers: int = -1, **setting: Any) -> dict[str, Any]:
    """Run both loops and return the measurements (see the module docstring); `setting`: the fields of
    `BenchSetting`."""
    bs = BenchSetting(**setting)
    n, width, batch_size, steps, warmup = bs.n, bs.width, bs.batch_size, bs.steps, bs.warmup
    channels, image_size, classes, seed = bs.channels, bs.image_size, bs.classes, bs.seed
    compile, compile_mode, cuda_graph = bs.compile, bs.compile_mode, bs.cuda_graph
    dev = resolve_device(bs.device)
    cuda = dev.type == "cuda"
    workers = (min(8, os.cpu_count() or 1) if cuda else 0) if workers < 0 else workers
    x, y = bs.images_and_labels()
    mean, std = torch.full((channels,), 0.5), torch.full((channels,), 0.25)

    torch.manual_seed(seed)
    base = build_model("resann", channels, classes, image_size, n=n, width=width)
    flops_per_image = _train_flops_per_image(base, (x[:8].float() / 255 - 0.5) / 0.25, y[:8])
    state = {k: v.clone() for k, v in base.state_dict().items()}

    def fresh(ours: bool) -> tuple[torch.nn.Module, AdaLoss, Any]:
        """The same model and AdaLoss for both sides; ours steps with the trainer's optimizer."""
        model = build_model("resann", channels, classes, image_size, n=n, width=width)
        model.load_state_dict(state)
        model.to(dev)
        groups = [{"params": list(model.parameters()), "weight_decay": 2e-4}]
        opt = (make_optimizer(groups, 0.05, 0.9, dev) if ours
               else torch.optim.SGD(groups, lr=0.05, momentum=0.9, fused=cuda or None))
        return model, AdaLoss(model.num_exits).to(dev), opt

    def ours(bf16: bool) -> float:
        """Seconds for `steps` of our step, in bf16 autocast or in fp32."""
        model, ada, opt = fresh(ours=True)
        model.to(memory_format=torch.channels_last)
        loss_fn = ExitLosses(model, bf16=bf16)
        loss_fn = torch.compile(loss_fn, mode=compile_mode) if compile else loss_fn
        loader = DeviceLoader(x, y, batch_size, dev, shuffle=True, crop_pad=4, flip=True, mean=mean, std=std,
                              seed=seed, drop_last=True)
        batches = _cycle(loader)
        step = make_step(loss_fn, ada, opt, channels_last=True, cuda_graph=cuda_graph)
        return _timed(steps, warmup, lambda: step(*next(batches)), dev)

    bf16 = autocast_bf16(base, dev)
    ours_s = ours(bf16)
    fp32_s = ours(False) if bf16 else ours_s  # the precision's own gain, measured in the same run

    # plain
    model, ada, opt = fresh(ours=False)
    dataset = ReferenceDataset(x, y, reference_transform(4, True, mean, std))
    plain_loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                              pin_memory=cuda, drop_last=True, persistent_workers=workers > 0)
    plain_batches = _cycle(plain_loader)

    def plain_step() -> None:
        xb, yb = next(plain_batches)
        xb, yb = xb.to(dev), yb.to(dev)
        losses = [F.cross_entropy(z, yb) for z in model(xb)]
        total = ada(losses)
        opt.zero_grad()
        total.backward()
        opt.step()
        total.item()  # the habitual per-step logging read

    plain_s = _timed(steps, warmup, plain_step, dev)

    ours_ips, plain_ips = steps * batch_size / ours_s, steps * batch_size / plain_s
    peak = matmul_gflops(dev, torch.bfloat16 if bf16 else torch.float32)
    achieved = ours_ips * flops_per_image / 1e9
    return {
        **bs.header(dev),
        "dataloader_workers": workers,
        "cuda_graph": cuda_graph,
        "bf16": bf16,
        "ours_images_per_s": round(ours_ips, 1),
        "plain_images_per_s": round(plain_ips, 1),
        "ratio": round(ours_ips / plain_ips, 3),
        "ours_fp32_images_per_s": round(steps * batch_size / fp32_s, 1),
        "bf16_speedup": round(fp32_s / ours_s, 3),
        "seconds_per_50k_epoch_ours": round(50000 / ours_ips, 2),
        "train_gflop_per_image": round(flops_per_image / 1e9, 4),
        "achieved_gflops": round(achieved, 2),
        "matmul_gflops": round(peak, 1),
        "matmul_dtype": "bf16" if bf16 else "fp32",
        "fraction_of_matmul": round(achieved / peak, 4),
    }


def benchmark_pack(pack: int, **setting: Any) -> dict[str, Any]:
    """Images/s of `pack` AdaLoss runs of ResANN(n, width) trained as one fused model (adaloss.pack),
    summed over the pack, against one run of the same trainer (`pack 1`: the solo step, CUDA-graphed
    with `cuda_graph`) in the same process, on the same synthetic images. Both sides are the
    trainer's own objects (`train.Run`, `pack.FusedRuns`), seeds 0..P-1 as a study's runs. `setting`:
    the fields of `BenchSetting`."""
    from .data import ImageData
    from .pack import FusedRuns, packed_loss
    from .train import Run, TrainConfig

    if pack < 1:
        raise ValueError(f"--pack must be >= 1, got {pack}")
    bs = BenchSetting(**setting)
    steps, warmup, batch_size = bs.steps, bs.warmup, bs.batch_size
    x, y = bs.images_and_labels()
    data = ImageData("bench", x, y, x[:0], y[:0], x[:batch_size], y[:batch_size], bs.classes, crop_pad=4, flip=True,
                     mean=torch.full((bs.channels,), 0.5), std=torch.full((bs.channels,), 0.25))

    with tempfile.TemporaryDirectory() as tmp:
        def run(i: int, graphed: bool) -> Run:
            cfg = TrainConfig(dataset="bench", out=f"{tmp}/run{i}_{graphed}", arch_opts={"n": bs.n, "width": bs.width},
                              batch_size=batch_size, seed=bs.seed + i, device=bs.device, compile=bs.compile,
                              compile_mode=bs.compile_mode, cuda_graph=graphed, progress=False, epochs=1)
            r = Run(cfg, data)
            r.start_epoch()
            return r

        solo = run(0, bs.cuda_graph)
        batches = _cycle(solo.loader)
        solo_s = _timed(steps, warmup, lambda: solo.step(*next(batches)), solo.device)
        runs = [run(i, False) for i in range(pack)]
        fused = FusedRuns(runs, packed_loss(runs[0].model, runs[0].bf16, bs.compile, bs.compile_mode))
        loaders = [_cycle(r.loader) for r in runs]

        def packed_step() -> None:
            xs, ys = zip(*(next(b) for b in loaders))
            fused.step(torch.stack(xs), torch.stack(ys))

        pack_s = _timed(steps, warmup, packed_step, solo.device)
    solo_ips, pack_ips = steps * batch_size / solo_s, steps * batch_size * pack / pack_s
    dev = solo.device
    forward_flops = exit_costs(runs[0].model.cpu())[-1].flops
    return {
        **bs.header(dev),
        "cuda_graph_solo": bs.cuda_graph,
        "bf16": solo.bf16,
        "pack": pack,
        "solo_images_per_s": round(solo_ips, 1),
        "pack_images_per_s": round(pack_ips, 1),
        "pack_ratio": round(pack_ips / solo_ips, 3),
        "seconds_per_50k_epoch_per_run_packed": round(50000 * pack / pack_ips, 2),
        "forward_flops": forward_flops,
        # training FLOP/s as the GPU-hour estimate counts them (flops.training_gpu_hours: 3 x forward)
        "train_tflops": float(f"{3 * forward_flops * pack_ips / 1e12:.6g}"),
    }


def append_throughput(result: dict[str, Any], path: str | Path) -> None:
    """Add one `bench --pack` result as a row of the packed-throughput table (flops.PACK_THROUGHPUT),
    which the dry run's GPU-hour estimate reads; a row of the same device, model and pack is replaced."""
    path = Path(path)
    rows = [r for r in read_pack_throughput(path)
            if (r["device_name"], r["model"], r["pack"]) != (result["device_name"], result["model"], result["pack"])]
    rows.append({"device_name": result["device_name"], "model": result["model"], "forward_flops": result["forward_flops"],
                 "pack": result["pack"], "images_per_s": result["pack_images_per_s"],
                 "train_tflops": result["train_tflops"]})
    atomic.write_rows(path, sorted(rows, key=lambda r: (r["model"], r["pack"])), list(PACK_THROUGHPUT_COLUMNS))


def _cycle(loader: Any) -> Any:
    while True:
        yield from loader


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=5, help="ResANN units per stage (default: 5)")
    p.add_argument("--width", type=int, default=16, help="ResANN base width (default: 16)")
    p.add_argument("--batch-size", type=int, default=128, help="default: 128")
    p.add_argument("--steps", type=int, default=50, help="timed steps per loop (default: 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (default: 5)")
    p.add_argument("--images", type=int, default=4096, help="synthetic training images (default: 4096)")
    p.add_argument("--image-size", type=int, default=32, help="default: 32 (CIFAR)")
    p.add_argument("--channels", type=int, default=3, help="image channels (default: 3)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = default)")
    p.add_argument("--workers", type=int, default=-1,
                   help="DataLoader workers of the plain loop (default: 0 on CPU, up to 8 on CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False, help="torch.compile our model")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode (default, reduce-overhead, ...)")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=False,
                   help="CUDA only: our whole step (optimizer included) as one CUDA graph (graphed.py)")
    p.add_argument("--pack", type=int, default=0, metavar="P",
                   help="instead: P runs trained as one fused model (adaloss.pack), images/s summed over the pack, "
                        "against one run (--pack 1) in the same process; the plain loop is not run (default: off)")
    p.add_argument("--throughput-table", default=None, metavar="CSV",
                   help="with --pack: also add the result to this packed-throughput table (e.g. "
                        "docs/measurements/gpu_pack_throughput.csv, which the dry run's GPU-hour estimate reads)")
    p.add_argument("--out", default=None,
                   help="JSON file for the numbers, or a folder for <device>[_compiled_<mode>][_graphed].json "
                        "(default: the folder results/bench)")


def run_cli(args: argparse.Namespace) -> int:
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    shared = dict(n=args.n, width=args.width, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                  images=args.images, image_size=args.image_size, channels=args.channels, device=args.device,
                  compile=args.compile, compile_mode=args.compile_mode, cuda_graph=args.cuda_graph)
    if args.throughput_table and not args.pack:
        raise ValueError("--throughput-table records packed throughput: give --pack P too")
    if args.pack:
        result = benchmark_pack(args.pack, **shared)
    else:
        result = benchmark(workers=args.workers, **shared)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    name = ("cuda" if result["device"].startswith("cuda") else "cpu") + (f"_compiled_{args.compile_mode}" if args.compile else "")
    name += ("_graphed" if args.cuda_graph else "") + (f"_pack{args.pack}" if args.pack else "")
    out = Path(args.out) if args.out else Path("results/bench")
    atomic.write_json(out / f"{name}.json" if out.is_dir() or not args.out else out, result)
    if args.throughput_table:
        append_throughput(result, args.throughput_table)
    return 0
