"""Tests of a study's treatment arm against its control: fixed-horizon, always-valid, per user, and power.

* ``naive_z_pvalue``: the fixed-horizon two-proportion z-test with the pooled variance (what statsmodels'
  ``proportions_ztest`` computes). Valid only when the sample size was fixed in advance and the data are
  looked at once; looking every day and stopping at the first p < 0.05 inflates false positives.
* ``msprt``: the mixture sequential probability ratio test (Johari, Koomen, Pekelis and Walsh, "Peeking at
  A/B tests", KDD 2017) for the difference of two proportions ``theta = p_treatment - p_control``, with the
  normal approximation ``theta_hat ~ N(theta, V)``, ``V = p_c (1 - p_c) / n_c + p_t (1 - p_t) / n_t``
  (observed rates, unpooled) and a normal mixing prior ``theta ~ N(0, tau**2)`` under the alternative. The
  mixture likelihood ratio against ``theta = 0`` is

      Lambda = sqrt(V / (V + tau**2)) * exp(tau**2 * theta_hat**2 / (2 V (V + tau**2)))

  and, by Ville's inequality, ``P(Lambda_n >= 1/alpha for some look n) <= alpha`` under the null, so
  ``1 / Lambda`` is a p-value valid at *any* look, however the looks were chosen, and its running minimum
  over the looks taken is the always-valid p-value. Inverting ``Lambda < 1/alpha`` gives the confidence
  sequence ``theta_hat +- sqrt(V (V + tau**2) / tau**2 * (2 log(1/alpha) + log((V + tau**2) / V)))``,
  intersected over the looks; it covers ``theta`` at every look simultaneously with probability
  ``1 - alpha``. This is the normal-mixture (asymptotic) confidence sequence of GrowthBook's ``gbstats``
  (``SequentialTwoSidedTTest``, which writes ``tau**2 = sigma**2 rho**2`` with ``sigma**2 = N V``, N the
  units of both arms): with that ``tau`` the p-value and interval agree with gbstats 0.8.0 to 1e-15 on
  random inputs (checked once by hand; gbstats is not a dependency). Spotify's ``confidence`` offers
  group-sequential tests instead, which need the number of looks planned in advance; this test does not.
* The prior ``tau`` (on the absolute scale of the difference, e.g. 0.02 = two percentage points): the test
  is most powerful for effects of about the size ``tau`` expects, and any ``tau > 0`` keeps the error rate.
  ``tau_for_planned_sample`` picks it the way GrowthBook does by default: the ``tau`` whose confidence
  sequence is narrowest at the planned per-arm sample size (Waudby-Smith et al., "Time-uniform central
  limit theory and asymptotic confidence sequences", 2021: ``rho**2 = (-2 log alpha + log(-2 log alpha +
  1)) / N``, i.e. ``tau**2 = V_N (-2 log alpha + log(-2 log alpha + 1))`` with ``V_N`` the variance of
  the difference at the planned size). Choose it before the study starts, from the planned size and a unit
  variance known beforehand (``p (1 - p)`` of the baseline acceptance rate, or the spread of per-user rates
  in earlier data), never from the data being tested; gbstats instead re-scales it by the variance observed
  at each look.
* ``welch_per_user``: acceptances of one user are correlated, so a user-level analysis compares per-user
  rates with Welch's unequal-variance t-test (``scipy.stats.ttest_ind(equal_var=False)``); ``msprt_means``
  is the sequential test on the same per-user rates (the generation-level ``msprt`` assumes independent
  outcomes and, like the naive z-test, rejects too often when users differ).
* ``power_two_proportions`` / ``power_check``: the power of the two-sided pooled z-test at the observed
  sizes for a given minimal detectable effect (as statsmodels' ``power_proportions_2indep``), and the
  per-arm size that reaches the target power: a study reporting "no difference" below it is underpowered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "PowerCheck",
    "SequentialLooks",
    "WelchResult",
    "msprt",
    "msprt_from_estimates",
    "msprt_means",
    "naive_z_pvalue",
    "power_check",
    "power_two_proportions",
    "tau_for_planned_sample",
    "welch_per_user",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SequentialLooks:
    """The mSPRT at each look (last axis): estimate, always-valid p-value and confidence sequence."""

    difference: FloatArray  # p_treatment - p_control at the look
    p_value: FloatArray  # running minimum of 1 / Lambda over the looks so far, at most 1
    lower: FloatArray  # confidence sequence, intersected over the looks so far
    upper: FloatArray


@dataclass(frozen=True)
class WelchResult:
    """Welch's t-test on per-user rates: treatment mean minus control mean, its 1 - alpha interval, p."""

    difference: float
    lower: float
    upper: float
    p_value: float
    users_control: int
    users_treatment: int


