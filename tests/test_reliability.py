"""Faults: kill and resume, NaN losses, bad input, foreign checkpoints, half-written files, determinism.

Crashes are real subprocesses killed with SIGKILL. docs/reliability.md lists these faults and what
happens in each.
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from adaloss import atomic, budgeted, cli, rundir
from adaloss import train as train_module
from adaloss.checkpoint import CHECKPOINT_TYPES, CONFIG_TYPES, load_checkpoint, read_metrics
from adaloss.errors import InputError

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


@pytest.mark.slow
def test_sigkill_of_a_seed_pack_loses_at_most_one_epoch_of_one_run_and_ends_as_uninterrupted(tmp_path):
    """`train --seeds 0 1` killed while seed 1 trains: seed 0 stays finished and is not retrained,
    seed 1 resumes from its last epoch, and both end byte-identical to runs never killed."""
    seeds = ["--epochs", "3", "--seeds", "0", "1"]
    train(tmp_path / "clean" / "seed{seed}", *seeds)
    out = tmp_path / "killed"
    proc = subprocess.Popen([*TRAIN, "--out", str(out / "seed{seed}"), *seeds], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while checkpoint_epoch(out / "seed1" / "checkpoint.pt") < 1 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert (out / "seed0" / "exits.csv").exists() and not (out / "seed1" / "exits.csv").exists()
    finished = (out / "seed0" / "checkpoint.pt").stat().st_mtime_ns

    resumed = train(out / "seed{seed}", *seeds)
    assert "resumed digits/resann/adaloss/seed1 after epoch" in resumed.stderr
    assert (out / "seed0" / "checkpoint.pt").stat().st_mtime_ns == finished  # seed 0 is not retrained
    for seed in ("seed0", "seed1"):
        assert (out / seed / "exits.csv").read_bytes() == (tmp_path / "clean" / seed / "exits.csv").read_bytes()


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
    assert "a pickled Python object" in result.stderr and str(path) in result.stderr
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


# ---------------------------------------------------------------- unusable inputs (issue 18)
# Each bad input is fed to `python -m adaloss` in-process (cli.main, what the command runs): it
# must end in exit code 2 and one line naming the file, with no file of ours or the user's changed,
# and (where the `no_compute` fixture is used) before the data set is even read.

TINY = ["--arch-opt", "n=1", "--arch-opt", "width=4", "--epochs", "1", "--update-per", "5", "--no-progress"]
FINISHED = ["--dataset", "digits", *TINY, "--val-fraction", "0.25", "--train-subset", "200", "--test-subset", "100"]
RUN_COMMANDS = ["train", "evaluate", "budgeted"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run holding out a validation split (so `budgeted` takes it), trained once."""
    root = tmp_path_factory.mktemp("finished")
    assert cli.main(["train", *FINISHED, "--data-root", str(root / "data"), "--out", str(root / "run")]) == 0
    return root / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def no_compute(monkeypatch):
    """Reading a data set, the first compute of every command, fails the test: the refusal must come first."""
    def load_dataset(*args, **kwargs):
        raise AssertionError("the data set was read before the bad input was refused")

    for module in (train_module, budgeted):
        monkeypatch.setattr(module, "load_dataset", load_dataset)


def command(name: str, run_dir: Path, finished: Path, *extra: object) -> list[object]:
    """`train` resuming `run_dir` (the finished run's flags and data), or `evaluate` / `budgeted` of it."""
    if name == "train":
        return ["train", *FINISHED, "--data-root", finished.parent / "data", "--out", run_dir, *extra]
    return [name, run_dir, "--device", "cpu", *extra]


