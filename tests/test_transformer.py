"""Tests for adaloss.models.transformer: the registry entry and its options, shapes, `upto`,
causality, the tied shared head against per-exit heads, and the FLOPs per token that
`flops.exit_costs` counts against the formula written out by hand. Tiny widths keep it fast."""

from __future__ import annotations

import pytest
import torch

from adaloss.flops import exit_costs
from adaloss.models import arch_options, build_model
from adaloss.models.transformer import TransformerANN

VOCAB, CONTEXT = 256, 16
TINY = dict(layers=3, width=16, heads=2)


def tiny(**opts: object) -> TransformerANN:
    torch.manual_seed(0)
    return build_model("transformer", 1, VOCAB, CONTEXT, **{**TINY, **opts})


def test_registry_options_and_defaults() -> None:
    assert arch_options("transformer") == dict(layers=12, width=128, heads=4, shared_head=True)
    with pytest.raises(ValueError, match="unknown option.*dropout"):
        build_model("transformer", 1, VOCAB, CONTEXT, dropout=0.1)


@pytest.mark.parametrize("shared_head", [True, False])
def test_one_exit_per_layer_with_logits_over_the_vocabulary(shared_head: bool) -> None:
    model = tiny(shared_head=shared_head)
    assert model.num_exits == 3
    logits = model(torch.randint(0, VOCAB, (2, 10)))  # shorter than the context is fine
    assert [tuple(z.shape) for z in logits] == [(2, 10, VOCAB)] * 3


def test_upto_runs_only_the_layers_up_to_that_exit_and_matches_the_full_forward() -> None:
    model = tiny().eval()
    x = model.example_input(2)
    ran: list[int] = []
    for u, block in enumerate(model.units):
        block.register_forward_hook(lambda *_, u=u: ran.append(u))
    with torch.no_grad():
        full = model(x)
        ran.clear()
        part = model(x, upto=1)
    assert ran == [0, 1] and len(part) == 2
    for a, b in zip(part, full):
        torch.testing.assert_close(a, b)


def test_future_tokens_do_not_change_past_logits() -> None:
    model = tiny().eval()
    x = model.example_input(1)
    changed = x.clone()
    changed[0, 9:] = (changed[0, 9:] + 1) % VOCAB  # every token from position 9 on
    with torch.no_grad():
        before, after = model(x), model(changed)
    for a, b in zip(before, after):
        torch.testing.assert_close(a[:, :9], b[:, :9])
        assert not torch.allclose(a[:, 9:], b[:, 9:])


def test_shared_head_is_one_norm_and_a_head_tied_to_the_embedding() -> None:
    shared, separate = tiny(), tiny(shared_head=False)
    assert all(h.linear.weight is shared.stem.token.weight for h in shared.heads)
    assert len({id(h.norm) for h in shared.heads}) == 1
    assert len({id(h.linear.weight) for h in separate.heads}) == 3
    per_exit_head = 2 * 16 + VOCAB * 16  # LayerNorm (weight, bias) and the untied linear
    n_params = sum(p.numel() for p in separate.parameters()) - sum(p.numel() for p in shared.parameters())
    assert n_params == 3 * per_exit_head - 2 * 16  # shared: one norm, the head tied to the embedding


def test_bad_inputs_and_options_are_named() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="longer than the context of 16"):
        model(torch.zeros(1, CONTEXT + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="upto"):
        model(model.example_input(1), upto=3)
    with pytest.raises(ValueError, match="divide width"):
        tiny(heads=3)
    with pytest.raises(ValueError, match="in_channels must be 1"):
        build_model("transformer", 3, VOCAB, CONTEXT, **TINY)
    with pytest.raises(ValueError, match="layers"):
        tiny(layers=0)


@pytest.mark.parametrize("shared_head", [True, False])
def test_exit_costs_are_the_hand_counted_flops_per_token_times_the_context(shared_head: bool) -> None:
    # per token and layer: q, k, v and output projections 2*4C^2, the MLP 2*8C^2, and attention's
    # two matmuls over the T x T score matrix 2*2*T*C (T = 16 here); per exit head 2*C*vocab.
    # Embedding lookups, LayerNorm, GELU and the softmax are not counted (FlopCounterMode's rule).
    width, layers = 16, 3
    block = 24 * width**2 + 4 * CONTEXT * width
    head = 2 * width * VOCAB
    costs = exit_costs(tiny(shared_head=shared_head))
    assert [c.flops for c in costs] == [CONTEXT * (k + 1) * (block + head) for k in range(layers)]
    assert [c.own_head_flops for c in costs] == [CONTEXT * ((k + 1) * block + head) for k in range(layers)]
    # the attention term is counted on CPU too (torch's registry lacks the CPU attention kernel)
    assert costs[0].flops - CONTEXT * (24 * width**2 + head) == 4 * CONTEXT**2 * width
