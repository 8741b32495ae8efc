"""The CUDA-graphed whole step (graphed.py) trains exactly as the eager `train_step`."""

import copy

import pytest
import torch

from adaloss.graphed import GraphedStep, supports_graph, weighted_backward_step
from adaloss.models import build_model
from adaloss.step import ExitLosses, train_step
from adaloss.train import TrainConfig
from adaloss.weighting import AdaLoss, StaticWeighting, make_weighting


def _setup(device: str, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("resann", 3, 10, 16, n=1, width=8).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    return model, opt


def test_weighted_backward_is_the_gradient_of_the_weighted_total():
    """losses.backward(w) with AdaLoss's weights (after an update made them uneven) moves the
    parameters exactly as weighting(losses).backward() does."""
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    model_a, opt_a = _setup("cpu")
    model_b = copy.deepcopy(model_a)
    opt_b = torch.optim.SGD(model_b.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    ada = AdaLoss(model_a.num_exits, update_per=1)
    ada(torch.tensor([3.0, 2.0, 0.5]))  # weights now (1-g)*[1/6, 1/4, 1] + g: uneven
    weights = ada.weights.clone()
    assert not torch.allclose(weights, torch.ones_like(weights))
    for _ in range(2):  # two steps, so the momentum buffers take part
        train_step(ExitLosses(model_a), StaticWeighting(weights), opt_a, x, y)
        weighted_backward_step(ExitLosses(model_b), opt_b, x, y, weights)
        opt_b.zero_grad(set_to_none=True)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_graph_accepts_only_constant_weighted_sums():
    assert supports_graph(make_weighting("const", 3)) and supports_graph(make_weighting("adaloss", 3))
    model, opt = _setup("cpu")
    for name in ("uncertainty", "adaloss_grad"):
        kwargs = {"params": list(model.parameters())} if name == "adaloss_grad" else {}
        with pytest.raises(ValueError, match="cuda_graph supports"):
            GraphedStep(ExitLosses(model), make_weighting(name, 3, **kwargs), opt)


def test_graph_refuses_cpu_batches_and_reduce_overhead():
    model, opt = _setup("cpu")
    step = GraphedStep(ExitLosses(model), make_weighting("const", 3), opt)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        step(torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,)))
    with pytest.raises(ValueError, match="reduce-overhead"):
        TrainConfig(dataset="digits", out="x", cuda_graph=True, compile=True, compile_mode="reduce-overhead")


def test_cuda_graph_run_on_cpu_is_refused_before_training(tmp_path):
    from adaloss.train import Run

    cfg = TrainConfig(dataset="digits", out=str(tmp_path), arch_opts={"n": 1, "width": 4}, epochs=1,
                      cuda_graph=True, device="cpu", progress=False)
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        Run(cfg)
    assert not list(tmp_path.iterdir())


ARCHS = [("resann", dict(n=1, width=8)), ("denseann", dict(n=2, growth=4)), ("msdnet", dict(n=2, growth=2, head_channels=8))]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("arch,opts", ARCHS)
def test_graphed_step_matches_eager_steps_on_cuda(arch, opts, channels_last, monkeypatch):
    """Eight steps with AdaLoss updating every 2 steps and a learning-rate change after step 5
    (which forces a second capture): the same losses, weights and parameters as eager steps, up to
    rounding (in fp32 without TF32, MSDNet's convolutions may pick other kernels inside a capture:
    2.6e-4 relative on H100; ResANN and DenseANN agree to 1e-4)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model_a = build_model(arch, 3, 10, 16, **opts).cuda()
    model_b = copy.deepcopy(model_a)
    if channels_last:
        model_a, model_b = (m.to(memory_format=torch.channels_last) for m in (model_a, model_b))
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3, fused=True)
                    for m in (model_a, model_b))
    k = model_a.num_exits
    ada_a, ada_b = AdaLoss(k, update_per=2).cuda(), AdaLoss(k, update_per=2).cuda()
    graphed = GraphedStep(ExitLosses(model_b), ada_b, opt_b, channels_last=channels_last, warmup=2)
    g = torch.Generator(device="cuda").manual_seed(0)
    for i in range(8):
        if i == 5:
            for opt in (opt_a, opt_b):
                for group in opt.param_groups:
                    group["lr"] = 0.01
        x = torch.randn(16, 3, 16, 16, device="cuda", generator=g)
        y = torch.randint(0, 10, (16,), device="cuda", generator=g)
        la = train_step(ExitLosses(model_a), ada_a, opt_a, x, y, channels_last=channels_last)
        lb = graphed(x, y)
        torch.testing.assert_close(la, lb, rtol=1e-3, atol=1e-4)
    assert graphed.captures == 2
    torch.testing.assert_close(ada_a.weights, ada_b.weights, rtol=1e-3, atol=1e-4)
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_graphed_dropout_draws_new_masks_each_replay():
    """DenseANN's dropout inside the graph: replays of one batch with lr 0 (nothing else changes)
    give different losses, so each replay draws fresh random masks."""
    torch.manual_seed(0)
    model = build_model("denseann", 3, 10, 16, n=2, growth=4, dropout=0.5).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    step = GraphedStep(ExitLosses(model), make_weighting("const", model.num_exits).cuda(), opt, warmup=1)
    x, y = torch.randn(16, 3, 16, 16, device="cuda"), torch.randint(0, 10, (16,), device="cuda")
    losses = [step(x, y) for _ in range(4)]  # eager, then capture + replay, replay, replay
    assert step.captures == 1
    assert len({tuple(l.tolist()) for l in losses[1:]}) == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_graph_run_trains_as_the_eager_run(tmp_path, monkeypatch):
    """A whole digits run (one channel, AdaLoss, an lr drop after epoch 1, fp32): the CUDA-graphed
    and the eager step end with the same parameters and per-exit test errors."""
    from adaloss.train import Run

    # the same kernels in both: two trainings drift apart from any difference in rounding
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    runs = []
    for graphed in (False, True):
        cfg = TrainConfig(dataset="digits", out=str(tmp_path / str(graphed)), arch_opts={"n": 1, "width": 8},
                          epochs=2, batch_size=64, lr_milestones=(0.5,), lr_factors=(0.1,), update_per=5,
                          bf16=False, cuda_graph=graphed, progress=False, device="cuda")
        run = Run(cfg)
        runs.append((run, run.run()))
    (eager, m_eager), (graph, m_graph) = runs
    assert graph.step.captures == 2  # one capture per learning rate
    for pa, pb in zip(eager.model.parameters(), graph.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-3, atol=1e-4)
    assert m_eager["final_test_error"] == pytest.approx(m_graph["final_test_error"], abs=0.6)  # <= 2 of 360 images