def snapshot(*folders: Path) -> dict[Path, bytes]:
    """Every file under `folders`, with its bytes."""
    return {p: p.read_bytes() for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(argv: list[object], capsys, names: object, *untouched: Path) -> str:
    """Run the CLI: exit code 2, one line on stderr naming `names`, every file under `untouched` as before."""
    before = snapshot(*untouched)
    code = cli.main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert str(names) in lines[0], lines[0]
    assert snapshot(*untouched) == before
    return lines[0]


@pytest.mark.parametrize("name", RUN_COMMANDS)
def test_a_truncated_checkpoint_is_one_line_naming_it(run, finished, capsys, no_compute, name):
    path = run / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    line = refused(command(name, run, finished), capsys, path, run)
    assert "not a readable checkpoint, truncated or corrupt" in line and "delete it" in line


BAD_CHECKPOINTS = {
    "empty": (b"", "truncated or corrupt (EOFError)"),
    "a plain tensor": (torch.zeros(3), "holds a Tensor, not an adaloss checkpoint"),
    "a dict without our keys": ({"weights": torch.zeros(3)}, "is not an adaloss checkpoint (no identity, epoch, model"),
    "another project's": ({"state_dict": {}, "epoch": 3, "model": {"w": torch.zeros(2)}},
                          "is not an adaloss checkpoint (no identity, optimizer"),
}


def _write_checkpoint(path: Path, content: object) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


@pytest.mark.parametrize("name", RUN_COMMANDS)
@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_an_empty_plain_or_foreign_checkpoint_is_one_line_naming_it(run, finished, capsys, no_compute, case, name):
    content, message = BAD_CHECKPOINTS[case]
    _write_checkpoint(run / "checkpoint.pt", content)
    assert message in refused(command(name, run, finished), capsys, run / "checkpoint.pt", run)


@pytest.mark.parametrize("extra", [[], ["--restart-on-change"]])
def test_another_projects_checkpoint_in_out_is_refused_even_with_restart_on_change(finished, tmp_path, capsys,
                                                                                    no_compute, extra):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    _write_checkpoint(theirs / "checkpoint.pt", BAD_CHECKPOINTS["another project's"][0])
    (theirs / "notes.txt").write_text("their notes\n")
    line = refused(command("train", theirs, finished, *extra), capsys, theirs / "checkpoint.pt", theirs)
    assert "is not an adaloss checkpoint" in line


def _claim_width(run: Path, width: int, in_checkpoint: bool) -> None:
    """Make metrics.json (and, if `in_checkpoint`, the checkpoint's identity) say width `width`;
    the weights stay those of width 4."""
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["config"]["arch_opts"]["width"] = width
    (run / "metrics.json").write_text(json.dumps(metrics))
    if in_checkpoint:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        state["identity"]["arch_opts"]["width"] = width
        torch.save(state, run / "checkpoint.pt")


@pytest.mark.parametrize("name", ["evaluate", "budgeted"])
def test_a_checkpoint_of_another_architecture_than_metrics_json_is_one_line(run, finished, capsys, no_compute, name):
    _claim_width(run, 8, in_checkpoint=False)
    line = refused(command(name, run, finished), capsys, run / "checkpoint.pt", run)
    assert "configuration" in line and "arch_opts" in line


@pytest.mark.parametrize("name", RUN_COMMANDS)
def test_weights_of_other_shapes_than_the_checkpoint_claims_are_one_line(run, finished, capsys, name):
    """The identity agrees with metrics.json, but the weights do not fit the network it describes:
    torch's 28-line list of mismatched tensors becomes one line (the data set is read first here,
    as the network's input shape comes from it)."""
    _claim_width(run, 8, in_checkpoint=True)
    argv = command(name, run, finished)
    if name == "train":
        argv[argv.index("width=4")] = "width=8"
    line = refused(argv, capsys, run / "checkpoint.pt", run)
    assert "does not fit this run's network" in line and "size mismatch" in line


@pytest.mark.parametrize("name", ["evaluate", "budgeted"])
@pytest.mark.parametrize("damage,message", [
    (lambda text: text[: len(text) // 2], "not readable JSON, truncated or corrupt"),
    (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "config"}), "holds no run config"),
    (lambda text: text.replace('"epochs": 1', '"epochs": "1"'), "config.epochs is '1', expected int"),
], ids=["truncated", "without config", "epochs a string"])
def test_a_truncated_or_configless_metrics_json_is_one_line_naming_it(run, finished, capsys, no_compute, name,
                                                                     damage, message):
    path = run / "metrics.json"
    path.write_text(damage(path.read_text()))
    assert message in refused(command(name, run, finished), capsys, path, run)


def _tiny_npz(path: Path, **arrays) -> None:
    base = dict(x_train=np.zeros((12, 8, 8), np.uint8), y_train=np.arange(12) % 3,
                x_test=np.zeros((6, 8, 8), np.uint8), y_test=np.arange(6) % 3)
    np.savez(path, **{**base, **arrays})


def _object_labels() -> np.ndarray:
    labels = np.empty(12, dtype=object)
    labels[:] = list(range(12))
    return labels


@pytest.mark.parametrize("arrays,message", [
    ({"y_train": np.r_[np.arange(11) % 3, 100_000]}, "y_train has label 100000"),
    ({"y_train": np.r_[np.arange(11) % 3, 2**31 - 5]}, "y_train has label 2147483643"),
    ({"y_train": np.zeros(12, np.int64), "y_test": np.zeros(6, np.int64)}, "y_train holds a single class"),
    ({"y_train": _object_labels()}, "holds pickled Python objects"),
], ids=["stray label 100000", "label near 2**31", "single class", "object array"])
def test_a_bad_npz_stops_train_with_one_line_naming_it_before_training(tmp_path, capsys, arrays, message):
    data, out = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    _tiny_npz(data / "mine.npz", **arrays)
    line = refused(["train", "--dataset", "mine", *TINY, "--data-root", data, "--out", out], capsys,
                   data / "mine.npz", tmp_path)
    assert message in line and "corrupt" not in line
    assert not (out / "checkpoint.pt").exists()


def test_an_out_that_is_a_file_or_under_a_file_is_refused_before_any_compute(finished, tmp_path, capsys, no_compute):
    mine = tmp_path / "mine.txt"
    mine.write_text("my file\n")
    assert "is a file, not a directory" in refused(command("train", mine, finished), capsys, mine, tmp_path)
    line = refused(command("train", mine / "run", finished), capsys, mine / "run", tmp_path)
    assert "cannot be written (Not a directory)" in line


def test_an_unwritable_out_is_refused_before_any_compute(finished, tmp_path, capsys, no_compute, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:
        # root writes into a read-only directory regardless of its mode, so the kernel's refusal
        # that every other user gets is simulated where our probe would meet it
        def refuse(folder: Path) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))

        monkeypatch.setattr(rundir, "_write_probe", refuse)
    else:
        locked.chmod(0o500)
    try:
        line = refused(command("train", locked, finished), capsys, locked, tmp_path)
    finally:
        locked.chmod(0o700)
    assert "cannot be written (Permission denied)" in line


