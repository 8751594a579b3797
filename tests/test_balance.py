"""Layer balancedness of a scalar deep linear network (chapter 5, issue 18): the exact one-step identity, the
α-stable balancing rate, SGD's finite-step rate, and the simulator, each against an independent computation,
with failing variants. Monte-Carlo tolerances are 3 standard errors, fixed seeds."""

import math

import mpmath as mp
import numpy as np
import pytest
import torch

from sgdnoise import balance as bal


@pytest.fixture(scope="module")
def data():
    return bal.rademacher_regression(64, slope=1.0, label_noise=1.0, seed=0)


def _sgd_step(ws, eta, m, etas=None):
    """One SGD step on a = Π w for a loss with ∂ℓ/∂a = m; per-layer learning rates ``etas`` (the failing variant)."""
    etas = [eta] * len(ws) if etas is None else etas
    a = np.prod(ws)
    return [w - e * m * a / w for w, e in zip(ws, etas)]


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_one_sgd_step_multiplies_each_imbalance_exactly(depth):
    rng = np.random.default_rng(depth)
    ws, eta, m = list(rng.uniform(0.5, 2, depth)), 0.07, rng.normal()
    new = _sgd_step(ws, eta, m)
    for l in range(depth - 1):
        q = np.prod([ws[j] ** 2 for j in range(depth) if j not in (l, l + 1)])
        before, after = ws[l + 1] ** 2 - ws[l] ** 2, new[l + 1] ** 2 - new[l] ** 2
        assert after == pytest.approx(before * (1 - eta**2 * m**2 * q), rel=1e-12)
    # failing variant: per-layer learning rates break it
    bad = _sgd_step(ws, eta, m, etas=[eta * (1 + 0.1 * j) for j in range(depth)])
    before, after = ws[1] ** 2 - ws[0] ** 2, bad[1] ** 2 - bad[0] ** 2
    q = np.prod([ws[j] ** 2 for j in range(2, depth)])
    assert abs(after - before * (1 - eta**2 * m**2 * q)) > 1e-4


@pytest.mark.parametrize("alpha", [0.5, 1.3, 1.5, 1.8, 1.95])
def test_stable_rate_is_the_levy_integral(alpha):
    """-2Γ(α)cos(πα/2)γ^α = -2 C_α γ^α ∫_0^∞ log|1 - J²| J^{-1-α} dJ with C_α = Γ(1+α) sin(πα/2)/π; the integral
    by its series 2/α² - Σ_k 4/(4k² - α²) (exact term by term), summed by mpmath."""
    gamma = 0.3
    integral = 2 / alpha**2 - mp.nsum(lambda k: 4 / (4 * k**2 - alpha**2), [1, mp.inf])
    C = math.gamma(1 + alpha) * math.sin(math.pi * alpha / 2) / math.pi
    assert bal.stable_balancing_rate(alpha, gamma) == pytest.approx(-2 * C * gamma**alpha * float(integral), rel=1e-10)
    # failing variant: cot(πα) in place of cot(πα/2)
    assert abs(float(integral) - math.pi / alpha / math.tan(math.pi * alpha)) > 1e-3


def test_stable_rate_limits():
    assert bal.stable_balancing_rate(2.0, 0.4) == pytest.approx(2 * 0.4**2)  # the Gaussian rate, kick variance 2γ²
    assert abs(bal.stable_balancing_rate(1.0, 0.4)) < 1e-15  # Cauchy: neutral
    assert bal.stable_balancing_rate(0.8, 0.4) < 0 < bal.stable_balancing_rate(1.2, 0.4)


def test_the_levy_measure_constant():
    """ν(dJ) = C_α γ^α |J|^{-1-α} dJ reproduces the characteristic exponent: ∫(1 - cos tJ) ν(dJ) = γ^α |t|^α."""
    alpha, gamma, t = 1.5, 0.7, 1.3
    C = math.gamma(1 + alpha) * math.sin(math.pi * alpha / 2) / math.pi
    f = lambda J: (1 - mp.cos(t * J)) * J ** (-1 - alpha)  # noqa: E731
    val = 2 * C * gamma**alpha * (mp.quad(f, [0, 1]) + mp.quadosc(f, [1, mp.inf], omega=t))
    assert float(val) == pytest.approx((gamma * t) ** alpha, rel=1e-5)  # mpmath's oscillatory quadrature: ~1e-6
    wrong = val * math.gamma(alpha) / math.gamma(1 + alpha)  # failing variant: Γ(α) in place of Γ(1+α)
    assert float(wrong) != pytest.approx((gamma * t) ** alpha, rel=1e-2)


def test_gaussian_sde_balances_at_eta_V_over_B(data):
    x, y = data
    a_hat, V = bal.label_noise_variance(x, y)
    r = bal.simulate(x, y, (2.0, 0.5), method="gaussian_sde", eta=0.05, B=2, steps=1500, paths=128,
                     generator=torch.Generator().manual_seed(3))
    rate, se = r.rate()
    assert abs(rate - 0.05 * V / 2) < 3 * se
    assert abs(rate - 1.1 * 0.05 * V / 2) > 3 * se  # a 10% error would be seen


@pytest.mark.parametrize("alpha", [1.5, 1.8])
def test_stable_sde_balances_at_the_levy_rate(data, alpha):
    x, y = data
    a_hat, V = bal.label_noise_variance(x, y)
    eta, B = 0.05, 2
    kappa = bal.median_matching_factor(alpha, eta)
    r = bal.simulate(x, y, (2.0, 0.5), method="stable_sde", eta=eta, B=B, steps=1500, paths=256, alpha=alpha,
                     kappa=kappa, generator=torch.Generator().manual_seed(4))
    rate, se = r.rate()
    pred = bal.stable_balancing_rate(alpha, math.sqrt(eta * V / B) * kappa / math.sqrt(2))
    assert abs(rate - pred) < 3 * se
    assert abs(rate - eta * V / B) > 3 * se  # and not at the Gaussian rate


