"""The study's plan (adaloss.plan): runs per experiment, OPT exits, training jobs and packs, their
commands, the GPU-hour estimate and the config errors, on profiles validated as common.smk validates
them, with fake exit costs (no model is built); and one Snakemake dry run with packs."""

from __future__ import annotations

import copy
import re
import shlex
from collections import Counter
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from test_workflow import _bad_config, _snakemake

from adaloss.plan import PYTHON, Plan, cli_flags, packs_of, split_evenly

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
# Exits of the smoke profile's models in these tests (resann's are not its real 3, so it gets 4 OPT networks)
EXITS = {"resann": 8, "denseann": 3, "msdnet": 3, "resann_large": 6, "transformer": 2}


def fake_flops(dataset: str, model: str) -> list[int]:
    """Exit k costs k + 1: OPT sits at exits 1, 3, 5, 7 of 8 and at 0, 1, 2 of 3 (0 nearest both 1/4 and 1/2)."""
    return list(range(1, EXITS[model] + 1))


def make_plan(edit=None, base: dict = SMOKE, costs=fake_flops) -> Plan:
    """A plan of `base` (the smoke profile) with `edit` applied, validated as common.smk does it."""
    config = copy.deepcopy(base)
    if edit:
        edit(config)
    written = copy.deepcopy(config.get("dataset_train", {}))
    validate(config, str(SCHEMA))  # fills in every default
    return Plan(config, dataset_train=written, costs=costs)


def test_the_smoke_profile_trains_each_experiments_runs_once_in_their_pools():
    plan = make_plan()
    runs = set(plan.study_runs)
    assert len(runs) == len(plan.study_runs) == 2 * 19  # two seeds of the 19 below
    resann = {w for d, m, w, s in runs if m == "resann" and s == 0}
    # E1/E2 weightings, OPT at 4 exits, the loss-scale ablation; E3's control (CONST) is E1's
    assert resann == {"const", "adaloss", "opt1", "opt3", "opt5", "opt7", "const_log2", "adaloss_matched"}
    assert {w for d, m, w, s in runs if m == "denseann" and s == 0} == {"const", "adaloss", "opt0", "opt1", "opt2"}
    assert {w for d, m, w, s in runs if m == "resann_large"} == {"const"}  # E3's large ANN, CONST only
    # EANN members (both models, AdaLoss and CONST) and E7's runs share the held-out pool, each trained once
    assert set(plan.eann_runs) == {("digits", m, w, s) for m in ("resann", "resann_large")
                                   for w in ("adaloss", "const") for s in (0, 1)}
    assert set(plan.budgeted_runs) == {("digits", "resann", w, s) for w in ("adaloss", "const") for s in (0, 1)}
    assert plan.train_options("digits", "eann_runs")["val_fraction"] == 0.1
    assert plan.train_options("digits")["val_fraction"] == 0.0


def test_opt_networks_sit_at_the_exits_nearest_each_quarter_of_the_cost_deduplicated():
    plan = make_plan()
    assert plan.opt_exits("digits", "resann") == [1, 3, 5, 7]
    assert plan.opt_exits("digits", "denseann") == [0, 1, 2]
    lines = plan.model_plan().splitlines()
    assert "  digits/resann: 8 exits, 0.0 MFLOPs; OPT at exits 1 (25 %), 3 (50 %), 5 (75 %), 7 (100 %)" in lines
    assert "  digits/resann_large: 6 exits, 0.0 MFLOPs" in lines  # not compared: no OPT


def test_experiments_not_selected_train_nothing_of_their_own():
    plan = make_plan(lambda c: c.update(experiments=["e1", "e2"]))
    assert not plan.eann_runs and not plan.e3_pairs
    assert {m for _, m, _, _ in plan.study_runs} == {"resann", "denseann", "msdnet"}
    assert plan.experiments == ["e1_anytime", "e2_relative_to_opt"]


@pytest.mark.parametrize(("count", "size", "sizes"), [(21, 8, [7, 7, 7]), (10, 4, [4, 3, 3]), (8, 8, [8]),
                                                     (3, 8, [3]), (16, 4, [4, 4, 4, 4]), (5, 1, [1] * 5)])
def test_packs_are_as_few_as_the_size_allows_and_balanced_in_order(count, size, sizes):
    packs = packs_of(list(range(count)), size)
    assert [len(p) for p in packs] == sizes
    assert [x for p in packs for x in p] == list(range(count))


