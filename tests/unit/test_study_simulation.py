"""The study tests, simulated (issue 14, "Done when"): fixed-horizon, peeking and the always-valid mSPRT.

Each simulated study has two arms of synthetic binary outcomes (acceptances), looked at LOOKS times at
equal steps; all studies of one scenario are drawn at once with a seeded generator. The reference
implementations (statsmodels, scipy) check the formulas on fixed and random inputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats.proportion import power_proportions_2indep, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans
from statsmodels.stats.weightstats import ttest_ind as sm_ttest_ind

from app.analytics.sequential import (
    msprt,
    msprt_means,
    naive_z_pvalue,
    power_check,
    power_two_proportions,
    tau_for_planned_sample,
    welch_per_user,
)

STUDIES = 1_000
LOOKS = 20
PER_LOOK = 250  # outcomes per arm between two looks: 5,000 per arm at the horizon
BASELINE = 0.30
ALPHA = 0.05
TAU = tau_for_planned_sample(BASELINE * (1 - BASELINE), PER_LOOK * LOOKS, ALPHA)


def _simulate(p_control: float, p_treatment: float, seed: int) -> tuple[np.ndarray, ...]:
    """Cumulative successes and trials of both arms at each look: arrays of shape (STUDIES, LOOKS)."""
    rng = np.random.default_rng(seed)
    control = np.cumsum(rng.binomial(PER_LOOK, p_control, (STUDIES, LOOKS)), axis=1)
    treatment = np.cumsum(rng.binomial(PER_LOOK, p_treatment, (STUDIES, LOOKS)), axis=1)
    trials = np.broadcast_to(PER_LOOK * np.arange(1, LOOKS + 1), (STUDIES, LOOKS))
    return control, trials, treatment, trials


def _binomial_interval(rejections: int) -> tuple[float, float]:
    return tuple(stats.binomtest(rejections, STUDIES).proportion_ci(0.99, method="exact"))


@pytest.fixture(scope="module")
def null_studies() -> tuple[np.ndarray, ...]:
    return _simulate(BASELINE, BASELINE, seed=20260101)


def test_fixed_horizon_z_test_keeps_five_percent(null_studies: tuple[np.ndarray, ...]) -> None:
    xc, nc, xt, nt = (array[:, -1] for array in null_studies)
    rejections = int(np.sum(naive_z_pvalue(xc, nc, xt, nt) < ALPHA))
    assert 0.035 <= rejections / STUDIES <= 0.065, rejections
    low, high = _binomial_interval(rejections)
    assert low <= ALPHA <= high


def test_peeking_twenty_times_with_the_naive_test_inflates_false_positives(
    null_studies: tuple[np.ndarray, ...],
) -> None:
    rejected_at_some_look = np.any(naive_z_pvalue(*null_studies) < ALPHA, axis=1)
    rate = float(np.mean(rejected_at_some_look))
    assert rate > 0.10, rate


def test_msprt_peeked_twenty_times_stays_at_five_percent(null_studies: tuple[np.ndarray, ...]) -> None:
    looks = msprt(*null_studies, tau=TAU, alpha=ALPHA)
    # Running minimum: the last look's p-value is below alpha iff some look's was.
    rejected = looks.p_value[:, -1] < ALPHA
    assert np.array_equal(rejected, np.any(looks.p_value < ALPHA, axis=1))
    rate = float(np.mean(rejected))
    assert rate <= ALPHA + 0.01, rate
    # The confidence sequence covers the true difference (0) at every look in as many studies.
    covered = np.all((looks.lower <= 0.0) & (looks.upper >= 0.0), axis=1)
    assert float(np.mean(covered)) >= 1 - ALPHA - 0.01


def test_msprt_detects_a_planted_effect() -> None:
    xc, nc, xt, nt = _simulate(0.30, 0.36, seed=20260102)
    looks = msprt(xc, nc, xt, nt, tau=TAU, alpha=ALPHA)
    power = float(np.mean(looks.p_value[:, -1] < ALPHA))
    assert power > 0.80, power
    covered = np.all((looks.lower <= 0.06) & (looks.upper >= 0.06), axis=1)
    assert float(np.mean(covered)) >= 1 - ALPHA - 0.01
    # Stopping at the first rejection ends most studies well before the horizon.
    first = np.argmax(looks.p_value < ALPHA, axis=1)[looks.p_value[:, -1] < ALPHA]
    assert float(np.median(first)) < LOOKS - 1


def test_naive_z_pvalue_equals_statsmodels_on_random_inputs() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        nc, nt = rng.integers(1, 5_000, 2)
        xc, xt = rng.integers(0, nc + 1), rng.integers(0, nt + 1)
        ours = float(naive_z_pvalue(xc, nc, xt, nt))
        if xc + xt in (0, nc + nt):  # no variance: statsmodels answers nan, we answer "no evidence"
            assert ours == 1.0
            continue
        _, reference = proportions_ztest([xt, xc], [nt, nc])
        assert ours == pytest.approx(reference, rel=1e-9, abs=1e-300)
    assert float(naive_z_pvalue(30, 100, 45, 100)) == pytest.approx(
        proportions_ztest([45, 30], [100, 100])[1]
    )


def test_msprt_likelihood_ratio_equals_the_mixture_integral() -> None:
    rng = np.random.default_rng(8)
    for _ in range(25):
        nc, nt = (int(n) for n in rng.integers(50, 3_000, 2))
        xc = int(rng.integers(1, nc))
        # A treatment rate within a few standard errors of the control's, so the ratio stays finite.
        spread = 3 * math.sqrt(0.25 / nc + 0.25 / nt)
        xt = int(np.clip(round((xc / nc + rng.uniform(-spread, spread)) * nt), 1, nt - 1))
        tau = float(rng.uniform(0.005, 0.2))
        pc, pt = xc / nc, xt / nt
        v = pc * (1 - pc) / nc + pt * (1 - pt) / nt
        d = pt - pc
        sd = math.sqrt(v)

        def integrand(theta: float, d: float = d, sd: float = sd, tau: float = tau) -> float:
            # N(d; theta, V) / N(d; 0, V) * N(theta; 0, tau^2), in logs so that nothing underflows.
            log_ratio = stats.norm.logpdf(d, theta, sd) - stats.norm.logpdf(d, 0, sd)
            return math.exp(log_ratio + stats.norm.logpdf(theta, 0, tau))

        low, high = min(-12 * tau, d - 12 * sd), max(12 * tau, d + 12 * sd)
        lr, _ = integrate.quad(integrand, low, high, points=[0.0, d], limit=400)
        looks = msprt(xc, nc, xt, nt, tau=tau)
        assert float(looks.p_value[0]) == pytest.approx(min(1.0, 1 / lr), rel=1e-6)
        assert float(looks.difference[0]) == pytest.approx(d)


def test_confidence_sequence_is_the_set_where_the_shifted_ratio_stays_below_one_over_alpha() -> None:
    v, tau, alpha = 2e-4, 0.03, 0.05

    def log_lr(delta: float) -> float:
        return 0.5 * math.log(v / (v + tau**2)) + tau**2 * delta**2 / (2 * v * (v + tau**2))

    # Choose counts whose variance is v to a good approximation: 0.3 and 0.35 with n per arm.
    n = round((0.3 * 0.7 + 0.35 * 0.65) / v)
    looks = msprt(round(0.3 * n), n, round(0.35 * n), n, tau=tau, alpha=alpha)
    d = float(looks.difference[0])
    pc, pt = round(0.3 * n) / n, round(0.35 * n) / n
    v = pc * (1 - pc) / n + pt * (1 - pt) / n
    assert log_lr(float(looks.upper[0]) - d) == pytest.approx(math.log(1 / alpha), rel=1e-9)
    assert log_lr(d - float(looks.lower[0])) == pytest.approx(math.log(1 / alpha), rel=1e-9)


def test_msprt_edge_cases() -> None:
    # No variance yet: no evidence, unbounded interval; later looks take over.
    looks = msprt([0, 30], [10, 100], [0, 60], [10, 100], tau=0.05)
    assert looks.p_value[0] == 1.0 and looks.lower[0] == -np.inf and looks.upper[0] == np.inf
    assert looks.p_value[1] < 0.05 and looks.lower[1] > 0
    # The p-value never rises and the interval never widens from one look to the next.
    xc, nc, xt, nt = _simulate(0.3, 0.31, seed=9)
    looks = msprt(xc[:50], nc[:50], xt[:50], nt[:50], tau=0.03)
    assert np.all(np.diff(looks.p_value, axis=1) <= 0)
    assert np.all(np.diff(looks.upper - looks.lower, axis=1) <= 0)
    for bad in ({"tau": 0.0}, {"tau": float("inf")}, {"tau": 0.1, "alpha": 1.0}):
        with pytest.raises(ValueError):
            msprt(1, 10, 2, 10, **bad)
    with pytest.raises(ValueError):
        msprt(11, 10, 2, 10, tau=0.1)


def test_tau_is_the_width_minimising_one_for_the_planned_size() -> None:
    planned = 5_000
    v = 2 * BASELINE * (1 - BASELINE) / planned

    def half_width(tau: float) -> float:
        return math.sqrt(v * (v + tau**2) / tau**2 * (2 * math.log(1 / ALPHA) + math.log((v + tau**2) / v)))

    best = min(np.linspace(0.001, 0.2, 20_000), key=half_width)
    # The closed form is the approximate optimum (Waudby-Smith et al.): within a few per cent of it.
    assert tau_for_planned_sample(BASELINE * (1 - BASELINE), planned, ALPHA) == pytest.approx(best, rel=0.05)


def test_welch_per_user_equals_statsmodels_and_scipy() -> None:
    rng = np.random.default_rng(10)
    for _ in range(50):
        control = rng.beta(3, 7, rng.integers(2, 400))
        treatment = rng.beta(3.3, 6.7, rng.integers(2, 400))
        ours = welch_per_user(control, treatment)
        _, p_sm, _ = sm_ttest_ind(treatment, control, usevar="unequal")
        low, high = CompareMeans.from_data(treatment, control).tconfint_diff(alpha=0.05, usevar="unequal")
        assert ours.p_value == pytest.approx(p_sm, rel=1e-9)
        assert ours.p_value == pytest.approx(stats.ttest_ind(treatment, control, equal_var=False).pvalue)
        assert (ours.lower, ours.upper) == pytest.approx((low, high), rel=1e-9)
        assert ours.difference == pytest.approx(treatment.mean() - control.mean())
        assert (ours.users_control, ours.users_treatment) == (control.size, treatment.size)
    with pytest.raises(ValueError):
        welch_per_user([0.5], [0.1, 0.2])


def test_per_user_analysis_keeps_five_percent_where_generation_level_z_does_not() -> None:
    # Clustered A/A data: each user has their own acceptance rate and many generations.
    rng = np.random.default_rng(11)
    users, generations = 60, 40
    rates = rng.beta(1.5, 3.5, (400, 2, users))
    accepted = rng.binomial(generations, rates)
    per_user = accepted / generations
    welch = np.array([welch_per_user(study[0], study[1]).p_value for study in per_user])
    naive = naive_z_pvalue(
        accepted[:, 0].sum(1), users * generations, accepted[:, 1].sum(1), users * generations
    )
    welch_rate, naive_rate = float(np.mean(welch < ALPHA)), float(np.mean(naive < ALPHA))
    assert welch_rate <= 0.085, welch_rate  # 5 % within Monte Carlo error at 400 studies
    assert naive_rate > 0.25, naive_rate  # the correlated generations make the naive test far too liberal


def test_power_equals_statsmodels_and_flags_small_studies() -> None:
    rng = np.random.default_rng(12)
    for _ in range(100):
        baseline = float(rng.uniform(0.05, 0.8))
        effect = float(rng.uniform(-0.04, 0.1))
        if abs(effect) < 1e-3 or not 0 < baseline + effect < 1:
            continue
        nc, nt = (int(n) for n in rng.integers(20, 20_000, 2))
        reference = power_proportions_2indep(
            effect, baseline, nt, ratio=nc / nt, alpha=0.05, return_results=False
        )
        assert power_two_proportions(baseline, effect, nc, nt) == pytest.approx(reference, rel=1e-9)
    small = power_check(0.3, 0.02, 500, 500)
    assert small.underpowered and small.power < 0.8
    assert power_two_proportions(0.3, 0.02, small.required_per_arm, small.required_per_arm) >= 0.8
    assert power_two_proportions(0.3, 0.02, small.required_per_arm - 1, small.required_per_arm - 1) < 0.8
    assert not power_check(0.3, 0.06, 5_000, 5_000).underpowered


def _clustered_looks(seed: int, shift: float = 0.0) -> tuple[np.ndarray, ...]:
    """Per-user rates of users joining at each look (A/A unless ``shift``), and the generation totals."""
    rng = np.random.default_rng(seed)
    users_per_look, generations = 25, 40
    rates = rng.beta(1.5, 3.5, (STUDIES, 2, LOOKS * users_per_look))
    rates[:, 1] = np.clip(rates[:, 1] + shift, 0.0, 1.0)
    accepted = rng.binomial(generations, rates)
    per_user = accepted / generations
    ends = users_per_look * np.arange(1, LOOKS + 1)
    sums = np.cumsum(per_user, axis=2)[:, :, ends - 1]
    squares = np.cumsum(per_user**2, axis=2)[:, :, ends - 1]
    means = sums / ends
    variances = (squares - ends * means**2) / (ends - 1)
    generations_so_far = np.cumsum(accepted, axis=2)[:, :, ends - 1]
    return means, variances, np.broadcast_to(ends, means.shape), generations_so_far, ends * generations


def test_per_user_msprt_stays_at_five_percent_on_clustered_users_where_the_generation_level_one_does_not() -> (
    None
):
    means, variances, users, accepted, trials = _clustered_looks(seed=13)
    unit_variance = 1.5 * 3.5 / (5**2 * 6)  # Beta(1.5, 3.5); the binomial noise of 40 generations adds to it
    tau = tau_for_planned_sample(unit_variance, int(users[0, 0, -1]), ALPHA)
    per_user = msprt_means(
        means[:, 0], variances[:, 0], users[:, 0], means[:, 1], variances[:, 1], users[:, 1], tau=tau
    )
    per_user_rate = float(np.mean(per_user.p_value[:, -1] < ALPHA))
    assert per_user_rate <= ALPHA + 0.01, per_user_rate
    generation_level = msprt(accepted[:, 0], trials, accepted[:, 1], trials, tau=tau)
    generation_rate = float(np.mean(generation_level.p_value[:, -1] < ALPHA))
    assert generation_rate > 2 * ALPHA, generation_rate
    # A planted per-user shift of 0.06 is still found at the user level.
    means, variances, users, _, _ = _clustered_looks(seed=14, shift=0.06)
    planted = msprt_means(
        means[:, 0], variances[:, 0], users[:, 0], means[:, 1], variances[:, 1], users[:, 1], tau=tau
    )
    assert float(np.mean(planted.p_value[:, -1] < ALPHA)) > 0.8


def test_msprt_means_on_one_look_matches_the_proportion_form_for_binary_units() -> None:
    units = np.array([1] * 30 + [0] * 70), np.array([1] * 45 + [0] * 55)
    # With 0/1 units and the n (not n - 1) variance, the two forms agree exactly.
    by_means = msprt_means(
        units[0].mean(), units[0].var(), 100, units[1].mean(), units[1].var(), 100, tau=0.05
    )
    by_counts = msprt(30, 100, 45, 100, tau=0.05)
    assert by_means.p_value == pytest.approx(by_counts.p_value)
    assert by_means.lower == pytest.approx(by_counts.lower) and by_means.upper == pytest.approx(
        by_counts.upper
    )
