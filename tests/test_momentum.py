"""sgdnoise.momentum: the heavy-ball stationary law against Monte Carlo and closed forms, its two SDE limits, and
its errors for bad input."""

import numpy as np
import pytest

from sgdnoise import momentum as mo

Z = 4.0  # Monte-Carlo tolerance, in standard errors (fixed seeds)


def test_one_dimensional_closed_forms():
    eta, h, beta, s2 = 0.05, 2.0, 0.8, 1.5
    P = mo.heavy_ball_stationary(eta, [[h]], beta, [[s2]])
    den = (1 - beta) * (2 * (1 + beta) - eta * h)
    assert np.isclose(P[0, 0], eta * s2 * (1 + beta) / (h * den))
    assert np.isclose(P[0, 1], eta**2 * s2 / den)
    assert np.isclose(P[1, 1], 2 * eta**2 * s2 / den)
    assert np.isclose(mo.first_order_stationary(eta, [[h]], beta, [[s2]])[0, 0], eta * s2 / (2 * h * (1 - beta)))
    U = mo.underdamped_stationary(eta, [[h]], beta, [[s2]])
    assert np.isclose(U[0, 0], eta * s2 / (2 * h * (1 - beta))) and abs(U[0, 1]) < 1e-14
    assert np.isclose(U[1, 1], eta**2 * s2 / (2 * (1 - beta)))


def test_a_non_commuting_pair_against_monte_carlo():
    """d = 2, H and Σ not commuting: every entry of the exact P within Z standard errors of 6000 chains."""
    H = np.array([[1.0, 0.3], [0.3, 0.4]])
    S = np.array([[1.0, -0.5], [-0.5, 2.0]])
    eta, beta = 0.1, 0.7
    P = mo.heavy_ball_stationary(eta, H, beta, S)
    Zs = mo.simulate_heavy_ball(eta, H, beta, S, chains=6000, steps=1500, seed=3, record_every=1500)[-1]
    C = np.cov(Zs.T)
    se = np.sqrt((P**2 + np.outer(np.diag(P), np.diag(P))) / (Zs.shape[0] - 1))  # Gaussian: Var of a sample covariance
    assert np.all(np.abs(C - P) < Z * se), (C - P) / se
    # the failing variant: without momentum's 1/(1 - β) the first-order SDE misses θ's covariance by far
    no_eff = mo.first_order_stationary(eta, H, 0.0, S)
    assert (np.abs(no_eff - C[:2, :2]) > 5 * Z * se[:2, :2]).all()
    assert np.allclose(mo.first_order_stationary(eta, H, beta, S), P[:2, :2], rtol=0.1)


def test_autocovariance_is_the_lifted_power():
    eta, beta = 0.05, 0.9
    ac = mo.heavy_ball_autocovariance(eta, [[1.0]], beta, [[1.0]], [0, 1, 5])
    P = mo.heavy_ball_stationary(eta, [[1.0]], beta, [[1.0]])
    assert np.isclose(ac[0, 0, 0], P[0, 0])
    Zs = mo.simulate_heavy_ball(eta, [[1.0]], beta, [[1.0]], chains=20000, steps=1205, seed=5, record_every=5)
    x0, x5 = Zs[-2][:, 0], Zs[-1][:, 0]  # steps 1200 and 1205
    se = P[0, 0] * np.sqrt(2 / len(x0))
    assert abs(np.mean(x0 * x5) - ac[2, 0, 0]) < Z * se


@pytest.mark.parametrize("kwargs, match", [
    (dict(eta=0.0), "eta"), (dict(beta=1.0), "beta"), (dict(beta=-0.1), "beta"),
    (dict(H=[[1.0, 2.0]]), "square"), (dict(H=[[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
    (dict(Sigma=[[1.0, 0.0], [0.0, 1.0]]), r"\(1, 1\)"),
])
def test_bad_input_is_named(kwargs, match):
    args = dict(eta=0.1, H=[[1.0]], beta=0.5, Sigma=[[1.0]])
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        mo.heavy_ball_stationary(**args)


def test_an_unstable_step_is_refused():
    with pytest.raises(ValueError, match=r"unstable.*2\(1 \+ beta\)"):
        mo.heavy_ball_stationary(3.9, [[1.0]], 0.9, [[1.0]])
    mo.heavy_ball_stationary(3.7, [[1.0]], 0.9, [[1.0]])  # η h < 2(1 + β) = 3.8: stable
