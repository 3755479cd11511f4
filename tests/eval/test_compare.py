"""Comparisons across runs (seeds as the unit), on hand-computed numbers (arithmetic in each docstring)."""

import math

import pytest

from phf.eval.compare import (
    corrected_rate,
    newcombe_difference,
    paired_ratio,
    samples_to_separate,
    seed_interval,
    t_quantile,
)


def test_seed_interval_by_hand():
    """Per-seed hit rates 0.2, 0.4, 0.3: mean 0.3, sd sqrt((0.01 + 0.01 + 0) / 2) = 0.1, t_{2, 0.975} = 4.302653,
    half width 4.302653 · 0.1 / sqrt(3) = 0.248414."""
    assert t_quantile(0.95, 2) == pytest.approx(4.302653, abs=1e-6)
    s = seed_interval([0.2, 0.4, 0.3])
    assert (s.mean, s.low, s.high, s.n) == (pytest.approx(0.3), pytest.approx(0.051586, abs=1e-6),
                                            pytest.approx(0.548414, abs=1e-6), 3)
    one = seed_interval([0.25])
    assert one.mean == 0.25 and math.isnan(one.low) and one.n == 1  # one seed: no spread to estimate
    assert seed_interval([]).n == 0


def test_paired_ratio_by_hand():
    """Rates (0.1, 0.2) vs MLE (0.4, 0.4): log ratios -1.386294 and -0.693147, mean -1.039721 (ratio
    exp = 0.353553), sd = 0.693147 / sqrt 2 = 0.490129, t_{1, 0.975} = 12.706205, half width 12.706205 ·
    0.490129 / sqrt 2 = 4.403592: [exp(-5.443313), exp(3.363871)] = [0.004325, 28.902]."""
    p = paired_ratio([0.1, 0.2], [0.4, 0.4])
    assert p.ratios == pytest.approx([0.25, 0.5]) and p.ratio == pytest.approx(0.353553, abs=1e-6)
    assert (p.low, p.high) == (pytest.approx(0.004325, abs=1e-6), pytest.approx(28.902, abs=1e-3))
    assert p.n == 2 and not p.decisive  # two seeds: the interval spans 1
    tight = paired_ratio([0.1, 0.1, 0.1], [0.4, 0.4, 0.4])  # sd 0: the interval is the point 0.25
    assert (tight.low, tight.high) == (pytest.approx(0.25), pytest.approx(0.25)) and tight.decisive
    with pytest.raises(ValueError, match="one value per seed pair"):
        paired_ratio([0.1], [0.2, 0.3])


def test_corrected_rate_keeps_zero_hits_finite():
    """0 of 511 -> 0.5 / 512; 3 of 9 -> 3.5 / 10."""
    assert corrected_rate(0, 511) == 0.5 / 512 and corrected_rate(3, 9) == 0.35


def test_newcombe_difference_by_hand():
    """5 of 10 vs 0 of 10 with z = 2: Wilson [0.232739, 0.767261] and [0, 0.285714] (centre = half = (4/20) /
    1.4); d = 0.5, low = 0.5 - sqrt(0.267261^2 + 0.285714^2) = 0.5 - sqrt(1/14 + 4/49) = 0.108770,
    high = 0.5 + sqrt(0.267261^2 + 0) = 0.767261."""
    d = newcombe_difference(5, 10, 0, 10, 2 * 0.9772498680518208 - 1)
    assert (d.p1, d.p2, d.difference) == (0.5, 0.0, 0.5)
    assert (d.low, d.high) == (pytest.approx(0.108770, abs=1e-6), pytest.approx(0.767261, abs=1e-6))
    assert d.decisive
    assert not newcombe_difference(3, 100, 4, 100).decisive


def test_samples_to_separate_by_hand():
    """0.5 vs 0.25, alpha 0.05, power 0.8: pbar 0.375; 1.959964 · sqrt(2 · 0.375 · 0.625) = 1.341895;
    0.841621 · sqrt(0.25 + 0.1875) = 0.556683; (1.898578)^2 / 0.0625 = 57.67 -> 58 per arm.
    The paper's Fig. 5 rates 0.047 vs 0.027: pbar 0.037, 1.959964 · sqrt(0.071262) = 0.523210, 0.841621 ·
    sqrt(0.044791 + 0.026271) = 0.224356; 0.747566^2 / 0.0004 = 1397.1 -> 1398 (128 per run is far short)."""
    assert samples_to_separate(0.5, 0.25) == 58
    assert samples_to_separate(0.047, 0.027) == 1398
    assert samples_to_separate(0.1, 0.1) == math.inf
