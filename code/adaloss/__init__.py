"""adaloss: anytime neural networks trained with AdaLoss (Hu et al., AAAI 2019, arXiv 1708.06832).

The front door, for use in any PyTorch training loop:

    from adaloss import AdaLoss, build_model, exit_costs, make_weighting

Submodules hold the rest (one concept per file): `weighting`, `models`, `flops`, `data`, `train`,
`evaluate`, `eann`, `tables`, `claims`, `report`. The names below are imported on first use, so
`import adaloss` itself stays cheap and each command of `python -m adaloss` loads only what it uses.
"""

from __future__ import annotations

import importlib
from typing import Any

# early_exit.py, budgeted batch classification (MSDNet-style early exit)
_EARLY_EXIT = ["AnytimeClassifier", "ExitOutputs", "collect", "fit_thresholds", "apply_thresholds",
               "geometric_rule", "fixed_rule", "geometric_proportions", "ThresholdRule", "max_probability",
               "negative_entropy", "TestSplitError", "EarlyExitResult", "EarlyExitPrediction"]

__all__ = ["AdaLoss", "make_weighting", "static_weights", "build_model", "exit_costs", "opt_exits",
           "load_dataset", "TrainConfig", "fit", *_EARLY_EXIT]

_WHERE = {"AdaLoss": "weighting", "make_weighting": "weighting", "static_weights": "weighting",
          "build_model": "models", "exit_costs": "flops", "opt_exits": "flops", "load_dataset": "data",
          "TrainConfig": "train", "fit": "train", **dict.fromkeys(_EARLY_EXIT, "early_exit")}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'adaloss' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
