"""Tests for adaloss.latency: every exit is timed with its own `upto` on batches of the right shape,
the median per image is what is reported, the caller's model is left as it was, and `costs --latency`
prints a time per exit and batch size. Nothing is asserted about absolute speed."""

from __future__ import annotations

import csv
import io
import math
import types
from collections import Counter

import pytest
import torch

from adaloss import cli, latency
from adaloss.latency import exit_latency
from adaloss.models import build_model


def tiny_model() -> torch.nn.Module:
    return build_model("resann", 1, 10, 8, n=1, width=4)  # 3 exits, digits-sized input


def test_one_positive_finite_time_per_exit_and_batch_size() -> None:
    model = tiny_model()
    times = exit_latency(model, batch_sizes=(1, 5), repeats=3, warmup=1)
    assert [(t.exit, t.batch_size) for t in times] == [(k, b) for b in (1, 5) for k in range(model.num_exits)]
    assert all(math.isfinite(t.ms_per_image) and t.ms_per_image > 0 for t in times)
    assert {t.device for t in times} == {latency.device_label(torch.device("cpu"))}


def test_each_exit_is_timed_with_its_own_upto_and_the_median_per_image(monkeypatch) -> None:
    """A fake clock advances (k + 1) ms per image for a call with upto=k, plus 1 s on the first timed
    call of each (exit, batch) (an outlier): the report must be (k + 1) ms per image exactly."""
    model = tiny_model()
    warmup, repeats = 2, 5
    now = [0.0]
    calls: Counter = Counter()

    def advance(module, args, kwargs):
        upto, shape = kwargs["upto"], tuple(args[0].shape)
        calls[upto, shape] += 1
        outlier = 1.0 if calls[upto, shape] == warmup + 1 else 0.0
        now[0] += (upto + 1) * shape[0] * 1e-3 + outlier

    model.register_forward_pre_hook(advance, with_kwargs=True)
    monkeypatch.setattr(latency, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    times = exit_latency(model, batch_sizes=(1, 4), repeats=repeats, warmup=warmup)

    assert calls == {(k, (b, 1, 8, 8)): warmup + repeats for b in (1, 4) for k in range(model.num_exits)}
    assert [t.ms_per_image for t in times] == pytest.approx([k + 1 for _ in (1, 4) for k in range(3)])


@pytest.mark.parametrize("training", [True, False])
def test_the_callers_model_keeps_its_mode_and_memory_format(training: bool) -> None:
    model = tiny_model().train(training)
    model.heads[0].eval()  # a submodule in another mode than its parent stays so too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exit_latency(model, batch_sizes=(2,), repeats=1, warmup=0, channels_last=True)
    assert model.training is training and not model.heads[0].training
    assert all(m.training is training for m in model.units)
    assert all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # BN statistics too


def test_bad_settings_are_refused() -> None:
    for kwargs in ({"batch_sizes": ()}, {"batch_sizes": (0,)}, {"repeats": 0}, {"warmup": -1}):
        with pytest.raises(ValueError, match="need batch sizes"):
            exit_latency(tiny_model(), **kwargs)


def test_costs_latency_prints_both_batch_sizes_for_every_exit(monkeypatch, capsys) -> None:
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)  # the flag reaches torch; this process keeps its own
    args = ["costs", "--dataset", "digits", "--arch-opt", "n=1", "--arch-opt", "width=4"]
    assert cli.main([*args, "--latency", "--threads", "1"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert threads == [1]
    assert [int(r["exit"]) for r in rows] == [0, 1, 2]
    assert list(rows[0]) == ["exit", "flops", "params", "ms_per_image_b1", "ms_per_image_b64", "device"]
    assert all(float(r[f"ms_per_image_b{b}"]) > 0 for r in rows for b in (1, 64))
    assert {r["device"] for r in rows} == {latency.device_label(torch.device("cpu"))}


def test_costs_times_nothing_without_latency(monkeypatch, capsys) -> None:
    monkeypatch.setattr(latency, "exit_latency", lambda *a, **k: pytest.fail("timed without --latency"))
    assert cli.main(["costs", "--dataset", "digits", "--arch-opt", "n=1", "--arch-opt", "width=4"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "exit,flops,params"