def test_sgd_balances_at_the_finite_step_rate(data):
    x, y = data
    a_hat, V = bal.label_noise_variance(x, y)
    eta, B, w0 = 0.05, 4, (2.0, 0.5)
    r = bal.simulate(x, y, w0, method="sgd", eta=eta, B=B, steps=2400, paths=128, generator=torch.Generator().manual_seed(5))
    d = r.log_imbalance[-1] - r.log_imbalance[0]
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(len(d))
    pred = bal.sgd_balancing_curve(eta, B, V, a_hat, w0[1] ** 2 - w0[0] ** 2, r.times)[-1]
    assert abs(mean - pred) < 3 * se
    assert abs(mean - (-eta * V / B * r.times[-1])) > 3 * se  # the SDE's rate alone is rejected


def test_gd_on_the_curve_of_minima_does_not_move(data):
    x, y = data
    a_hat, _ = bal.label_noise_variance(x, y)
    w0 = (2 * math.sqrt(a_hat), math.sqrt(a_hat) / 2)
    r = bal.simulate(x, y, w0, method="gd", eta=0.05, steps=200, paths=2, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(r.w, np.tile(w0, (2, 1)), rtol=1e-12)


def test_sde_layers_reconstruct_from_the_state(data):
    """The splitting integrator's layers have the tracked product and imbalance, also after |ξ| > 1 kicks."""
    x, y = data
    r = bal.simulate(x, y, (1.5, -0.4), method="stable_sde", eta=0.5, B=1, steps=300, paths=64, alpha=1.2,
                     kappa=3.0, generator=torch.Generator().manual_seed(6))
    w = r.w
    np.testing.assert_allclose(w[:, 0] * w[:, 1], r.a[-1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(np.log(np.abs(w[:, 1] ** 2 - w[:, 0] ** 2)), r.log_imbalance[-1], atol=1e-6)


def test_sgd_rate_formula_rejects_the_edge_of_stability():
    with pytest.raises(ValueError, match="eta \\* sharpness"):
        bal.sgd_balancing_rate(0.5, 1, 1.0, 4.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="adam"), "valid methods"),
    (dict(method="sgd", alpha=1.5), "apply to method"),
    (dict(method="sgd", dt=0.01), "SDEs only"),
    (dict(method="sgd", w0=(1.0, -1.0)), "w_1² ≠ w_2²"),
    (dict(method="sgd", eta=0.0), "eta"),
])
def test_bad_input(data, kwargs, match):
    x, y = data
    kw = dict(method="sgd", eta=0.05, steps=3, paths=2, generator=torch.Generator().manual_seed(0), w0=(2.0, 0.5)) | kwargs
    w0 = kw.pop("w0")
    with pytest.raises(ValueError, match=match):
        bal.simulate(x, y, w0, **kw)


def test_inputs_must_be_signs():
    with pytest.raises(ValueError, match="only \\+1 and -1"):
        bal.label_noise_variance(np.array([1.0, 0.5]), np.array([0.0, 1.0]))


def test_walsh_regression_makes_the_ito_term_exactly_minus_v_d():
    """On the Walsh design the Gaussian SDE's Itô term at any minimum of a depth-2 network is exactly -V D
    (S_e = S_x = V I). Failing variant: Gaussian inputs and labels, where it is off by tens of percent."""
    import torch

    from sgdnoise.balance import walsh_regression

    g = torch.Generator().manual_seed(0)
    k, sigma = 6, 0.5
    M = torch.randn(k, k, generator=g, dtype=torch.float64)
    X, Y = walsh_regression(M, label_noise=sigma)
    n = X.shape[0]

    def ito_gap(X, Y):
        M_hat = torch.linalg.solve(X.T @ X, X.T @ Y).T
        E = X @ M_hat.T - Y
        Q, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
        W1 = 2.0 * Q  # a minimum far from balance: W2 W1 = M_hat
        W2 = M_hat @ torch.linalg.inv(W1)
        G1 = torch.einsum("ba,ib,ic->iac", W2, E, X)  # ∂ℓ_i/∂W1 = W2ᵀ e_i x_iᵀ
        G2 = torch.einsum("ia,ib->iab", E, X @ W1.T)  # ∂ℓ_i/∂W2 = e_i (W1 x_i)ᵀ
        ito = (G2.transpose(1, 2) @ G2 - G1 @ G1.transpose(1, 2)).mean(0)
        D, V = W2.T @ W2 - W1 @ W1.T, float(E.pow(2).sum(1).mean())
        return float((ito + V * D).norm() / (V * D).norm())

    assert torch.allclose(X.T @ X / n, torch.eye(k, dtype=torch.float64))
    E = Y - X @ M.T
    assert torch.allclose(E.pow(2).sum(1), torch.full((n,), k * sigma**2, dtype=torch.float64))
    assert torch.allclose(X.T @ E, torch.zeros(k, k, dtype=torch.float64), atol=1e-12)
    assert ito_gap(X, Y) < 1e-12
    Xg = torch.randn(n, k, generator=g, dtype=torch.float64)
    assert ito_gap(Xg, Xg @ M.T + sigma * torch.randn(n, k, generator=g, dtype=torch.float64)) > 0.05
