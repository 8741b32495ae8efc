"""Checkpoints and metrics.json as data: reading them safely, and a trained model back from its run directory.

A run directory may come from someone else, so a checkpoint is read with `weights_only=True` and
never unpickles objects (`UnsafeCheckpointError`). Any other file that is not one of our
checkpoints or metrics.json (truncated, empty, another project's, of another architecture) is an
`InputError` naming it, never a traceback. `load_trained_model` rebuilds the network from the
run's metrics.json and its weights, for evaluation and inference that must not retrain.
"""

from __future__ import annotations

import json
import pickle
import reprlib
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .data import dataset_info
from .errors import InputError, reason
from .models import build_model
from .models.base import AnytimeNet

__all__ = ["CheckpointMismatchError", "read_run_checkpoint", "CHECKPOINT", "CHECKPOINT_TYPES", "CONFIG_TYPES", "METRICS", "UnsafeCheckpointError", "UnfinishedRunError",
           "load_checkpoint", "read_metrics", "identity_diff", "checkpoint_fits", "load_trained_model"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
# What `train.Run.state_dict` writes, with the types it writes: a dict that lacks one, or holds
# another type, is not our checkpoint (and would fail deep inside a resume, or after an epoch).
CHECKPOINT_TYPES: dict[str, type | tuple[type, ...]] = {
    "identity": dict, "epoch": int, "model": dict, "optimizer": dict, "weighting": dict, "loader": dict,
    "torch_rng": torch.Tensor, "cuda_rng": (list, type(None)), "log_rows": list, "weight_rows": list,
    "seconds": (int, float),
}
# The config fields of metrics.json that rebuilding and evaluating a finished run reads, with their
# JSON types (tests check them against train.TrainConfig).
CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "dataset": str, "data_root": str, "arch": str, "arch_opts": dict, "model_name": str, "weighting": str,
    "scale": str, "epochs": int, "seed": int, "val_fraction": (int, float), "train_subset": int, "test_subset": int,
}
_START_OVER = "delete it to train this run from scratch, or use another --out"


class UnsafeCheckpointError(InputError):
    """A checkpoint holds pickled objects beyond tensors and plain containers (it could run code)."""


class UnfinishedRunError(InputError, RuntimeError):
    """A run directory whose checkpoint has not reached the run's last epoch: it cannot be evaluated
    yet. Also a RuntimeError, which it was before InputError existed, so callers catching that still do."""


def _mistyped(values: Mapping[str, Any], types: Mapping[str, type | tuple[type, ...]]) -> str | None:
    """The first key of `types` whose value in `values` is absent or of another type (a bool is no int)."""
    return next((k for k, kind in types.items()
                 if not isinstance(values.get(k), kind) or isinstance(values.get(k), bool)), None)


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu",
                    types: Mapping[str, type | tuple[type, ...]] = CHECKPOINT_TYPES) -> dict[str, Any]:
    """One of our checkpoints, read as data only (`torch.load(weights_only=True)`): tensors,
    numbers, strings and plain containers. A run directory may come from someone else, and
    unpickling arbitrary objects can execute code, so anything else is refused with
    `UnsafeCheckpointError`; a file torch cannot read, or a dict without our keys, is an
    `InputError` naming the file. `types` are the keys and types the trainer that wrote it writes
    (the image trainer's by default; lm_train.LM_CHECKPOINT_TYPES for the language model's)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            path, f"refused: it holds more than tensors and plain data, a pickled Python object (which could run "
                  f"code if loaded) or corrupt bytes ({_unpickler_detail(exc)})", _START_OVER) from exc
    except Exception as exc:  # noqa: BLE001 - see below
        # torch's zip reader and unpickler raise what they meet: fuzzing found OSError, EOFError,
        # RuntimeError, UnicodeDecodeError, IndexError and KeyError. Whichever, the file is unusable.
        raise InputError(path, f"not a readable checkpoint, truncated or corrupt ({reason(exc)})",
                         _START_OVER) from exc
    if not isinstance(state, dict):
        raise InputError(path, f"holds a {type(state).__name__}, not an adaloss checkpoint", _START_OVER)
    if missing := [k for k in types if k not in state]:
        raise InputError(path, f"is not an adaloss checkpoint (no {', '.join(missing)})", _START_OVER)
    if key := _mistyped(state, types):
        raise InputError(path, f"is not an adaloss checkpoint ({key} is a {type(state[key]).__name__})", _START_OVER)
    return state


def _unpickler_detail(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused ("unsupported GLOBAL posix.system", "Unsupported
    operand 120"), without the paragraph about `weights_only` around it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines[1:] if not line.startswith("Check the documentation")),
                  lines[0] if lines else "")
    return detail.split("WeightsUnpickler error:")[-1].strip()[:200]


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's metrics.json, checked to hold an object whose `config` has every field
    that rebuilding the run reads (CONFIG_TYPES). A file that is not that is an `InputError`
    naming it; a missing one, or a missing checkpoint, means the run is not finished
    (FileNotFoundError)."""
    run = Path(run_dir)
    path = run / METRICS
    for needed in (path, run / CHECKPOINT):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: {run} is not a finished run (python -m adaloss train)")
    fix = f"it is written when training ends: run the train command for {run} again, or delete {run}"
    try:
        metrics = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise InputError(path, f"not readable JSON, truncated or corrupt ({reason(exc)})", fix) from exc
    config = metrics.get("config") if isinstance(metrics, dict) else None
    if not isinstance(config, dict):
        raise InputError(path, "holds no run config (an object with a 'config' object)", fix)
    if key := _mistyped(config, CONFIG_TYPES):
        kind = getattr(CONFIG_TYPES[key], "__name__", "number")
        raise InputError(path, f"config.{key} is {reprlib.repr(config.get(key))}, expected {kind}", fix)
    return metrics


