"""app/analytics/stats.py against reference implementations, on fixed and random inputs.

References (test-only dependencies): statsmodels for proportions, scipy for chi-square, scikit-learn for the
Brier score and reliability curves, torchmetrics for ECE/MCE, numpy for percentiles. Where a reference bins
differently from our documented convention (a confidence of exactly 1.0, values on bin edges, empty bins),
the case is tested against our convention and the difference is stated.
"""

from __future__ import annotations

import functools
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


# --- Calibration -------------------------------------------------------------------------------------------


def _random_forecasts(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidences from a skewed model with outcomes drawn from a miscalibrated truth."""
    rng = np.random.default_rng(seed)
    conf = rng.beta(2.0, 1.5, size=n)
    out = (rng.random(n) < conf**1.3).astype(np.int64)
    return conf, out


def _torch_ce(conf: np.ndarray, out: np.ndarray, bins: int, norm: str) -> float:
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    preds = torch.tensor(conf, dtype=torch.float64)
    target = torch.tensor(out, dtype=torch.long)
    return float(binary_calibration_error(preds, target, n_bins=bins, norm=norm))


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("bins", [5, 10, 15, 50])
def test_reliability_matches_sklearn_and_torchmetrics_random(seed: int, bins: int) -> None:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    conf, out = _random_forecasts(seed, 2000 + 37 * seed)
    assert not np.any(conf == 1.0)  # where the references agree with our convention
    got = S.reliability_bins(conf, out, bins)
    prob_true, prob_pred = calibration_curve(out, conf, n_bins=bins, strategy="uniform")
    filled = [b for b in got.bins if b.count > 0]
    assert [b.accuracy for b in filled] == pytest.approx(list(prob_true), abs=1e-12)
    assert [b.mean_confidence for b in filled] == pytest.approx(list(prob_pred), abs=1e-12)
    assert sum(b.count for b in got.bins) == got.n == len(conf)
    assert got.ece == pytest.approx(_torch_ce(conf, out, bins, "l1"), abs=1e-9)
    assert got.mce == pytest.approx(_torch_ce(conf, out, bins, "max"), abs=1e-9)
    assert S.brier_score(conf, out) == pytest.approx(brier_score_loss(out, conf), abs=1e-12)
    decomposition = S.brier_decomposition(conf, out, bins)
    assert decomposition is not None
    assert decomposition.brier == pytest.approx(brier_score_loss(out, conf), abs=1e-12)
    assert S.confidence_histogram(conf, bins) == [b.count for b in got.bins]


def test_confidence_one_falls_in_the_top_bin() -> None:
    """Ours: 1.0 joins the top bin [0.9, 1]. torchmetrics gives it a bin of its own; sklearn agrees with us."""
    from sklearn.calibration import calibration_curve

    conf, out = [1.0, 1.0, 0.95], [1, 0, 1]
    got = S.reliability_bins(conf, out, 10)
    top = got.bins[-1]
    assert (top.lower, top.upper, top.count) == (0.9, 1.0, 3)
    assert top.mean_confidence == pytest.approx(2.95 / 3)
    assert top.accuracy == pytest.approx(2 / 3)
    assert got.ece == pytest.approx(2.95 / 3 - 2 / 3) and got.mce == pytest.approx(2.95 / 3 - 2 / 3)
    prob_true, prob_pred = calibration_curve(out, conf, n_bins=10, strategy="uniform")
    assert list(prob_true) == pytest.approx([2 / 3]) and list(prob_pred) == pytest.approx([2.95 / 3])
    # torchmetrics: |0.5 - 1.0|·2/3 + |1 - 0.95|·1/3 = 0.35 (ECE), 0.5 (MCE): a different convention.
    assert _torch_ce(np.array(conf), np.array(out), 10, "l1") == pytest.approx(0.35)
    assert _torch_ce(np.array(conf), np.array(out), 10, "max") == pytest.approx(0.5)
    assert S.confidence_histogram([0.0, 1.0, 1.0], 5) == [1, 0, 0, 0, 2]


def test_confidences_on_inner_edges_fall_in_the_bin_above() -> None:
    """Ours: k/B (the double nearest it) opens bin k. sklearn closes bins on the right: k/B is in bin k-1."""
    from sklearn.calibration import calibration_curve

    conf = [k / 10 for k in range(11)]
    got = S.reliability_bins(conf, [1] * 11, 10)
    assert [b.count for b in got.bins] == [1] * 9 + [2]
    for k, b in enumerate(got.bins[:-1]):
        assert b.mean_confidence == k / 10 and b.lower == k / 10
    _, prob_pred = calibration_curve([1, 1], [0.5, 0.55], n_bins=10, strategy="uniform")
    assert len(prob_pred) == 2  # sklearn: 0.5 in (0.4, 0.5], 0.55 in (0.5, 0.6]
    assert [b.count for b in S.reliability_bins([0.5, 0.55], [1, 1], 10).bins][
        5
    ] == 2  # ours: both [0.5, 0.6)


def test_inner_edges_agree_with_torchmetrics_when_edges_are_exact() -> None:
    """With B = 8 every edge k/8 is exact in both libraries, and torchmetrics' bucketize(right=True) is ours."""
    conf = np.array([k / 8 for k in range(8)] * 3)
    out = np.array([1, 0, 0] * 8)
    got = S.reliability_bins(conf, out, 8)
    assert [b.count for b in got.bins] == [3] * 8
    assert got.ece == pytest.approx(_torch_ce(conf, out, 8, "l1"), abs=1e-12)
    assert got.mce == pytest.approx(_torch_ce(conf, out, 8, "max"), abs=1e-12)
    # With B = 10, torch.linspace puts edge 3 at 0.30000000000000004, so torchmetrics bins 0.3 below it.
    assert S.reliability_bins([0.3], [1], 10).bins[3].count == 1


def test_empty_bins_and_no_forecasts() -> None:
    got = S.reliability_bins([0.05, 0.95], [0, 1], 10)
    assert [b.count for b in got.bins] == [1] + [0] * 8 + [1]
    assert got.bins[4].mean_confidence is None and got.bins[4].accuracy is None
    assert got.mce == pytest.approx(0.05) and got.ece == pytest.approx(0.05)
    empty = S.reliability_bins([], [], 10)
    assert empty.n == 0 and empty.ece is None and empty.mce is None and len(empty.bins) == 10
    assert S.brier_score([], []) is None and S.brier_decomposition([], []) is None
    assert S.confidence_histogram([], 5) == [0] * 5


def test_murphy_decomposition_identities() -> None:
    conf, out = _random_forecasts(11, 5000)
    d = S.brier_decomposition(conf, out, 10)
    assert d is not None
    exact = d.reliability - d.resolution + d.uncertainty + d.within_bin_variance - 2 * d.within_bin_covariance
    assert exact == pytest.approx(d.brier, abs=1e-12)
    assert d.reliability - d.resolution + d.uncertainty != pytest.approx(d.brier, abs=1e-9)
    # One distinct forecast value per bin: the within-bin terms vanish and BS = REL - RES + UNC exactly.
    rng = np.random.default_rng(5)
    centres = (np.arange(10) + 0.5) / 10
    conf = rng.choice(centres, size=3000)
    out = (rng.random(3000) < conf).astype(int)
    d = S.brier_decomposition(conf, out, 10)
    assert d is not None and d.within_bin_variance == pytest.approx(0.0, abs=1e-20)
    assert d.reliability - d.resolution + d.uncertainty == pytest.approx(d.brier, abs=1e-12)


def test_murphy_decomposition_by_hand() -> None:
    # Bins (B=5): 0.1 x2 (outcomes 0, 1), 0.9 x2 (outcomes 1, 1). Base rate 3/4.
    d = S.brier_decomposition([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1], 5)
    assert d is not None
    assert d.brier == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert d.reliability == pytest.approx((2 * 0.4**2 + 2 * 0.1**2) / 4)
    assert d.resolution == pytest.approx((2 * 0.25**2 + 2 * 0.25**2) / 4)
    assert d.uncertainty == pytest.approx(0.75 * 0.25)


@pytest.mark.parametrize("bins", [4, 51, 0, -3, True, 10.0, "10"])
def test_bins_out_of_range_are_refused(bins: object) -> None:
    for fn in (
        lambda: S.reliability_bins([0.5], [1], bins),  # type: ignore[arg-type]
        lambda: S.brier_decomposition([0.5], [1], bins),  # type: ignore[arg-type]
        lambda: S.confidence_histogram([0.5], bins),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match="bins must be a whole number from 5 to 50"):
            fn()


@pytest.mark.parametrize(
    ("conf", "out", "message"),
    [
        ([1.01], [1], "confidences must lie in"),
        ([-0.001], [0], "confidences must lie in"),
        ([float("nan")], [0], "confidences must lie in"),
        ([0.5], [2], "outcomes must be 0 or 1"),
        ([0.5], [0.5], "outcomes must be 0 or 1"),
        ([0.5, 0.6], [1], "same length"),
        ([[0.5]], [[1]], "flat"),
    ],
)
def test_invalid_forecasts_are_refused(conf: list[object], out: list[object], message: str) -> None:
    for fn in (S.reliability_bins, S.brier_score, S.brier_decomposition):
        with pytest.raises(ValueError, match=message):
            fn(conf, out)


# --- Latency aggregates ------------------------------------------------------------------------------------

QS = [0.0, 0.5, 0.9, 0.95, 0.99, 1.0]


def test_percentiles_by_hand() -> None:
    # PostgreSQL: SELECT percentile_cont(ARRAY[0, .25, .5, .9, 1]) WITHIN GROUP (ORDER BY v)
    #             FROM unnest(ARRAY[10, 20, 30, 40]) v  ->  {10, 17.5, 25, 37, 40}
    got = S.percentiles([40, 10, 30, 20], [0, 0.25, 0.5, 0.9, 1])
    assert got == pytest.approx([10, 17.5, 25, 37, 40])
    assert S.percentiles([7.0], QS) == [7.0] * len(QS)
    assert S.percentiles([], [0.5, 0.9]) == [None, None]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=500),
    st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=6),
)
def test_percentiles_match_numpy_linear(values: list[float], qs: list[float]) -> None:
    expected = np.percentile(np.array(values), np.array(qs) * 100, method="linear")
    assert S.percentiles(values, qs) == pytest.approx(list(expected), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_match_numpy_on_latencies(seed: int) -> None:
    latencies = np.random.default_rng(seed).lognormal(mean=5.0, sigma=0.8, size=10_000)
    expected = np.percentile(latencies, np.array(QS) * 100, method="linear")
    assert S.percentiles(latencies, QS) == pytest.approx(list(expected), rel=1e-12)


def test_percentiles_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="fractions"):
        S.percentiles([1.0], [95])
    with pytest.raises(ValueError, match="fractions"):
        S.percentiles([1.0], [float("nan")])
    with pytest.raises(ValueError, match="finite"):
        S.percentiles([1.0, float("inf")], [0.5])


