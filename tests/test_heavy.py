"""Heavy-tailed iterates (Kesten) on streaming least squares, and the double-well escape models."""

import math

import numpy as np
import pytest
import torch

from sgdnoise import heavy
from sgdnoise.sgd import DivergenceError


@pytest.mark.parametrize("B", [1, 2, 5])
def test_kesten_index_is_two_where_the_variance_diverges(B):
    # E|M|^2 = E M^2 = 1 exactly at eta = 2B/(B+2) (sigma^2 = 1), so the root there is alpha = 2
    assert heavy.kesten_index(2 * B / (B + 2), B) == pytest.approx(2.0, abs=1e-6)
    assert heavy.sgd_stationary_variance(0.999 * 2 * B / (B + 2), B) < math.inf
    assert heavy.sgd_stationary_variance(2 * B / (B + 2), B) == math.inf


def test_kesten_root_by_independent_monte_carlo():
    eta, B = 0.7, 2
    a = heavy.kesten_index(eta, B)
    s = np.random.default_rng(0).chisquare(B, 2_000_000)
    vals = np.abs(1 - eta / B * s) ** a
    se = vals.std() / math.sqrt(len(vals))
    assert abs(vals.mean() - 1.0) < 4 * se


def test_kesten_index_decreases_with_eta_and_increases_with_B():
    assert heavy.kesten_index(0.4, 1) > heavy.kesten_index(0.6, 1) > heavy.kesten_index(0.8, 1)
    assert heavy.kesten_index(0.8, 1) < heavy.kesten_index(0.8, 2) < heavy.kesten_index(0.8, 4)


def test_no_stationary_law_is_a_clear_error():
    lam = heavy.log_multiplier_mean(3.0, 1)
    assert lam > 0
    with pytest.raises(ValueError, match=r"eta=3.0, B=1.*no stationary"):
        heavy.kesten_index(3.0, 1)


def test_sde_tail_and_variances():
    assert heavy.sde_tail_index(0.5, 2) == 5.0
    assert heavy.sde_stationary_variance(0.5, 2, noise_var=1.0) == pytest.approx(0.5 / 2 / (2 - 0.5))
    assert heavy.sde_stationary_variance(2.0, 2) == math.inf
    # small eta: SGD and SDE agree to first order
    r = heavy.sgd_stationary_variance(1e-4, 4) / heavy.sde_stationary_variance(1e-4, 4)
    assert r == pytest.approx(1.0, abs=1e-3)


def test_streaming_chains_have_sgd_stationary_variance():
    eta, B = 0.3, 2  # Kesten index about 8: the sample variance has a finite variance of its own
    u = heavy.streaming_lr_1d(eta, B, chains=40_000, steps=200, rng=np.random.default_rng(1))
    v = u**2
    se = v.std() / math.sqrt(len(v))
    assert abs(v.mean() - heavy.sgd_stationary_variance(eta, B)) < 4 * se
    # and not the SDE's, which is about 10% smaller here
    assert abs(v.mean() - heavy.sde_stationary_variance(eta, B)) > 4 * se


