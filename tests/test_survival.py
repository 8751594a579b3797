"""Censored time-to-event statistics: checked against exact laws, each with a failing variant."""

import math

import numpy as np
import pytest
from scipy import stats

from sgdnoise.survival import kaplan_meier, km_distance, km_permutation_test, rmst

Z = 4.0  # Monte-Carlo tolerance in standard errors


def test_without_censoring_rmst_is_the_mean_of_the_truncated_times_and_its_plugin_se():
    t = np.random.default_rng(0).exponential(size=200)
    est, se = rmst(t, np.ones(200, bool), horizon=1.5)
    m = np.minimum(t, 1.5)
    assert est == pytest.approx(m.mean(), rel=1e-12)
    assert se == pytest.approx(m.std() / math.sqrt(200), rel=1e-9)


def test_kaplan_meier_matches_scipy():
    rng = np.random.default_rng(1)
    t, c = rng.exponential(size=50), rng.exponential(2.0, size=50)
    obs = t <= c
    u, S = kaplan_meier(np.minimum(t, c), obs)
    ref = stats.ecdf(stats.CensoredData(uncensored=t[obs], right=c[~obs])).sf
    np.testing.assert_allclose(S, ref.evaluate(u), rtol=1e-12)


def test_rmst_is_unbiased_under_censoring_and_its_se_is_calibrated():
    """Exp(1) events, Exp(rate 0.5) censoring, T = 2: the true restricted mean is 1 - e^{-2}. Over 400
    replicates of 100 chains, the mean estimate is within Z SE of it and the z-scores have spread 1 (within
    Z times the spread's SE); ignoring the censoring (the failing variant) is biased by far more."""
    rng = np.random.default_rng(2)
    truth = 1 - math.exp(-2)
    ests, zs, naive = [], [], []
    for _ in range(400):
        t, c = rng.exponential(size=100), rng.exponential(2.0, size=100)
        x, obs = np.minimum(t, c), t <= c
        e, s = rmst(x, obs, 2.0)
        ests.append(e)
        zs.append((e - truth) / s)
        naive.append(rmst(x, np.ones_like(obs), 2.0)[0])  # censored chains counted as events
    ests, zs = np.array(ests), np.array(zs)
    assert abs(ests.mean() - truth) < Z * ests.std() / math.sqrt(400)
    assert abs(zs.std() - 1) < Z / math.sqrt(2 * 400)
    assert abs(np.mean(naive) - truth) > 10 * ests.std() / math.sqrt(400)


def test_permutation_test_is_calibrated_and_detects_a_shift():
    rng = np.random.default_rng(3)
    p_null = []
    for _ in range(100):
        a, b = rng.exponential(size=40), rng.exponential(size=40)
        p_null.append(km_permutation_test(a, np.ones(40, bool), b, np.ones(40, bool), 3.0, reps=99, rng=rng)["p"])
    frac = np.mean(np.array(p_null) <= 0.05)
    assert abs(frac - 0.05) < Z * math.sqrt(0.05 * 0.95 / 100)
    a, b = rng.exponential(size=40), rng.exponential(size=40) + 0.7
    res = km_permutation_test(a, np.ones(40, bool), b, np.ones(40, bool), 3.0, reps=199, rng=rng)
    assert res["p"] < 0.01 and res["distance"] > res["null_95"]


def test_km_distance_is_the_ks_statistic_without_censoring():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=30) + 5, rng.normal(size=40) + 5
    d = km_distance(a, np.ones(30, bool), b, np.ones(40, bool), horizon=100.0)
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic, rel=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="observed has 2 entries for 3 times"):
        rmst([1, 2, 3], [True, False], 1.0)
    with pytest.raises(ValueError, match="finite and >= 0.*nan"):
        rmst([1, np.nan], [True, True], 1.0)
    with pytest.raises(ValueError, match="observed must be booleans"):
        kaplan_meier([1, 2], [2, 0])
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        km_permutation_test([1], [True], [2], [True], 1.0, rng=0)
