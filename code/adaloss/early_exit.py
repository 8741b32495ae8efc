"""Budgeted batch classification: each image leaves an anytime network at the first exit whose
confidence clears that exit's threshold, so easy images are cheap and hard ones go deep.

Source: Huang et al., "Multi-Scale Dense Networks for Resource Efficient Image Classification"
(ICLR 2018, arXiv 1703.09844), §3 "Budgeted batch classification", and their PyTorch code's
`--evalmode dynamic` (kalviny/MSDNet-PyTorch `adaptive_inference.py`; shared/reference/peers.md
A.2). A batch is given an average budget of B FLOPs per image. The thresholds are chosen on
held-out *training* images so that a share p_k of them leaves at exit k, p_k proportional to q**k
with q set so that the expected cost sum_k p_k * cost_k is B. (The paper writes the exit
distribution as z (1 - q)^(k-1) q; their code, and this file, use q**k: the same family.)

Holds, bottom-up:
* `ExitOutputs` and `collect`: every exit's softmax outputs on one split, from
  `evaluate.exit_probabilities`, so a split runs through the model once.
* confidences, probs (K, N, C) -> (K, N): `max_probability` (MSDNet's) and `negative_entropy`.
* `geometric_proportions`; the `ThresholdRule`s `geometric_rule` and `fixed_rule`;
  `fit_thresholds`, which refuses the test split (`TestSplitError`).
* `apply_thresholds` -> `EarlyExitResult`: early exit simulated on collected outputs.
* `AnytimeClassifier`: the deployed model, `predict` (anytime: one exit for the whole batch) and
  `predict_early_exit` (batch mode: each unit runs only on the images still in the batch).

Costs are anytime costs (`flops.ExitCost.flops`: the backbone up to exit k plus every head run
before it), which is what an image leaving at exit k has paid. Every function taking costs accepts
`ExitCost`s or plain FLOP counts.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .evaluate import exit_probabilities
from .flops import ExitCost
from .models.base import AnytimeNet

__all__ = [
    "ExitOutputs",
    "collect",
    "max_probability",
    "negative_entropy",
    "geometric_proportions",
    "ThresholdRule",
    "geometric_rule",
    "fixed_rule",
    "TestSplitError",
    "fit_thresholds",
    "EarlyExitResult",
    "apply_thresholds",
    "EarlyExitPrediction",
    "AnytimeClassifier",
]

Costs = Sequence[ExitCost] | Sequence[float]
Confidence = Callable[[Tensor], Tensor]  # probs (K, N, C) -> confidence (K, N)
# confidence (K, N) of held-out images, per-exit costs, budget per image -> thresholds (K,)
ThresholdRule = Callable[[Tensor, Sequence[float], float], Tensor]

_BISECTION_STEPS = 200  # halvings of the log q interval: far below float64 resolution at the end
_LOG_Q_RANGE = 700.0  # |log q| searched; e**-700 is below every float64 cost ratio that matters


def _flops(costs: Costs) -> list[float]:
    """Per-exit FLOPs as floats, from `ExitCost`s (their anytime `flops`) or plain numbers."""
    return [float(c.flops) if isinstance(c, ExitCost) else float(c) for c in costs]


# -- collected outputs -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # eq would compare tensors elementwise
class ExitOutputs:
    """Every exit's softmax outputs on one split: probs (K, N, C), labels (N,), and the split's
    name, which `fit_thresholds` reads to refuse fitting on the test set."""

    probs: Tensor
    labels: Tensor
    split: str

    def __post_init__(self) -> None:
        if self.probs.dim() != 3 or self.probs.shape[1] != len(self.labels):
            raise ValueError(f"probs must be (K, N, C) with N = len(labels) = {len(self.labels)}, "
                             f"got {tuple(self.probs.shape)}")

    @property
    def num_exits(self) -> int:
        """K."""
        return self.probs.shape[0]


def collect(
    model: AnytimeNet,
    x: Tensor,
    y: Tensor,
    mean: Tensor,
    std: Tensor,
    device: torch.device,
    split: str,
    batch_size: int = 1000,
    channels_last: bool = False,
    bf16: bool = False,
) -> ExitOutputs:
    """Run uint8 images `x` (N, C, H, W) with labels `y` (N,) through every exit once
    (`evaluate.exit_probabilities`, normalised by `mean` and `std`); thresholds are then fitted
    and applied on the stored outputs, for any number of budgets, without running the model again."""
    probs = exit_probabilities(model, x, mean, std, device, batch_size=batch_size,
                               channels_last=channels_last, bf16=bf16)
    return ExitOutputs(probs, y.to(probs.device), split)  # probs (K, N, C)


# -- confidence measures -----------------------------------------------------------------------


def max_probability(probs: Tensor) -> Tensor:
    """The top softmax probability, MSDNet's confidence: (K, N, C) -> (K, N)."""
    return probs.max(dim=2).values


