"""How the exits' losses are combined: the paper's weighting schemes, AdaLoss, and two extras.

An anytime network's training loss is sum_i w_i * L_i over its K exits (cheapest first). This file
holds every way of choosing w, as `torch.nn.Module`s that take the K batch-mean losses and return the
total, so they drop into anyone's training loop:

    weighting = AdaLoss(num_exits=model.num_exits)
    total = weighting([F.cross_entropy(logits, y) for logits in model(x)])
    total.backward()

Sources (see ../shared/reference/official_code.md):
* static schemes: the authors' `tensorpack/utils/anytime_loss.py:154-229` (§1.6): CONST (f=4),
  LINEAR 0.25 -> 1 unnormalised (f=12), HALF_END (f=7), SIEVE (f=5, normalised by the final weight),
  OPT (f=2, one-hot);
* AdaLoss: `AdaptiveLossWeight._after_run`, `anytime_models/models/online_learn.py:334-355` of the
  public branch (§1.3), including its re-normalisation after `final_extra`;
* beyond the paper: AdaLoss's first-order variant (`--adaloss_order=1`,
  `anytime_network.py:643-649`, §1.5), which the paper names as future work, and uncertainty
  weighting (Kendall, Gal and Cipolla, CVPR 2018) as a modern learned baseline;
* the static exit-loss scales that early-exit language-model trainers ship (issue 20), named after
  their source. torchtune's `early_exit_loss` (torchtune/modules/early_exit_loss.py, the
  `*_loss_scale(layer_ids, n_layers, e_scale)` functions): with l the exit's 0-based index,
  `tt_uniform` 1, `tt_linear_l` l+1, `tt_sum_l` 1+2+...+(l+1), `tt_sqrt_l` sqrt(l+1), `tt_inv_l`
  1/(l+1), `tt_inv_sqrt_l` 1/sqrt(l+1), each multiplied by `e_scale` on every exit but the last,
  then normalised to sum 1. torchtune's l is the layer index; it is the exit index here, the two
  being equal when every layer has an exit, as in its recipe with all layers. CALM (Schuster et
  al., NeurIPS 2022; t5x/contrib/calm/models.py, `aggregation_weights=-1`): `calm_geometric` 2^l,
  normalised to sum 1. CALM's other two choices are already here: uniform is `tt_uniform` and its
  arithmetic default 1, 2, ..., K is `tt_linear_l`, both at e_scale 1.

Loss scale (`SCALES`). A weighted sum's step size on the shared layers grows with sum(w): CONST
sums to K, the authors' CONST before their commit 13f62009 (2018-04-23) to log2 K, AdaLoss to
between gamma*K and K. So a gap between AdaLoss and CONST can be a learning-rate effect rather
than balancing. `scale` controls it for every scheme: "sum" keeps the scheme's own weights,
"log2" rescales them to sum log2(K) (the authors' earlier normalisation; 1 for K = 1), and
"matched" rescales them to sum K, CONST's sum (for AdaLoss at every update, so only the balance
between exits remains). A run's label is `weighting_label(name, scale)`, e.g. `const_log2`. The LLM
trainers' scales sum to 1 at their own scale, so `tt_uniform_matched` is CONST exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LossWeighting",
    "StaticWeighting",
    "AdaLoss",
    "AdaLossGradNorm",
    "UncertaintyWeighting",
    "static_weights",
    "make_weighting",
    "weighting_label",
    "split_label",
    "label",
    "LABELS",
    "WEIGHTINGS",
    "SCALES",
]

PAPER_STATIC_SCHEMES = ("const", "linear", "half_end", "sieve", "opt")
LLM_SCHEMES = ("tt_uniform", "tt_linear_l", "tt_sum_l", "tt_sqrt_l", "tt_inv_l", "tt_inv_sqrt_l", "calm_geometric")
TORCHTUNE_SCHEMES = LLM_SCHEMES[:-1]  # the ones that take e_scale
STATIC_SCHEMES = PAPER_STATIC_SCHEMES + LLM_SCHEMES
ADAPTIVE_SCHEMES = ("adaloss", "adaloss_grad", "uncertainty")
WEIGHTINGS = PAPER_STATIC_SCHEMES + ADAPTIVE_SCHEMES + LLM_SCHEMES  # the paper's names first
SCALES = ("sum", "log2", "matched")  # see the module docstring


def weighting_label(name: str, scale: str = "sum") -> str:
    """The one spelling of a weighting at a loss scale in paths, tables and wildcards:
    the name alone at the scheme's own scale, else `NAME_SCALE` (`const_log2`, `adaloss_matched`)."""
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown loss scale {scale!r}; valid: {', '.join(SCALES)}")
    return name if scale == "sum" else f"{name}_{scale}"


