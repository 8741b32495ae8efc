"""Checkpoints as data: reading them safely, and a trained model back from its run directory.

A run directory may come from someone else, so a checkpoint is read with `weights_only=True` and
never unpickles objects (`UnsafeCheckpointError`). `load_trained_model` rebuilds the network from
the run's metrics.json and its weights, for evaluation and inference that must not retrain.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from .data import dataset_info
from .models import build_model
from .models.base import AnytimeNet

__all__ = ["CHECKPOINT", "UnsafeCheckpointError", "load_checkpoint", "load_trained_model"]

CHECKPOINT = "checkpoint.pt"


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled objects beyond tensors and plain containers (it could run code)."""


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint as data only (`torch.load(weights_only=True)`): tensors, numbers, strings
    and plain containers. A run directory may come from someone else, and unpickling arbitrary
    objects can execute code, so anything else is refused with `UnsafeCheckpointError`."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise UnsafeCheckpointError(
            f"{path} holds pickled Python objects, not only tensors and plain data, so it is refused "
            f"(loading it could run code); remove it to train again from scratch ({reason})"
        ) from exc


def load_trained_model(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[AnytimeNet, dict[str, Any]]:
    """The trained network of a finished run, in eval mode on `device`, and the run's metrics.json.

    The architecture is rebuilt from the recorded config and the input shape of the dataset, then
    the checkpoint's weights are loaded strictly (a checkpoint of another architecture fails)."""
    run = Path(run_dir)
    metrics_path, checkpoint_path = run / "metrics.json", run / CHECKPOINT
    for path in (metrics_path, checkpoint_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {run} is not a finished run (python -m adaloss train)")
    metrics = json.loads(metrics_path.read_text())
    cfg = metrics["config"]
    channels, size, classes = dataset_info(cfg["dataset"], cfg["data_root"])
    model = build_model(cfg["arch"], channels, classes, size, **cfg["arch_opts"])
    state = load_checkpoint(checkpoint_path, "cpu")
    if state.get("epoch") != cfg["epochs"]:
        raise RuntimeError(f"{checkpoint_path} is from epoch {state.get('epoch')} of {cfg['epochs']}: "
                           "finish training first (run the same train command again)")
    model.load_state_dict(state["model"])
    return model.to(device).eval(), metrics
