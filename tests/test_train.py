"""Training loop, schedule, run outputs and the CLI, on tiny models and scikit-learn's digits."""

import copy
import json
import math
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from adaloss import cli
from adaloss.augment import normalize, reference_transform
from adaloss.data import load_dataset
from adaloss.models import build_model
from adaloss.step import ExitLosses, train_step
from adaloss.train import Run, TrainConfig, _param_groups, fit, lr_at
from adaloss.weighting import make_weighting

TINY = {"n": 1, "width": 8}


def tiny_config(tmp_path, **kw):
    base = dict(dataset="digits", out=str(tmp_path / "run"), arch="resann", arch_opts=TINY, epochs=1,
                batch_size=64, update_per=5, progress=False, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_step_schedule_matches_the_authors_cifar_epochs():
    cfg = TrainConfig(dataset="digits", out="x", epochs=300)
    assert [lr_at(cfg, e) for e in (0, 139, 140, 209, 210, 249, 250, 299)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 2e-4, 2e-4]
    )


def test_step_schedule_scales_to_few_epochs():
    cfg = TrainConfig(dataset="digits", out="x", epochs=10)
    assert [lr_at(cfg, e) for e in range(10)] == pytest.approx([0.1] * 5 + [0.01] * 2 + [0.001] * 2 + [2e-4])
    one = TrainConfig(dataset="digits", out="x", epochs=1)
    assert lr_at(one, 0) == pytest.approx(0.1)  # a one-epoch run trains at the base rate


def test_weight_decay_covers_convs_and_heads_but_not_batchnorm():
    model = build_model("resann", 1, 10, 8, **TINY)
    decay, no_decay = _param_groups(model, make_weighting("const", model.num_exits), 2e-4)
    decayed = {id(p) for p in decay["params"]}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            expected = isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
            assert (id(p) in decayed) == expected, type(module).__name__


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        TrainConfig(dataset="digits", out="x", epochs=0)
    with pytest.raises(ValueError, match="unknown weighting 'adalos'"):
        TrainConfig(dataset="digits", out="x", weighting="adalos")
    with pytest.raises(ValueError, match="needs opt_exit"):
        TrainConfig(dataset="digits", out="x", weighting="opt")


def test_fast_path_and_plain_path_give_the_same_losses_on_a_fixed_batch():
    data = load_dataset("digits")
    model = build_model("resann", 1, 10, 8, **TINY).eval()
    x, y = data.x_train[:32], data.y_train[:32]
    fast = normalize(x, data.mean, data.std)  # batched, the training path
    plain_tf = reference_transform(0, False, data.mean, data.std)  # per sample, torchvision
    plain = torch.stack([plain_tf(img) for img in x])
    with torch.no_grad():
        lf = torch.stack([F.cross_entropy(z, y) for z in model(fast)])
        lp = torch.stack([F.cross_entropy(z, y) for z in model(plain)])
    assert torch.allclose(lf, lp, atol=1e-5)


@pytest.mark.parametrize("weighting,upto", [("adaloss", None), ("opt", 1)])
def test_train_step_returns_detached_per_exit_losses_and_updates_parameters(weighting, upto):
    """One step from zero momentum moves every parameter that gets a gradient by exactly
    -lr * (grad + wd * p) (wd on conv and linear parameters only), with the gradient of the same
    loss computed on an identical copy, and leaves the rest untouched: the frozen stem and, on
    the OPT path (upto=1), the unit and head past exit 1, which must not even be decayed. (Head 0
    of the OPT net gets a zero gradient, so only its decay moves it.)"""
    torch.manual_seed(0)
    model = build_model("resann", 1, 10, 8, **TINY)  # 3 units, an exit after each
    model.stem.weight.requires_grad_(False)
    k = model.num_exits if upto is None else upto + 1
    wt = make_weighting(weighting, k, **({"update_per": 1} if upto is None else {"exit": upto}))
    lr, wd = 0.1, 0.05  # a large wd, so that a missing or misplaced decay term shows
    opt = torch.optim.SGD(_param_groups(model, wt, wd), lr=lr, momentum=0.9)
    decayed = {id(p) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
               for p in m.parameters(recurse=False)}  # the authors decay these, never BN
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    twin, twin_wt = copy.deepcopy(model), copy.deepcopy(wt)
    twin_losses = ExitLosses(twin)(x, y, upto=upto)
    twin_wt(twin_losses).backward()
    grad = {name: p.grad for name, p in twin.named_parameters()}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    losses = train_step(ExitLosses(model), wt, opt, x, y, upto=upto)
    assert losses.shape == (k,) and not losses.requires_grad
    torch.testing.assert_close(losses, twin_losses.detach())
    untouched = set()
    for name, p in model.named_parameters():
        if grad[name] is None:
            assert torch.equal(p, before[name]), name
            untouched.add(name)
            continue
        step = grad[name] + (wd if id(p) in decayed else 0.0) * before[name]
        torch.testing.assert_close(p.detach(), before[name] - lr * step, rtol=1e-5, atol=1e-7)
    past_exit = {name for name, _ in model.named_parameters()
                 if name.startswith(("units.2.", "heads.2."))}
    assert untouched == {"stem.weight"} | (past_exit if upto == 1 else set())