def split_label(label: str) -> tuple[str, str]:
    """(name, scale) of a label made by `weighting_label`; unknown labels are an error naming the valid forms."""
    if label in WEIGHTINGS:
        return label, "sum"
    name, _, scale = label.rpartition("_")
    if name in WEIGHTINGS and scale in SCALES[1:]:
        return name, scale
    raise ValueError(f"unknown weighting label {label!r}; valid: a weighting ({', '.join(WEIGHTINGS)}), "
                     f"optionally followed by _{' or _'.join(SCALES[1:])}")


# The paper's names, for figures and tables only (files, paths and configs use the lower-case name).
LABELS = {"const": "CONST", "linear": "LINEAR", "half_end": "HALF_END", "sieve": "SIEVE", "adaloss": "AdaLoss",
          "adaloss_grad": "AdaLoss-grad", "uncertainty": "Uncertainty", "opt": "OPT",
          "tt_uniform": "torchtune uniform", "tt_linear_l": "torchtune l", "tt_sum_l": "torchtune sum_l",
          "tt_sqrt_l": "torchtune sqrt_l", "tt_inv_l": "torchtune inv_l", "tt_inv_sqrt_l": "torchtune inv_sqrt_l",
          "calm_geometric": "CALM geometric"}
SCALE_LABELS = {"log2": "sum log2 K", "matched": "sum K"}


def label(weighting: str) -> str:
    """The paper's name of a weighting label, its loss scale in brackets: `const_log2` -> 'CONST (sum log2 K)'."""
    try:
        name, scale = split_label(weighting)
    except ValueError:
        return weighting
    return LABELS[name] + ("" if scale == "sum" else f" ({SCALE_LABELS[scale]})")


def target_sum(scale: str, num_exits: int) -> float | None:
    """The sum of the weights that `scale` asks for with `num_exits` exits (None: the scheme's own)."""
    if scale == "sum":
        return None
    if scale == "log2":
        return math.log2(num_exits) if num_exits > 1 else 1.0
    if scale == "matched":
        return float(num_exits)
    raise ValueError(f"unknown loss scale {scale!r}; valid: {', '.join(SCALES)}")


def rescale(weights: Tensor, scale: str) -> Tensor:
    """`weights` multiplied so that they sum to `target_sum(scale, K)` (unchanged for "sum")."""
    target = target_sum(scale, weights.numel())
    return weights if target is None else weights * (target / weights.sum())


def _stack_losses(losses: Sequence[Tensor] | Tensor, num_exits: int) -> Tensor:
    """Turn the per-exit batch-mean losses into one (K,) tensor, checking K."""
    stacked = losses if isinstance(losses, Tensor) else torch.stack(list(losses))
    if stacked.dim() != 1 or stacked.numel() != num_exits:
        raise ValueError(
            f"expected {num_exits} per-exit losses (a sequence of scalars or a 1-D tensor), "
            f"got shape {tuple(stacked.shape)}"
        )
    return stacked


