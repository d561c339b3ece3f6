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
