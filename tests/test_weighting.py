"""Weighting schemes against hand-computed vectors and a step-by-step AdaLoss reference."""

import math

import pytest
import torch

from adaloss.weighting import (
    AdaLoss,
    AdaLossGradNorm,
    UncertaintyWeighting,
    label,
    make_weighting,
    split_label,
    static_weights,
    weighting_label,
)


def test_const_is_all_ones():
    assert static_weights("const", 4).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_linear_rises_from_quarter_to_one():
    assert torch.allclose(static_weights("linear", 4), torch.tensor([0.25, 0.5, 0.75, 1.0]))


def test_half_end_gives_the_final_exit_half_the_total():
    w = static_weights("half_end", 5)
    assert torch.allclose(w, torch.tensor([0.25, 0.25, 0.25, 0.25, 1.0]))
    assert w[-1] == pytest.approx(w.sum() / 2)


def test_sieve_matches_the_authors_example_for_15_exits():
    # official_code.md §1.6: f=5, N=15, s=1
    expected = [2, 1, 3, 1, 2, 1, 4, 1, 2, 1, 3, 1, 2, 1, 25]
    w = static_weights("sieve", 15)
    assert torch.allclose(w, torch.tensor(expected, dtype=torch.float32) / 25)
    assert w[-1] == pytest.approx(w.sum() / 2)


def test_opt_is_one_hot_at_the_chosen_exit():
    assert static_weights("opt", 4, exit=1).tolist() == [0.0, 1.0, 0.0, 0.0]
    assert static_weights("opt", 3).tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="out of range"):
        static_weights("opt", 3, exit=3)


@pytest.mark.parametrize("name", ["const", "linear", "half_end", "sieve", "opt"])
def test_single_exit_schemes_weigh_it_one(name):
    assert static_weights(name, 1).tolist() == [1.0]


def test_static_weighting_returns_weighted_sum():
    wt = make_weighting("linear", 4)
    losses = [torch.tensor(v) for v in (4.0, 3.0, 2.0, 1.0)]
    assert wt(losses).item() == pytest.approx(0.25 * 4 + 0.5 * 3 + 0.75 * 2 + 1.0 * 1)


def test_unknown_weighting_and_option_are_named():
    with pytest.raises(ValueError, match="unknown weighting 'cosnt'.*const"):
        make_weighting("cosnt", 3)
    with pytest.raises(ValueError, match="takes no option gama"):
        make_weighting("adaloss", 3, gama=0.1)


def test_wrong_number_of_losses_is_an_error():
    with pytest.raises(ValueError, match="expected 3 per-exit losses"):
        make_weighting("const", 3)([torch.tensor(1.0)] * 2)


def reference_adaloss(sequence, gamma, momentum, update_per, final_extra):
    """Step-by-step transcription of online_learn.py:334-355 (public), in plain Python floats.

    Returns the total returned at each step and the weights after each step."""
    k = len(sequence[0])
    w, avg, totals, weights = [1.0] * k, None, [], []
    for t, losses in enumerate(sequence, start=1):
        totals.append(sum(wi * li for wi, li in zip(w, losses)))  # this step uses the old w
        avg = list(losses) if avg is None else [momentum * a + (1 - momentum) * l for a, l in zip(avg, losses)]
        if t % update_per == 0:
            w = [1.0 / a + 1e-8 for a in avg]
            mx = max(w)
            w = [x / mx for x in w]
            w[-1] += final_extra
            mx = max(w)
            w = [x / mx for x in w]
            w = [(1 - gamma) * x + gamma for x in w]
        weights.append(list(w))
    return totals, weights


