"""The study's tables (adaloss.tables): interface columns, OPT pairing, byte-stable output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from adaloss import cli, tables

FLOPS = [10, 20, 30, 40]  # one toy model with 4 exits at 1/4, 1/2, 3/4, 1 of its cost: exits 0, 1, 2, 3


def _exits(weighting: str, seed: int, errors: list[float], exits: list[int] | None = None,
           flops: list[int] = FLOPS) -> pd.DataFrame:
    exits = list(range(len(errors))) if exits is None else exits
    return pd.DataFrame({"dataset": "toy", "model": "net", "weighting": weighting, "seed": seed, "exit": exits,
                         "flops": [flops[k] for k in exits], "own_head_flops": [flops[k] - k for k in exits],
                         "params": 0, "error": errors, "ece": [e / 10 for e in errors], "val_error": errors})


def _study(seeds=(0, 1)) -> pd.DataFrame:
    """CONST, AdaLoss and OPT per seed; each seed's OPT has its own errors (final: 10 + s), so OPT
    averaged over seeds would give other relative increases than OPT paired seed by seed."""
    frames = []
    for s in seeds:
        frames += [_exits("const", s, [40.0 + s, 30.0, 20.0, 12.0]), _exits("adaloss", s, [50.0, 30.0, 16.0, 10.5 + s])]
        frames += [_exits("opt", s, [e], [k]) for k, e in enumerate([40.0 + s, 25.0, 16.0, 10.0 + s])]
    return pd.concat(frames, ignore_index=True)


def test_anytime_errors_has_the_interface_columns_sorted():
    frame = tables.anytime_errors(_study().sample(frac=1, random_state=0))
    assert list(frame.columns) == ["dataset", "model", "weighting", "seed", "exit", "flops", "own_head_flops", "error",
                                   "ece"]
    assert frame.equals(frame.sort_values(tables.ANYTIME_COLUMNS[:5]).reset_index(drop=True))


def test_a_run_present_twice_is_an_error():
    with pytest.raises(ValueError, match="trained twice"):
        tables.anytime_errors(pd.concat([_study(), _exits("const", 0, [1.0])]))


def test_relative_to_opt_pairs_seeds_and_averages():
    means, seeds = tables.relative_to_opt(tables.anytime_errors(_study()))
    assert list(means.columns) == ["dataset", "model", "weighting", "budget", "cost_fraction", "rel_increase_pct"]
    ada = seeds[(seeds["weighting"] == "adaloss") & (seeds["budget"] == 1.0)]
    # seed 0: 10.5 vs its OPT's 10 -> +5%; seed 1: 11.5 vs its OPT's 11 -> +4.545% (OPT averaged
    # over seeds, 10.5, would give 0% and +9.5%)
    assert ada["rel_increase_pct"].tolist() == pytest.approx([5.0, 100 / 22])
    row = means[(means["weighting"] == "adaloss") & (means["budget"] == 1.0)]
    assert row["rel_increase_pct"].item() == pytest.approx((5.0 + 100 / 22) / 2)
    const = means[(means["weighting"] == "const") & (means["budget"] == 0.25)]
    assert const["rel_increase_pct"].item() == 0.0  # 40 vs 40 and 41 vs 41
    assert means["cost_fraction"].drop_duplicates().tolist() == [0.25, 0.5, 0.75, 1.0]


def test_relative_to_opt_picks_the_exit_nearest_each_share_of_the_cost():
    # 5 exits at 40, 50, 60, 70, 100 % of the cost: 1/4 -> exit 0 (40 %), 1/2 -> exit 1, 3/4 -> exit 3;
    # the index rule floor(f * 4) would have taken exits 1, 2, 3, 4
    flops = [40, 50, 60, 70, 100]
    study = pd.concat([_exits("const", 0, [50.0, 40.0, 30.0, 20.0, 10.0], flops=flops)]
                      + [_exits("opt", 0, [e], [k], flops=flops) for k, e in ((0, 25.0), (1, 20.0), (3, 10.0), (4, 5.0))],
                      ignore_index=True)
    _, seeds = tables.relative_to_opt(study)
    assert seeds["exit"].tolist() == [0, 1, 3, 4]
    assert seeds["cost_fraction"].tolist() == pytest.approx([0.4, 0.5, 0.7, 1.0])
    assert seeds["rel_increase_pct"].tolist() == pytest.approx([100.0, 100.0, 100.0, 100.0])


def test_zero_opt_error_leaves_the_ratio_empty():
    study = _study(seeds=(0,))
    study.loc[(study["weighting"] == "opt") & (study["exit"] == 3), "error"] = 0.0
    _, seeds = tables.relative_to_opt(study)
    assert seeds.loc[seeds["budget"] == 1.0, "rel_increase_pct"].isna().all()


def test_runs_table_shares_a_packed_jobs_seconds_among_its_seeds_by_training_time(tmp_path):
    paths = [_run_dir(tmp_path, "const", s, [1.0]) for s in (0, 1)]
    second = json.loads(paths[1].read_text())
    paths[1].write_text(json.dumps({**second, "train_seconds": 4.5}))  # seed 0 trained 1.5 s, seed 1 4.5 s
    bench = tmp_path / "bench" / "runs" / "toy" / "net" / "const.tsv"  # one job trained both seeds
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\n12.0\t0:00:12\t100\n")
    runs = tables.runs_table(paths, [bench])
    assert runs["job_seconds"].tolist() == pytest.approx([3.0, 9.0])  # 12 s split 1.5 : 4.5, summing to 12


def test_a_missing_opt_network_is_named():
    study = _study(seeds=(0,))
    study = study[~((study["weighting"] == "opt") & (study["exit"] == 2))]
    with pytest.raises(ValueError, match="no OPT network for exit 2"):
        tables.relative_to_opt(study)


def _run_dir(root: Path, weighting: str, seed: int, weights: list[float], opt_exit: int | None = None,
             pool: str = "runs") -> Path:
    run = root / pool / "toy" / "net" / (f"opt{opt_exit}" if weighting == "opt" else weighting) / f"seed{seed}"
    run.mkdir(parents=True)
    config = {"dataset": "toy", "model_name": "net", "weighting": weighting, "seed": seed, "opt_exit": opt_exit,
              "arch": "resann", "arch_opts": {"n": 1}, "epochs": 2, "batch_size": 8, "update_per": 5,
              "val_fraction": 0.1, "scale": "sum"}
    metrics = {"config": config, "final_weights": weights, "train_seconds": 1.5, "device": "cpu",
               "device_name": "x86_64", "torch": "2", "bf16": False}
    (run / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame({"step": [5, 5, 10, 10], "epoch": 1, "exit": [0, 1, 0, 1], "weight": [1, 1, 0.5, 1]}).to_csv(
        run / "weights.csv", index=False)
    return run / "metrics.json"


def test_final_weights_and_trajectories(tmp_path):
    paths = [_run_dir(tmp_path, "adaloss", s, [0.3 + s, 1.0]) for s in (1, 0)]
    weights = tables.final_weights(paths)
    assert list(weights.columns) == ["dataset", "model", "seed", "exit", "weight"]
    assert weights["weight"].tolist() == [0.3, 1.0, 1.3, 1.0]
    traj = tables.weight_trajectories(paths)
    assert len(traj) == 8 and traj["seed"].tolist() == [0] * 4 + [1] * 4
    with pytest.raises(ValueError, match="not an AdaLoss"):
        tables.final_weights([_run_dir(tmp_path, "const", 0, [1.0, 1.0])])


def test_runs_table_matches_each_run_to_its_own_pools_benchmark(tmp_path):
    metrics = _run_dir(tmp_path, "opt", 0, [1.0], opt_exit=1)
    eann = _run_dir(tmp_path, "opt", 0, [1.0], opt_exit=1, pool="eann_runs")  # the same labels in another pool
    benches = []
    for pool, seconds in (("runs", 7.25), ("eann_runs", 3.5)):
        benches.append(tmp_path / "bench" / pool / "toy" / "net" / "opt1" / "seed0.tsv")
        benches[-1].parent.mkdir(parents=True)
        benches[-1].write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:07\t100\n")
    runs = tables.runs_table([metrics, eann], benches)
    assert runs[["pool", "weighting", "train_seconds", "job_seconds"]].values.tolist() == [
        ["eann_runs", "opt1", 1.5, 3.5], ["runs", "opt1", 1.5, 7.25]]


def test_runs_table_shares_a_packs_seconds_equally_among_its_runs(tmp_path):
    from adaloss.plan import packs_of

    runs = [("adaloss", 0), ("adaloss", 1), ("const", 0), ("const", 1), ("opt", 0)]
    paths = [_run_dir(tmp_path, w, s, [1.0], opt_exit=1 if w == "opt" else None) for w, s in runs]
    assert [len(p) for p in packs_of(runs, 3)] == [3, 2]  # as the plan packs them with train.pack 3
    benches = []
    for i, seconds in enumerate((9.0, 4.0)):
        benches.append(tmp_path / "bench" / "runs" / "toy" / "net" / f"pack{i}.tsv")
        benches[-1].parent.mkdir(parents=True, exist_ok=True)
        benches[-1].write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:09\t100\n")
    table = tables.runs_table(paths, benches)
    assert table[["weighting", "seed", "job_seconds"]].values.tolist() == [
        ["adaloss", 0, 3.0], ["adaloss", 1, 3.0], ["const", 0, 3.0], ["const", 1, 2.0], ["opt1", 0, 2.0]]


def test_a_scaled_weighting_is_labelled_with_its_scale(tmp_path):
    path = _run_dir(tmp_path, "const", 0, [1.0, 1.0])
    metrics = json.loads(path.read_text())
    metrics["config"]["scale"] = "log2"
    path.write_text(json.dumps(metrics))
    assert tables.runs_table([path])["weighting"].tolist() == ["const_log2"]


def test_difficulty_orders_by_opt_final_error():
    hard = _study(seeds=(0,)).assign(dataset="hard")
    hard["error"] += 10
    order = tables.difficulty(pd.concat([hard, _study(seeds=(0,))]))
    assert order["dataset"].tolist() == ["toy", "hard"] and order["rank"].tolist() == [0, 1]


def test_small_vs_large_names_a_missing_curve():
    with pytest.raises(ValueError, match="large model 'net' with 'linear'"):
        tables.small_vs_large(_study(), [("net", "net")], "adaloss", "linear")


def test_small_vs_large_carries_the_small_anns_control_with_the_large_ones_scheme():
    frame = tables.small_vs_large(_study(), [("net", "net")], "adaloss", "const")
    assert frame.groupby("role")["weighting"].first().to_dict() == {"control": "const", "large": "const",
                                                                    "small": "adaloss"}
    assert set(frame["pair"]) == {"net vs net"}


def test_paper_tables_cite_arxiv_v3_table_3a_and_3b():
    paper = tables.paper_table()
    assert set(paper["weighting"]) == {"const", "linear", "adaloss"}
    assert paper["source"].str.contains("arXiv v3, Table 3a").all() and not paper["source"].str.contains("UNVERIFIED").any()
    final = paper[paper["budget"] == 1.0].set_index("weighting")["rel_increase_pct"]
    assert final.to_dict() == {"adaloss": 2.73, "const": 18.90, "linear": 12.65}
    ilsvrc = tables.paper_ilsvrc_table()
    assert ilsvrc["source"].str.contains("arXiv v3, Table 3b").all()
    assert len(ilsvrc) == 6 * 4 and set(ilsvrc["model"]) == {"ResANN50", "DenseANN169", "MSDNet38"}


def test_cli_output_is_byte_identical_whatever_the_input_order(tmp_path):
    paths = []
    for i, (_, frame) in enumerate(_study().groupby(["weighting", "seed", "exit"])):
        paths.append(str(tmp_path / f"run{i}.csv"))
        frame.to_csv(paths[-1], index=False)
    outs = []
    for order in (paths, paths[::-1]):
        out = tmp_path / f"anytime{len(outs)}.csv"
        assert cli.main(["tables", "anytime", "--exits", *order, "--out", str(out)]) == 0
        rel = tmp_path / f"rel{len(outs)}.csv"
        assert cli.main(["tables", "relative", "--anytime", str(out), "--out", str(rel),
                         "--seeds-out", str(tmp_path / f"seeds{len(outs)}.csv")]) == 0
        outs.append((out.read_bytes(), rel.read_bytes()))
    assert outs[0] == outs[1]
    assert b"10.5" in outs[0][0]


def _lm_exits(weighting: str, seed: int, bpb: list[float], exits: list[int] | None = None) -> pd.DataFrame:
    """An E8 run's exits.csv rows (python -m adaloss train-lm), on the toy costs FLOPS."""
    exits = list(range(len(bpb))) if exits is None else exits
    return pd.DataFrame({"dataset": "stdlib", "model": "tf", "weighting": weighting, "seed": seed, "exit": exits,
                         "flops": [FLOPS[k] for k in exits], "own_head_flops": [FLOPS[k] for k in exits], "params": 9,
                         "bpb": bpb, "val_bpb": [b + 0.1 for b in bpb], "ms_per_token": 0.25})


