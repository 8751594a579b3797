"""The edge-of-stability tools (``sgdnoise.eos``): the sharpness by power iteration, gradient descent and gradient
flow, and the central flow's constraint."""

import math

import numpy as np
import pytest
import torch

from sgdnoise import eos


def test_top_eigenpair_of_a_quadratic():
    A = torch.diag(torch.tensor([5.0, 2.0, -1.0, 0.5], dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    A = Q @ A @ Q.T
    lam, u = eos.top_eigenpair(lambda th: 0.5 * th @ A @ th, torch.zeros(4, dtype=torch.float64), iters=200, tol=1e-12)
    assert abs(lam - 5.0) < 1e-8
    assert torch.allclose(A @ u, 5.0 * u, atol=1e-5)


@pytest.fixture(scope="module")
def small():
    return eos.digits_regression(n=60, hidden=8, seed=0)


def test_gradient_flow_and_gradient_descent_agree_at_a_small_step(small):
    gd = eos.run_gd(small, lr=0.01, steps=40, record_every=40)
    gf = eos.gradient_flow(small, lr=0.01, steps=40, substeps=4, record_every=40)
    assert abs(gd.loss[-1] - gf.loss[-1]) < 1e-3 * gf.loss[-1]
    assert abs(gd.loss[-1] - gf.loss[-1]) > 0  # not the same computation


def test_central_flow_holds_the_sharpness_at_the_threshold(small):
    """Threshold 2/η just above the starting sharpness: gradient flow sharpens past it, the central flow stops at it."""
    lam0, _ = eos.top_eigenpair(small.loss, small.theta0, iters=200)
    lr = 2 / (1.02 * lam0)
    cf = eos.central_flow(small, lr=lr, steps=60, substeps=4, record_every=5, eig_iters=20)
    gf = eos.gradient_flow(small, lr=lr, steps=60, substeps=2, record_every=5)
    assert gf.sharpness[-1] * lr / 2 > 1.02  # gradient flow crosses the threshold
    assert np.all(cf.sharpness * lr / 2 < 1.01) and cf.sigma2.max() > 0 and np.all(cf.sigma2 >= 0)
    # the predicted loss adds the oscillation's share, ½σ²S, to the loss at the centre
    np.testing.assert_allclose(cf.predicted_loss, cf.loss + 0.5 * cf.sigma2 * cf.sharpness)


def test_divergence_and_bad_input(small):
    with pytest.raises(FloatingPointError, match="diverged"):
        eos.run_gd(small, lr=50.0, steps=200)
    with pytest.raises(ValueError, match="lr"):
        eos.run_gd(small, lr=-1.0, steps=2)
    with pytest.raises(ValueError, match="n"):
        eos.digits_regression(n=1)