def identity_diff(saved: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """The fields, sorted, in which a checkpoint's recorded identity and a config's differ."""
    return sorted(k for k in set(mine) | set(saved) if mine.get(k) != saved.get(k))


@contextmanager
def checkpoint_fits(path: str | Path) -> Iterator[None]:
    """Around loading a checkpoint's states into live objects (`load_state_dict` of the model,
    optimiser, weighting, loader; the RNG): states of another network or shape become an
    `InputError` naming `path`, one line instead of torch's list of every mismatched tensor."""
    try:
        yield
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise InputError(path, f"does not fit this run's network or state ({reason(exc)})", _START_OVER) from exc


def load_trained_model(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[AnytimeNet, dict[str, Any]]:
    """The trained network of a finished run, in eval mode on `device`, and the run's metrics.json.

    The architecture is rebuilt from the recorded config and the input shape of the dataset, then
    the checkpoint's weights are loaded strictly: a checkpoint made with another configuration than
    metrics.json records, or of another architecture, is an `InputError`."""
    run = Path(run_dir)
    checkpoint_path = run / CHECKPOINT
    metrics = read_metrics(run)
    cfg = metrics["config"]
    channels, size, classes = dataset_info(cfg["dataset"], cfg["data_root"])
    try:
        model = build_model(cfg["arch"], channels, classes, size, **cfg["arch_opts"])
    except (TypeError, ValueError) as exc:
        raise InputError(run / METRICS, f"its config does not build a model ({exc})",
                         "train the run again with a valid --arch and --arch-opt") from exc
    state = load_checkpoint(checkpoint_path, "cpu")
    if state["epoch"] != cfg["epochs"]:
        raise UnfinishedRunError(checkpoint_path, f"is from epoch {state['epoch']} of {cfg['epochs']}",
                                 "finish training first (run the same train command again)")
    if diff := identity_diff(state["identity"], {k: cfg.get(k) for k in state["identity"]}):
        raise InputError(checkpoint_path, f"was made with another configuration than {METRICS} records "
                                          f"(differs in: {', '.join(diff)})", "train the run again into a new --out")
    with checkpoint_fits(checkpoint_path):
        model.load_state_dict(state["model"])
    return model.to(device).eval(), metrics


class CheckpointMismatchError(InputError):
    """The run directory holds a checkpoint made with another configuration."""


def read_run_checkpoint(out: Path, device: torch.device, identity: dict[str, Any], restart_on_change: bool,
                        types: Mapping[str, type | tuple[type, ...]] = CHECKPOINT_TYPES) -> dict[str, Any] | None:
    """A run directory's checkpoint if it is one of this `identity`; one of another config is refused
    (or, with `restart_on_change`, ignored and later overwritten). Shared by every trainer."""
    path = out / CHECKPOINT
    if not path.exists():
        return None
    state = load_checkpoint(path, device, types)
    if diff := identity_diff(state["identity"], identity):
        if restart_on_change:
            print(f"{path} was made with another configuration ({', '.join(diff)} differ): starting over",
                  file=sys.stderr)
            return None
        raise CheckpointMismatchError(
            path, f"was made with a different configuration (differs in: {', '.join(diff)})",
            "use another output directory or delete the checkpoint to start over")
    return state