def negative_entropy(probs: Tensor) -> Tensor:
    """sum_c p_c log p_c, higher when the distribution is peaked; unlike the top probability it
    also sees how the rest of the mass is spread: (K, N, C) -> (K, N). 0 log 0 counts as 0."""
    return torch.special.xlogy(probs, probs).sum(dim=2)


# -- thresholds ----------------------------------------------------------------------------------


def _check_budget(costs: Sequence[float], budget: float) -> None:
    """Costs must be non-empty and non-decreasing (anytime costs are), and the budget reachable."""
    if len(costs) == 0:
        raise ValueError("need the cost of at least one exit")
    if any(b < a for a, b in zip(costs, costs[1:])):
        raise ValueError(f"exit costs must be non-decreasing, got {list(costs)}")
    if not costs[0] <= budget <= costs[-1]:
        raise ValueError(f"budget {budget} FLOPs per image is outside the feasible range "
                         f"[{costs[0]}, {costs[-1]}] (the costs of the first and last exits)")


def _proportions(log_q: float, num_exits: int) -> Tensor:
    """p_k = q**k / sum_j q**j as a softmax of k log q, which stays finite for any q: (K,)."""
    return torch.softmax(torch.arange(num_exits, dtype=torch.float64) * log_q, dim=0)


def geometric_proportions(costs: Sequence[float], budget: float) -> Tensor:
    """MSDNet's exit distribution for a budget: the share p_k (K,) float64 of images leaving at
    exit k is proportional to q**k, q > 0 found by bisection on log q so that the expected cost
    sum_k p_k costs[k] equals `budget`. The expected cost grows with q from costs[0] (q -> 0: all
    leave first) to costs[-1] (q -> inf: all go to the end), so a budget outside that range has no
    solution and is refused. q > 1 puts more images on later exits, i.e. budget above mean cost."""
    _check_budget(costs, budget)
    cost = torch.tensor(costs, dtype=torch.float64)  # (K,)
    lo, hi = -_LOG_Q_RANGE, _LOG_Q_RANGE
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2
        if float(_proportions(mid, len(costs)) @ cost) < budget:
            lo = mid
        else:
            hi = mid
    return _proportions((lo + hi) / 2, len(costs))


def geometric_rule(confidence: Tensor, costs: Sequence[float], budget: float) -> Tensor:
    """MSDNet's thresholds: with p = geometric_proportions(costs, budget) and N held-out images,
    exit k (k < K-1) lets the m_k = floor(p_k N) most confident of the images still present leave,
    so its threshold is the m_k-th largest confidence among them (+inf when m_k is 0: none leaves).
    The last exit's threshold is -inf: whoever is left leaves there. Confidence (K, N) -> (K,)."""
    num_exits, n = confidence.shape
    counts = torch.floor(geometric_proportions(costs, budget) * n).long()  # (K,) m_k
    thresholds = torch.full((num_exits,), -math.inf, dtype=confidence.dtype, device=confidence.device)
    present = torch.ones(n, dtype=torch.bool, device=confidence.device)  # (N,) not left yet
    for k in range(num_exits - 1):
        remaining = confidence[k, present]  # (n_present,)
        m = min(int(counts[k]), len(remaining))  # ties at earlier exits may have taken more
        thresholds[k] = remaining.topk(m).values[-1] if m > 0 else math.inf
        present &= ~_leaves(confidence[k], thresholds, k)
    return thresholds