@dataclass(frozen=True)
class PowerCheck:
    """The power at the observed sizes, the per-arm size that reaches the target, and whether it falls short."""

    power: float
    required_per_arm: int
    underpowered: bool


def _counts(successes: npt.ArrayLike, trials: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(n <= 0) or np.any(x < 0) or np.any(x > n):
        raise ValueError("need 0 <= successes <= trials and trials > 0")
    return x, n


def naive_z_pvalue(
    successes_control: npt.ArrayLike,
    trials_control: npt.ArrayLike,
    successes_treatment: npt.ArrayLike,
    trials_treatment: npt.ArrayLike,
) -> FloatArray:
    """Two-sided fixed-horizon z-test p-value for p_treatment = p_control (pooled variance); 1 when it is 0."""
    xc, nc = _counts(successes_control, trials_control)
    xt, nt = _counts(successes_treatment, trials_treatment)
    pooled = (xc + xt) / (nc + nt)
    variance = pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nt)
    difference = xt / nt - xc / nc
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(variance > 0, difference / np.sqrt(np.where(variance > 0, variance, 1.0)), 0.0)
    return np.asarray(2.0 * stats.norm.sf(np.abs(z)), dtype=np.float64)


def msprt_from_estimates(
    difference: npt.ArrayLike, variance: npt.ArrayLike, *, tau: float, alpha: float = 0.05
) -> SequentialLooks:
    """The mSPRT over looks (last axis) from the estimated difference and its variance at each look.

    A look whose variance is still 0 (every outcome the same so far) carries no evidence: ``1 / Lambda = 1``
    and an unbounded interval there.
    """
    if not (tau > 0 and math.isfinite(tau)):
        raise ValueError("tau must be finite and greater than 0")
    if not 0 < alpha < 1:
        raise ValueError("alpha must lie in (0, 1)")
    estimate = np.atleast_1d(np.asarray(difference, dtype=np.float64))
    var = np.atleast_1d(np.asarray(variance, dtype=np.float64))
    if np.any(var < 0) or np.any(~np.isfinite(var)):
        raise ValueError("variances must be finite and non-negative")
    tau2 = tau * tau
    informative = var > 0
    v = np.where(informative, var, 1.0)
    log_lr = 0.5 * np.log(v / (v + tau2)) + tau2 * estimate**2 / (2.0 * v * (v + tau2))
    log_lr = np.where(informative, log_lr, 0.0)
    p_value = np.minimum.accumulate(np.minimum(1.0, np.exp(-log_lr)), axis=-1)
    half = np.sqrt(v * (v + tau2) / tau2 * (2.0 * math.log(1.0 / alpha) + np.log((v + tau2) / v)))
    half = np.where(informative, half, np.inf)
    lower = np.maximum.accumulate(estimate - half, axis=-1)
    upper = np.minimum.accumulate(estimate + half, axis=-1)
    return SequentialLooks(difference=estimate, p_value=p_value, lower=lower, upper=upper)


def msprt(
    successes_control: npt.ArrayLike,
    trials_control: npt.ArrayLike,
    successes_treatment: npt.ArrayLike,
    trials_treatment: npt.ArrayLike,
    *,
    tau: float,
    alpha: float = 0.05,
) -> SequentialLooks:
    """The mSPRT for two proportions: cumulative counts per look along the last axis (0-d: one look).

    It treats outcomes as independent: for generations of the same users (correlated), run ``msprt_means``
    on per-user rates instead.
    """
    xc, nc = _counts(successes_control, trials_control)
    xt, nt = _counts(successes_treatment, trials_treatment)
    pc, pt = xc / nc, xt / nt
    return msprt_from_estimates(pt - pc, pc * (1.0 - pc) / nc + pt * (1.0 - pt) / nt, tau=tau, alpha=alpha)


def msprt_means(
    mean_control: npt.ArrayLike,
    variance_control: npt.ArrayLike,
    units_control: npt.ArrayLike,
    mean_treatment: npt.ArrayLike,
    variance_treatment: npt.ArrayLike,
    units_treatment: npt.ArrayLike,
    *,
    tau: float,
    alpha: float = 0.05,
) -> SequentialLooks:
    """The mSPRT for two means (e.g. of per-user rates): each arm's mean, sample variance and unit count."""
    nc = np.asarray(units_control, dtype=np.float64)
    nt = np.asarray(units_treatment, dtype=np.float64)
    if np.any(nc < 2) or np.any(nt < 2):
        raise ValueError("each arm needs at least two units")
    variance = (
        np.asarray(variance_control, dtype=np.float64) / nc
        + np.asarray(variance_treatment, dtype=np.float64) / nt
    )
    difference = np.asarray(mean_treatment, dtype=np.float64) - np.asarray(mean_control, dtype=np.float64)
    return msprt_from_estimates(difference, variance, tau=tau, alpha=alpha)