@pytest.mark.parametrize("theirs", ["metrics.json", "log.csv"])
def test_an_out_that_is_not_an_adaloss_run_is_refused_and_its_files_never_overwritten(finished, tmp_path, capsys,
                                                                                      no_compute, theirs):
    out = tmp_path / "results"
    out.mkdir()
    (out / theirs).write_text("the user's own\n")
    line = refused(command("train", out, finished), capsys, out, out)
    assert f"not an adaloss run directory (no checkpoint.pt) and holds {theirs}" in line and "--force" in line


def test_force_writes_the_run_into_a_non_run_directory_and_leaves_other_files_alone(finished, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "log.csv").write_text("the user's own\n")
    (out / "notes.txt").write_text("notes\n")
    assert cli.main([str(a) for a in command("train", out, finished, "--force")]) == 0
    assert (out / "notes.txt").read_text() == "notes\n"  # a name we do not write: untouched
    assert (out / "log.csv").read_text().startswith("epoch,") and (out / "checkpoint.pt").is_file()


def test_our_own_leftover_temp_file_does_not_make_a_directory_foreign(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    rundir.prepare_run_dir(tmp_path)
    (tmp_path / "user.txt").write_text("x")
    with pytest.raises(InputError, match="not an adaloss run directory"):
        rundir.prepare_run_dir(tmp_path)
    rundir.prepare_run_dir(tmp_path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".checkpoint.pt.abc123.tmp", "user.txt"]


@pytest.mark.parametrize("flags,name", [
    (["train", "--dataset", "../outside"], "../outside"),
    (["train", "--dataset", "{tmp}/outside"], "{tmp}/outside"),
    (["train", "--dataset", "digits", "--model-name", "../up"], "../up"),
    (["costs", "--dataset", "../outside"], "../outside"),
], ids=["relative path", "absolute path", "model name", "costs"])
def test_a_dataset_or_model_name_that_is_a_path_is_refused_and_nothing_is_read_or_written(tmp_path, capsys,
                                                                                          flags, name):
    _tiny_npz(tmp_path / "outside.npz")  # what --dataset ../outside would reach from tmp_path/data
    out = tmp_path / "run"
    argv = [a.format(tmp=tmp_path) for a in flags] + ["--data-root", tmp_path / "data"]
    line = refused(argv + (["--out", out] if flags[0] == "train" else []), capsys, repr(name.format(tmp=tmp_path)),
                   tmp_path)
    assert "not a valid" in line and not out.exists()


def test_budgeted_out_that_is_a_directory_is_refused_before_any_compute(run, capsys, no_compute):
    line = refused(["budgeted", run, "--out", run], capsys, run, run)
    assert "is a directory" in line


def test_the_validated_checkpoint_and_metrics_fields_are_those_training_writes(finished):
    """load_checkpoint and read_metrics check a list of fields and types; it must stay the list
    `Run.state_dict` and `TrainConfig` write, or a real run would be refused."""
    state = torch.load(finished / "checkpoint.pt", weights_only=True)
    assert set(state) == set(CHECKPOINT_TYPES)
    config = json.loads((finished / "metrics.json").read_text())["config"]
    hints = typing.get_type_hints(train_module.TrainConfig)
    for key, kind in CONFIG_TYPES.items():
        assert isinstance(config[key], kind) and key in hints, key
    load_checkpoint(finished / "checkpoint.pt")
    read_metrics(finished)
