"""Exact moments on linear regression against Monte Carlo of the package's own SGD and SDE simulators."""

import pytest
import torch

from sgdnoise.exact import expected_loss, gradient_flow_moments, sde_em_moments, sde_moments, sgd_moments
from sgdnoise.noise import loglog_slope
from sgdnoise.problems import linear_regression
from sgdnoise.sde import sgd_sde
from sgdnoise.sgd import run_chains

Z = 4.0


def check_moments(thetas, Zk):
    """Mean and second moments of the simulated chains within Z standard errors of the exact ones."""
    d = thetas.shape[1]
    C = thetas.shape[0]
    mean_se = thetas.std(0) / C**0.5
    assert ((thetas.mean(0) - Zk[:d, d]).abs() < Z * mean_se).all()
    prods = thetas[:, :, None] * thetas[:, None, :]
    assert ((prods.mean(0) - Zk[:d, :d]).abs() < Z * prods.std(0) / C**0.5).all()


@pytest.mark.parametrize("scheme, l", [("with_replacement", 1), ("without_replacement", 1), ("with_replacement", 3)])
def test_sgd_moments_match_chains(scheme, l):
    p = linear_regression(20, 2, sigma=0.5, seed=0)
    th0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    eta, B, steps, C = 0.3, 3, 6, 40000
    Zs = sgd_moments(p.X, p.y, th0, eta=eta, B=B, steps=steps, scheme=scheme, svag_l=l)
    run = run_chains(p, th0.repeat(C, 1), eta=eta, B=B, steps=steps, scheme=scheme, svag_l=l,
                     generator=torch.Generator().manual_seed(1))
    check_moments(run.thetas[-1], Zs[-1])


def test_em_moments_match_sgd_sde():
    p = linear_regression(20, 2, sigma=0.5, seed=0)
    th0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    eta, B, dt, steps, P = 0.3, 3, 0.1, 10, 40000
    Zs = sde_em_moments(p.X, p.y, th0, eta=eta, B=B, dt=dt, steps=steps)
    paths = sgd_sde(p, th0.repeat(P, 1), eta=eta, B=B, dt=dt, steps=steps, generator=torch.Generator().manual_seed(2))
    check_moments(paths.thetas[-1], Zs[-1])


def test_em_moments_converge_to_sde_ode_with_order_one():
    p = linear_regression(20, 2, sigma=0.5, seed=0)
    th0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    t, eta, B = 1.0, 0.3, 3
    exact = sde_moments(p.X, p.y, th0, eta=eta, B=B, times=[t])[0]
    dts, errs = [], []
    for m in range(3, 8):
        dt = t / 2**m
        Zk = sde_em_moments(p.X, p.y, th0, eta=eta, B=B, dt=dt, steps=2**m)[-1]
        dts.append(dt)
        errs.append(float((Zk - exact).abs().max()))
    slope, se = loglog_slope(dts, errs)
    assert abs(slope - 1.0) < 0.05, slope


def test_gradient_flow_is_deterministic_and_sde_without_noise():
    p = linear_regression(20, 2, sigma=0.5, seed=0)
    th0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    Zg = gradient_flow_moments(p.X, p.y, th0, times=[0.0, 5.0])
    z = Zg[-1][:2, 2]
    torch.testing.assert_close(Zg[-1][:2, :2], torch.outer(z, z))
    H, b = p.X.T @ p.X / 20, p.X.T @ p.y / 20
    theta_star = torch.linalg.solve(H, b)
    closed = theta_star + torch.linalg.matrix_exp(-5.0 * H) @ (th0 - theta_star)
    torch.testing.assert_close(z, closed)
    assert float(expected_loss(p.X, p.y, Zg[0])) == pytest.approx(float(0.5 * ((p.X @ th0 - p.y) ** 2).mean()))


def test_bad_scheme():
    p = linear_regression(20, 2)
    with pytest.raises(ValueError, match="independent batches only"):
        sgd_moments(p.X, p.y, torch.zeros(2), eta=0.1, B=2, steps=1, scheme="reshuffling")


def test_stationary_moments_are_the_limit_of_the_recursion_and_divergence_is_detected():
    from sgdnoise.exact import sgd_stationary_moments

    p = linear_regression(30, 2, sigma=0.5, seed=0)
    Zs = sgd_stationary_moments(p.X, p.y, eta=0.2, B=2)
    far = sgd_moments(p.X, p.y, p.theta_star(), eta=0.2, B=2, steps=3000)[-1]
    torch.testing.assert_close(Zs, far, atol=1e-10, rtol=1e-8)
    assert sgd_stationary_moments(p.X, p.y, eta=2.5, B=1) is None


