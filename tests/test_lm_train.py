"""Tests for adaloss.lm_train: a tiny end-to-end run through the command line writing every file, a
run killed after its first checkpoint resuming to the same results bit for bit, OPT as the
truncated transformer trained for its last exit, the learning-rate schedule, bits per byte against
the uniform model's 8, and bad configurations refused before training. A 2-layer, 16-wide model on
20 kB of text keeps each test to a second or two."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adaloss import cli
from adaloss.checkpoint import load_checkpoint
from adaloss.device import bf16_native
from adaloss.lm_train import (_HELP, LM_CHECKPOINT_TYPES, LM_EXIT_COLUMNS, LMConfig, LMRun, bits_per_byte, fit_lm,
                              lr_at)
from adaloss.models import build_model
from adaloss.step import ExitLosses
from adaloss.textdata import eval_windows
from adaloss.train import CheckpointMismatchError

TINY = dict(corpus="tiny", layers=2, width=16, heads=2, context=16, steps=6, batch_size=4, eval_every=2,
            eval_windows=8, warmup_steps=2, update_per=2, threads=1, progress=False, latency=False)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "tiny.txt").write_bytes(Path(os.__file__).read_bytes()[:20000])
    return root


def tiny(tmp_path: Path, data_root: Path, name: str = "run", **changes: object) -> LMConfig:
    return LMConfig(out=str(tmp_path / name), data_root=str(data_root), **{**TINY, **changes})


def read_csv(path: Path, drop: tuple[str, ...] = ()) -> list[dict[str, str]]:
    with open(path) as fh:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(fh)]


def test_train_lm_command_writes_every_file_of_a_run(tmp_path, data_root, capsys):
    args = ["train-lm", "--out", str(tmp_path / "run"), "--data-root", str(data_root), "--weighting", "tt_sum_l",
            "--e-scale", "0.5", "--scale", "matched", "--latency"]
    for key, value in TINY.items():
        if key not in ("progress", "latency"):
            args += ["--" + key.replace("_", "-"), str(value)]
    assert cli.main(args + ["--no-progress"]) == 0
    assert "tiny/transformer/tt_sum_l_matched/seed0: test bits per byte per exit" in capsys.readouterr().out
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"checkpoint.pt", "log.csv", "exits.csv", "weights.csv", "metrics.json"}
    exits = read_csv(run / "exits.csv")
    assert list(exits[0]) == LM_EXIT_COLUMNS and [int(r["exit"]) for r in exits] == [0, 1]
    assert all(float(r["ms_per_token"]) > 0 and 0 < float(r["bpb"]) < 9 for r in exits)
    assert int(exits[1]["flops"]) == 2 * int(exits[0]["flops"])  # per token: two blocks and two heads
    log = read_csv(run / "log.csv")
    assert [int(r["step"]) for r in log] == [2, 4, 6] and "val_bpb_e1" in log[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["python"] and metrics["data"]["split_by"] == "position" and len(metrics["data"]["sha256"]) == 3
    assert metrics["final_weights"] == pytest.approx([2 * 0.5 / 3.5, 2 * 3 / 3.5])  # (0.5 * 1, 1 + 2) / 3.5, times K
    assert metrics["tokens_seen"] == 6 * 4 * 16 and metrics["latency_device"]


def test_every_config_field_is_a_flag_with_help():
    assert set(_HELP) == {f.name for f in dataclasses.fields(LMConfig)}


def test_the_checkpoint_holds_the_keys_and_types_resume_checks(tmp_path, data_root):
    fit_lm(tiny(tmp_path, data_root, steps=2))
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt", "cpu", LM_CHECKPOINT_TYPES)
    assert set(state) == set(LM_CHECKPOINT_TYPES)


class Killed(Exception):
    """Stands in for a kill right after a checkpoint was written."""


def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_results(tmp_path, data_root, monkeypatch,
                                                                             capsys):
    cfg = dict(weighting="adaloss")
    fit_lm(tiny(tmp_path, data_root, "whole", **cfg))
    save = LMRun.save_checkpoint

    def save_then_die(self: LMRun) -> None:
        save(self)
        raise Killed

    monkeypatch.setattr(LMRun, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        fit_lm(tiny(tmp_path, data_root, "killed", **cfg))
    monkeypatch.setattr(LMRun, "save_checkpoint", save)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt", "cpu", LM_CHECKPOINT_TYPES)["step"] == 2
    fit_lm(tiny(tmp_path, data_root, "killed", **cfg))
    assert "resumed tiny/transformer/adaloss/seed0 after step 2" in capsys.readouterr().err
    whole, resumed = tmp_path / "whole", tmp_path / "killed"
    for name, drop in (("log.csv", ("seconds",)), ("exits.csv", ()), ("weights.csv", ())):
        assert read_csv(resumed / name, drop) == read_csv(whole / name, drop), name
    a, b = (load_checkpoint(p / "checkpoint.pt", "cpu", LM_CHECKPOINT_TYPES)["model"] for p in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_opt_trains_the_truncated_transformer_for_its_last_exit_only(tmp_path, data_root):
    run = LMRun(tiny(tmp_path, data_root, layers=3, weighting="opt", opt_exit=1))
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    metrics = run.run()
    assert metrics["num_exits"] == 2 and metrics["final_weights"] == [0.0, 1.0]
    assert [int(r["exit"]) for r in read_csv(tmp_path / "run" / "exits.csv")] == [1]
    after = run.model.state_dict()
    assert torch.equal(after["units.2.mlp.0.weight"], before["units.2.mlp.0.weight"])  # past the exit: untouched
    assert not torch.equal(after["units.1.mlp.0.weight"], before["units.1.mlp.0.weight"])


def test_a_checkpoint_of_another_config_is_refused_unless_restart_is_asked(tmp_path, data_root):
    fit_lm(tiny(tmp_path, data_root, steps=2))
    with pytest.raises(CheckpointMismatchError, match="differs in: lr"):
        LMRun(tiny(tmp_path, data_root, steps=2, lr=5e-4))
    assert LMRun(tiny(tmp_path, data_root, steps=2, lr=5e-4, restart_on_change=True)).saved is None


def test_lr_warms_up_linearly_then_decays_to_min_lr_at_the_last_step():
    cfg = LMConfig(out="x", steps=10, warmup_steps=4, lr=1e-3, min_lr=1e-4)
    assert [lr_at(cfg, s) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lr_at(cfg, 4) == pytest.approx(1e-3) and lr_at(cfg, 9) == pytest.approx(1e-4)
    assert lr_at(cfg, 4) > lr_at(cfg, 6) > lr_at(cfg, 9)


def test_a_model_that_predicts_every_byte_equally_scores_8_bits_per_byte():
    model = build_model("transformer", 1, 256, 16, layers=2, width=16, heads=2)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # zero embeddings and head: every logit 0
    windows = eval_windows(torch.randint(0, 256, (200,), dtype=torch.uint8), 16)
    assert bits_per_byte(ExitLosses(model), windows, torch.device("cpu")) == pytest.approx([8.0, 8.0])


@pytest.mark.parametrize("changes,message", [
    (dict(weighting="adaloss", e_scale=0.5), "e_scale is an option of torchtune's scales"),
    (dict(weighting="opt"), "needs opt_exit"),
    (dict(weighting="const", opt_exit=1), "only 'opt' takes it"),
    (dict(weighting="opt", opt_exit=12), "opt_exit 12 is out of range"),
    (dict(weighting="adalos"), "unknown weighting 'adalos'"),
    (dict(min_lr=1e-2), "min_lr <= lr"),
    (dict(heads=0), "positive integers.*heads"),
    (dict(model_name="../x"), "not a valid model name"),
])
def test_bad_configurations_are_refused_naming_the_problem(changes, message):
    with pytest.raises(ValueError, match=message):
        LMConfig(out="x", **changes)


def test_an_unknown_corpus_fails_before_training_naming_the_file(tmp_path, data_root):
    with pytest.raises(ValueError, match=r"absent\.txt: no such file"):
        LMRun(tiny(tmp_path, data_root, corpus="absent"))


@pytest.mark.slow
def test_the_prepared_gpu_check_runs_on_a_cpu_and_tables_every_premise_run(tmp_path, data_root):
    """scripts/gpu_lm_check.sh waits for a GPU; its plumbing (timing, six runs at once, the premise table) is
    checked here at a tiny size, so that the one GPU call a session may get is not spent on a typo."""
    out, root = tmp_path / "out", Path(__file__).resolve().parents[1]
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "DEVICE": "cpu", "LAYERS": "2", "WIDTH": "16",
           "HEADS": "2", "CONTEXT": "16", "BATCH": "4", "STEPS": "6", "TIME_STEPS": "4", "EVAL_EVERY": "3",
           "EVAL_WINDOWS": "8", "THREADS": "1", "CORPUS": "tiny", "DATA_ROOT": str(data_root),
           "RUNS": str(tmp_path / "runs")}
    done = subprocess.run(["bash", "scripts/gpu_lm_check.sh"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {"gpu_lm_check.log", "lm_gpu_step_time.csv", "lm_gpu_premise.csv"}
    timing = read_csv(out / "lm_gpu_step_time.csv")
    assert len(timing) == 1 and int(timing[0]["steps_timed"]) == 4 and float(timing[0]["ms_per_step"]) > 0
    premise = read_csv(out / "lm_gpu_premise.csv")
    runs = {(r["weighting"], r["seed"]) for r in premise}
    assert runs == {(w, s) for w in ("tt_uniform", "opt") for s in "012"}
    assert [r["step"] for r in premise] == ["3", "6"] * 6 and all(r["finished"] == "True" for r in premise)
    assert all(0 < float(r["test_bpb_final_exit"]) < 9 for r in premise)
    # the two sides are the two weightings the premise compares, not one run read twice
    weights = {w: json.loads((tmp_path / "runs" / w / "seed0" / "metrics.json").read_text())["final_weights"]
               for w in ("tt_uniform", "opt")}
    assert weights["tt_uniform"] == pytest.approx([0.5, 0.5]) and weights["opt"][-1] == pytest.approx(1.0)
    assert "seed 2: uniform step 6" in done.stdout and "OPT - uniform (validation)" in done.stdout


@pytest.mark.parametrize("amx,avx512_bf16,cnn,lm", [(True, True, True, True), (False, True, True, False),
                                                    (False, False, False, False)])
def test_the_transformer_takes_bf16_on_cpu_only_with_amx_where_the_cnns_take_it_with_avx512_bf16_too(
        monkeypatch, tmp_path, data_root, amx, avx512_bf16, cnn, lm):
    """On an AMD EPYC with AVX512-BF16 and no AMX the transformer's step was 1.4x slower in bf16 than in fp32
    (docs/speed.md) while the CNNs' was faster, so the two ask the CPU different questions."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert bf16_native(torch.device("cpu")) is cnn
    assert LMRun(tiny(tmp_path, data_root, device="cpu")).bf16 is lm
