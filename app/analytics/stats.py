"""The statistics of research analytics: proportions and their tests, calibration, percentiles, edit similarity.

Pure functions on counts and arrays (the SQL that feeds them lives in app/services). Each docstring states the
definition and convention exactly, because the routes show it in the OpenAPI page. Invalid input raises
`ValueError` with a message that names the parameter, never the data (the routes answer it with 422); an
undefined statistic (no data, a zero variance) is `None`, never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats as sp_stats

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval `[low, high]`."""

    low: float
    high: float


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be strictly between 0 and 1")
    return float(sp_stats.norm.ppf(0.5 + confidence / 2.0))


def _check_count(successes: int, n: int, what: str = "") -> None:
    if n < 0 or successes < 0:
        raise ValueError(f"counts{what} must not be negative")
    if successes > n:
        raise ValueError(f"successes{what} must not exceed the number of trials")


# --- Proportions -------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval | None:
    """Wilson score interval for a binomial proportion `successes / n`.

    With `p = successes / n` and `z` the two-sided normal quantile of `confidence`:
    `(p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`, the interval of statsmodels'
    `proportion_confint(method="wilson")`. It stays inside [0, 1] and is exactly 0 (1) at the lower (upper)
    end when there are no successes (failures). `None` when `n` is 0.
    """
    _check_count(successes, n)
    if n == 0:
        return None
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


@dataclass(frozen=True, slots=True)
class TwoProportionTest:
    """Arm 2 (treatment) against arm 1 (control); see `two_proportion_ztest`."""

    p1: float
    p2: float
    difference: float
    difference_interval: Interval
    uplift: float | None
    uplift_interval: Interval | None
    z: float | None
    p_value: float | None