def test_split_evenly_puts_the_larger_chunks_first():
    assert split_evenly("abcdefg", 3) == [["a", "b", "c"], ["d", "e"], ["f", "g"]]


def unfused(config: dict) -> None:
    """The smoke profile packs its runs (train.pack 4); these tests plan it one run per job."""
    config["train"]["pack"] = 1


def test_pack_one_gives_one_run_per_job_under_the_wildcard_rules():
    plan = make_plan(unfused)
    assert plan.pack == 1 and len(plan.jobs) == len(plan.study_runs) + len(plan.eann_runs)
    assert all(len(job.runs) == 1 and not job.packed for job in plan.jobs)
    assert Counter(job.rule for job in plan.jobs) == {"train": 38, "train_eann_member": 8}
    job = plan.job("runs", "digits", "resann", "opt3", 1)
    assert job in plan.jobs
    assert (job.log, job.benchmark) == ("logs/train/digits/resann/opt3/seed1.log",
                                        "results/benchmarks/runs/digits/resann/opt3/seed1.tsv")
    assert job.files("exits.csv") == ["results/runs/digits/resann/opt3/seed1/exits.csv"]
    assert plan.runtime(job) == SMOKE["resources"]["runtime"]


def test_a_runs_command_names_its_weighting_scale_and_seed():
    plan = make_plan(unfused)
    command = plan.train_command(plan.job("runs", "digits", "resann", "opt3", 1), threads=2)
    assert command.startswith(f"{PYTHON} -m adaloss train --out results/runs/digits/resann/opt3/seed1 "
                              "--dataset digits --model-name resann --seed 1 --arch resann --arch-opt n=1 "
                              "--arch-opt width=4 --arch-opt s=1 --weighting opt --opt-exit 3 --ada-momentum 0.9 ")
    assert command.endswith(" --weight-decay 0.0002 --threads 2 --no-progress --restart-on-change")
    scaled = plan.train_command(plan.job("eann_runs", "digits", "resann", "const_log2", 0), threads=1)
    assert "--weighting const --scale log2 " in scaled and "--val-fraction 0.1 " in scaled
    assert "--pack" not in command + scaled


def test_packed_seeds_give_one_job_per_weighting_training_every_seed():
    plan = make_plan(lambda c: (unfused(c), c["resources"].update(pack_seeds=True)))
    assert len(plan.jobs) == (38 + 8) // 2 and all(len(job.runs) == 2 for job in plan.jobs)
    job = plan.job("runs", "digits", "resann", "adaloss")
    assert job.log == "logs/train/digits/resann/adaloss.log"
    assert job.out == "results/runs/digits/resann/adaloss/seed{seed}"
    assert plan.runtime(job) == 2 * SMOKE["resources"]["runtime"]
    command = plan.train_command(job, threads=1)
    assert "--out 'results/runs/digits/resann/adaloss/seed{seed}' --dataset digits --model-name resann --seeds 0 1 " \
           in command


@pytest.mark.parametrize("pack_seeds", [False, True])  # packs group seeds already: pack_seeds changes nothing
def test_pack_n_splits_the_runs_of_each_pool_dataset_and_model_into_balanced_packs(pack_seeds):
    plan = make_plan(lambda c: (c["train"].update(pack=4), c["resources"].update(pack_seeds=pack_seeds)))
    assert all(job.packed for job in plan.jobs)
    trained = [(job.pool, *run) for job in plan.jobs for run in job.runs]
    planned = [(pool, *run) for pool in ("runs", "eann_runs") for run in plan.runs(pool)]
    assert sorted(trained) == sorted(planned)  # every run in one pack
    sizes: dict[tuple[str, str, str], list[int]] = {}
    for job in plan.jobs:
        assert {(d, m) for d, m, _, _ in job.runs} == {(job.dataset, job.model)}
        sizes.setdefault((job.pool, job.dataset, job.model), []).append(len(job.runs))
    assert sizes == {("runs", "digits", "resann"): [4, 4, 4, 4], ("runs", "digits", "denseann"): [4, 3, 3],
                     ("runs", "digits", "msdnet"): [4, 3, 3], ("runs", "digits", "resann_large"): [2],
                     ("eann_runs", "digits", "resann"): [4], ("eann_runs", "digits", "resann_large"): [4]}
    first = plan.jobs[0]
    assert first.rule == "train_pack_runs_digits_denseann_0" and first.runs == (
        ("digits", "denseann", "adaloss", 0), ("digits", "denseann", "adaloss", 1),
        ("digits", "denseann", "const", 0), ("digits", "denseann", "const", 1))
    assert (first.log, first.benchmark) == ("logs/train_pack/runs/digits/denseann/pack0.log",
                                            "results/benchmarks/runs/digits/denseann/pack0.tsv")
    assert plan.runtime(first) == 4 * SMOKE["resources"]["runtime"]