def test_the_lm_tables_give_bits_per_byte_and_their_increase_over_opt_seed_by_seed(tmp_path):
    frames = [_lm_exits("adaloss", s, [4.0, 3.0, 2.5, 2.2 + s]) for s in (0, 1)]
    frames += [_lm_exits("opt", s, [b], [k]) for s in (0, 1) for k, b in enumerate([3.2, 2.6, 2.4, 2.0 + s])]
    paths = []
    for i, frame in enumerate(frames):
        paths.append(str(tmp_path / f"run{i}" / "exits.csv"))
        Path(paths[-1]).parent.mkdir()
        frame.to_csv(paths[-1], index=False)
    out, rel = tmp_path / "lm_anytime.csv", tmp_path / "lm_relative_to_opt.csv"
    assert cli.main(["tables", "lm", "--exits", *paths[::-1], "--out", str(out), "--relative-out", str(rel)]) == 0
    lm = pd.read_csv(out)
    assert list(lm.columns) == tables.LM_ANYTIME_COLUMNS and len(lm) == 2 * 4 + 2 * 4
    relative = pd.read_csv(rel)
    assert {"bpb", "opt_bpb", "seed"} <= set(relative.columns)
    final = relative[relative["budget"] == 1.0].set_index("seed")["rel_increase_pct"]
    assert final.to_dict() == pytest.approx({0: 10.0, 1: 100 * 3.2 / 3.0 - 100})  # seed s against OPT's seed s