def two_proportion_ztest(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> TwoProportionTest:
    """Two-proportion z-test of arm 2 (treatment, `x2` of `n2`) against arm 1 (control, `x1` of `n1`).

    * `difference = p2 - p1`; its interval is Newcombe's hybrid score interval (Newcombe 1998, method 10)
      built from the two Wilson intervals `(l1, u1)`, `(l2, u2)`:
      `[d - sqrt((p2-l2)² + (u1-p1)²), d + sqrt((u2-p2)² + (p1-l1)²)]`.
    * `uplift = p2 / p1 - 1` (relative); its interval is the delta method on the log ratio (Katz):
      `exp(log(p2/p1) ± z·sqrt(1/x1 - 1/n1 + 1/x2 - 1/n2)) - 1`. `None` when `x1` is 0 (uplift undefined);
      the interval is `None` when `x1` or `x2` is 0.
    * `z = (p2 - p1) / sqrt(p(1-p)(1/n1 + 1/n2))` with the pooled `p = (x1+x2)/(n1+n2)` and the two-sided
      `p_value = 2·(1 - Φ(|z|))`, as statsmodels' `proportions_ztest` (its sign is for `p1 - p2`). Both are
      `None` when the pooled proportion is 0 or 1 (no variance: nothing to test).

    Both arms need at least one trial (`ValueError` otherwise).
    """
    _check_count(x1, n1, " of arm 1")
    _check_count(x2, n2, " of arm 2")
    if n1 == 0 or n2 == 0:
        raise ValueError("both arms need at least one trial")
    zq = _z(confidence)
    p1, p2 = x1 / n1, x2 / n2
    d = p2 - p1
    w1, w2 = wilson_interval(x1, n1, confidence), wilson_interval(x2, n2, confidence)
    assert w1 is not None and w2 is not None
    d_low = d - math.sqrt((p2 - w2.low) ** 2 + (w1.high - p1) ** 2)
    d_high = d + math.sqrt((w2.high - p2) ** 2 + (p1 - w1.low) ** 2)

    uplift = None if x1 == 0 else p2 / p1 - 1.0
    uplift_interval = None
    if x1 > 0 and x2 > 0:
        log_ratio = math.log(p2 / p1)
        se_log = math.sqrt(1.0 / x1 - 1.0 / n1 + 1.0 / x2 - 1.0 / n2)
        uplift_interval = Interval(
            math.exp(log_ratio - zq * se_log) - 1.0, math.exp(log_ratio + zq * se_log) - 1.0
        )

    pooled = (x1 + x2) / (n1 + n2)
    z: float | None = None
    p_value: float | None = None
    if 0.0 < pooled < 1.0:
        z = d / math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
        p_value = float(2.0 * sp_stats.norm.sf(abs(z)))
    return TwoProportionTest(p1, p2, d, Interval(d_low, d_high), uplift, uplift_interval, z, p_value)


@dataclass(frozen=True, slots=True)
class ChiSquare:
    """Pearson's chi-square test of homogeneity; see `chi_square_2xk`."""

    statistic: float
    dof: int
    p_value: float


def chi_square_2xk(table: Sequence[Sequence[int]] | npt.ArrayLike) -> ChiSquare | None:
    """Pearson's chi-square test that k arms share one success rate, on a 2×k table of counts.

    Row 0 holds the successes of each arm, row 1 the failures (any order of the two rows gives the same
    answer). `statistic = Σ (observed - expected)² / expected` with `expected = row total · column total / N`,
    `dof = k - 1`, no continuity correction (scipy's `chi2_contingency(correction=False)`). Arms with no
    trials are left out first. `None` when fewer than two arms have trials or a row is all zero (every arm
    has the same rate, 0 or 1: nothing to test).
    """
    counts = np.asarray(table)
    if counts.ndim != 2 or counts.shape[0] != 2:
        raise ValueError("table must have exactly two rows (successes, failures) and one column per arm")
    if counts.dtype.kind not in "iub" and not np.all(np.mod(counts, 1) == 0):
        raise ValueError("table must hold whole counts")
    counts = counts.astype(np.float64)
    if np.any(counts < 0):
        raise ValueError("table counts must not be negative")
    counts = counts[:, counts.sum(axis=0) > 0]
    rows = counts.sum(axis=1)
    if counts.shape[1] < 2 or np.any(rows == 0):
        return None
    expected = np.outer(rows, counts.sum(axis=0)) / counts.sum()
    statistic = float(((counts - expected) ** 2 / expected).sum())
    dof = counts.shape[1] - 1
    return ChiSquare(statistic, dof, float(sp_stats.chi2.sf(statistic, dof)))


# --- Calibration -------------------------------------------------------------------------------------------

MIN_BINS, MAX_BINS = 5, 50


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not MIN_BINS <= bins <= MAX_BINS:
        raise ValueError(f"bins must be a whole number from {MIN_BINS} to {MAX_BINS}")


def _forecasts(confidences: npt.ArrayLike, outcomes: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validated 1-D float arrays of confidences in [0, 1] and outcomes in {0, 1}, of one length."""
    conf = np.asarray(confidences, dtype=np.float64)
    out = np.asarray(outcomes, dtype=np.float64)
    if conf.ndim != 1 or out.ndim != 1:
        raise ValueError("confidences and outcomes must be flat sequences")
    if conf.shape != out.shape:
        raise ValueError("confidences and outcomes must have the same length")
    if not np.all((conf >= 0.0) & (conf <= 1.0)):  # also refuses NaN
        raise ValueError("confidences must lie in [0, 1]")
    if not np.all((out == 0.0) | (out == 1.0)):
        raise ValueError("outcomes must be 0 or 1")
    return conf, out


def _confidences(confidences: npt.ArrayLike) -> FloatArray:
    conf, _ = _forecasts(confidences, np.zeros(np.shape(confidences)))
    return conf


def equal_width_edges(bins: int) -> FloatArray:
    """The edges `k / bins` for k = 0..bins, each the double nearest the exact fraction."""
    return np.arange(bins + 1, dtype=np.float64) / bins


def _bin_index(values: FloatArray, edges: FloatArray) -> npt.NDArray[np.intp]:
    """Bin k holds `edges[k] <= v < edges[k+1]`, the last bin also `v == edges[-1]`; -1 below, len-1 above."""
    index = np.searchsorted(edges, values, side="right") - 1
    last = len(edges) - 2
    index[values == edges[-1]] = last
    return index


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    """One bin of a reliability diagram: `[lower, upper)` (the top bin `[lower, 1]`)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True, slots=True)
class Reliability:
    """A reliability diagram with its calibration errors; see `reliability_bins`."""

    n: int
    bins: list[ReliabilityBin]
    ece: float | None
    mce: float | None


def reliability_bins(confidences: npt.ArrayLike, outcomes: npt.ArrayLike, bins: int = 10) -> Reliability:
    """Reliability diagram, expected and maximum calibration error of binary forecasts.

    `confidences[i]` in [0, 1] is the forecast probability that `outcomes[i]` (0 or 1) is 1. Bins are B
    equal-width intervals `[k/B, (k+1)/B)` for k = 0..B-1, the top one closed, `[(B-1)/B, 1]`: a confidence of
    exactly 1.0 falls in the last bin, and a confidence on an inner edge `k/B` (the double nearest it) in the
    bin above the edge. Per bin: count, mean confidence and accuracy (mean outcome), both `None` for an empty
    bin. `ECE = Σ (n_k / N)·|accuracy_k - confidence_k|`; `MCE = max |accuracy_k - confidence_k|` over the
    non-empty bins. `B` must be from 5 to 50. With no forecasts, ECE and MCE are `None`.
    """
    _check_bins(bins)
    conf, out = _forecasts(confidences, outcomes)
    edges = equal_width_edges(bins)
    index = _bin_index(conf, edges)
    count = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=conf, minlength=bins)
    out_sum = np.bincount(index, weights=out, minlength=bins)
    result: list[ReliabilityBin] = []
    gaps: list[float] = []
    weighted = 0.0
    for k in range(bins):
        n_k = int(count[k])
        if n_k == 0:
            result.append(ReliabilityBin(float(edges[k]), float(edges[k + 1]), 0, None, None))
            continue
        mean_conf, acc = float(conf_sum[k] / n_k), float(out_sum[k] / n_k)
        result.append(ReliabilityBin(float(edges[k]), float(edges[k + 1]), n_k, mean_conf, acc))
        gaps.append(abs(acc - mean_conf))
        weighted += n_k * abs(acc - mean_conf)
    n = len(conf)
    if n == 0:
        return Reliability(0, result, None, None)
    return Reliability(n, result, weighted / n, max(gaps))