def loss_sequence(steps, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.linspace(2.5, 0.8, k)  # deeper exits have lower loss, as in training
    return [(base * (1 + 0.3 * torch.rand(k, generator=g))).tolist() for _ in range(steps)]


@pytest.mark.parametrize(
    "gamma,momentum,update_per,final_extra",
    [(0.07, 0.9, 1, 0.0), (0.07, 0.9, 3, 0.0), (0.14, 0.99, 5, 0.5), (0.0, 0.9, 2, 1.0)],
)
def test_adaloss_matches_step_by_step_reference(gamma, momentum, update_per, final_extra):
    seq = loss_sequence(23, 5)
    ref_totals, ref_weights = reference_adaloss(seq, gamma, momentum, update_per, final_extra)
    ada = AdaLoss(5, gamma=gamma, momentum=momentum, update_per=update_per, final_extra=final_extra)
    for losses, ref_total, ref_w in zip(seq, ref_totals, ref_weights):
        total = ada(torch.tensor(losses, dtype=torch.float64))
        assert total.item() == pytest.approx(ref_total, rel=1e-6)
        assert ada.weights.tolist() == pytest.approx(ref_w, rel=1e-6)


def test_adaloss_weights_stay_one_until_first_update_and_lie_in_gamma_one():
    ada = AdaLoss(4, update_per=10)
    seq = loss_sequence(25, 4)
    for t, losses in enumerate(seq, start=1):
        ada(torch.tensor(losses))
        if t < 10:
            assert ada.weights.tolist() == [1.0] * 4
    w = ada.weights
    assert (w >= 0.07 - 1e-7).all() and (w <= 1.0 + 1e-7).all()
    assert w[-1].item() == pytest.approx(1.0)  # the final exit has the smallest loss here
    assert (w[1:] >= w[:-1]).all()


def test_adaloss_weights_are_constants_for_autograd():
    ada = AdaLoss(2, update_per=1)
    x = torch.tensor([2.0, 1.0], requires_grad=True)
    for _ in range(3):
        total = ada(x * 1.0)
    total.backward()
    # d total / d x = weights in use at the call, not a function of x through the EMA
    ema_free = AdaLoss(2, update_per=1)
    for _ in range(2):
        ema_free(torch.tensor([2.0, 1.0]))
    assert torch.allclose(x.grad, ema_free.weights)


def test_adaloss_state_round_trip_resumes_exactly():
    seq = loss_sequence(30, 3, seed=1)
    full = AdaLoss(3, update_per=4, final_extra=0.5)
    half = AdaLoss(3, update_per=4, final_extra=0.5)
    for losses in seq[:13]:
        full(torch.tensor(losses))
        half(torch.tensor(losses))
    state = half.state_dict()
    resumed = AdaLoss(3, update_per=4, final_extra=0.5)
    resumed.load_state_dict(state)
    for losses in seq[13:]:
        a = full(torch.tensor(losses))
        b = resumed(torch.tensor(losses))
        assert a.item() == b.item()
    assert torch.equal(full.weights, resumed.weights)
    assert torch.equal(full.ema, resumed.ema)


def test_adaloss_state_from_other_hyperparameters_is_refused():
    state = AdaLoss(3, gamma=0.07).state_dict()
    with pytest.raises(ValueError, match="gamma"):
        AdaLoss(3, gamma=0.3).load_state_dict(state)


def test_adaloss_grad_uses_gradient_norms():
    lin = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    out = lin(x).squeeze()
    losses = [out, 2.0 * out]  # gradients x = [1,2,3] and 2x = [2,4,6]
    ada = AdaLossGradNorm(2, lin.parameters(), update_per=1, gamma=0.0)
    ada(losses)
    # squared norms 14 and 56 over the 3 weight elements (the authors divide by elements, not tensors)
    assert ada.ema.tolist() == pytest.approx([0.5 * 14 / 3, 0.5 * 56 / 3])
    assert ada.weights.tolist() == pytest.approx([1.0, 0.25])


def test_uncertainty_weighting_learns_inverse_loss_weights():
    wt = UncertaintyWeighting(2)
    opt = torch.optim.SGD(wt.parameters(), lr=0.1)
    losses = torch.tensor([4.0, 0.5])
    for _ in range(500):
        opt.zero_grad()
        wt(losses).backward()
        opt.step()
    assert wt.weights.tolist() == pytest.approx([0.25, 2.0], rel=1e-3)


@pytest.mark.parametrize("name", ["const", "linear", "half_end", "sieve"])
def test_log2_and_matched_scales_fix_the_sum_of_static_weights(name):
    own = static_weights(name, 15)
    log2 = make_weighting(name, 15, scale="log2").weights
    matched = make_weighting(name, 15, scale="matched").weights
    assert log2.sum().item() == pytest.approx(math.log2(15), rel=1e-6)
    assert matched.sum().item() == pytest.approx(15.0, rel=1e-6)
    # only the sum changes: the ratios between exits are the scheme's own
    assert torch.allclose(log2 / log2[-1], own / own[-1]) and torch.allclose(matched / matched[-1], own / own[-1])


def test_const_at_log2_scale_is_the_authors_pre_april_2018_const():
    # before commit 13f62009 each CONST weight was log2(N)/N
    assert make_weighting("const", 8, scale="log2").weights.tolist() == pytest.approx([3 / 8] * 8)


def test_matched_adaloss_sums_to_k_at_every_update_with_the_same_balance():
    seq = loss_sequence(20, 5)
    plain, matched = AdaLoss(5, update_per=3), AdaLoss(5, update_per=3, scale="matched")
    for losses in seq:
        plain(torch.tensor(losses))
        matched(torch.tensor(losses))
        assert matched.weights.sum().item() == pytest.approx(5.0, rel=1e-6)
        assert torch.allclose(matched.weights / matched.weights.sum(), plain.weights / plain.weights.sum())
    assert plain.weights.sum().item() < 5.0 - 0.5  # the scheme's own sum is well below K, so matching changes it


def test_weighting_labels_round_trip_and_bad_ones_are_named():
    for name in ("const", "half_end", "adaloss"):
        for scale in ("sum", "log2", "matched"):
            assert split_label(weighting_label(name, scale)) == (name, scale)
    assert weighting_label("const", "log2") == "const_log2" and weighting_label("adaloss") == "adaloss"
    with pytest.raises(ValueError, match="unknown weighting label 'const_half'"):
        split_label("const_half")
    with pytest.raises(ValueError, match="unknown loss scale 'double'"):
        make_weighting("const", 3, scale="double")
    with pytest.raises(ValueError, match="takes no loss scale"):
        make_weighting("uncertainty", 3, scale="matched")


def test_adaloss_state_from_another_scale_is_refused():
    state = AdaLoss(3).state_dict()
    with pytest.raises(ValueError, match="scale"):
        AdaLoss(3, scale="matched").load_state_dict(state)


def test_the_front_door_exports_the_library():
    import adaloss
    from adaloss import AdaLoss as FrontAdaLoss, build_model, exit_costs, make_weighting as front_make

    assert FrontAdaLoss is AdaLoss and front_make is make_weighting
    model = build_model("resann", in_channels=1, num_classes=10, image_size=8, n=1, width=4)
    assert len(exit_costs(model)) == model.num_exits == 3
    with pytest.raises(AttributeError, match="no attribute 'adaloss_v2'"):
        adaloss.adaloss_v2


# The LLM trainers' scales (issue 20) for K = 4 exits, l = 0..3, written out by hand: torchtune's
# *_loss_scale functions with e_scale 1, and CALM's geometric series 1, 2, 4, 8; each sums to 1.
LLM_SCALES_K4 = {
    "tt_uniform": [1, 1, 1, 1],
    "tt_linear_l": [1, 2, 3, 4],
    "tt_sum_l": [1, 3, 6, 10],  # 1, 1+2, 1+2+3, 1+2+3+4
    "tt_sqrt_l": [1, math.sqrt(2), math.sqrt(3), 2],
    "tt_inv_l": [12, 6, 4, 3],  # 1, 1/2, 1/3, 1/4 times 12
    "tt_inv_sqrt_l": [1, 1 / math.sqrt(2), 1 / math.sqrt(3), 1 / 2],
    "calm_geometric": [1, 2, 4, 8],
}


@pytest.mark.parametrize("name", list(LLM_SCALES_K4))
def test_llm_trainers_scales_match_their_formulas_normalised_to_one(name):
    raw = LLM_SCALES_K4[name]
    assert static_weights(name, 4).tolist() == pytest.approx([w / sum(raw) for w in raw], rel=1e-6)
    assert static_weights(name, 1).tolist() == [1.0]


def test_e_scale_multiplies_the_non_final_exits_before_normalising():
    assert static_weights("tt_uniform", 4, e_scale=0.5).tolist() == pytest.approx([0.2, 0.2, 0.2, 0.4])
    assert make_weighting("tt_linear_l", 4, e_scale=2.0).weights.tolist() == pytest.approx([2 / 16, 4 / 16, 6 / 16, 4 / 16])


def test_e_scale_is_refused_where_the_source_has_none_or_where_it_is_not_positive():
    with pytest.raises(ValueError, match="weighting 'calm_geometric' takes no option e_scale"):
        make_weighting("calm_geometric", 4, e_scale=0.5)
    with pytest.raises(ValueError, match="e_scale is an option of torchtune's scales"):
        static_weights("const", 4, e_scale=0.5)
    with pytest.raises(ValueError, match="e_scale must be a finite number > 0.*'opt'"):
        static_weights("tt_uniform", 4, e_scale=0.0)


def test_geometric_weights_of_many_exits_do_not_overflow():
    w = static_weights("calm_geometric", 2000)
    assert torch.isfinite(w).all() and w.sum().item() == pytest.approx(1.0) and w[-1].item() == pytest.approx(0.5)


@pytest.mark.parametrize("name", list(LLM_SCALES_K4))
def test_llm_scales_compare_at_matched_sums_and_their_labels_round_trip(name):
    matched = make_weighting(name, 12, scale="matched").weights
    assert matched.sum().item() == pytest.approx(12.0, rel=1e-6)
    assert torch.allclose(matched / 12, static_weights(name, 12))
    for scale in ("sum", "log2", "matched"):
        assert split_label(weighting_label(name, scale)) == (name, scale)


def test_torchtune_uniform_at_the_matched_sum_is_const_and_labels_name_the_source():
    assert torch.allclose(make_weighting("tt_uniform", 7, scale="matched").weights, static_weights("const", 7))
    assert label("tt_sum_l_log2") == "torchtune sum_l (sum log2 K)" and label("calm_geometric") == "CALM geometric"
