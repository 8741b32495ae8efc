"""Packed training (adaloss.pack): P runs fused into one model end as the same runs trained alone.

Tolerance. fp32 results cannot be bitwise equal: the pack computes each convolution as one grouped
convolution, which sums in another order (losses differ by ~1e-7 at the first step). Training at
lr 0.1 amplifies such rounding (a 1e-7 relative change of the initial weights of the tiny digits
ResANN grows to 1e-4 within five steps and to 0.2 within ten), so the runs are compared after four
steps (two epochs of two, so the momentum crosses an epoch's restacking and AdaLoss updates its
weights twice) at lr 0.02 (at 0.1 one CI machine amplified rounding to 8e-5 within those steps),
where rounding stays near 1e-7 and a real fault (another run's batch, momentum or
weighting) moves parameters by 1e-3 or more.
"""

import dataclasses
import subprocess
import sys

import pytest
import torch

from adaloss import pack as packing
from adaloss.data import load_dataset
from adaloss.pack import check_packable, fit_pack, fit_runs
from adaloss.train import TrainConfig, fit

FAMILIES = {
    "resann": {"n": 2, "width": 8, "s": 1},
    "denseann": {"n": 2, "growth": 8, "s": 1},
    "msdnet": {"n": 2, "growth": 4, "head_channels": 8, "s": 1},
}
# AdaLoss (updating its weights every 2 steps), CONST, OPT at exit 1 and LINEAR at the log2 K scale,
# over three seeds: everything a run can differ in within one pack
MEMBERS = [dict(weighting="adaloss", seed=0), dict(weighting="const", seed=1),
           dict(weighting="opt", opt_exit=1, seed=2), dict(weighting="linear", scale="log2", seed=0)]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "data", train_subset=128)  # 2 steps of 64 per epoch


def config(tmp_path, name, arch="resann", **kw):
    base = dict(dataset="digits", out=str(tmp_path / name), arch=arch, arch_opts=FAMILIES[arch], epochs=2,
                batch_size=64, update_per=2, progress=False, train_subset=128, device="cpu", lr=0.02,
                bf16=False)  # fp32 (the bar); bf16 autocast, on CPUs with bf16 units, rounds ~1e-3
    return TrainConfig(**{**base, **kw})


def relative_gap(a: dict | torch.Tensor, b: dict | torch.Tensor) -> float:
    """||a - b|| / ||a|| over every floating-point entry (a state dict's tensors as one vector): the
    relative distance of two parameter vectors (BN's batch counters are compared exactly)."""
    if isinstance(a, dict):
        names = [n for n, t in a.items() if t.is_floating_point()]
        assert all(torch.equal(a[n], b[n]) for n, t in a.items() if not t.is_floating_point())
        a, b = torch.cat([a[n].flatten() for n in names]), torch.cat([b[n].flatten() for n in names])
    a, b = a.double(), b.double()
    return ((a - b).norm() / a.norm().clamp_min(1e-12)).item()


def checkpoint(path):
    return torch.load(path / "checkpoint.pt", weights_only=False)


MOMENTUM_TOL = 2e-2


def momentum_gap(a: dict, b: dict) -> float:
    """Relative distance of two checkpoints' SGD momentum buffers."""
    return relative_gap({i: s["momentum_buffer"] for i, s in a["optimizer"]["state"].items()},
                        {i: s["momentum_buffer"] for i, s in b["optimizer"]["state"].items()})


