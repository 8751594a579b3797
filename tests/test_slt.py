"""Singular learning theory on deep linear networks (``sgdnoise.slt``): the exact learning coefficients, the
Hessian's rank, the local learning coefficient estimator and label-noise SGD's spread. Monte-Carlo tolerances
in standard errors, fixed seeds."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from sgdnoise import slt

Z = 4.0


def test_aoyagi_reproduces_reduced_rank_regression_and_a_slip_would_not():
    grid = [(ws, r) for ws in itertools.product(range(1, 8), repeat=3) for r in range(min(ws) + 1)]
    assert all(slt.dln_learning_coefficient(ws, r) == slt.rrr_learning_coefficient(*ws, r) for ws, r in grid)
    # the comparison can fail: the earlier formula without its parity term disagrees somewhere
    assert any(slt.dln_learning_coefficient(ws, r) != slt.rrr_learning_coefficient(*ws, r) - Fraction((sum(ws) + r) % 2, 8)
               for ws, r in grid)


def test_known_values_and_bounds():
    assert slt.dln_learning_coefficient((3, 4), 2) == 6  # one layer: regular, d/2 whatever the rank
    assert slt.rrr_learning_coefficient(2, 2, 2, 0) == Fraction(3, 2)  # the even case of the first regime
    assert slt.rrr_learning_coefficient(3, 2, 3, 1) == Fraction(7, 2)  # the odd case
    assert slt.rrr_learning_coefficient(2, 5, 2, 0) == 2  # M + N < H + r: MN/2
    assert slt.rrr_learning_coefficient(2, 2, 6, 1) == 4  # M + H < N + r
    for ws in itertools.product(range(1, 5), repeat=5):
        for r in range(min(ws) + 1):
            lam = slt.dln_learning_coefficient(ws, r)
            assert slt.hessian_rank(ws, r) / 2 <= lam <= sum(a * b for a, b in zip(ws, ws[1:])) / 2


@pytest.mark.parametrize("widths,rank", [((4, 3, 5), 2), ((3, 4, 4, 2), 1), ((5, 3, 4, 6), 3)])
def test_hessian_rank_at_the_most_singular_points(widths, rank):
    factors, W0 = slt.singular_factors(widths, rank, singular_values=np.arange(1, rank + 1) + 0.5, seed=1)
    assert np.linalg.matrix_rank(W0) == rank
    np.testing.assert_allclose(np.linalg.svd(W0, compute_uv=False)[:rank], np.arange(rank, 0, -1) + 0.5)
    h = slt.hessian_eigenvalues(factors)
    assert (h > 1e-9 * h.max()).sum() == slt.hessian_rank(widths, rank)
    # rescaling one layer up and another down keeps the product and changes the Hessian
    f2, W2 = slt.singular_factors(widths, rank, singular_values=np.arange(1, rank + 1) + 0.5, seed=1, scale=2.0)
    np.testing.assert_allclose(W2, W0, atol=1e-12)
    assert slt.hessian_eigenvalues(f2).sum() > 1.5 * h.sum()


def test_llc_of_a_regular_model_matches_the_exact_langevin_law():
    """For one layer the localised tempered posterior is Gaussian: each coordinate has precision a = nβ + γ, the
    Langevin chain's stationary variance is 1/(a(1 − εa/4)), and E[nβ(K(w) − K(w*))] = (d/2) nβ/(a(1 − εa/4))."""
    factors, W0 = slt.singular_factors((3, 2), 2, singular_values=[1.5, 1.0], seed=2)
    problem = slt.DLNRegression.sample(W0, None)
    n_beta, gamma, step = 1e3, 10.0, 1e-4
    est = slt.estimate_llc(problem, factors, step=step, steps=6000, burn_in=1000, gamma=gamma, n_beta=n_beta,
                           chains=32, seed=3)
    a = n_beta + gamma
    exact = 3.0 * n_beta / (a * (1 - step * a / 4))
    assert abs(est.value - exact) < Z * est.se, (est.value, est.se, exact)