def test_a_packs_command_lists_its_runs_by_label_and_leaves_weighting_and_seed_to_the_trainer():
    plan = make_plan(lambda c: c["train"].update(pack=4))
    pack = next(job for job in plan.jobs if job.rule == "train_pack_eann_runs_digits_resann_0")
    train_flags = cli_flags(plan.train_options("digits", "eann_runs"))
    assert "--val-fraction 0.1" in train_flags and "pack" not in train_flags  # the plan's setting, not the trainer's
    assert plan.train_command(pack, threads=3) == (
        f"{PYTHON} -m adaloss train --out 'results/eann_runs/digits/resann/{{weighting}}/seed{{seed}}' "
        "--runs adaloss:0 adaloss:1 const:0 const:1 --pack 4 --dataset digits --model-name resann "
        f"--arch resann --arch-opt n=1 --arch-opt width=4 --arch-opt s=1 {train_flags} "
        "--threads 3 --no-progress --restart-on-change")
    second = next(job for job in plan.jobs if job.rule == "train_pack_runs_digits_resann_1")
    words = shlex.split(plan.train_command(second, threads=1))  # as the shell passes them to the trainer
    assert words[words.index("--out") + 1] == "results/runs/digits/resann/{weighting}/seed{seed}"
    assert words[words.index("--runs") + 1:words.index("--pack")] == ["const:0", "const:1", "const_log2:0",
                                                                       "const_log2:1"]


def test_gpu_hours_count_each_run_at_its_networks_flops_images_and_epochs():
    from adaloss.flops import training_gpu_hours

    config = {"profile": "toy", "datasets": ["cifar10"], "seeds": [0], "experiments": ["e1"],
              "models": {"resann": {"arch": "resann", "n": 1}}, "compare": ["resann"], "weightings": ["adaloss"],
              "train": {"epochs": 2, "train_subset": 10000}}
    plan = make_plan(base=config, costs=lambda d, m: [1e9, 2e9, 3e9, 4e9])  # OPT at every exit
    assert [w for _, _, w, _ in plan.study_runs] == ["adaloss", "opt0", "opt1", "opt2", "opt3"]
    flops = 4e9 + 1e9 + 2e9 + 3e9 + 4e9  # AdaLoss trains the whole network, OPT at exit k the network up to k
    assert plan.estimated_gpu_hours() == pytest.approx(training_gpu_hours(flops, 10000, 2))  # train_subset's images
    assert re.search(r"^5 trainings \(0 of them holding out a validation split: EANN members, E7\); "
                     r"about [\d.]+ GPU-hours", plan.summary(), re.MULTILINE)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.pop("small_vs_large"), "experiment e3 is selected but `small_vs_large` is not given"),
    (lambda c: c["eann"].update(opt_model="nope"), "models ['nope'] are used but not defined under `models`"),
    (lambda c: c["eann"].update(opt_model="resann_large"), "eann.opt_model 'resann_large' must be a compared model"),
    (lambda c: c["loss_scale"].update(models=["resann_large"]), "loss_scale.models ['resann_large'] must be compared"),
    (lambda c: c["budgeted"].update(models=["resann_large"]), "budgeted.models ['resann_large'] must be compared"),
    (lambda c: c["budgeted"].update(val_fraction=0.2),
     "eann.val_fraction 0.1 and budgeted.val_fraction 0.2 differ: their runs share one held-out pool"),
    (lambda c: c["small_vs_large"].update(large=["resann_large", "denseann"]),
     "small_vs_large.small and .large must list as many models: ['resann'] vs ['resann_large', 'denseann']"),
    (lambda c: c["small_vs_large"].update(small="resann_large"),
     "small_vs_large.small 'resann_large' must be compared"),
    (lambda c: c.update(weightings=["const"]), "`weightings` must include adaloss"),
    (lambda c: c.update(dataset_train={"digits": {"pack": 2}}), "dataset_train entries ['digits'] set `pack`"),
])
def test_a_config_that_cannot_be_planned_is_named(edit, message):
    with pytest.raises(ValueError, match=re.escape(f"config: {message}")):
        make_plan(edit)