def assert_same_state(solo_dir, packed_dir, tol=1e-5):
    solo, packed = checkpoint(solo_dir), checkpoint(packed_dir)
    assert solo["epoch"] == packed["epoch"]
    assert relative_gap(solo["model"], packed["model"]) < tol
    for key in ("ema", "_weights"):  # AdaLoss's running average and weights
        if key in solo["weighting"]:
            assert relative_gap(solo["weighting"][key], packed["weighting"][key]) < tol, key
    momentum, packed_momentum = solo["optimizer"]["state"], packed["optimizer"]["state"]
    assert momentum.keys() == packed_momentum.keys()  # OPT: momentum only for the layers it uses, as alone
    # the momentum is mostly the last gradients, in which rounding shows far more than in the parameters
    # (2.6e-3 for the LINEAR ResANN run with one thread on an AMD EPYC, its parameters 1.9e-6 apart);
    # a fault (another run's batches) puts it 0.8 away (the control below)
    assert momentum_gap(solo, packed) < MOMENTUM_TOL


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_each_run_of_a_pack_of_four_ends_with_the_parameters_of_the_run_trained_alone(tmp_path, digits, arch):
    solo = [config(tmp_path, f"solo{i}", arch, **m) for i, m in enumerate(MEMBERS)]
    packed = [config(tmp_path, f"pack{i}", arch, **m) for i, m in enumerate(MEMBERS)]
    for cfg in solo:
        fit(cfg, digits)
    metrics = fit_pack(packed, digits)
    assert [m["pack_size"] for m in metrics] == [4] * 4
    for a, b in zip(solo, packed):
        assert_same_state(tmp_path / a.out, tmp_path / b.out)


def test_a_fault_in_the_pack_would_show_far_above_the_tolerance(tmp_path, digits):
    """The control: two runs that differ only in their seed's data order (the fault of feeding a run
    another run's batches) are 1e-3 or more apart after the same four steps, and their momentum far
    beyond its tolerance."""
    a, b = config(tmp_path, "a", weighting="const", seed=0), config(tmp_path, "b", weighting="const", seed=0)
    fit(a, digits)
    b_run = packing.Run(b, digits)
    b_run.loader.generator.manual_seed(1)
    b_run.run()
    right, wrong = checkpoint(tmp_path / "a"), checkpoint(tmp_path / "b")
    assert relative_gap(right["model"], wrong["model"]) > 1e-3
    assert momentum_gap(right, wrong) > 10 * MOMENTUM_TOL


def test_opt_in_a_pack_leaves_the_layers_after_its_exit_as_the_truncated_network_alone(tmp_path, digits):
    cfgs = [config(tmp_path, "full", weighting="const"), config(tmp_path, "opt", weighting="opt", opt_exit=0)]
    fit_pack(cfgs, digits)
    init = packing.Run(dataclasses.replace(cfgs[1], out=str(tmp_path / "init")), digits).model.state_dict()
    trained = checkpoint(tmp_path / "opt")["model"]
    later = [n for n in trained if n.startswith(("units.1.", "units.2.", "units.3.", "heads.1.", "heads.2."))]
    assert later and all(torch.equal(trained[n], init[n]) for n in later)  # no decay, no BN statistics
    assert not torch.equal(trained["units.0.branch.0.2.weight"], init["units.0.branch.0.2.weight"])


def test_a_killed_pack_resumes_to_the_same_runs(tmp_path, digits, monkeypatch):
    whole = [config(tmp_path, f"whole{i}", **m) for i, m in enumerate(MEMBERS)]
    fit_pack(whole, digits)
    killed = [config(tmp_path, f"killed{i}", **m) for i, m in enumerate(MEMBERS)]
    end_epoch, saved = packing.Run.end_epoch, []

    def dies_after_two_checkpoints(run, *args, **kwargs):  # killed between the 2nd and 3rd run's checkpoint
        if len(saved) == 2:
            raise KeyboardInterrupt
        end_epoch(run, *args, **kwargs)
        saved.append(run.cfg.out)

    monkeypatch.setattr(packing.Run, "end_epoch", dies_after_two_checkpoints)
    with pytest.raises(KeyboardInterrupt):
        fit_pack(killed, digits)
    monkeypatch.setattr(packing.Run, "end_epoch", end_epoch)
    assert [checkpoint(tmp_path / f"killed{i}")["epoch"] for i in range(2)] == [1, 1]
    assert not (tmp_path / "killed2" / "checkpoint.pt").exists()
    fit_pack(killed, digits)  # runs 2 and 3 catch up alone, then all four train epoch 2 together
    for a, b in zip(whole, killed):
        assert_same_state(tmp_path / a.out, tmp_path / b.out)
        assert len(checkpoint(tmp_path / b.out)["log_rows"]) == 2


