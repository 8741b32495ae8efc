"""Faults: kill and resume, NaN losses, bad input, foreign checkpoints, half-written files, determinism.

Crashes are real subprocesses killed with SIGKILL. docs/reliability.md lists these faults and what
happens in each.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adaloss import atomic

TRAIN = [sys.executable, "-m", "adaloss", "train", "--dataset", "digits", "--arch", "resann",
         "--arch-opt", "n=2", "--arch-opt", "width=8", "--update-per", "5", "--threads", "1", "--no-progress"]


def train(out: Path, *extra: str, data_root: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [*TRAIN, "--out", str(out), *extra]
    if data_root is not None:
        cmd += ["--data-root", str(data_root)]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def checkpoint_epoch(path: Path) -> int:
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (FileNotFoundError, EOFError, RuntimeError):
        return 0


@pytest.mark.slow
def test_sigkill_mid_epoch_then_restart_gives_the_same_errors_as_an_uninterrupted_run(tmp_path):
    epochs = ["--epochs", "4"]
    train(tmp_path / "clean", *epochs)

    out = tmp_path / "killed"
    proc = subprocess.Popen([*TRAIN, "--out", str(out), *epochs], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while checkpoint_epoch(out / "checkpoint.pt") < 2 and time.time() < deadline:
        time.sleep(0.05)
    log_before = checkpoint_epoch(out / "checkpoint.pt")
    time.sleep(0.15)  # part-way into the next epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert 2 <= log_before < 4 and not (out / "exits.csv").exists()

    resumed = train(out, *epochs)
    assert "resumed digits/resann/adaloss/seed0 after epoch" in resumed.stderr
    assert (out / "exits.csv").read_bytes() == (tmp_path / "clean" / "exits.csv").read_bytes()


def test_restart_of_a_finished_run_does_not_retrain(tmp_path):
    train(tmp_path / "run", "--epochs", "1")
    stamp = (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns
    train(tmp_path / "run", "--epochs", "1")
    assert (tmp_path / "run" / "checkpoint.pt").stat().st_mtime_ns == stamp


def test_same_config_and_seed_give_byte_identical_outputs(tmp_path):
    for name in ("a", "b"):
        train(tmp_path / name, "--epochs", "1")
    for f in ("exits.csv", "weights.csv"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_nan_loss_stops_with_run_epoch_step_and_exit(tmp_path):
    result = train(tmp_path / "run", "--epochs", "2", "--lr", "1e12", check=False)
    assert result.returncode == 2
    msg = result.stderr
    assert "digits/resann/adaloss/seed0" in msg and "non-finite" in msg
    assert "epoch 1" in msg and "step " in msg and "exit " in msg
    assert not (tmp_path / "run" / "exits.csv").exists()


def test_checkpoint_from_a_different_config_is_refused_unless_restart_is_asked(tmp_path):
    train(tmp_path / "run", "--epochs", "1")
    result = train(tmp_path / "run", "--epochs", "1", "--lr", "0.05", check=False)
    assert result.returncode == 2 and "different configuration" in result.stderr and "lr" in result.stderr
    restarted = train(tmp_path / "run", "--epochs", "1", "--lr", "0.05", "--restart-on-change")
    assert "starting over" in restarted.stderr
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["identity"]["lr"] == 0.05


class _Payload:
    """A pickled object in a checkpoint: loading it with full unpickling would run its __reduce__."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.slow
def test_a_checkpoint_carrying_a_pickled_object_is_refused_and_runs_nothing(tmp_path):
    train(tmp_path / "run", "--epochs", "1")
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["log_rows"].append(_Payload())
    torch.save(state, path)
    result = subprocess.run([*TRAIN, "--out", str(tmp_path / "run"), "--epochs", "2"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "holds pickled Python objects" in result.stderr and str(path) in result.stderr
    assert not (tmp_path / "pwned.txt").exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dataset", "imagenet7"], "unknown dataset"),
        (["--arch", "vgg"], "vgg"),
        (["--weighting", "cosnt"], "unknown weighting 'cosnt'"),
        (["--epochs", "0"], "epochs must be a positive integer"),
        (["--epochs", "-3"], "epochs must be a positive integer"),
    ],
)
def test_bad_arguments_fail_before_training_with_a_clear_message(tmp_path, extra, message):
    result = train(tmp_path / "run", *extra, data_root=tmp_path, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_missing_dataset_offline_says_where_to_put_the_files(tmp_path):
    result = train(tmp_path / "run", "--dataset", "cifar10", "--no-download", data_root=tmp_path, check=False)
    assert result.returncode == 2
    assert "cifar-10" in result.stderr and str(tmp_path) in result.stderr


def _npz(path: Path, **arrays) -> None:
    rng = np.random.default_rng(0)
    base = dict(
        x_train=rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8), y_train=rng.integers(0, 3, 40),
        x_test=rng.integers(0, 255, (10, 8, 8, 1), dtype=np.uint8), y_test=rng.integers(0, 3, 10),
    )
    base.update(arrays)
    np.savez(path, **base)


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"x_train": np.zeros((40, 8, 8, 1), dtype=np.float32)}, "uint8"),
        ({"x_test": np.zeros((10, 9, 9, 1), dtype=np.uint8)}, "x_test images are"),
        ({"y_train": np.full(40, -1)}, "label"),
        ({"y_test": np.full(10, 7), "num_classes": 3}, "label"),
    ],
)
def test_bad_npz_content_is_named_before_training(tmp_path, arrays, message):
    _npz(tmp_path / "mine.npz", **arrays)
    result = train(tmp_path / "run", "--dataset", "mine", data_root=tmp_path, check=False)
    assert result.returncode == 2 and "mine.npz" in result.stderr and message in result.stderr.lower()


def test_truncated_npz_is_named(tmp_path):
    _npz(tmp_path / "mine.npz")
    raw = (tmp_path / "mine.npz").read_bytes()
    (tmp_path / "mine.npz").write_bytes(raw[: len(raw) // 2])
    result = train(tmp_path / "run", "--dataset", "mine", data_root=tmp_path, check=False)
    assert result.returncode == 2 and "mine.npz" in result.stderr


def test_a_crash_while_writing_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "table.csv"
    atomic.write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_write_rows_writes_what_pandas_writes_for_the_same_table(tmp_path):
    import pandas as pd

    rows = [{"a": 1, "b": 0.1 + 0.2, "c": "x,y"}, {"a": 2, "b": float("nan")}]
    atomic.write_rows(tmp_path / "rows.csv", rows, ["a", "b", "c"])
    atomic.write_csv(tmp_path / "frame.csv", pd.DataFrame(rows, columns=["a", "b", "c"]))
    assert (tmp_path / "rows.csv").read_text() == (tmp_path / "frame.csv").read_text()


@pytest.mark.slow
def test_sigkill_during_checkpoint_writes_never_leaves_a_torn_checkpoint(tmp_path):
    out = tmp_path / "run"
    for delay in (0.3, 0.6, 0.9):
        proc = subprocess.Popen([*TRAIN, "--out", str(out), "--epochs", "30"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay + 1.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / "checkpoint.pt").exists():
            torch.load(out / "checkpoint.pt", weights_only=True)  # loads: never half-written
