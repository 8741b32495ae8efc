"""`python -m adaloss budgeted RUN_DIR` on tiny trained digits runs, and the tables E7 and latency build."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from adaloss import cli, tables
from adaloss.checkpoint import load_trained_model
from adaloss.train import TrainConfig, fit


def _train(tmp_path, name: str, **kw) -> str:
    out = tmp_path / name
    fit(TrainConfig(dataset="digits", out=str(out), arch="resann", arch_opts={"n": 2, "width": 4}, epochs=2,
                    update_per=5, progress=False, threads=1, data_root=str(tmp_path / "data"), **kw))
    return str(out)


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory) -> str:
    return _train(tmp_path_factory.mktemp("budgeted"), "run", val_fraction=0.25)


def test_budgeted_fits_on_the_held_out_split_and_meets_each_budget_there(held_out_run, capsys):
    run = Path(held_out_run)
    metrics, checkpoint_mtime = (run / "metrics.json").read_bytes(), os.stat(run / "checkpoint.pt").st_mtime_ns
    assert cli.main(["budgeted", held_out_run, "--budgets", "0.01", "0.4", "0.7", "1.0", "--threads", "1"]) == 0
    assert "below the first exit's" in capsys.readouterr().err  # 1% of the cost: no exit is that cheap
    rows = pd.read_csv(run / "budgeted.csv")
    assert rows["budget_fraction"].tolist() == [0.4, 0.7, 1.0]
    # on the split the thresholds were fit on, the average cost is the target, up to the shares
    # floor(p_k N): each of the K-1 early exits lets at most one image too few leave
    costs = pd.read_csv(run / "exits.csv")
    slack = (len(costs) - 1) * (costs["flops"].iloc[-1] - costs["flops"].iloc[0]) / 359  # 359 of 1437 held out
    assert ((rows["avg_flops_heldout"] - rows["budget"]).abs() <= slack).all()
    assert rows["avg_flops_heldout"].is_monotonic_increasing and rows["avg_flops"].is_monotonic_increasing
    assert (rows["thresholds_from"] == "held-out 0.25 of the training set").all()
    full = rows[rows["budget_fraction"] == 1.0].iloc[0]
    assert full["exits"].split()[-1] == "360" and full["error"] == pytest.approx(costs["error"].iloc[-1])
    assert sum(map(int, rows["exits"].iloc[0].split())) == 360  # every digits test image leaves somewhere
    # read from the checkpoint, never retrained
    assert os.stat(run / "checkpoint.pt").st_mtime_ns == checkpoint_mtime and (run / "metrics.json").read_bytes() == metrics


def test_budgeted_refuses_a_run_that_held_nothing_out_and_an_opt_network(tmp_path, capsys):
    assert cli.main(["budgeted", _train(tmp_path, "all_data")]) == 2
    assert "holds out no training images" in capsys.readouterr().err
    assert cli.main(["budgeted", _train(tmp_path, "opt", weighting="opt", opt_exit=3, val_fraction=0.2)]) == 2
    assert "OPT network" in capsys.readouterr().err
    assert cli.main(["budgeted", str(tmp_path / "all_data"), "--budgets", "1.5"]) == 2
    assert "fractions of the full cost in (0, 1]" in capsys.readouterr().err


def test_load_trained_model_refuses_an_unfinished_run(held_out_run, tmp_path):
    model, metrics = load_trained_model(held_out_run)
    assert not model.training and model.num_exits == 6 and metrics["config"]["val_fraction"] == 0.25
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes((Path(held_out_run) / "checkpoint.pt").read_bytes())
    metrics["config"]["epochs"] = 3
    (copy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RuntimeError, match="is from epoch 2 of 3"):
        load_trained_model(copy)
    with pytest.raises(FileNotFoundError, match="is not a finished run"):
        load_trained_model(tmp_path / "nowhere")


def test_latency_table_is_tidy_with_dataset_and_model_from_the_path(tmp_path):
    for model, ms in (("net", 1.0), ("other", 3.0)):
        path = tmp_path / "toy" / f"{model}.csv"
        path.parent.mkdir(exist_ok=True)
        path.write_text("exit,flops,params,ms_per_image_b1,ms_per_image_b64,device\n"
                        f"0,10,5,{ms},{ms / 10},cpu\n1,20,9,{2 * ms},{ms / 5},cpu\n")
    frame = tables.latency_table([tmp_path / "toy" / "other.csv", tmp_path / "toy" / "net.csv"])
    assert list(frame.columns) == ["dataset", "model", "exit", "flops", "params", "batch_size", "ms_per_image",
                                   "device"]
    net = frame[frame["model"] == "net"]
    assert net["batch_size"].tolist() == [1, 1, 64, 64] and net["ms_per_image"].tolist() == [1.0, 2.0, 0.1, 0.2]
    assert (frame["dataset"] == "toy").all() and len(frame) == 8