def test_a_pack_resumed_at_an_epoch_boundary_is_bitwise_the_uninterrupted_pack(tmp_path, digits, monkeypatch):
    """Every epoch restacks the runs from their own state, so stopping after a whole epoch changes nothing."""
    whole = [config(tmp_path, f"whole{i}", **m) for i, m in enumerate(MEMBERS[:2])]
    fit_pack(whole, digits)
    stopped = [config(tmp_path, f"stopped{i}", **m) for i, m in enumerate(MEMBERS[:2])]
    end_epoch = packing.Run.end_epoch

    def dies_after_epoch_one(run, *args, **kwargs):
        end_epoch(run, *args, **kwargs)
        if run.cfg.out == stopped[-1].out:
            raise KeyboardInterrupt

    monkeypatch.setattr(packing.Run, "end_epoch", dies_after_epoch_one)
    with pytest.raises(KeyboardInterrupt):
        fit_pack(stopped, digits)
    monkeypatch.setattr(packing.Run, "end_epoch", end_epoch)
    fit_pack(stopped, digits)
    for a, b in zip(whole, stopped):
        first, second = checkpoint(tmp_path / a.out)["model"], checkpoint(tmp_path / b.out)["model"]
        assert all(torch.equal(first[n], second[n]) for n in first)


def test_a_pack_refuses_runs_that_differ_in_shared_settings_naming_the_field(tmp_path):
    with pytest.raises(ValueError, match="differ in epochs"):
        check_packable([config(tmp_path, "a"), config(tmp_path, "b", epochs=3)])
    with pytest.raises(ValueError, match="same directory"):
        check_packable([config(tmp_path, "a"), config(tmp_path, "a", seed=1)])
    with pytest.raises(ValueError, match="'adaloss_grad' cannot be packed"):
        check_packable([config(tmp_path, "a", weighting="adaloss_grad")])


def test_fit_runs_trains_an_unpackable_run_alone_beside_the_pack(tmp_path, digits, monkeypatch):
    packs = []
    monkeypatch.setattr(packing, "fit_pack", lambda cfgs, data=None: packs.append([c.weighting for c in cfgs]) or [])
    monkeypatch.setattr("adaloss.train.fit", lambda cfg: {"alone": cfg.weighting})
    cfgs = [config(tmp_path, w, weighting=w) for w in ("adaloss", "adaloss_grad", "const")]
    assert fit_runs(cfgs, pack=4) == [{"alone": "adaloss_grad"}]
    assert packs == [["adaloss", "const"]]


def test_train_command_packs_runs_named_weighting_colon_seed(tmp_path):
    out = tmp_path / "{weighting}" / "seed{seed}"
    cmd = [sys.executable, "-m", "adaloss", "train", "--dataset", "digits", "--arch-opt", "n=1", "--arch-opt", "width=4",
           "--epochs", "1", "--train-subset", "128", "--device", "cpu", "--no-progress", "--out", str(out),
           "--runs", "adaloss:0", "opt1:1", "const_log2:0", "--pack", "3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for label, seed in (("adaloss", 0), ("opt1", 1), ("const_log2", 0)):
        metrics = (tmp_path / label / f"seed{seed}" / "metrics.json").read_text()
        assert '"pack_size": 3' in metrics
    bad = subprocess.run([*cmd[:-4], "--runs", "adaloss"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expected WEIGHTING:SEED" in bad.stderr


def test_a_compiled_pack_compiles_its_fused_loss_once_not_at_every_epoch(tmp_path, digits, monkeypatch):
    """Each epoch restacks the runs; the compiled loss must survive that, or every epoch recompiles
    (and after 8 recompilations torch falls back to eager)."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode: compiled.append(mode) or fn)
    fit_pack([config(tmp_path, f"r{i}", compile=True, compile_mode="reduce-overhead", **m)
              for i, m in enumerate(MEMBERS[:2])], digits)
    assert compiled == ["reduce-overhead"]
    assert '"compile": true' in (tmp_path / "r0" / "metrics.json").read_text()  # the config as asked
