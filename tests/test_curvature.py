import torch

from sgdnoise.curvature import hvp_fn, sharpness
from sgdnoise.problems import digits_mlp, linear_regression


def test_sharpness_of_linear_regression_is_top_eigenvalue_of_XtX_over_n():
    p = linear_regression(60, 4, seed=0)
    exact = float(torch.linalg.eigvalsh(p.hessian()).max())
    assert abs(sharpness(p, iters=500, tol=1e-12) - exact) < 1e-8 * exact


def test_hvp_matches_autograd_hessian_on_a_small_network():
    p = digits_mlp(n=20, hidden=4, dtype=torch.float64)
    theta = p.theta()
    v = torch.randn(theta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    from sgdnoise.sgd import flat_loss_fn

    f = flat_loss_fn(p)
    w = torch.full((20,), 1 / 20, dtype=torch.float64)
    H = torch.autograd.functional.hessian(lambda th: f(th, p.X, p.y, w), theta)
    torch.testing.assert_close(hvp_fn(p, theta)(v), H @ v, atol=1e-10, rtol=1e-8)
