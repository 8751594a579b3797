"""sgdnoise.stationary: the one-unit measurements behind chapter 4's ranking (issue 17, item 7)."""

import math

import pytest
import torch

from sgdnoise import exact, stationary as st
from sgdnoise.problems import linear_regression

P = linear_regression(16, 2, sigma=1.0, seed=3)
X, Y = P.X, P.y
SGD_EXCESS = st.excess_loss(X, Y, exact.sgd_stationary_moments(X, Y, eta=0.1, B=4))


def test_gaussian_imitation_has_sgds_stationary_excess_loss_and_a_wrong_covariance_does_not():
    """Exact theory: the second-moment recursions coincide, so the Monte-Carlo mean must sit within 4 SE of
    SGD's exact value; the failing variant, twice the covariance, must not."""
    m, se = st.gaussian_imitation_excess_loss(X, Y, eta=0.1, B=4, chains=300, epochs=80, burn=10,
                                              generator=torch.Generator().manual_seed(0))
    assert abs(m - SGD_EXCESS) < 4 * se, (m, se, SGD_EXCESS)
    m2, se2 = st.gaussian_imitation_excess_loss(X, Y, eta=0.1, B=4, chains=300, epochs=80, burn=10,
                                                generator=torch.Generator().manual_seed(0), scale=2.0)
    assert abs(m2 - SGD_EXCESS) > 4 * se2, (m2, se2, SGD_EXCESS)


def test_reshuffling_at_one_batch_per_epoch_is_gradient_descent_and_stays_at_the_minimum():
    m, se = st.reshuffled_excess_loss(X, Y, eta=0.1, B=16, chains=4, epochs=5, burn=1,
                                      generator=torch.Generator().manual_seed(0))
    assert m < 1e-20 and se < 1e-20
    with_replacement = st.excess_loss(X, Y, exact.sgd_stationary_moments(X, Y, eta=0.1, B=16))
    assert with_replacement > 1e-4  # the failing variant: independent batches of size n still make noise


def test_reshuffling_lowers_the_stationary_excess_loss():
    m, se = st.reshuffled_excess_loss(X, Y, eta=0.1, B=4, chains=200, epochs=60, burn=10,
                                      generator=torch.Generator().manual_seed(1))
    assert SGD_EXCESS - m > 10 * se, (m, se, SGD_EXCESS)


def test_frozen_noise_matches_the_one_dimensional_formula():
    """d = 1: dθ = -hθ dt + sqrt(ηΣ/B) dW has variance ηΣ/(2Bh), so the excess loss is h·var/2 = ηΣ/(4B)."""
    p = linear_regression(20, 1, sigma=0.7, seed=5)
    X1, y1 = p.X, p.y
    h = float((X1**2).mean())
    ts = float((X1[:, 0] * y1).mean()) / h
    g = X1[:, 0] * (X1[:, 0] * ts - y1)
    sigma = float(((g - g.mean()) ** 2).mean())
    got = st.frozen_noise_excess_loss(X1, y1, eta=0.2, B=2)
    assert got == pytest.approx(0.2 * sigma / (4 * 2), rel=1e-10)
    assert got != pytest.approx(0.2 * sigma / (2 * 2), rel=1e-3)  # the variance itself, not the excess loss


def test_assumption_effects_rows_and_the_exact_zero_of_the_gaussian_row():
    rows = st.assumption_effects(X, Y, eta=0.1, B=4, beta=0.5, chains=200, epochs=40, burn=5,
                                 generator=torch.Generator().manual_seed(2))
    by = {r["assumption"]: r for r in rows}
    assert list(by) == ["η small", "B ≪ n", "no auto-correlation (reshuffling)", "momentum, through the rescaled SDE",
                        "Σ constant", "Gaussian noise"]
    assert abs(by["Gaussian noise"]["relative effect"]) < 4 * by["Gaussian noise"]["± SE"]
    assert by["B ≪ n"]["relative effect"] < 0 < by["η small"]["relative effect"]
    assert by["no auto-correlation (reshuffling)"]["relative effect"] < -10 * by["no auto-correlation (reshuffling)"]["± SE"]
    assert all(math.isfinite(r["relative effect"]) for r in rows)


@pytest.mark.parametrize("kwargs, match", [({"beta": 0.0}, "beta"), ({"chains": 1}, "chains"),
                                           ({"burn": 40}, "burn"), ({"B": 3}, "divide")])
def test_assumption_effects_refuses_bad_input(kwargs, match):
    args = dict(eta=0.1, B=4, beta=0.5, chains=10, epochs=40, burn=5, generator=torch.Generator().manual_seed(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        st.assumption_effects(X, Y, **args)