def brier_score(confidences: npt.ArrayLike, outcomes: npt.ArrayLike) -> float | None:
    """Brier score `BS = (1/N) Σ (confidence_i - outcome_i)²` (0 is perfect); `None` with no forecasts."""
    conf, out = _forecasts(confidences, outcomes)
    if len(conf) == 0:
        return None
    return float(np.mean((conf - out) ** 2))


@dataclass(frozen=True, slots=True)
class BrierDecomposition:
    """The Brier score and its Murphy decomposition; see `brier_decomposition`."""

    n: int
    brier: float
    reliability: float
    resolution: float
    uncertainty: float
    within_bin_variance: float
    within_bin_covariance: float


def brier_decomposition(
    confidences: npt.ArrayLike, outcomes: npt.ArrayLike, bins: int = 10
) -> BrierDecomposition | None:
    """Brier score with Murphy's decomposition over the bins of `reliability_bins`.

    With N forecasts, bin k holding n_k of them with mean confidence f_k and accuracy o_k, and the overall
    base rate o: `reliability = (1/N) Σ n_k (f_k - o_k)²` (lower is better), `resolution = (1/N) Σ n_k
    (o_k - o)²` (higher is better), `uncertainty = o(1 - o)`. The identity `BS = REL - RES + UNC` holds exactly
    when forecasts are grouped by distinct values; with bins it is approximate, and exact with the two
    within-bin terms of Stephenson et al. (2008): `BS = REL - RES + UNC + WBV - 2·WBC`, where
    `WBV = (1/N) Σ_k Σ_{i∈k} (f_i - f_k)²` and `WBC = (1/N) Σ_k Σ_{i∈k} (f_i - f_k)(o_i - o_k)`.
    `None` with no forecasts.
    """
    _check_bins(bins)
    conf, out = _forecasts(confidences, outcomes)
    n = len(conf)
    if n == 0:
        return None
    index = _bin_index(conf, equal_width_edges(bins))
    count = np.bincount(index, minlength=bins).astype(np.float64)
    filled = count > 0
    safe = np.where(filled, count, 1.0)
    f_k = np.bincount(index, weights=conf, minlength=bins) / safe
    o_k = np.bincount(index, weights=out, minlength=bins) / safe
    base = float(out.mean())
    reliability = float(np.sum(count * (f_k - o_k) ** 2) / n)
    resolution = float(np.sum(count * (o_k - base) ** 2) / n)
    f_dev, o_dev = conf - f_k[index], out - o_k[index]
    return BrierDecomposition(
        n=n,
        brier=float(np.mean((conf - out) ** 2)),
        reliability=reliability,
        resolution=resolution,
        uncertainty=base * (1.0 - base),
        within_bin_variance=float(np.mean(f_dev**2)),
        within_bin_covariance=float(np.mean(f_dev * o_dev)),
    )


