"""Training loop, schedule, run outputs and the CLI, on tiny models and scikit-learn's digits."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from adaloss.augment import normalize, reference_transform
from adaloss.data import load_dataset
from adaloss.models import build_model
from adaloss.train import ExitLosses, Run, TrainConfig, _param_groups, fit, lr_at, train_step
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


def test_train_step_returns_detached_per_exit_losses_and_updates_parameters():
    model = build_model("resann", 1, 10, 8, **TINY)
    wt = make_weighting("adaloss", model.num_exits, update_per=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    losses = train_step(ExitLosses(model), wt, opt, x, y)
    assert losses.shape == (model.num_exits,) and not losses.requires_grad
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_one_epoch_on_digits_lowers_the_loss(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2, lr=0.05)
    run = Run(cfg)
    first_batch_loss = None
    x, y = next(iter(run.loader))
    with torch.no_grad():
        first_batch_loss = torch.stack([F.cross_entropy(z, y) for z in run.model(x)]).mean().item()
    metrics = run.run()
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    final_loss = log.filter(like="train_loss_e").iloc[-1].mean()
    assert final_loss < first_batch_loss
    assert metrics["final_test_error"][-1] < 90.0  # better than chance on 10 classes


def test_run_writes_the_documented_outputs(tmp_path):
    fit(tiny_config(tmp_path, weighting="adaloss", update_per=3))
    out = tmp_path / "run"
    exits = pd.read_csv(out / "exits.csv")
    assert list(exits.columns) == ["dataset", "model", "weighting", "seed", "exit", "flops", "params", "error", "val_error"]
    assert exits["flops"].is_monotonic_increasing and len(exits) == 3
    log = pd.read_csv(out / "log.csv")
    assert {"epoch", "lr", "train_loss_e0", "weight_e2", "test_error_e2"} <= set(log.columns)
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
    from adaloss.evaluate import evaluate_checkpoint

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
    from adaloss.train import bf16_native, convolves_unit_maps

    msd = build_model("msdnet", 1, 10, 8, n=1, growth=2, head_channels=4, s=1)
    assert convolves_unit_maps(msd) and msd.training  # the probe leaves the mode as it was
    assert not convolves_unit_maps(build_model("resann", 3, 10, 32, n=1, width=4))
    assert not convolves_unit_maps(build_model("resann", 1, 10, 8, n=1, width=4))
    run = Run(tiny_config(tmp_path, arch="msdnet", arch_opts=dict(n=1, growth=2, head_channels=4, s=1)))
    assert run.bf16 is False
    assert Run(tiny_config(tmp_path)).bf16 == bf16_native(torch.device("cpu"))
