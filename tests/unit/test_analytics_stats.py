"""app/analytics/stats.py against reference implementations, on fixed and random inputs.

References (test-only dependencies): statsmodels for proportions, scipy for chi-square, scikit-learn for the
Brier score and reliability curves, torchmetrics for ECE/MCE, numpy for percentiles. Where a reference bins
differently from our documented convention (a confidence of exactly 1.0, values on bin edges, empty bins),
the case is tested against our convention and the difference is stated.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2_contingency
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from app.analytics import stats as S

counts = st.integers(min_value=1, max_value=5000).flatmap(
    lambda n: st.tuples(st.integers(min_value=0, max_value=n), st.just(n))
)


# --- Proportions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "n"), [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (1, 1000), (999, 1000), (50, 100), (7, 13)]
)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels_fixed(x: int, n: int, confidence: float) -> None:
    low, high = proportion_confint(x, n, alpha=1 - confidence, method="wilson")
    got = S.wilson_interval(x, n, confidence)
    assert got is not None
    assert got.low == pytest.approx(low, abs=1e-12)
    assert got.high == pytest.approx(high, abs=1e-12)
    assert 0.0 <= got.low <= x / n <= got.high <= 1.0


@settings(max_examples=300, deadline=None)
@given(counts)
def test_wilson_matches_statsmodels_random(xn: tuple[int, int]) -> None:
    x, n = xn
    low, high = proportion_confint(x, n, alpha=0.05, method="wilson")
    got = S.wilson_interval(x, n)
    assert got is not None
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)


def test_wilson_edges() -> None:
    assert S.wilson_interval(0, 0) is None
    assert S.wilson_interval(0, 5) is not None and S.wilson_interval(0, 5).low == 0.0  # type: ignore[union-attr]
    assert S.wilson_interval(5, 5).high == 1.0  # type: ignore[union-attr]
    for bad in [(-1, 5), (6, 5), (0, -1)]:
        with pytest.raises(ValueError, match="count|successes"):
            S.wilson_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        S.wilson_interval(1, 2, confidence=1.0)


def _check_two_proportions(x1: int, n1: int, x2: int, n2: int) -> None:
    got = S.two_proportion_ztest(x1, n1, x2, n2)
    assert got.p1 == x1 / n1 and got.p2 == x2 / n2
    assert got.difference == pytest.approx(x2 / n2 - x1 / n1, abs=1e-15)
    pooled = (x1 + x2) / (n1 + n2)
    if 0 < pooled < 1:
        # statsmodels tests p1 - p2 (its first argument first): same p-value, opposite sign.
        z, p = proportions_ztest([x1, x2], [n1, n2])
        assert got.z == pytest.approx(-z, rel=1e-9, abs=1e-12)
        assert got.p_value == pytest.approx(p, rel=1e-9, abs=1e-15)
    else:
        assert got.z is None and got.p_value is None
    # Newcombe's interval for p2 - p1 is statsmodels' interval with the arms in that order.
    low, high = confint_proportions_2indep(x2, n2, x1, n1, method="newcomb", compare="diff")
    assert got.difference_interval.low == pytest.approx(low, abs=1e-12)
    assert got.difference_interval.high == pytest.approx(high, abs=1e-12)
    assert got.difference_interval.low <= got.difference <= got.difference_interval.high
    if x1 > 0 and x2 > 0:
        low, high = confint_proportions_2indep(x2, n2, x1, n1, method="log", compare="ratio")
        assert got.uplift == pytest.approx((x2 / n2) / (x1 / n1) - 1, rel=1e-12)
        assert got.uplift_interval is not None
        assert got.uplift_interval.low == pytest.approx(low - 1, rel=1e-9, abs=1e-12)
        assert got.uplift_interval.high == pytest.approx(high - 1, rel=1e-9, abs=1e-12)
    else:
        assert got.uplift_interval is None
        assert (got.uplift is None) == (x1 == 0)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [
        (20, 100, 30, 100),
        (30, 100, 20, 100),
        (0, 50, 5, 50),
        (5, 50, 0, 50),
        (0, 10, 0, 20),
        (10, 10, 20, 20),
        (1, 1, 0, 1),
        (4000, 10000, 4150, 10000),
        (3, 7, 900, 1000),
    ],
)
def test_two_proportions_match_statsmodels_fixed(x1: int, n1: int, x2: int, n2: int) -> None:
    _check_two_proportions(x1, n1, x2, n2)


@settings(max_examples=200, deadline=None)
@given(counts, counts)
def test_two_proportions_match_statsmodels_random(a: tuple[int, int], b: tuple[int, int]) -> None:
    _check_two_proportions(*a, *b)


def test_two_proportions_refuses_empty_arms() -> None:
    with pytest.raises(ValueError, match="at least one trial"):
        S.two_proportion_ztest(0, 0, 1, 2)
    with pytest.raises(ValueError, match="arm 2"):
        S.two_proportion_ztest(1, 2, 3, 2)


@pytest.mark.parametrize(
    "table",
    [
        [[10, 20], [90, 80]],
        [[10, 20, 30], [90, 80, 70]],
        [[1, 0, 3, 9], [5, 5, 5, 1]],
        [[400, 410, 395, 420, 380], [600, 590, 605, 580, 620]],
    ],
)
def test_chi_square_matches_scipy_fixed(table: list[list[int]]) -> None:
    ref = chi2_contingency(np.array(table), correction=False)
    got = S.chi_square_2xk(table)
    assert got is not None
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-10, abs=1e-12)
    assert got.dof == ref.dof
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-15)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 3000)), min_size=2, max_size=8))
def test_chi_square_matches_scipy_random(columns: list[tuple[int, int]]) -> None:
    table = np.array(columns).T
    ref = chi2_contingency(table, correction=False)
    got = S.chi_square_2xk(table)
    assert got is not None
    assert got.statistic == pytest.approx(ref.statistic, rel=1e-9, abs=1e-12)
    assert got.p_value == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-15)


def test_chi_square_2x2_equals_z_squared() -> None:
    z = S.two_proportion_ztest(20, 100, 30, 100).z
    chi = S.chi_square_2xk([[20, 30], [80, 70]])
    assert z is not None and chi is not None
    assert chi.statistic == pytest.approx(z * z, rel=1e-12)


def test_chi_square_degenerate_and_invalid() -> None:
    # An arm with no trials is left out; scipy would refuse the zero expected count.
    with_empty = S.chi_square_2xk([[10, 0, 20], [90, 0, 80]])
    assert with_empty == S.chi_square_2xk([[10, 20], [90, 80]])
    assert S.chi_square_2xk([[0, 0], [10, 20]]) is None  # every arm at 0 %: nothing to test
    assert S.chi_square_2xk([[5], [5]]) is None
    with pytest.raises(ValueError, match="two rows"):
        S.chi_square_2xk([[1, 2], [3, 4], [5, 6]])
    with pytest.raises(ValueError, match="negative"):
        S.chi_square_2xk([[1, -2], [3, 4]])
    with pytest.raises(ValueError, match="whole"):
        S.chi_square_2xk([[1.5, 2], [3, 4]])
    assert math.isfinite(S.chi_square_2xk([[1, 2], [3, 4]]).p_value)  # type: ignore[union-attr]
