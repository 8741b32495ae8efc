"""adaloss.sgd.SGD against torch.optim.SGD: the same parameters bit for bit, and interchangeable states."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from adaloss.sgd import SGD


def _net_and_groups(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3), torch.nn.Linear(3, 3))
    decay = [net[0].weight, net[3].weight, net[3].bias]
    no_decay = [net[1].weight, net[1].bias, net[0].bias]
    frozen_head = [net[4].weight, net[4].bias]  # never receives a gradient below
    groups = [{"params": decay, "weight_decay": 2e-4}, {"params": no_decay + frozen_head, "weight_decay": 0.0}]
    return net, groups



def test_updates_are_bit_identical_to_torch_sgd():
    ours_net, ours_groups = _net_and_groups()
    ref_net, ref_groups = _net_and_groups()
    ours, ref = SGD(ours_groups, lr=0.1, momentum=0.9), torch.optim.SGD(ref_groups, lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randn(8, 1, 8, 8, generator=g)
        for net, opt in ((ours_net, ours), (ref_net, ref)):
            opt.zero_grad(set_to_none=True)
            net[:4](x).square().mean().backward()
            if step == 3:
                for group in opt.param_groups:
                    group["lr"] = 0.01
            opt.step()
    for a, b in zip(ours_net.parameters(), ref_net.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(ours_net[4].weight, _net_and_groups()[0][4].weight)  # no gradient: untouched


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
def test_a_state_moves_between_the_two_optimizers(direction):
    first_net, first_groups = _net_and_groups()
    first = (SGD if direction == "ours_to_torch" else torch.optim.SGD)(first_groups, lr=0.1, momentum=0.9)
    _train(first_net, first, steps=3)
    state = first.state_dict()
    second_net, second_groups = _net_and_groups()
    second_net.load_state_dict(first_net.state_dict())
    second = (torch.optim.SGD if direction == "ours_to_torch" else SGD)(second_groups, lr=0.5, momentum=0.9)
    second.load_state_dict(state)
    assert [g["lr"] for g in second.param_groups] == [0.1, 0.1]
    _train(first_net, first, steps=2, seed=2)
    _train(second_net, second, steps=2, seed=2)
    for a, b in zip(first_net.parameters(), second_net.parameters()):
        assert torch.equal(a, b)


def _train(net, opt, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        net[:4](torch.randn(8, 1, 8, 8, generator=g)).square().mean().backward()
        opt.step()


def test_a_state_of_other_parameter_groups_is_refused():
    net, groups = _net_and_groups()
    opt = SGD(groups, lr=0.1, momentum=0.9)
    other = SGD([{"params": list(net.parameters())}], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="other parameter groups"):
        opt.load_state_dict(other.state_dict())


def test_a_cpu_training_job_imports_torch_dynamo_only_to_count_uncached_costs(tmp_path):
    """The first job of a model counts its FLOPs (the counter imports torch._dynamo) and caches them;
    the next job of that model imports neither, since its optimizer is not torch.optim's, nor pandas
    or the FLOP counter (each a few tenths of a second of every job's start-up)."""
    def job(out: str) -> str:
        code = ("import sys; from adaloss.train import TrainConfig, fit; "
                f"fit(TrainConfig(dataset='digits', out={str(tmp_path / out)!r}, arch_opts={{'n': 1, 'width': 4}}, "
                f"epochs=1, progress=False, device='cpu', data_root={str(tmp_path)!r})); "
                "print('torch._dynamo' in sys.modules, 'pandas' in sys.modules, "
                "'torch.utils.flop_counter' in sys.modules)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return result.stdout.strip().splitlines()[-1]

    assert job("first").split()[::2] == ["True", "True"]  # dynamo and the counter (dynamo may bring pandas)
    assert job("second") == "False False False"