def confidence_histogram(confidences: npt.ArrayLike, bins: int = 10) -> list[int]:
    """Number of confidences in each of the B bins of `reliability_bins` (same edges, same convention)."""
    _check_bins(bins)
    conf = _confidences(confidences)
    return [int(c) for c in np.bincount(_bin_index(conf, equal_width_edges(bins)), minlength=bins)]


# --- Latency aggregates ------------------------------------------------------------------------------------


def _values(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError("values must be a flat sequence")
    if not np.all(np.isfinite(array)):
        raise ValueError("values must be finite numbers")
    return array


def percentiles(values: npt.ArrayLike, qs: Sequence[float]) -> list[float | None]:
    """Continuous percentiles of `values` at fractions `qs` (each in [0, 1]), PostgreSQL's `percentile_cont`.

    With the N values sorted as v_0 <= ... <= v_{N-1}, the percentile at q is read at position `h = q·(N-1)`:
    `v_⌊h⌋ + (h - ⌊h⌋)·(v_⌈h⌉ - v_⌊h⌋)` (linear interpolation; numpy's `percentile(method="linear")`). These are
    aggregates over the whole set, never window functions. `None` for each q when there are no values.
    """
    fractions = [float(q) for q in qs]
    if not all(0.0 <= q <= 1.0 for q in fractions):  # also refuses NaN
        raise ValueError("percentile fractions must lie in [0, 1]")
    ordered = np.sort(_values(values))
    if len(ordered) == 0:
        return [None for _ in fractions]
    result: list[float | None] = []
    for q in fractions:
        h = q * (len(ordered) - 1)
        below = math.floor(h)
        above = min(below + 1, len(ordered) - 1)
        low = float(ordered[below])
        result.append(low + (h - below) * (float(ordered[above]) - low))
    return result


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bin `[edges[k], edges[k+1])` (the last bin closed), and the values outside the edges."""

    edges: list[float]
    counts: list[int]
    below: int
    above: int


def histogram(values: npt.ArrayLike, edges: Sequence[float]) -> Histogram:
    """Histogram of `values` over strictly increasing `edges` (at least two).

    Bin k counts `edges[k] <= v < edges[k+1]`; the last bin also counts `v == edges[-1]`, the convention of
    the reliability bins (and of numpy's `histogram`). Values below the first edge or above the last are
    counted in `below` and `above`, not dropped silently.
    """
    edge_array = _values(edges)
    if len(edge_array) < 2 or not np.all(np.diff(edge_array) > 0):
        raise ValueError("edges must be at least two strictly increasing numbers")
    array = _values(values)
    index = _bin_index(array, edge_array)
    nbins = len(edge_array) - 1
    inside = (index >= 0) & (index < nbins)
    counts = np.bincount(index[inside], minlength=nbins)
    return Histogram(
        edges=[float(e) for e in edge_array],
        counts=[int(c) for c in counts],
        below=int(np.sum(index < 0)),
        above=int(np.sum(index >= nbins)),
    )


# --- Ground truth ------------------------------------------------------------------------------------------


def levenshtein(a: str, b: str) -> int:
    """Levenshtein distance: the fewest single-character insertions, deletions and substitutions from a to b.

    Characters are Unicode code points. Cost O(len(a)·len(b)) time, O(min) memory: callers run it off the
    event loop on bounded texts (a completion and its ground truth).
    """
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def edit_similarity(completion: str, truth: str) -> float:
    """`1 - levenshtein(completion, truth) / max(len(completion), len(truth))`, in [0, 1]; 1.0 for two empty texts.

    No normalisation: whitespace and case count, so the caller passes the user's own text (the ground truth
    extracted from the plugin's padding), never the padded range.
    """
    longest = max(len(completion), len(truth))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(completion, truth) / longest


def exact_match(completion: str, truth: str) -> bool:
    """Whether the completion equals the ground truth character for character (no normalisation)."""
    return completion == truth