def test_stray_overrides_are_ignored_with_a_note(capsys):
    plan = make_plan(lambda c: c.update(dataset_train={"mnist5k": {"epochs": 3}}, dataset_compare={"svhn": ["resann"]}))
    assert plan.dataset_train == {} and plan.train_options("digits")["epochs"] == 1
    err = capsys.readouterr().err
    assert "config: ignoring dataset_train entries ['mnist5k'], which are not in `datasets`" in err
    assert "config: ignoring dataset_compare entries ['svhn'], which are not in `datasets`" in err


def test_a_dataset_train_override_beats_train_but_a_default_it_was_filled_with_does_not():
    plan = make_plan(lambda c: c.update(dataset_train={"digits": {"epochs": 3}}))
    assert plan.train_options("digits")["epochs"] == 3
    assert plan.train_options("digits")["batch_size"] == SMOKE["train"]["batch_size"]  # not the schema's 64


def test_a_dry_run_with_pack_4_lists_pack_jobs_and_no_train_jobs(tmp_path):
    config = _bad_config(tmp_path, lambda c: c["train"].update(pack=4))
    result = _snakemake("--dry-run", "-p", "--configfile", str(config), cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(train\w*)\s+(\d+)$", result.stdout, re.MULTILINE))
    # the smoke models' real 3 exits: resann 7 weightings x 2 seeds in 4 packs, denseann 10 runs in 3, msdnet 8
    # in 2, resann_large (E3) 2 in 1, and the held-out pool's 4 runs of each member in 1 each
    packs = {f"train_pack_runs_digits_{m}_{i}" for m, n in (("resann", 4), ("denseann", 3), ("msdnet", 2),
                                                             ("resann_large", 1)) for i in range(n)}
    packs |= {"train_pack_eann_runs_digits_resann_0", "train_pack_eann_runs_digits_resann_large_0"}
    assert counts.pop("train_lm") == "10"  # E8's runs (3 weightings and 2 OPT networks, 2 seeds): one job each
    assert counts == dict.fromkeys(packs, "1")  # no `train` or `train_eann_member` job
    assert "--runs adaloss:0 adaloss:1 adaloss_matched:0 adaloss_matched:1 --pack 4 --dataset digits" in result.stdout
    assert "42 trainings (8 of them holding out a validation split" in result.stderr


def test_packed_gpu_hours_use_the_measured_pack_throughput_and_the_whole_network_for_opt():
    from adaloss.flops import training_gpu_hours

    config = {"profile": "toy", "datasets": ["cifar10"], "seeds": [0], "experiments": ["e1"],
              "models": {"resann": {"arch": "resann", "n": 1}}, "compare": ["resann"], "weightings": ["adaloss"],
              "train": {"epochs": 2, "train_subset": 10000, "pack": 8}}
    rows = [{"device_name": "NVIDIA H200", "model": "resann", "forward_flops": 4e9, "pack": 8, "images_per_s": 1.0,
             "train_tflops": 50.0}]
    plan = make_plan(base=config, costs=lambda d, m: [1e9, 2e9, 3e9, 4e9])
    plan.throughput = rows
    # five runs in one pack, each computing the whole 4 GFLOP network, at the 50 TFLOP/s measured for it
    assert plan.estimated_gpu_hours() == pytest.approx(training_gpu_hours(5 * 4e9, 10000, 2, tflops=50.0))
    assert "measured per network size in packs of 8 on NVIDIA H200" in plan.summary()
    plan.throughput = []
    assert "not measured on a GPU yet (scripts/gpu_pack_check.sh)" in plan.summary()


# -- E8: the language-model runs -------------------------------------------------------------------

LM_ONLY = {"profile": "lm", "seeds": [0, 1, 2], "experiments": ["e8"],
           "lm": {"models": {"transformer": {"layers": 2, "width": 16, "heads": 2, "context": 16}},
                  "weightings": ["tt_uniform", "tt_inv_l", "adaloss_matched", "adaloss"], "e_scale": 0.5,
                  "train": {"steps": 7}}}


def test_e8_trains_every_weighting_and_an_opt_network_at_each_budget_point_per_seed_in_its_own_pool():
    plan = make_plan()
    assert plan.opt_exits("stdlib", "transformer") == [0, 1]  # 2 exits: 0 is nearest 1/4 and 1/2 (and 3/4, a tie)
    assert set(plan.runs("lm_runs")) == {("stdlib", "transformer", w, s) for w in
                                         ("tt_uniform", "tt_linear_l", "adaloss", "opt0", "opt1") for s in (0, 1)}
    assert len(plan.lm_jobs) == 10 and not {job.pool for job in plan.jobs} & {"lm_runs"}  # never in an image pack
    job = plan.lm_job("transformer", "opt1", 0)
    assert (job.rule, job.log, job.benchmark) == ("train_lm", "logs/train_lm/stdlib/transformer/opt1/seed0.log",
                                                  "results/benchmarks/lm_runs/stdlib/transformer/opt1/seed0.tsv")
    assert job.files("exits.csv") == ["results/lm_runs/stdlib/transformer/opt1/seed0/exits.csv"]
    first = "results/lm_runs/stdlib/transformer/adaloss/seed0/metrics.json"
    assert plan.run_files("metrics.json", "lm_runs")[0] == first
    summary = plan.lm_summary()
    assert "stdlib/transformer: 2 exits" in summary and "10 language-model trainings (E8)" in summary


def test_an_e8_command_carries_the_model_spec_the_weighting_the_seed_and_lm_train():
    plan = make_plan(base=LM_ONLY)
    command = plan.lm_train_command(plan.lm_job("transformer", "tt_inv_l", 2), threads=1)
    assert command.startswith(f"{PYTHON} -m adaloss train-lm --out results/lm_runs/stdlib/transformer/tt_inv_l/seed2 "
                              "--corpus stdlib --model-name transformer --seed 2 --weighting tt_inv_l --scale sum "
                              "--e-scale 0.5 --ada-momentum 0.9 ")
    words = shlex.split(command)
    for flag, value in (("--layers", "2"), ("--width", "16"), ("--heads", "2"), ("--context", "16"), ("--steps", "7"),
                        ("--batch-size", "32"), ("--threads", "1")):
        assert words[words.index(flag) + 1] == value, flag
    assert "--shared-head" in words and command.endswith(" --no-progress --restart-on-change")
    opt = plan.lm_train_command(plan.lm_job("transformer", "opt1", 0), threads=1)
    matched = plan.lm_train_command(plan.lm_job("transformer", "adaloss_matched", 0), threads=1)
    assert "--weighting opt --opt-exit 1 " in opt and "--weighting adaloss --scale matched " in matched
    assert "--e-scale" not in opt + matched  # torchtune's option only: train-lm refuses it elsewhere


def test_a_profile_of_e8_alone_names_no_image_data_and_trains_no_image_run():
    plan = make_plan(base=LM_ONLY)
    assert not plan.image_study and not plan.study_runs and not plan.eann_runs and not plan.jobs
    assert len(plan.lm_runs) == 3 * (4 + 2) and plan.experiments == ["e8_lm"]
    assert plan.report_args() == "--no-image-study --lm"
    assert make_plan().report_args() == "--small-vs-large --lm --opt-model resann --eann-tolerance 0.1"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.pop("lm"), "experiment e8 is selected but `lm` is not given"),
    (lambda c: c["lm"].update(weightings=["tt_linear_l", "adaloss"]), "lm.weightings must include ['tt_uniform']"),
    (lambda c: c["lm"]["models"].update(resann={"layers": 1, "width": 8, "heads": 2, "context": 8}),
     "lm.models ['resann'] are also image models under `models`"),
])
def test_an_e8_config_that_cannot_be_planned_is_named(edit, message):
    with pytest.raises(ValueError, match=re.escape(f"config: {message}")):
        make_plan(edit)


def test_an_image_experiment_without_image_data_is_named():
    with pytest.raises(ValueError, match=re.escape("config: datasets, models, compare, weightings must be given "
                                                   "when an image experiment (e1-e7) is selected")):
        make_plan(lambda c: c.update(experiments=["e1", "e8"]), base=LM_ONLY)
