"""The anytime networks: the `ARCHS` registry and `build_model`.

Families (official_code.md §2-3): `resann` (ResANN, resann.py), `denseann` (DenseANN,
denseann.py), `msdnet` (MSDNet-ANN, msdnet.py); beyond the paper, `transformer` (a byte-level
decoder-only language model with an exit after every layer, transformer.py). Every model is an
`AnytimeNet` (base.py) whose `forward(x, upto=k)` returns the logits of exits 0..k, cheapest first.
"""

from __future__ import annotations

import inspect
from typing import Any

from .base import AnytimeNet
from .denseann import DenseANN
from .msdnet import MSDNet
from .resann import ResANN
from .transformer import TransformerANN

__all__ = ["ARCHS", "AnytimeNet", "build_model", "arch_options"]

ARCHS: dict[str, type[AnytimeNet]] = {"resann": ResANN, "denseann": DenseANN, "msdnet": MSDNet,
                                      "transformer": TransformerANN}

_DATA_ARGS = ("in_channels", "num_classes", "image_size")  # set by the data set, not options


def arch_options(arch: str) -> dict[str, Any]:
    """The options `arch` accepts and their defaults, read from its constructor so the two can
    never disagree."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {sorted(ARCHS)}")
    params = inspect.signature(ARCHS[arch]).parameters
    return {name: p.default for name, p in params.items() if name not in _DATA_ARGS}


def build_model(arch: str, in_channels: int, num_classes: int, image_size: int,
                **opts: Any) -> AnytimeNet:
    """Build `arch` for (in_channels, image_size, image_size) images and `num_classes` classes.
    Unknown archs and options raise ValueError listing the valid ones, rather than being ignored."""
    valid = arch_options(arch)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for arch {arch!r}; valid: {sorted(valid)}")
    return ARCHS[arch](in_channels, num_classes, image_size, **opts)