def test_histogram_matches_numpy_inside_the_edges() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(5.0, 0.8, size=5000)
    edges = [0, 50, 100, 200, 400, 800, 1600]
    got = S.histogram(values, edges)
    counts, _ = np.histogram(values, bins=edges)
    assert got.counts == list(counts)
    assert got.below == 0 and got.above == int(np.sum(values > 1600))
    assert sum(got.counts) + got.above == len(values)


def test_histogram_edges_and_outside_values() -> None:
    got = S.histogram([-1, 0, 1, 2, 2.5, 3, 3.0001], [0, 1, 2, 3])
    assert got.counts == [1, 1, 3]  # 0 | 1 | 2, 2.5, 3 (last bin closed)
    assert (got.below, got.above) == (1, 1)
    assert S.histogram([], [0, 1]).counts == [0]
    for bad in ([1], [0, 0, 1], [1, 0]):
        with pytest.raises(ValueError, match="strictly increasing"):
            S.histogram([0.5], bad)


# --- Ground truth ------------------------------------------------------------------------------------------


def _reference_levenshtein(a: str, b: str) -> int:
    """The textbook recursion, memoised: a reference independent of the two-row dynamic programme."""

    @functools.cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "abc", 0),
        ("return x", "return  x", 1),
        ("héllo", "hello", 1),
        ("def f():\n    pass", "def f():\n\tpass", 4),
    ],
)
def test_levenshtein_fixed(a: str, b: str, distance: int) -> None:
    assert S.levenshtein(a, b) == distance == S.levenshtein(b, a)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab c\n", max_size=14), st.text(alphabet="ab c\n", max_size=14))
def test_levenshtein_matches_reference(a: str, b: str) -> None:
    assert S.levenshtein(a, b) == _reference_levenshtein(a, b)
    similarity = S.edit_similarity(a, b)
    assert 0.0 <= similarity <= 1.0
    assert (similarity == 1.0) == (a == b) == S.exact_match(a, b)


def test_edit_similarity_and_exact_match() -> None:
    assert S.edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert S.edit_similarity("", "") == 1.0
    assert S.edit_similarity("abc", "") == 0.0
    assert S.exact_match("x = 1", "x = 1")
    assert not S.exact_match("x = 1", "x = 1 ")  # no normalisation: the caller extracts the user's own text