def test_llc_estimator_on_a_singular_network_is_near_aoyagi():
    widths, r = (4, 3, 5), 2
    factors, W0 = slt.singular_factors(widths, r, singular_values=[1.0, 2.0], seed=1)
    problem = slt.DLNRegression.sample(W0, None)
    est = slt.estimate_llc(problem, factors, step=1e-5, steps=20_000, burn_in=5_000, gamma=10.0, n_beta=1e4,
                           chains=8, seed=3)
    lam = float(slt.dln_learning_coefficient(widths, r))
    assert abs(est.value / lam - 1) < 0.15, (est.value, lam)  # the estimator's own bias, not only noise
    assert abs(est.value - lam) < abs(est.value - slt.hessian_rank(widths, r) / 2)


def test_empirical_loss_and_gradient_agree_with_the_data():
    W0 = np.array([[1.0, -0.5, 0.2], [0.3, 0.8, -1.0]])
    prob = slt.DLNRegression.sample(W0, 500, noise=0.7, seed=4)
    gen = np.random.default_rng(4)  # reproduce the data the same way
    X = gen.standard_normal((500, 3))
    Y = X @ W0.T + 0.7 * gen.standard_normal((500, 2))
    P = W0[None] + 0.1 * np.random.default_rng(6).standard_normal((2, 2, 3))
    direct = np.array([0.5 * np.mean(np.sum((Y - X @ p.T) ** 2, axis=1)) for p in P])
    np.testing.assert_allclose(prob.loss(P), direct, rtol=1e-10)
    eps = 1e-6
    E = np.zeros_like(P)
    E[0, 1, 2] = eps
    fd = (prob.loss(P + E) - prob.loss(P - E))[0] / (2 * eps)
    assert abs(fd - prob.grad(P)[0, 1, 2]) < 1e-6


def test_sgd_spread_matches_the_exact_law_of_linear_regression():
    """One layer (linear regression, Gaussian inputs, label noise): E‖δ‖² has the exact fixed point
    m = ησ² d_out d_in / (B(2 − η(1 + (d_in + 1)/B))), the excess is m/2; the linearised law (which ignores the
    inputs' own noise) is ησ² d/(2B(2 − η)), 7% lower here, and the test separates them."""
    din, dout, lr, B, sigma = 3, 2, 0.1, 2, 1.0
    factors, _ = slt.singular_factors((din, dout), 2, singular_values=[1.0, 0.5], seed=2)
    s = slt.sgd_spread(factors, lr=lr, batch=B, noise=sigma, steps=20_000, burn_in=2_000, chains=16, seed=7)
    exact = lr * sigma**2 * dout * din / (B * (2 - lr * (1 + (din + 1) / B))) / 2
    assert abs(s.excess - exact) < Z * s.se, (s.excess, s.se, exact)
    assert abs(s.predicted_start - lr * sigma**2 * dout * din / (2 * B * (2 - lr))) < 1e-12
    assert abs(s.excess - s.predicted_start) > Z * s.se  # the linearised law is distinguishable from the exact one


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="rank"):
        slt.dln_learning_coefficient((3, 2, 4), 3)
    with pytest.raises(ValueError, match="widths"):
        slt.dln_learning_coefficient((3,), 1)
    with pytest.raises(ValueError, match="singular_values"):
        slt.singular_factors((3, 2, 3), 2, singular_values=[1.0])
    factors, W0 = slt.singular_factors((3, 2, 3), 1, seed=0)
    with pytest.raises(ValueError, match="n_beta"):
        slt.estimate_llc(slt.DLNRegression.sample(W0, None), factors, step=1e-3, steps=10, burn_in=1)
    with pytest.raises(FloatingPointError, match="step"):
        slt.estimate_llc(slt.DLNRegression.sample(W0, None), factors, step=10.0, steps=200, burn_in=1, n_beta=1e4)
    with pytest.raises(ValueError, match="lr"):
        slt.sgd_spread(factors, lr=5.0, batch=1, noise=1.0, steps=10, burn_in=1)
    with pytest.raises(ValueError, match="W0"):
        slt.DLNRegression.sample(np.ones(3), 10)