def _sieve(num_exits: int) -> list[float]:
    """SIEVE weights (anytime_loss.py:23-37): +1 on every 2^k-th exit counted from the end, the
    final exit gets the sum of all others (half the total), then divide by the final weight."""
    if num_exits == 1:
        return [1.0]
    w = [0.0] * num_exits
    step = 1
    while step < num_exits:
        for i in range(0, num_exits, step):
            w[i] += 1.0
        step *= 2
    w[0] = sum(w[1:])
    w.reverse()  # index 0 counted from the final exit
    return [x / w[-1] for x in w]


def _llm_scale(name: str, num_exits: int, e_scale: float) -> list[float]:
    """torchtune's and CALM's exit-loss scales (module docstring), normalised to sum 1."""
    depth = {"tt_uniform": lambda l: 1.0, "tt_linear_l": lambda l: l + 1.0,
             "tt_sum_l": lambda l: (l + 1) * (l + 2) / 2, "tt_sqrt_l": lambda l: math.sqrt(l + 1),
             "tt_inv_l": lambda l: 1.0 / (l + 1), "tt_inv_sqrt_l": lambda l: 1.0 / math.sqrt(l + 1),
             "calm_geometric": lambda l: 2.0 ** (l - num_exits + 1)}[name]  # 2^l / 2^(K-1): no overflow
    w = [depth(l) * (e_scale if l < num_exits - 1 else 1.0) for l in range(num_exits)]
    return [x / sum(w) for x in w]


def static_weights(name: str, num_exits: int, exit: int | None = None, e_scale: float = 1.0) -> Tensor:
    """The static weights of scheme `name` (`STATIC_SCHEMES`) for `num_exits` exits, as a float (K,) tensor.

    `exit` is the one-hot position for OPT (default: the final exit); `e_scale` multiplies the
    non-final exits of torchtune's scales before they are normalised (torchtune's default 1).
    """
    if num_exits < 1:
        raise ValueError(f"num_exits must be >= 1, got {num_exits}")
    if e_scale != 1.0 and name not in TORCHTUNE_SCHEMES:
        raise ValueError(f"e_scale is an option of torchtune's scales ({', '.join(TORCHTUNE_SCHEMES)}), not of {name!r}")
    if not (math.isfinite(e_scale) and e_scale > 0):
        raise ValueError(f"e_scale must be a finite number > 0 (0 would train the last exit only: that is "
                         f"weighting 'opt'), got {e_scale}")
    k = num_exits
    if name == "const":
        w = [1.0] * k
    elif name == "linear":
        w = [1.0] if k == 1 else [0.25 + 0.75 * i / (k - 1) for i in range(k)]
    elif name == "half_end":
        w = [1.0] if k == 1 else [1.0 / (k - 1)] * (k - 1) + [1.0]
    elif name == "sieve":
        w = _sieve(k)
    elif name == "opt":
        at = k - 1 if exit is None else exit
        if not -k <= at < k:
            raise ValueError(f"OPT exit {exit} is out of range for {k} exits")
        w = [0.0] * k
        w[at] = 1.0
    elif name in LLM_SCHEMES:
        w = _llm_scale(name, k, e_scale)
    else:
        raise ValueError(f"unknown static weighting {name!r}; valid: {', '.join(STATIC_SCHEMES)}")
    return torch.tensor(w, dtype=torch.float32)


class LossWeighting(nn.Module):
    """Base class: `forward(losses) -> total`, `weights` = the (K,) weights in use now."""

    def __init__(self, num_exits: int) -> None:
        super().__init__()
        if num_exits < 1:
            raise ValueError(f"num_exits must be >= 1, got {num_exits}")
        self.num_exits = num_exits

    @property
    def weights(self) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"num_exits={self.num_exits}"


class StaticWeighting(LossWeighting):
    """Fixed weights: total = sum_i w_i * L_i."""

    def __init__(self, weights: Tensor | Sequence[float]) -> None:
        w = torch.as_tensor(weights, dtype=torch.float32).flatten()
        super().__init__(w.numel())
        self.register_buffer("_weights", w)

    @property
    def weights(self) -> Tensor:
        return self._weights

    def forward(self, losses: Sequence[Tensor] | Tensor) -> Tensor:
        stacked = _stack_losses(losses, self.num_exits)
        return (self._weights.to(stacked) * stacked).sum()


