"""Verdicts as measurements: paired differences, their 95% interval, a verdict, and Holm's adjustment.

Shared by the paper's claims (`claims.py`) and E8's (`lm_claims.py`). A scored claim is a list of
paired differences d, one per seed or coarser unit, never finer: two numbers from one trained network
are not two pairs. The test is Student's t on the mean of d (`paired_interval`), and the verdict
(`verdict`) is

* "reproduced" when the 95% interval lies on the predicted side of zero,
* "contradicted" when it lies on the other side,
* "inconclusive" otherwise, always with fewer than two pairs (one seed decides nothing), and when
  fewer than five pairs are all identical (a zero-width interval from too few pairs says nothing of
  the spread),
* "not testable" when the study lacks what the claim needs (`scored` with no pairs, `untestable`),
* "not run in this profile" (`NOT_RUN`) when the profile does not run the experiment the claim needs.

Many claims are tested at 95% each, so the table also carries a Holm-adjusted verdict over the
scored claims (`with_holm`). Controls (rows of kind "control") are scored the same way but left out
of the Holm family: they test the premise, not the claim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CLAIM_COLUMNS", "CONFIDENCE", "ALPHA", "NOT_RUN", "TEST", "Interval", "paired_interval", "verdict", "holm",
           "Claim", "scored", "untestable", "with_holm"]

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
MIN_PAIRS_WITHOUT_SPREAD = 5  # fewer identical differences than this give no interval
TEST = "paired t, 95% CI"
NOT_RUN = "not run in this profile"
CLAIM_COLUMNS = ["claim", "kind", "family", "paired_on", "unit", "ours", "paper", "mean_diff", "ci_low", "ci_high",
                 "pairs", "test", "p_value", "verdict", "p_holm", "verdict_holm"]


@dataclass(frozen=True)
class Interval:
    """Mean of n paired differences, its two-sided t interval and the t test's two-sided p-value
    (NaN bounds and p when n < 2, or when fewer than MIN_PAIRS_WITHOUT_SPREAD differences are all equal)."""

    mean: float
    low: float
    high: float
    n: int
    p: float = math.nan


def paired_interval(diffs: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval on the mean of paired differences; missing values are dropped."""
    from scipy import stats

    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    n = len(d)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if n < 2 or (sd == 0 and n < MIN_PAIRS_WITHOUT_SPREAD):
        return Interval(mean, math.nan, math.nan, n)
    if sd == 0:  # many identical differences: the interval is the point, p is 0 unless it is 0
        return Interval(mean, mean, mean, n, 1.0 if mean == 0 else 0.0)
    se = sd / math.sqrt(n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return Interval(mean, mean - half, mean + half, n, p)


def _side(mean: float, paper_sign: int) -> str:
    return "reproduced" if mean * paper_sign > 0 else "contradicted"


def verdict(interval: Interval, paper_sign: int) -> str:
    """The verdict rule of the module docstring; `paper_sign` is the sign the paper predicts for d."""
    if paper_sign not in (-1, 1):
        raise ValueError(f"paper_sign must be -1 or +1, got {paper_sign}")
    if interval.n < 2 or math.isnan(interval.low):
        return "inconclusive"
    excludes_zero = interval.low > 0 or interval.high < 0
    return _side(interval.mean, paper_sign) if excludes_zero else "inconclusive"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count in the family):
    the i-th smallest of m p-values is multiplied by m - i, running maximum, capped at 1. A claim
    whose adjusted p is below ALPHA keeps its verdict with a family-wise error of at most ALPHA."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    idx = [i for i in np.argsort(p, kind="mergesort") if not math.isnan(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass
class Claim:
    claim: str
    kind: str
    family: str
    paired_on: str
    unit: str
    ours: str
    paper: str
    mean_diff: float
    ci_low: float
    ci_high: float
    pairs: int
    test: str
    p_value: float
    verdict: str
    p_holm: float = math.nan
    verdict_holm: str = ""
    sign: int = -1


def scored(claim: str, family: str, paired_on: str, unit: str, ours: str, paper: str,
            diffs: Sequence[float] | np.ndarray, paper_sign: int, kind: str = "claim") -> Claim:
    iv = paired_interval(diffs)
    found = verdict(iv, paper_sign) if iv.n else "not testable"  # nothing measured: the study lacks it
    return Claim(claim, kind, family, paired_on, unit, ours, paper, iv.mean, iv.low, iv.high, iv.n, TEST, iv.p,
                  found, sign=paper_sign)


def untestable(claim: str, family: str, why: str, paper: str, found: str = "not testable") -> Claim:
    nan = math.nan
    return Claim(claim, "claim", family, "", "", why, paper, nan, nan, nan, 0, TEST, nan, found)


def with_holm(found: list[Claim]) -> list[Claim]:
    """Fill p_holm and verdict_holm over the scored claims (controls and untestable rows stay out)."""
    family = [i for i, c in enumerate(found) if c.kind == "claim" and not math.isnan(c.p_value)]
    adjusted = holm([found[i].p_value for i in family])
    for c in found:
        c.verdict_holm = c.verdict if c.verdict.startswith("not ") else "inconclusive"
    for i, p in zip(family, adjusted):
        found[i].p_holm = p
        found[i].verdict_holm = _side(found[i].mean_diff, found[i].sign) if p < ALPHA else "inconclusive"
    return found
