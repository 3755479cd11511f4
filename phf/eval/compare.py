"""Comparing objectives across runs, with seeds as the unit (what ``phf-report`` states).

A run's samples share one model, so they say how well that model was measured, not how much another
seed of the same training would differ. Across runs the unit is the seed:

* ``seed_interval``: the mean over seeds of a per-run number (hit rate, mean score) with a Student t
  interval over the seeds (n - 1 degrees of freedom; none with one seed).
* ``paired_ratio``: an objective against MLE, paired by seed (seed s of both saw the same data order):
  the per-seed ratios objective / MLE and a t interval of the mean log ratio over the pairs, exponentiated,
  i.e. an interval for the geometric-mean ratio. Hit rates enter as (hits + 0.5) / (n + 1) (a continuity
  correction, so that 0 hits gives a finite log); mean scores as they are (a zero mean gives no ratio).
* ``newcombe_difference``: the pooled comparison, samples as the unit (all seeds' samples of an arm
  together; ignores seed-to-seed variation, so it is the optimistic one): the difference of two
  proportions with Newcombe's (1998, method 10) hybrid score interval built from the two Wilson intervals.
* ``samples_to_separate``: how many samples per arm a two-sided two-proportion z-test at level alpha needs
  to detect p1 vs p2 with the given power (Fleiss' formula without continuity correction), for a
  comparison that was not decisive.

Every function takes plain numbers; the tests check them against hand-computed values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from phf.eval.metrics import wilson_interval, z_value


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student t quantile (``scipy.stats.t``)."""
    from scipy.stats import t

    return float(t.ppf((1.0 + confidence) / 2.0, df))


@dataclass
class SeedInterval:
    """Mean over ``n`` seeds with a t interval (NaN bounds with one seed)."""

    mean: float
    low: float
    high: float
    n: int


def seed_interval(values: Sequence[float], confidence: float = 0.95) -> SeedInterval:
    """mean ± t_{n-1} · sd / sqrt(n) over the per-seed values (sd with n - 1). E.g. hit rates 0.2, 0.4, 0.3:
    mean 0.3, sd 0.1, t_{2, 0.975} = 4.3027, half width 4.3027 · 0.1 / sqrt(3) = 0.24841."""
    xs = [float(v) for v in values if math.isfinite(v)]
    n = len(xs)
    if n == 0:
        return SeedInterval(math.nan, math.nan, math.nan, 0)
    m = sum(xs) / n
    if n == 1:
        return SeedInterval(m, math.nan, math.nan, 1)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return SeedInterval(m, m - half, m + half, n)


def corrected_rate(hits: int, n: int) -> float:
    """(hits + 0.5) / (n + 1): a hit rate with a log even at 0 hits (paired_ratio)."""
    return (hits + 0.5) / (n + 1)


@dataclass
class PairedRatio:
    """objective / MLE over seed pairs: the per-pair ratios, their geometric mean and its t interval."""

    ratios: list[float]
    ratio: float  # exp(mean log ratio)
    low: float
    high: float
    n: int  # seed pairs

    @property
    def decisive(self) -> bool:
        """The interval excludes 1 (no difference)."""
        return math.isfinite(self.low) and (self.high < 1.0 or self.low > 1.0)


def paired_ratio(objective: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> PairedRatio:
    """Ratios objective[i] / reference[i] of seed pairs, with a t interval of the mean log ratio.

    E.g. rates (0.1, 0.2) vs (0.4, 0.4): log ratios log 0.25 = -1.3863 and log 0.5 = -0.6931, mean
    -1.0397 (ratio 0.35355), sd 0.49013, t_{1, 0.975} = 12.706, half width 12.706 · 0.49013 / sqrt 2 =
    4.4036: [exp(-5.4433), exp(3.3639)] = [0.004325, 28.90]. Pairs with a non-positive value give no log
    and are left out of the interval (their ratio is still listed).
    """
    if len(objective) != len(reference):
        raise ValueError(f"paired_ratio needs one value per seed pair, got {len(objective)} and {len(reference)}")
    ratios = [o / r if r > 0 else math.nan for o, r in zip(objective, reference, strict=True)]
    logs = [math.log(o) - math.log(r) for o, r in zip(objective, reference, strict=True) if o > 0 and r > 0]
    n = len(logs)
    if n == 0:
        return PairedRatio(ratios, math.nan, math.nan, math.nan, 0)
    m = sum(logs) / n
    if n == 1:
        return PairedRatio(ratios, math.exp(m), math.nan, math.nan, 1)
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    return PairedRatio(ratios, math.exp(m), math.exp(m - half), math.exp(m + half), n)


@dataclass
class Difference:
    """p1 - p2 of two pooled proportions with Newcombe's interval."""

    p1: float
    p2: float
    difference: float
    low: float
    high: float

    @property
    def decisive(self) -> bool:
        """The interval excludes 0."""
        return math.isfinite(self.low) and (self.high < 0.0 or self.low > 0.0)


def newcombe_difference(hits1: int, n1: int, hits2: int, n2: int, confidence: float = 0.95) -> Difference:
    """Newcombe's hybrid score interval of p1 - p2 (method 10) from the Wilson intervals (l_i, u_i):

        low = d - sqrt((p1 - l1)^2 + (u2 - p2)^2),   high = d + sqrt((u1 - p1)^2 + (p2 - l2)^2).

    E.g. 5 of 10 vs 0 of 10 with z = 2: Wilson [0.232739, 0.767261] and [0, 0.285714]; d = 0.5,
    low = 0.5 - sqrt(0.267261^2 + 0.285714^2) = 0.5 - sqrt(1/14 + 4/49) = 0.108770, high = 0.5 + 0.267261.
    """
    if n1 <= 0 or n2 <= 0:
        return Difference(math.nan, math.nan, math.nan, math.nan, math.nan)
    p1, p2 = hits1 / n1, hits2 / n2
    l1, u1 = wilson_interval(hits1, n1, confidence)
    l2, u2 = wilson_interval(hits2, n2, confidence)
    d = p1 - p2
    return Difference(p1, p2, d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
                      d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def samples_to_separate(p1: float, p2: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Samples per arm for a two-sided two-proportion z-test at level ``alpha`` to detect p1 vs p2 with
    probability ``power`` (Fleiss, Statistical Methods for Rates and Proportions, eq. 4.14 without the
    continuity correction), rounded up:

        n = (z_{1-alpha/2} sqrt(2 pbar qbar) + z_{power} sqrt(p1 q1 + p2 q2))^2 / (p1 - p2)^2,  pbar = (p1 + p2) / 2.

    E.g. 0.5 vs 0.25 (alpha 0.05, power 0.8): pbar 0.375, sqrt(2 · 0.375 · 0.625) = 0.684653,
    sqrt(0.25 + 0.1875) = 0.661438; (1.959964 · 0.684653 + 0.841621 · 0.661438)^2 / 0.0625 =
    (1.341895 + 0.556683)^2 / 0.0625 = 57.68 -> 58. Infinite when p1 == p2.
    """
    if p1 == p2:
        return math.inf
    pbar = (p1 + p2) / 2.0
    a = z_value(1.0 - alpha) * math.sqrt(2.0 * pbar * (1.0 - pbar))
    b = z_value(2.0 * power - 1.0) * math.sqrt(p1 * (1.0 - p1) + p2 * (1.0 - p2))  # one-sided power quantile
    return float(math.ceil((a + b) ** 2 / (p1 - p2) ** 2))