class AdaLoss(LossWeighting):
    """AdaLoss exactly as the authors' public code runs it (online_learn.py:334-355).

    Each call returns sum_i w_i * L_i with the weights as constants, *then* folds the detached
    losses into an exponential moving average (started at the first call's losses, no bias
    correction), as the authors' callback does after each training step. Every `update_per` calls:

        w = 1/ema + 1e-8;  w /= max(w);  w[-1] += final_extra;  w /= max(w);  w = (1-gamma) w + gamma

    so each w_i lies in [gamma, 1] and the exit with the smallest average loss (usually the final
    one) gets 1. Until the first update w = 1 (CONST). With `scale` "log2" or "matched" the weights
    (the initial ones too) are then rescaled to sum log2 K or K (module docstring). Everything
    stays on the losses' device: no host-device synchronisation happens in a call.
    """

    def __init__(
        self,
        num_exits: int,
        gamma: float = 0.07,  # mixing with constant weights (--adaloss_gamma, public default)
        momentum: float = 0.9,  # EMA momentum (--adaloss_momentum; 0.99 before April 2018)
        update_per: int = 100,  # calls between weight updates (--adaloss_update_per)
        final_extra: float = 0.0,  # extra weight on the final exit (--adaloss_final_extra)
        scale: str = "sum",  # sum of the weights: the scheme's own, log2 K or K (SCALES)
    ) -> None:
        super().__init__(num_exits)
        target_sum(scale, num_exits)  # refuses an unknown scale before anything is built
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if update_per < 1:
            raise ValueError(f"update_per must be >= 1, got {update_per}")
        if final_extra < 0:
            raise ValueError(f"final_extra must be >= 0, got {final_extra}")
        self.gamma, self.momentum = gamma, momentum
        self.update_per, self.final_extra, self.scale = update_per, final_extra, scale
        self.calls = 0
        self.register_buffer("ema", torch.zeros(num_exits))
        self.register_buffer("_weights", rescale(torch.ones(num_exits), scale))

    @property
    def weights(self) -> Tensor:
        return self._weights

    def _statistic(self, losses: Tensor) -> Tensor:
        """The per-exit quantity whose running average sets the weights: the loss itself."""
        return losses.detach()

    def _new_weights(self) -> Tensor:
        w = 1.0 / self.ema + 1e-8  # the eps is added after inversion, as in the authors' code
        w = w / w.max()
        w[-1] += self.final_extra
        w = w / w.max()
        return rescale((1.0 - self.gamma) * w + self.gamma, self.scale)

    def forward(self, losses: Sequence[Tensor] | Tensor) -> Tensor:
        stacked = _stack_losses(losses, self.num_exits)
        if self.ema.device != stacked.device:
            self.to(stacked.device)
        total = (self._weights * stacked).sum()
        stat = self._statistic(stacked).float()
        if self.calls == 0:
            self.ema = stat.clone()
        else:
            self.ema = self.momentum * self.ema + (1.0 - self.momentum) * stat
        self.calls += 1
        if self.calls % self.update_per == 0:
            self._weights = self._new_weights()  # a new tensor: `total`'s graph keeps the old one
        return total

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "gamma": self.gamma,
            "momentum": self.momentum,
            "update_per": self.update_per,
            "final_extra": self.final_extra,
            "scale": self.scale,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        mine = self.get_extra_state()
        for key in ("gamma", "momentum", "update_per", "final_extra", "scale"):
            if state[key] != mine[key]:
                raise ValueError(
                    f"AdaLoss state has {key}={state[key]} but this AdaLoss has {key}={mine[key]}"
                )
        self.calls = int(state["calls"])

    def extra_repr(self) -> str:
        return (
            f"num_exits={self.num_exits}, gamma={self.gamma}, momentum={self.momentum}, "
            f"update_per={self.update_per}, final_extra={self.final_extra}, scale={self.scale!r}"
        )


