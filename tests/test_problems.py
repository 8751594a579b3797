import pytest
import torch

from sgdnoise import empirical_noise_covariance, per_sample_grads
from sgdnoise.gradients import full_gradient
from sgdnoise.problems import digits_mlp, linear_regression

Z = 4.0


def test_linear_regression_closed_forms_match_autograd():
    p = linear_regression(n=50, d=4, seed=1)
    theta = torch.linspace(-1, 1, 4, dtype=torch.float64)
    p.set_theta(theta)
    G = per_sample_grads(p.model, p.loss_fn, p.X, p.y)
    torch.testing.assert_close(G, p.per_sample_grads_closed_form(theta), atol=1e-12, rtol=0)
    torch.testing.assert_close(empirical_noise_covariance(G), p.sigma_emp(theta), atol=1e-12, rtol=0)
    # the Hessian: the Jacobian of the full gradient
    H = torch.autograd.functional.jacobian(lambda t: p.X.T @ (p.X @ t - p.y) / p.n, theta)
    torch.testing.assert_close(H, p.hessian())
    p.set_theta(p.theta_star())
    assert full_gradient(p.model, p.loss_fn, p.X, p.y).abs().max() < 1e-10


def test_sigma_pop_closed_form_monte_carlo():
    """Σ_pop(θ) from Isserlis' theorem against a large seeded sample, entry by entry within Z SE."""
    S = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    big = linear_regression(n=200_000, d=2, S=S, sigma=0.7, seed=3)
    theta = torch.tensor([0.2, -0.4], dtype=torch.float64)
    g = big.per_sample_grads_closed_form(theta)
    c = g - big.population_gradient(theta)
    prods = c[:, :, None] * c[:, None, :]
    mean, se = prods.mean(0), prods.std(0) / prods.shape[0] ** 0.5
    assert ((mean - big.sigma_pop(theta)).abs() < Z * se).all()
    assert (g.mean(0) - big.population_gradient(theta)).abs().max() < Z * (g.std(0).max() / g.shape[0] ** 0.5)


def test_digits_mlp_shape():
    p = digits_mlp(n=100)
    assert p.n == 100 and p.d == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert p.loss() == pytest.approx(2.3, abs=0.3)  # near log(10) at initialisation
    with pytest.raises(ValueError, match="n=5000"):
        digits_mlp(n=5000)


def test_bad_problem_arguments():
    with pytest.raises(ValueError, match="sigma=-1"):
        linear_regression(sigma=-1)
    with pytest.raises(ValueError, match="n=0"):
        linear_regression(n=0)