def tau_for_planned_sample(unit_variance: float, planned_per_arm: int, alpha: float = 0.05) -> float:
    """The mSPRT ``tau`` whose confidence sequence is narrowest at ``planned_per_arm`` units per arm.

    ``unit_variance`` is one unit's variance, e.g. ``p (1 - p)`` for the baseline acceptance rate ``p``, or
    the variance of per-user rates from earlier data.
    """
    if not unit_variance > 0 or planned_per_arm < 1 or not 0 < alpha < 1:
        raise ValueError("need unit_variance > 0, planned_per_arm >= 1 and 0 < alpha < 1")
    variance = 2.0 * unit_variance / planned_per_arm
    budget = -2.0 * math.log(alpha)
    return math.sqrt(variance * (budget + math.log(budget + 1.0)))


def welch_per_user(
    control_rates: npt.ArrayLike, treatment_rates: npt.ArrayLike, alpha: float = 0.05
) -> WelchResult:
    """Welch's t-test on per-user rates (e.g. each user's acceptances / generations), treatment - control."""
    control = np.asarray(control_rates, dtype=np.float64)
    treatment = np.asarray(treatment_rates, dtype=np.float64)
    if control.size < 2 or treatment.size < 2:
        raise ValueError("Welch's test needs at least two users in each arm")
    result = stats.ttest_ind(treatment, control, equal_var=False)
    interval = result.confidence_interval(confidence_level=1.0 - alpha)
    return WelchResult(
        difference=float(treatment.mean() - control.mean()),
        lower=float(interval.low),
        upper=float(interval.high),
        p_value=float(result.pvalue),
        users_control=int(control.size),
        users_treatment=int(treatment.size),
    )


def power_two_proportions(
    baseline_rate: float,
    minimal_effect: float,
    trials_control: float,
    trials_treatment: float,
    alpha: float = 0.05,
) -> float:
    """Power of the two-sided pooled z-test when p_treatment = baseline_rate + minimal_effect (absolute)."""
    treated = baseline_rate + minimal_effect
    if not (0 < baseline_rate < 1 and 0 < treated < 1) or minimal_effect == 0:
        raise ValueError("need 0 < baseline_rate, baseline_rate + minimal_effect < 1 and an effect != 0")
    if trials_control <= 0 or trials_treatment <= 0 or not 0 < alpha < 1:
        raise ValueError("need trials > 0 and 0 < alpha < 1")
    pooled = (trials_control * baseline_rate + trials_treatment * treated) / (
        trials_control + trials_treatment
    )
    se_null = math.sqrt(pooled * (1 - pooled) * (1 / trials_control + 1 / trials_treatment))
    se_alt = math.sqrt(
        baseline_rate * (1 - baseline_rate) / trials_control + treated * (1 - treated) / trials_treatment
    )
    critical = float(stats.norm.isf(alpha / 2)) * se_null
    effect = abs(minimal_effect)
    return float(stats.norm.sf((critical - effect) / se_alt) + stats.norm.cdf((-critical - effect) / se_alt))


def power_check(
    baseline_rate: float,
    minimal_effect: float,
    trials_control: int,
    trials_treatment: int,
    alpha: float = 0.05,
    target_power: float = 0.8,
) -> PowerCheck:
    """Power at the observed sizes and the equal per-arm size that reaches ``target_power``."""
    if not 0 < target_power < 1:
        raise ValueError("target_power must lie in (0, 1)")
    power = power_two_proportions(baseline_rate, minimal_effect, trials_control, trials_treatment, alpha)
    low, high = 1, 2
    while power_two_proportions(baseline_rate, minimal_effect, high, high, alpha) < target_power:
        low, high = high, high * 2
    while low < high:  # the smallest n with power >= target (power grows with n)
        middle = (low + high) // 2
        if power_two_proportions(baseline_rate, minimal_effect, middle, middle, alpha) >= target_power:
            high = middle
        else:
            low = middle + 1
    return PowerCheck(power=power, required_per_arm=high, underpowered=power < target_power)