# --- bad input: each error names the argument, the value and what is valid -------------------------
def small():
    p = linear_regression(8, 2, seed=0)
    return p.X, p.y


@pytest.mark.parametrize("l", [-1, 0, 2.5, True])
def test_bad_svag_l(l):
    X, y = small()
    with pytest.raises(ValueError, match=rf"svag_l={l!r} must be an int >= 1"):
        sgd_moments(X, y, torch.zeros(2), eta=0.1, B=2, steps=2, svag_l=l)


@pytest.mark.parametrize("dt", [-1.0, 0.0, float("nan"), float("inf"), "0.1"])
def test_bad_dt(dt):
    X, y = small()
    with pytest.raises(ValueError, match=r"time step dt=.* must be a finite number > 0"):
        sde_em_moments(X, y, torch.zeros(2), eta=0.1, B=2, dt=dt, steps=2)


@pytest.mark.parametrize("steps", [-1, 2.0, True])
def test_bad_steps(steps):
    X, y = small()
    with pytest.raises(ValueError, match=rf"steps={steps!r} must be a non-negative int"):
        sde_em_moments(X, y, torch.zeros(2), eta=0.1, B=2, dt=0.1, steps=steps)
    with pytest.raises(ValueError, match=rf"steps={steps!r} must be a non-negative int"):
        sgd_moments(X, y, torch.zeros(2), eta=0.1, B=2, steps=steps)


def test_bad_times():
    X, y = small()
    with pytest.raises(ValueError, match=r"time t=-1\.0 in times must be a finite number >= 0"):
        sde_moments(X, y, torch.zeros(2), eta=0.1, B=2, times=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"time t=nan in times"):
        gradient_flow_moments(X, y, torch.zeros(2), times=[float("nan")])
    with pytest.raises(ValueError, match=r"times is empty"):
        sde_moments(X, y, torch.zeros(2), eta=0.1, B=2, times=[])
    with pytest.raises(ValueError, match=r"times=1\.0 must be a sequence"):
        sde_moments(X, y, torch.zeros(2), eta=0.1, B=2, times=1.0)
    # any order is fine: each time is computed from t = 0
    Z = sde_moments(X, y, torch.zeros(2), eta=0.1, B=2, times=[2.0, 0.0])
    torch.testing.assert_close(Z[1], sde_moments(X, y, torch.zeros(2), eta=0.1, B=2, times=[0.0])[0])


def test_growth_is_returned_but_overflow_raises():
    X, y = small()
    Z = sgd_moments(X, y, torch.zeros(2), eta=1.5, B=1, steps=40)
    assert torch.isfinite(Z).all() and float(Z[-1].abs().max()) > 1e30  # exact, unstable: not an error
    with pytest.raises(FloatingPointError, match=r"eta=1\.5, B=1.*non-finite value at step \d+"):
        sgd_moments(X, y, torch.zeros(2), eta=1.5, B=1, steps=1000)
    with pytest.raises(FloatingPointError, match=r"eta=1\.5, B=1, dt=50.*non-finite value at step \d+"):
        sde_em_moments(X, y, torch.zeros(2), eta=1.5, B=1, dt=50.0, steps=1000)


def test_mismatched_shapes():
    X, y = small()
    Z0 = sgd_moments(X, y, torch.zeros(2), eta=0.1, B=2, steps=0)[0]
    with pytest.raises(ValueError, match=r"X has n=8 samples but y has n=5"):
        sgd_moments(X, y[:5], torch.zeros(2), eta=0.1, B=2, steps=2)
    with pytest.raises(ValueError, match=r"X has n=8 samples but y has n=5"):
        expected_loss(X, y[:5], Z0)
    with pytest.raises(ValueError, match=r"X has n=8 samples but y has n=5"):
        sde_moments(X, y[:5], torch.zeros(2), eta=0.1, B=2, times=[1.0])
    with pytest.raises(ValueError, match=r"y has shape \(8, 1\); need the \(8,\) vector"):
        sgd_moments(X, y[:, None], torch.zeros(2), eta=0.1, B=2, steps=2)
    with pytest.raises(ValueError, match=r"theta0 has shape \(3,\); need \(2,\).*d=2"):
        sgd_moments(X, y, torch.zeros(3), eta=0.1, B=2, steps=2)
    with pytest.raises(ValueError, match=r"theta0 has shape \(3,\); need \(2,\)"):
        sde_em_moments(X, y, torch.zeros(3), eta=0.1, B=2, dt=0.1, steps=2)
    with pytest.raises(ValueError, match=r"theta0 has shape \(1, 2\); need \(2,\)"):
        gradient_flow_moments(X, y, torch.zeros(1, 2), times=[1.0])
    with pytest.raises(ValueError, match=r"Z has shape \(4, 4\); need \(\.\.\., 3, 3\)"):
        expected_loss(X, y, torch.eye(4))
    with pytest.raises(ValueError, match=r"X and y must be finite"):
        sgd_moments(X * float("nan"), y, torch.zeros(2), eta=0.1, B=2, steps=2)