class AdaLossGradNorm(AdaLoss):
    """AdaLoss's first-order variant (beyond the paper; official_code.md §1.5).

    The statistic of exit i is 0.5 * ||dL_i/dtheta||^2 / (number of parameter *elements* with a
    gradient from L_i), over the parameters `params`, instead of L_i itself: the authors divide the
    summed squared gradients by the element count of the tensors that have one
    (anytime_network.py:643-649). It costs one extra backward pass per exit per call.
    """

    def __init__(self, num_exits: int, params: Iterable[nn.Parameter], **kwargs: Any) -> None:
        super().__init__(num_exits, **kwargs)
        self._params = [p for p in params if p.requires_grad]
        if not self._params:
            raise ValueError("AdaLossGradNorm needs the shared parameters (params=model.parameters())")

    def _statistic(self, losses: Tensor) -> Tensor:
        stats = []
        for loss in losses:
            grads = torch.autograd.grad(loss, self._params, retain_graph=True, allow_unused=True)
            used = [g for g in grads if g is not None]
            sq = torch.stack([g.detach().float().pow(2).sum() for g in used]).sum()
            stats.append(0.5 * sq / sum(g.numel() for g in used))
        return torch.stack(stats)


class UncertaintyWeighting(LossWeighting):
    """Learned homoscedastic-uncertainty weighting (Kendall et al. 2018; beyond the paper).

    total = sum_i exp(-s_i) * L_i + s_i with learnable log-variances s (initialised to 0); the
    trainer must give `parameters()` of this module to the optimiser. At its optimum
    exp(-s_i) = 1/L_i, the same inverse-loss weights that AdaLoss sets by hand.
    """

    def __init__(self, num_exits: int) -> None:
        super().__init__(num_exits)
        self.log_vars = nn.Parameter(torch.zeros(num_exits))

    @property
    def weights(self) -> Tensor:
        return torch.exp(-self.log_vars.detach())

    def forward(self, losses: Sequence[Tensor] | Tensor) -> Tensor:
        stacked = _stack_losses(losses, self.num_exits)
        s = self.log_vars.to(stacked.device)
        return (torch.exp(-s) * stacked + s).sum()


def make_weighting(name: str, num_exits: int, scale: str = "sum", **opts: Any) -> LossWeighting:
    """Build a weighting by its name (`WEIGHTINGS`) at a loss scale (`SCALES`, default the scheme's own).

    Options: `exit` for `opt`; `e_scale` for torchtune's scales (`tt_*`); `gamma`, `momentum`,
    `update_per`, `final_extra` for `adaloss` and `adaloss_grad` (which also needs `params`). An option the scheme does not take is an error, and
    so is a scale for `uncertainty`, whose weights are learned.
    """
    target_sum(scale, num_exits)  # an unknown scale fails here, whatever the scheme
    if name in STATIC_SCHEMES:
        allowed = {"exit"} if name == "opt" else {"e_scale"} if name in TORCHTUNE_SCHEMES else set()
        _check_opts(name, opts, allowed)
        return StaticWeighting(rescale(static_weights(name, num_exits, **opts), scale))
    if name == "adaloss":
        _check_opts(name, opts, {"gamma", "momentum", "update_per", "final_extra"})
        return AdaLoss(num_exits, scale=scale, **opts)
    if name == "adaloss_grad":
        _check_opts(name, opts, {"gamma", "momentum", "update_per", "final_extra", "params"})
        return AdaLossGradNorm(num_exits, scale=scale, **opts)
    if name == "uncertainty":
        _check_opts(name, opts, set())
        if scale != "sum":
            raise ValueError(f"weighting 'uncertainty' learns its weights and takes no loss scale, got {scale!r}")
        return UncertaintyWeighting(num_exits)
    raise ValueError(f"unknown weighting {name!r}; valid: {', '.join(WEIGHTINGS)}")


def _check_opts(name: str, opts: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(opts) - allowed)
    if unknown:
        valid = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"weighting {name!r} takes no option {', '.join(unknown)}; valid: {valid}")

