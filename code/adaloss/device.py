"""Where a run computes and in which precision: the device, and whether bf16 autocast pays there.

Shared by training, evaluation and inference (early exit, latency), so none of them imports the
trainer to learn what it would have done.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["resolve_device", "bf16_native", "convolves_unit_maps", "autocast_bf16"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def convolves_unit_maps(model: nn.Module) -> bool:
    """Whether a convolution of `model` sees a 1x1 feature map, for one image of its input shape.

    On CPU, oneDNN's bf16 convolution backward returns non-finite weight gradients for such maps
    now and then (torch 2.14.1, a 2-core Xeon with AMX: 3x3, stride 2, padding 1, on (64, 4, 1, 1)
    channels-last inputs, 5 of 20 tries; none at 2x2 and above), which small images reach in
    MSDNet's coarse scales. Such models train in fp32 on CPU.
    """
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda _, inputs: sizes.append(tuple(inputs[0].shape[-2:])))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    ref = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *model.input_shape, device=ref.device, dtype=ref.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return any(h * w == 1 for h, w in sizes)


def autocast_bf16(model: nn.Module, device: torch.device) -> bool:
    """Whether `model` trains with bf16 autocast on `device`: where the hardware has bf16 units,
    except on CPU for models that convolve 1x1 maps (see `convolves_unit_maps`)."""
    return bf16_native(device) and (device.type == "cuda" or not convolves_unit_maps(model))


def bf16_native(device: torch.device, matrix_units_only: bool = False) -> bool:
    """Whether bf16 autocast speeds training up on `device`: on CUDA, and on CPUs whose vector or
    matrix units compute bf16 natively (AMX tiles, or AVX512-BF16's dot-product instructions).

    Measured (docs/speed.md): a CIFAR-sized ResANN step 1.6x faster on a 2-core Xeon with AMX, and
    faster too on an AMD EPYC with AVX512-BF16 and no AMX. Other CPUs emulate bf16 and stay in fp32.
    `matrix_units_only` counts only AMX on CPU: the byte-level transformer's step was 1.4x slower
    with bf16 autocast than in fp32 on that AMD EPYC, its small matmuls gaining less from
    AVX512-BF16 than the casts cost.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    names = ("_is_amx_tile_supported",) + (() if matrix_units_only else ("_is_avx512_bf16_supported",))
    probes = (getattr(torch.cpu, name, None) for name in names)
    return any(probe is not None and bool(probe()) for probe in probes)