# ------------------------------------------------------------------ heavy-ball momentum (issue 17, item 6)
from sgdnoise.exact import HeavyBallMoments, heavy_ball_stationary_moments, sde_stationary_moments, sgd_stationary_moments  # noqa: E402
from sgdnoise.sgd import linear_regression_chains  # noqa: E402


def _lin2():
    S = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
    return linear_regression(400, 2, sigma=0.5, S=S, seed=1)


def _cov(W, d=2):
    return W[:d, :d] - torch.outer(W[:d, -1], W[:d, -1])


def test_heavy_ball_without_momentum_is_plain_sgd():
    lin = _lin2()
    W = heavy_ball_stationary_moments(lin.X, lin.y, eta=0.1, B=4, beta=0.0)
    Z = sgd_stationary_moments(lin.X, lin.y, eta=0.1, B=4)
    assert torch.allclose(_cov(W), _cov(Z), rtol=1e-9, atol=1e-14)
    assert torch.allclose(W[:2, -1], Z[:2, -1], rtol=1e-9)


def test_heavy_ball_matches_the_one_dimensional_frozen_noise_formula():
    """1D, x_i = ±1 (so A_B = 1 for every batch: additive noise s/B): Var θ = ηs(1+β)/(h(1-β)(2(1+β) - ηh)) with
    h = 1, derived in chapter 4; the SDE with η/(1-β) gives ηs/(2h(1-β)); a wrong β-dependence fails."""
    n = 200
    X = torch.ones(n, 1, dtype=torch.float64)
    y = torch.linspace(-1, 1, n, dtype=torch.float64)
    s = float(((y - y.mean()) ** 2).mean())
    for eta, beta, B in ((0.1, 0.5, 2), (0.5, 0.9, 1), (1.0, 0.0, 3)):
        var = float(_cov(heavy_ball_stationary_moments(X, y, eta=eta, B=B, beta=beta), 1)[0, 0])
        exact = eta * s / B * (1 + beta) / ((1 - beta) * (2 * (1 + beta) - eta))
        assert var == pytest.approx(exact, rel=1e-9)
        sde = float(_cov(sde_stationary_moments(X, y, eta=eta / (1 - beta), B=B), 1)[0, 0])
        assert sde == pytest.approx(eta * s / B / (2 * (1 - beta)), rel=1e-9)
        assert var != pytest.approx(eta * s / B * (1 + beta) / ((1 - beta) * 2 * (1 + beta)), rel=1e-3)  # no edge term


def test_heavy_ball_moments_match_chains_and_the_edge_is_detected():
    lin = _lin2()
    eta, B, beta = 0.03, 8, 0.9
    hb = HeavyBallMoments(lin.X, lin.y, eta=eta, B=B, beta=beta)
    W = hb.stationary()
    th = linear_regression_chains(lin.X, lin.y, lin.theta_star().expand(500, -1).clone(), eta=eta, B=B, steps=800,
                                  generator=torch.Generator().manual_seed(3), record_from=300, record_every=25,
                                  momentum=beta)
    dev = th - W[:2, -1]
    per_chain = (dev**2).sum(-1).mean(0)  # (chains,): each chain's time average of |θ - Eθ|²
    se = float(per_chain.std() / per_chain.numel() ** 0.5)
    assert abs(float(per_chain.mean()) - float(torch.trace(_cov(W)))) < 4 * se
    ac = hb.theta_autocovariance(W, 3)
    assert ac.shape == (4, 2, 2) and torch.allclose(ac[0], _cov(W))
    assert HeavyBallMoments(lin.X, lin.y, eta=3.0, B=B, beta=beta).stationary() is None


@pytest.mark.parametrize("kw, match", [(dict(beta=1.0), "momentum=1.0"), (dict(beta=-0.1), "momentum=-0.1"),
                                       (dict(beta="0.9"), "momentum='0.9'"), (dict(B=0), "B=0"),
                                       (dict(eta=0.0), "eta=0.0")])
def test_heavy_ball_bad_input(kw, match):
    lin = _lin2()
    args = dict(eta=0.1, B=2, beta=0.5) | kw
    with pytest.raises(ValueError, match=match):
        HeavyBallMoments(lin.X, lin.y, **args)