def test_one_epoch_on_digits_lowers_the_loss(tmp_path):
    """Three epochs of the tiny ResANN on digits must learn, not merely move: an untrained net sits
    near ln(10) = 2.30 (2.47-2.71 on the first batch). Measured over seeds 0-12 on CPU (fp32):
    the final exit's last-epoch training loss 0.34-0.49 (0.15-0.21 ln 10), every exit's loss
    lower in the last epoch than in the first (by >= 0.14), and the final exit's test error
    3.9-12.5% (chance: 90%). The thresholds below leave a factor of about two."""
    cfg = tiny_config(tmp_path, epochs=3, lr=0.1)  # epochs 0-1 at lr 0.1, epoch 2 at 0.01
    metrics = Run(cfg).run()
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    losses = log.filter(like="train_loss_e")  # (epochs, K): mean training loss of each exit
    assert losses.shape == (3, 3)
    assert losses.iloc[-1, -1] < 0.4 * math.log(10)
    assert (losses.iloc[-1] < losses.iloc[0]).all()
    assert metrics["final_test_error"][-1] < 30.0


def metrics_ece(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())["final_test_ece"]


def test_run_writes_the_documented_outputs(tmp_path):
    fit(tiny_config(tmp_path, weighting="adaloss", update_per=3))
    out = tmp_path / "run"
    exits = pd.read_csv(out / "exits.csv")
    assert list(exits.columns) == ["dataset", "model", "weighting", "seed", "exit", "flops", "own_head_flops", "params",
                                   "error", "ece", "val_error"]
    assert exits["flops"].is_monotonic_increasing and len(exits) == 3
    assert exits["ece"].between(0, 100).all() and exits["ece"].tolist() == pytest.approx(metrics_ece(out))
    log = pd.read_csv(out / "log.csv")
    assert {"epoch", "lr", "train_loss_e0", "weight_e2", "test_error_e2", "test_ece_e2"} <= set(log.columns)
    weights = pd.read_csv(out / "weights.csv")
    assert len(weights) == 3 * (22 // 3)  # one row per exit at every update (22 steps per epoch)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["weighting"] == "adaloss" and len(metrics["final_weights"]) == 3


def test_opt_run_trains_only_up_to_its_exit_and_reports_it(tmp_path):
    fit(tiny_config(tmp_path, weighting="opt", opt_exit=1))
    exits = pd.read_csv(tmp_path / "run" / "exits.csv")
    assert exits[["weighting", "exit"]].values.tolist() == [["opt", 1]]


def test_opt_exit_out_of_range_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="opt_exit 7 is out of range"):
        Run(tiny_config(tmp_path, weighting="opt", opt_exit=7))


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["costs"], ["bench"]])
def test_every_command_has_help(command):
    out = subprocess.run([sys.executable, "-m", "adaloss", *command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage:" in out.stdout


def test_costs_command_prints_cumulative_flops():
    out = subprocess.run(
        [sys.executable, "-m", "adaloss", "costs", "--dataset", "digits", "--arch-opt", "n=1", "--arch-opt", "width=4"],
        capture_output=True, text=True, check=True,
    )
    rows = [line.split(",") for line in out.stdout.strip().splitlines()[1:]]
    flops = [int(r[1]) for r in rows]
    assert len(rows) == 3 and flops == sorted(flops)


def test_the_final_test_errors_are_computed_once(tmp_path, monkeypatch):
    """The last epoch's evaluation feeds both log.csv and exits.csv: no second pass over the test set."""
    calls = []
    original = Run.evaluate
    monkeypatch.setattr(Run, "evaluate", lambda self, split="test": calls.append(split) or original(self, split))
    metrics = fit(tiny_config(tmp_path, epochs=2))
    assert calls == ["test", "test"]  # one per epoch
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert metrics["final_test_error"] == [log[f"test_error_e{i}"].iloc[-1] for i in range(metrics["num_exits"])]


def test_evaluate_command_reevaluates_a_finished_run(tmp_path):
    from adaloss.train import evaluate_checkpoint

    trained = fit(tiny_config(tmp_path, epochs=1))
    metrics_path = tmp_path / "run" / "metrics.json"
    saved = json.loads(metrics_path.read_text())
    saved["config"]["cuda_graph"] = True  # trained on a GPU with the graphed step: evaluating needs neither
    metrics_path.write_text(json.dumps(saved))
    again = evaluate_checkpoint(tmp_path / "run", device="cpu")
    assert again["final_test_error"] == pytest.approx(trained["final_test_error"])


def test_models_that_convolve_1x1_maps_train_in_fp32_on_cpu(tmp_path):
    """oneDNN's bf16 conv backward is unreliable on 1x1 maps (train.convolves_unit_maps): MSDNet on
    8x8 digits reaches them in its heads and must not get bf16 on CPU; ResANN on 8x8 does not."""
    from adaloss.device import bf16_native, convolves_unit_maps

    msd = build_model("msdnet", 1, 10, 8, n=1, growth=2, head_channels=4, s=1)
    assert convolves_unit_maps(msd) and msd.training  # the probe leaves the mode as it was
    assert not convolves_unit_maps(build_model("resann", 3, 10, 32, n=1, width=4))
    assert not convolves_unit_maps(build_model("resann", 1, 10, 8, n=1, width=4))
    run = Run(tiny_config(tmp_path, arch="msdnet", arch_opts=dict(n=1, growth=2, head_channels=4, s=1)))
    assert run.bf16 is False
    assert Run(tiny_config(tmp_path)).bf16 == bf16_native(torch.device("cpu"))


def test_train_with_seeds_trains_each_seed_into_its_own_directory_as_separate_runs_would(tmp_path):
    """`train --seeds 0 1` (one process, start-up paid once) writes the same outputs as `--seed 0`
    and `--seed 1` in two processes would: each seed's own directory and errors."""
    args = ["train", "--dataset", "digits", "--arch-opt", "n=1", "--arch-opt", "width=8", "--epochs", "1",
            "--no-progress", "--device", "cpu", "--no-bf16", "--threads", "1"]
    assert cli.main([*args, "--seeds", "0", "1", "--out", str(tmp_path / "packed" / "seed{seed}")]) == 0
    for seed in (0, 1):
        assert cli.main([*args, "--seed", str(seed), "--out", str(tmp_path / "alone" / f"seed{seed}")]) == 0
        packed, alone = (pd.read_csv(tmp_path / where / f"seed{seed}" / "exits.csv") for where in ("packed", "alone"))
        assert packed.equals(alone) and (packed["seed"] == seed).all()
    assert not pd.read_csv(tmp_path / "packed" / "seed0" / "exits.csv").equals(
        pd.read_csv(tmp_path / "packed" / "seed1" / "exits.csv"))  # the seeds differ: not one run copied


def test_train_with_several_seeds_needs_an_out_holding_seed(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "digits", "--seeds", "0", "1", "--out", str(tmp_path / "one")]) == 2
    assert "needs an --out holding {seed}" in capsys.readouterr().err and not (tmp_path / "one").exists()