def fixed_rule(value: float) -> ThresholdRule:
    """A rule giving threshold `value` at every exit but the last (-inf), whatever the budget:
    a confidence cut-off chosen by hand, e.g. max probability 0.9."""

    def rule(confidence: Tensor, costs: Sequence[float], budget: float) -> Tensor:
        thresholds = torch.full((confidence.shape[0],), float(value), dtype=confidence.dtype,
                                device=confidence.device)  # (K,)
        thresholds[-1] = -math.inf
        return thresholds

    return rule


class TestSplitError(ValueError):
    """Thresholds were to be fitted on the test split, which would select on the test set."""

    __test__ = False  # not a pytest test class, despite its name


def fit_thresholds(
    held_out: ExitOutputs,
    costs: Costs,
    budget: float,
    rule: ThresholdRule = geometric_rule,
    confidence: Confidence = max_probability,
) -> Tensor:
    """Per-exit thresholds (K,) for `budget` FLOPs per image, fitted by `rule` on the outputs of
    held-out training images. The test split is refused: thresholds fitted there would make the
    reported test error a selected one, as picking epochs on the test set would."""
    if held_out.split.strip().lower() == "test":
        raise TestSplitError(f"refusing to fit early-exit thresholds on split {held_out.split!r}: "
                             "thresholds must be fit on held-out training data (e.g. 'val'), "
                             "then applied to the test split")
    flops = _flops(costs)
    if len(flops) != held_out.num_exits:
        raise ValueError(f"got {len(flops)} exit costs for outputs of {held_out.num_exits} exits")
    return rule(confidence(held_out.probs), flops, float(budget))


# -- applying thresholds -------------------------------------------------------------------------


def _leaves(confidence_k: Tensor, thresholds: Tensor, k: int) -> Tensor:
    """Which images at exit k leave there (n,) bool: confidence >= thresholds[k], or all at the
    last exit. An image leaves at the first exit where this holds; the simulated early exit and
    the real one both decide with it, so they cannot disagree."""
    if k == len(thresholds) - 1:
        return torch.ones_like(confidence_k, dtype=torch.bool)
    return confidence_k >= thresholds[k]


@dataclass(frozen=True, eq=False)
class EarlyExitResult:
    """Where each of N images left, what it predicted and what it cost, against its label."""

    exit: Tensor  # (N,) long
    prediction: Tensor  # (N,) long
    cost: Tensor  # (N,) float64, FLOPs of the exit taken
    labels: Tensor  # (N,)

    @property
    def error(self) -> float:
        """Top-1 error (%)."""
        return float((self.prediction != self.labels).double().mean() * 100.0)

    @property
    def avg_cost(self) -> float:
        """Mean FLOPs per image, the quantity the budget bounds."""
        return float(self.cost.mean())

    def histogram(self, num_exits: int) -> Tensor:
        """Images leaving at each of `num_exits` exits (K,), zeros included."""
        return torch.bincount(self.exit, minlength=num_exits)


def apply_thresholds(
    outputs: ExitOutputs,
    thresholds: Tensor,
    costs: Costs,
    confidence: Confidence = max_probability,
) -> EarlyExitResult:
    """Early exit simulated on collected outputs: each image leaves at the first exit k whose
    confidence is >= thresholds[k]; the last exit takes everyone left. The same decision as
    `AnytimeClassifier.predict_early_exit`, without running the model per threshold set."""
    num_exits = outputs.num_exits
    if len(thresholds) != num_exits or len(costs) != num_exits:
        raise ValueError(f"outputs have {num_exits} exits but got {len(thresholds)} thresholds "
                         f"and {len(costs)} costs")
    conf = confidence(outputs.probs)  # (K, N)
    thresholds = thresholds.to(conf.device)
    clears = torch.stack([_leaves(conf[k], thresholds, k) for k in range(num_exits)])  # (K, N)
    exits = clears.byte().argmax(dim=0)  # (N,) the first exit cleared (argmax takes the first max)
    images = torch.arange(len(exits), device=exits.device)
    prediction = outputs.probs.argmax(dim=2)[exits, images]  # (N,)
    cost = torch.tensor(_flops(costs), dtype=torch.float64, device=exits.device)[exits]  # (N,)
    return EarlyExitResult(exits, prediction, cost, outputs.labels)


