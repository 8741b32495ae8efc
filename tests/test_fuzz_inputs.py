"""Fuzzing the loaders of files from elsewhere: checkpoint.pt, metrics.json and a data set's .npz.

A seeded loop (no new dependency) feeds each loader random byte strings, truncations, byte flips,
splices and structured edits of a real file. Every case must load or raise `InputError`, the one
error type for unusable inputs: never another exception (a traceback for the user), and never a
pickled payload run. The payload here is `open(marker, "w")`: it leaves a file if it ever runs.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from adaloss.checkpoint import load_trained_model
from adaloss.data import load_dataset
from adaloss.errors import InputError
from adaloss.train import Run, TrainConfig, fit

SEED = 18
ODD_VALUES = [None, True, -1, 0, 2**40, 1.5, float("inf"), "", "x", "../up", [], [1, "a"], {}, {"a": None}]


class _Payload:
    """Unpickling this calls open(marker, "w"): the marker file shows that a payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_the_payload_leaves_its_marker_when_unpickled_unsafely(tmp_path):
    """The detector of the tests below works: full unpickling runs the payload."""
    pickle.loads(pickle.dumps(_Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished tiny run (1 epoch on 100 digits): its checkpoint.pt and metrics.json are the seeds."""
    root = tmp_path_factory.mktemp("fuzz")
    fit(TrainConfig(dataset="digits", out=str(root / "run"), arch_opts={"n": 1, "width": 4}, epochs=1,
                    update_per=5, progress=False, threads=1, train_subset=100, test_subset=50,
                    data_root=str(root / "data")))
    return root / "run"


def byte_cases(raw: bytes, rng: random.Random, n: int) -> Iterator[tuple[str, bytes]]:
    """n mutations of `raw`: truncations (0 bytes included), 1-8 random bytes changed, a random
    chunk spliced in, or random bytes of their own."""
    yield "empty", b""
    for i in range(n - 1):
        kind = ("truncated", "flipped", "spliced", "random")[i % 4]
        if kind == "truncated":
            yield kind, raw[: rng.randrange(len(raw))]
        elif kind == "flipped":
            data = bytearray(raw)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            yield kind, bytes(data)
        elif kind == "spliced":
            at = rng.randrange(len(raw))
            yield kind, raw[:at] + rng.randbytes(rng.randint(1, 64)) + raw[at:]
        else:
            yield kind, rng.randbytes(rng.randint(1, 400))


def odd_edits(value: dict, rng: random.Random, n: int) -> Iterator[tuple[str, dict]]:
    """n copies of a nested dict with one key deleted or given an odd value (wrong type, huge, a path)."""
    keys = [(k,) for k in value] + [(k, sub) for k, v in value.items() if isinstance(v, dict) for sub in v]
    for _ in range(n):
        edited = _copy(value)
        *parents, key = rng.choice(keys)
        target = edited
        for p in parents:
            target = target[p]
        if rng.random() < 0.3:
            del target[key]
            yield f"no {'.'.join(map(str, (*parents, key)))}", edited
        else:
            odd = rng.choice(ODD_VALUES)
            target[key] = odd
            yield f"{'.'.join(map(str, (*parents, key)))}={odd!r}", edited


def _copy(value: dict) -> dict:
    """A copy of the nested dicts of `value` (their leaves shared: the edits replace, never change, them)."""
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in value.items()}


def outcomes(cases: Iterator[tuple[str, object]], write: Callable[[object], None],
             load: Callable[[], object]) -> Counter:
    """Write each case, load it, and count the outcomes; fail on any exception but InputError."""
    seen: Counter = Counter()
    for what, content in cases:
        write(content)
        try:
            load()
            seen["loaded"] += 1
        except InputError:
            seen["InputError"] += 1
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"case {what!r}: {type(exc).__name__} escaped the loader: {exc}")
    return seen


def test_random_and_mutated_checkpoints_load_or_raise_input_error_and_never_run_a_payload(run_dir, tmp_path):
    rng = random.Random(SEED)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    path, marker = run / "checkpoint.pt", tmp_path / "payload_ran"
    raw = path.read_bytes()
    state = torch.load(path, weights_only=True)
    carrying = dict(state, log_rows=[*state["log_rows"], _Payload(marker)])
    torch.save(carrying, tmp_path / "carrying.pt")
    with_payload = (tmp_path / "carrying.pt").read_bytes()

    def save(content: object) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)

    cases = [("carrying a payload", with_payload), *byte_cases(raw, rng, 160), *byte_cases(with_payload, rng, 40),
             *odd_edits(state, rng, 60),
             ("a tensor", torch.zeros(3)), ("a list", [1, 2]), ("another project's", {"state_dict": {}, "epoch": 1})]
    seen = outcomes(iter(cases), save, lambda: load_trained_model(run))
    print(f"checkpoint.pt: {len(cases)} cases, {dict(seen)}")
    assert seen["InputError"] > len(cases) // 2 and not marker.exists()


def test_structurally_edited_checkpoints_resume_or_raise_input_error(run_dir, tmp_path):
    """The same edits through training's resume, which loads the optimiser, weighting, loader and
    RNG states too (each case builds a Run, so fewer cases)."""
    rng = random.Random(SEED + 1)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    path = run / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    config = json.loads((run / "metrics.json").read_text())["config"]
    cases = list(odd_edits(state, rng, 40))
    seen = outcomes(iter(cases), lambda content: torch.save(content, path),
                    lambda: Run(TrainConfig(**{**config, "out": str(run)})).try_resume())
    print(f"checkpoint.pt through resume: {len(cases)} cases, {dict(seen)}")
    assert seen["InputError"] > len(cases) // 2


def test_random_and_mutated_metrics_json_load_or_raise_input_error(run_dir, tmp_path):
    rng = random.Random(SEED + 2)
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    path = run / "metrics.json"
    raw = path.read_bytes()
    metrics = json.loads(raw)

    def save(content: object) -> None:
        path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())

    cases = [*byte_cases(raw, rng, 100), *odd_edits(metrics, rng, 80), ("a list", [metrics]), ("deep", b"[" * 10**5)]
    seen = outcomes(iter(cases), save, lambda: load_trained_model(run))
    print(f"metrics.json: {len(cases)} cases, {dict(seen)}")
    assert seen["InputError"] > len(cases) // 2


def test_random_and_mutated_npz_load_or_raise_input_error_and_never_run_a_payload(tmp_path):
    rng = random.Random(SEED + 3)
    data = np.random.default_rng(0)
    arrays = dict(x_train=data.integers(0, 256, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 4,
                  x_test=data.integers(0, 256, (12, 8, 8), dtype=np.uint8), y_test=np.arange(12) % 4)
    np.savez(tmp_path / "good.npz", **arrays)
    marker = tmp_path / "payload_ran"
    carrying = np.empty(1, dtype=object)
    carrying[0] = _Payload(marker)
    np.savez(tmp_path / "carrying.npz", **arrays, num_classes=carrying)
    path = tmp_path / "fuzz.npz"

    def save(content: object) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            np.savez(path, **content)

    def odd_arrays() -> Iterator[tuple[str, dict]]:
        for _ in range(40):
            key = rng.choice([*arrays, "num_classes", "crop_pad", "flip"])
            odd = rng.choice([np.zeros(0), np.zeros((2, 2, 2, 2, 2), np.uint8), np.array(2**62), np.array(-5),
                              np.full(40, 2**31 - 1), np.array(["a", "b"]), np.ones(40, bool), np.float16(1)])
            yield f"{key}={odd.dtype}{odd.shape}", {**arrays, key: odd}

    cases = [("carrying a payload", (tmp_path / "carrying.npz").read_bytes()),
             *byte_cases((tmp_path / "good.npz").read_bytes(), rng, 120),
             *byte_cases((tmp_path / "carrying.npz").read_bytes(), rng, 40), *odd_arrays()]
    seen = outcomes(iter(cases), save, lambda: load_dataset("fuzz", tmp_path))
    print(f"npz: {len(cases)} cases, {dict(seen)}")
    assert seen["InputError"] > len(cases) // 2 and not marker.exists()