def test_runs_table_holds_lm_runs_with_their_steps_and_the_bytes_they_read(tmp_path):
    run = tmp_path / "lm_runs" / "stdlib" / "tf" / "opt3" / "seed1"
    run.mkdir(parents=True)
    config = {"corpus": "stdlib", "model_name": "tf", "weighting": "opt", "opt_exit": 3, "scale": "sum", "seed": 1,
              "layers": 4, "width": 16, "heads": 2, "context": 8, "shared_head": True, "steps": 20, "batch_size": 4,
              "update_per": 10, "val_fraction": 0.05}
    data = {"corpus": "stdlib", "source": "/usr/lib/python3.11", "split_by": "file", "python": "3.11",
            "files": {"train": 9, "val": 1, "test": 2}, "bytes": {"train": 900, "val": 100, "test": 200},
            "sha256": {"train": "a" * 64, "val": "b" * 64, "test": "c" * 64}}
    (run / "metrics.json").write_text(json.dumps({"config": config, "train_seconds": 2.5, "device": "cpu",
                                                  "device_name": "x86_64", "torch": "2", "bf16": False, "data": data}))
    bench = tmp_path / "bench" / "lm_runs" / "stdlib" / "tf" / "opt3" / "seed1.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\n6.0\t0:00:06\t100\n")
    image = _run_dir(tmp_path, "const", 0, [1.0])
    table = tables.runs_table([run / "metrics.json", image], [bench]).set_index("pool")
    lm = table.loc["lm_runs"]
    assert (lm["dataset"], lm["weighting"], lm["arch"], lm["steps"], lm["job_seconds"]) == (
        "stdlib", "opt3", "transformer", 20, 6.0)
    assert json.loads(lm["arch_opts"]) == {"layers": 4, "width": 16, "heads": 2, "context": 8, "shared_head": True}
    assert lm["data"] == ("stdlib (/usr/lib/python3.11, Python 3.11, split by file): train 9 files 900 B aaaaaaaaaaaa, "
                          "val 1 files 100 B bbbbbbbbbbbb, test 2 files 200 B cccccccccccc")
    assert math.isnan(lm["epochs"]) and table.loc["runs", "epochs"] == 2 and table.loc["runs", "data"] == ""