# -- the deployed classifier ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EarlyExitPrediction:
    """Batch-mode output of `AnytimeClassifier.predict_early_exit` for N images."""

    exit: Tensor  # (N,) long, the exit each image left at
    prediction: Tensor  # (N,) long
    cost: Tensor  # (N,) float64, FLOPs of the exit taken
    unit_runs: int  # (image, unit) evaluations computed: sum over images of units up to their exit


State = Tensor | list[Tensor | None]  # a unit's output; MSDNet's is per scale, dropped ones None


def _select(state: State, keep: Tensor) -> State:
    """The rows `keep` (n,) bool of a state: a (n, ...) tensor, or each present scale of a list."""
    if isinstance(state, Tensor):
        return state[keep]
    return [None if s is None else s[keep] for s in state]


@contextlib.contextmanager
def _inference(model: AnytimeNet) -> Iterator[None]:
    """Eval mode (BN running statistics, no dropout) and no autograd; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


class AnytimeClassifier:
    """An anytime network with its per-exit costs, answering within a budget.

    Inputs are float images (N, C, H, W) already normalised as in training
    (`adaloss.data.normalize` of the uint8 images with the training set's mean and std); they are
    moved to the model's device, and outputs live there too.
    """

    def __init__(self, model: AnytimeNet, costs: Costs) -> None:
        if len(costs) != model.num_exits:
            raise ValueError(f"got {len(costs)} exit costs for a model with {model.num_exits} exits")
        self.model = model
        self.costs = _flops(costs)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are now (read on each call, so a moved model is followed)."""
        return next(self.model.parameters()).device

    def predict(self, x: Tensor, budget_flops: float) -> Tensor:
        """Anytime mode: classes (N,) from the deepest exit whose cost is <= `budget_flops`, for every
        image alike; only `model(x, upto=k)` runs."""
        affordable = [k for k, c in enumerate(self.costs) if c <= budget_flops]
        if not affordable:
            raise ValueError(f"budget {budget_flops} FLOPs is below the cheapest exit's cost "
                             f"{self.costs[0]}")
        with _inference(self.model):
            logits = self.model(x.to(self.device), upto=affordable[-1])[-1]  # (N, classes)
        return logits.argmax(dim=1)

    def predict_early_exit(
        self, x: Tensor, thresholds: Tensor, confidence: Confidence = max_probability
    ) -> EarlyExitPrediction:
        """Batch mode: walk the units, and at each exit k run its head on the images still in the
        batch only; those whose confidence is >= thresholds[k] leave with that exit's prediction
        (everyone left leaves at the last), and later units run on the rest only. Stops once the
        batch is empty, so a budget that lets most images leave early saves their compute."""
        model = self.model
        if len(thresholds) != model.num_exits:
            raise ValueError(f"got {len(thresholds)} thresholds for a model with {model.num_exits} exits")
        device = self.device
        x = x.to(device)
        thresholds = thresholds.to(device)
        n = len(x)
        exits = torch.full((n,), model.num_exits - 1, dtype=torch.long, device=device)
        prediction = torch.empty(n, dtype=torch.long, device=device)
        present = torch.arange(n, device=device)  # (n_present,) batch indices still running
        unit_runs = 0
        k = 0  # next exit
        with _inference(model):
            state: State = model.stem(x)
            for u, unit in enumerate(model.units):
                state = unit(state)
                unit_runs += len(present)
                if u != model.exit_after[k]:
                    continue
                probs = model.heads[k](model.exit_features(state)).float().softmax(dim=1)  # (n_present, C)
                leave = _leaves(confidence(probs[None])[0], thresholds, k)  # (n_present,)
                exits[present[leave]] = k
                prediction[present[leave]] = probs[leave].argmax(dim=1)
                present, state = present[~leave], _select(state, ~leave)
                k += 1
                if len(present) == 0:
                    break
        cost = torch.tensor(self.costs, dtype=torch.float64, device=device)[exits]  # (N,)
        return EarlyExitPrediction(exits, prediction, cost, unit_runs)