def test_stable_scale_from_median_recovers_a_gaussian_scale():
    n = 100_000
    x = 3.0 * torch.randn(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    c = heavy.stable_scale_from_median(x, 2.0)
    # relative SE of a half-normal median is 1.166/sqrt(n); the reference median uses 200 000 draws
    se = 1.166 * math.sqrt(1 / n + 1 / 200_000)
    assert abs(c / 3.0 - 1) < 4 * se


def test_stable_model_at_alpha_two_is_the_gaussian_model():
    a = torch.randn(500, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1.3
    sd = float((a - a.mean()).pow(2).mean().sqrt())
    kw = dict(eta=0.1, B=1, chains=800, max_steps=3000)
    g = heavy.double_well_escape(a, noise="gaussian", generator=torch.Generator().manual_seed(4), **kw)
    s = heavy.double_well_escape(a, noise="stable", alpha=2.0, scale=sd, generator=torch.Generator().manual_seed(5), **kw)
    (mg, seg), (ms, ses) = g.mean(), s.mean()
    assert abs(mg - ms) < 4 * math.hypot(seg, ses)
    none = heavy.double_well_escape(a, noise="none", generator=torch.Generator().manual_seed(6), **kw)
    assert none.censored == 1.0 and (none.steps == 3000).all()


def test_heavy_data_escape_faster_than_their_gaussian_model():
    gen = torch.Generator().manual_seed(7)
    from sgdnoise.tails import sample_law

    a = sample_law("student_t", 1.5, 1000, gen)
    a = (a - a.mean()) * math.sqrt(1.4 / float((a - a.mean()).pow(2).mean()))
    kw = dict(eta=0.1, B=1, chains=500, max_steps=3000)
    sgd = heavy.double_well_escape(a, noise="sgd", generator=torch.Generator().manual_seed(8), **kw)
    gau = heavy.double_well_escape(a, noise="gaussian", generator=torch.Generator().manual_seed(9), **kw)
    (m1, s1), (m2, s2) = sgd.mean(), gau.mean()
    assert m2 - m1 > 4 * math.hypot(s1, s2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: heavy.kesten_index(0.5, 0), r"B=0 must be a positive integer"),
        (lambda: heavy.kesten_index(-0.1, 1), r"-0.1"),
        (lambda: heavy.streaming_lr_1d(0.1, 1, chains=0, steps=5, rng=np.random.default_rng(0)), r"chains=0"),
        (lambda: heavy.double_well_escape([0.0, 1.0], eta=0.1, B=1, chains=2, max_steps=2,
                                          generator=torch.Generator(), noise="levy"), r"noise='levy'"),
        (lambda: heavy.double_well_escape([0.0, 1.0], eta=0.1, B=1, chains=2, max_steps=2,
                                          generator=torch.Generator(), noise="stable"), r"needs scale"),
        (lambda: heavy.double_well_escape([0.0, float("nan")], eta=0.1, B=1, chains=2, max_steps=2,
                                          generator=torch.Generator()), r"finite"),
        (lambda: heavy.stable_scale_from_median([1.0, 2.0], 2.5), r"alpha=2.5"),
        (lambda: heavy.sgd_stationary_variance(0.5, 2, 1.0, -1.0), r"noise_var=-1.0 must be a finite positive number"),
        (lambda: heavy.sgd_stationary_variance(0.5, 2, 0.0), r"sigma2=0.0 must be a finite positive number"),
        (lambda: heavy.sgd_stationary_variance(0.5, 2, float("nan")), r"sigma2=nan must be a finite positive"),
        (lambda: heavy.sgd_stationary_variance(0.5, 0), r"B=0 must be a positive integer"),
        (lambda: heavy.sde_stationary_variance(0.5, 2, -1.0), r"sigma2=-1.0 must be a finite positive number"),
        (lambda: heavy.sde_stationary_variance(0.5, 2, noise_var=0.0), r"noise_var=0.0 must be a finite positive"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_streaming_needs_a_generator():
    with pytest.raises(TypeError, match=r"rng=None must be a seeded numpy random generator"):
        heavy.streaming_lr_1d(0.1, 1, chains=2, steps=2, rng=None)


def test_divergence_is_reported():
    with pytest.raises(DivergenceError, match="eta=50.0"):
        heavy.streaming_lr_1d(50.0, 1, chains=10, steps=400, rng=np.random.default_rng(0))


def test_quadratic_stationary_variance_of_sgd_and_its_gaussian_model():
    a = torch.randn(300, generator=torch.Generator().manual_seed(10), dtype=torch.float64) ** 3  # skewed, heavy-ish
    var_a = float((a - a.mean()).pow(2).mean())
    eta, B = 0.2, 2
    exact = eta * var_a / (B * (2 - eta))
    for model, seed in (("sgd", 11), ("gaussian", 12)):
        th = heavy.quadratic_stationary(a, eta=eta, B=B, chains=20_000, steps=100, noise=model,
                                        generator=torch.Generator().manual_seed(seed))
        v = th**2
        assert abs(v.mean() - exact) < 4 * v.std() / math.sqrt(len(v)), model
    with pytest.raises(ValueError, match="eta=2.0"):
        heavy.quadratic_stationary(a, eta=2.0, B=1, chains=2, steps=2, generator=torch.Generator())


@pytest.mark.parametrize("B", [1, 4])
def test_gaussian_multiplier_index_is_two_where_the_second_moment_is_one(B):
    """A Gaussian multiplier with SGD's mean and variance has SGD's E M², so both indices are exactly 2 at
    η = 2B/(B+2), where E M² = 1; the SDE's index there is not (the failing variant)."""
    eta = 2 * B / (B + 2)
    assert heavy.gaussian_multiplier_index(eta, B) == pytest.approx(2.0, abs=1e-6)
    assert heavy.kesten_index(eta, B) == pytest.approx(2.0, abs=1e-6)
    assert abs(heavy.sde_tail_index(eta, B) - 2.0) > 0.4


def test_sgd_tail_gap_to_the_sde_grows_as_eta_shrinks():
    """Issue 17, item 1 (an independent quadrature gave 17.3 / 11.0 / 11.4 at η = 0.1 and 35.2 / 21 / 21.4 at
    η = 0.05, B = 1): SGD's index over the SDE's grows as η → 0; the Gaussian multiplier's tends to 1."""
    k = {e: heavy.kesten_index(e, 1) for e in (0.1, 0.05)}
    g = {e: heavy.gaussian_multiplier_index(e, 1) for e in (0.1, 0.05)}
    assert k[0.1] == pytest.approx(17.3, abs=0.05) and k[0.05] == pytest.approx(35.2, abs=0.1)
    assert g[0.1] == pytest.approx(11.4, abs=0.05) and g[0.05] == pytest.approx(21.4, abs=0.1)
    assert k[0.05] / heavy.sde_tail_index(0.05, 1) > k[0.1] / heavy.sde_tail_index(0.1, 1) > 1.5
    assert abs(g[0.05] / heavy.sde_tail_index(0.05, 1) - 1) < abs(g[0.1] / heavy.sde_tail_index(0.1, 1) - 1) < 0.05
