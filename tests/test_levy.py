"""Stationary laws under α-stable noise (``sgdnoise.levy``) and the drift-implicit Euler step
(``euler_maruyama(scheme="drift_implicit")``) that simulates them. Monte-Carlo tolerances in standard errors,
fixed seeds."""

import math

import numpy as np
import pytest
import sympy as sp
import torch

from sgdnoise import levy
from sgdnoise.sde import euler_maruyama, gaussian_mean_exit_time

Z = 4.0
SQRT2 = math.sqrt(2)
cubic_jac = lambda x: (-3 * x**2)[:, :, None]  # noqa: E731


def run(force, *, alpha, dt, T, paths, seed, scheme="drift_implicit", jacobian=None):
    return euler_maruyama(lambda x: -force(x), lambda x, v: SQRT2 * v, torch.zeros(paths, 1, dtype=torch.float64),
                          dt=dt, steps=round(T / dt), noise_dim=1, generator=torch.Generator().manual_seed(seed),
                          driver="alpha_stable", alpha=alpha, scheme=scheme, drift_jacobian=jacobian).thetas[-1, :, 0]


def test_cauchy_quartic_law_is_a_density_with_the_stated_moments_and_transform():
    x = sp.Symbol("x", real=True)
    k = sp.Symbol("k", positive=True)
    g = sp.Integer(8)  # s = 2
    p = levy.cauchy_quartic_density(x, g)
    assert sp.simplify(sp.integrate(p, (x, -sp.oo, sp.oo)) - 1) == 0
    assert sp.simplify(sp.integrate(x**2 * p, (x, -sp.oo, sp.oo)) - 4) == 0  # s²
    cf = levy.cauchy_quartic_charfn(k, g)
    assert sp.simplify(sp.diff(cf, k, 3) - g * cf) == 0  # the stationary Fourier equation p̂''' = γ p̂ on k > 0
    # numerically: the inverse transform of p̂ is p (a wrong normalisation, s instead of s³, fails by 4×)
    ks = np.linspace(0, 60, 600_001)
    for xv in (0.0, 1.0, 3.0):
        inv = np.trapezoid(np.cos(ks * xv) * levy.cauchy_quartic_charfn(ks, 8.0), ks) / math.pi
        assert inv == pytest.approx(levy.cauchy_quartic_density(xv, 8.0), rel=1e-6)


def test_tail_law_reproduces_both_exact_tails():
    xs = np.array([50.0, 100.0])
    # Cauchy–quartic, γ = 8: x⁴ p → s³/π = 8/π
    assert np.allclose(levy.tail_density(xs, 1.0, 8.0, lambda x: x**3) * xs**4, 8 / math.pi)
    ratio = levy.cauchy_quartic_density(xs, 8.0) / levy.tail_density(xs, 1.0, 8.0, lambda x: x**3)
    assert np.all(np.abs(ratio - 1) < 5 * (2 / xs) ** 2)  # the next term is of relative order s²/x²
    # linear force: the stable law's tail γ_∞ C_α x^{-1-α}
    a, g, h = 1.5, 1.0, 2.0
    assert np.allclose(levy.tail_density(xs, a, g, lambda x: h * x),
                       levy.linear_stationary_intensity(h, g, a) * levy.levy_constant(a) * xs ** (-1 - a))
    assert levy.levy_constant(1.0) == pytest.approx(1 / math.pi)
    # P(|X| > x) is twice the integral of the density's tail
    q = levy.tail_probability(10.0, a, g, 3)
    assert q == pytest.approx(2 * g * levy.levy_constant(a) / (a * (a + 2) * 10.0 ** (a + 2)))


def test_explicit_step_diverges_and_the_implicit_step_does_not():
    """The failing variant: the explicit step of the issue's example (α = 1, dt = 1e-3, drift -x³) blows up."""
    with pytest.raises(FloatingPointError, match="drift_implicit"):
        run(lambda x: x**3, alpha=1.0, dt=1e-3, T=1, paths=2_000, seed=0, scheme="explicit")
    X = run(lambda x: x**3, alpha=1.0, dt=1e-3, T=1, paths=2_000, seed=0, jacobian=cubic_jac)
    assert torch.isfinite(X).all()


def test_implicit_step_has_the_schemes_exact_stable_law_for_a_linear_force():
    """Exact for the scheme (no dt bias): the empirical characteristic function against exp(-γ_dt |k|^α). The
    explicit scheme's law, at this dt, is more than Z standard errors away (the check can fail)."""
    a, dt = 1.5, 0.2
    X = run(lambda x: x, alpha=a, dt=dt, T=12, paths=20_000, seed=1)
    m, se = levy.empirical_charfn(X, [0.5, 1.0, 2.0])
    k = np.array([0.5, 1.0, 2.0])
    good = np.exp(-levy.linear_stationary_intensity(1.0, 1.0, a, dt=dt) * k**a)
    bad = np.exp(-levy.linear_stationary_intensity(1.0, 1.0, a, dt=dt, scheme="explicit") * k**a)
    assert np.all(np.abs(m - good) < Z * se)
    assert np.any(np.abs(m - bad) > Z * se)


def test_implicit_step_converges_to_the_cauchy_quartic_law():
    """At dt = 0.005 the empirical characteristic function is within Z SE of the exact one; at dt = 0.04 the bias is
    resolved at k = 1 (the check has power)."""
    k = np.array([1.0, 2.0])
    fine = run(lambda x: x**3, alpha=1.0, dt=0.005, T=6, paths=10_000, seed=13, jacobian=cubic_jac)
    m, se = levy.empirical_charfn(fine, k)
    assert np.all(np.abs(m - levy.cauchy_quartic_charfn(k, 1.0)) < Z * se)
    coarse = run(lambda x: x**3, alpha=1.0, dt=0.04, T=8, paths=20_000, seed=10, jacobian=cubic_jac)
    m, se = levy.empirical_charfn(coarse, k)
    assert abs(m[0] - levy.cauchy_quartic_charfn(1.0, 1.0)) > 3 * se[0]


def test_autograd_jacobian_equals_the_supplied_one_and_2d_systems_solve():
    x0 = torch.zeros(500, 2, dtype=torch.float64)
    force = lambda x: torch.stack([x[:, 0] ** 3 + 0.8 * x[:, 1], 2 * x[:, 1] ** 3 + 0.8 * x[:, 0]], 1)  # noqa: E731

    def jac(x):
        J = torch.empty(x.shape[0], 2, 2, dtype=x.dtype)
        J[:, 0, 0], J[:, 0, 1], J[:, 1, 0], J[:, 1, 1] = -3 * x[:, 0] ** 2, -0.8, -0.8, -6 * x[:, 1] ** 2
        return J

    kw = dict(dt=0.01, steps=60, noise_dim=2, driver="sub_gaussian_stable", alpha=1.5, scheme="drift_implicit")
    a = euler_maruyama(lambda x: -force(x), lambda x, v: v, x0, generator=torch.Generator().manual_seed(2), **kw)
    b = euler_maruyama(lambda x: -force(x), lambda x, v: v, x0, generator=torch.Generator().manual_seed(2),
                       drift_jacobian=jac, **kw)
    assert torch.allclose(a.thetas, b.thetas, rtol=1e-9, atol=1e-10)
    # each step solves its implicit equation: x' + dt·force(x') = x + noise (checked on the last step)
    g = torch.Generator().manual_seed(5)
    c = torch.randn(500, 2, generator=g, dtype=torch.float64) * 30
    from sgdnoise.sde import _implicit_step
    y = _implicit_step(lambda x: -force(x), jac, c, c.clone(), 0.01, 1e-12, 100, 0)
    assert torch.allclose(y + 0.01 * force(y), c, rtol=1e-10, atol=1e-9)


def test_bad_input_is_named():
    x0 = torch.zeros(3, 1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    kw = dict(dt=0.1, steps=2, noise_dim=1, generator=g)
    with pytest.raises(ValueError, match="scheme='midpoint'.*explicit, drift_implicit"):
        euler_maruyama(lambda x: -x, lambda x, v: v, x0, scheme="midpoint", **kw)
    with pytest.raises(TypeError, match="drift_jacobian must be None or callable"):
        euler_maruyama(lambda x: -x, lambda x, v: v, x0, scheme="drift_implicit", drift_jacobian=3, **kw)
    with pytest.raises(ValueError, match=r"drift_jacobian\(x\) returned shape \(3, 1\)"):
        euler_maruyama(lambda x: -x, lambda x, v: v, x0, scheme="drift_implicit", drift_jacobian=lambda x: x, **kw)
    with pytest.raises(ValueError, match="newton_tol=0"):
        euler_maruyama(lambda x: -x, lambda x, v: v, x0, scheme="drift_implicit", newton_tol=0, **kw)
    with pytest.raises(FloatingPointError, match="did not converge in 1 iterations"):
        euler_maruyama(lambda x: -x**3, lambda x, v: 5 * v, x0 + 3, scheme="drift_implicit", newton_max_iter=1, **kw)
    with pytest.raises(ValueError, match="alpha=2.5 must lie in"):
        levy.noise_intensity(1.0, 2.5)
    with pytest.raises(ValueError, match="no Lévy tail"):
        levy.levy_constant(2.0)
    with pytest.raises(ValueError, match="h\\*dt=2.5"):
        levy.linear_stationary_intensity(1.0, 1.0, 1.5, dt=2.5, scheme="explicit")
    with pytest.raises(ValueError, match="scheme='rk4'"):
        levy.linear_stationary_intensity(1.0, 1.0, 1.5, dt=0.1, scheme="rk4")
    with pytest.raises(TypeError, match="force must be callable"):
        levy.tail_density(3.0, 1.5, 1.0, 3)
    with pytest.raises(ValueError, match="finite samples"):
        levy.empirical_charfn([1.0, float("nan")], 1.0)
    with pytest.raises(ValueError, match="gamma=-1"):
        levy.cauchy_quartic_density(1.0, -1)


def test_first_exit_matches_the_exact_mean_after_extrapolation_in_sqrt_dt():
    """Gaussian OU exit from (-1, 1): the mean from dt = 0.02 and 0.005, extrapolated as 2 m(dt/4) - m(dt), is within
    Z SE of the exact double integral; the raw dt = 0.02 mean is not (discrete monitoring's √dt bias: the check
    can fail)."""
    from sgdnoise.sde import first_exit

    a, g = 1.0, 0.5
    exact = gaussian_mean_exit_time(lambda y: a * y * y / 2, g, 1.0)
    runs = {}
    for dt, seed in ((0.02, 1), (0.005, 2)):
        r = first_exit(lambda x: -a * x, 0.0, -1.0, 1.0, sigma=math.sqrt(2 * g), dt=dt, max_steps=round(15 / dt),
                       paths=4_000, generator=torch.Generator().manual_seed(seed))
        assert r.exited.mean() > 0.999
        runs[dt] = (r.times.mean(), r.times.std(ddof=1) / math.sqrt(r.times.size))
    extrap = 2 * runs[0.005][0] - runs[0.02][0]
    se = math.hypot(2 * runs[0.005][1], runs[0.02][1])
    assert abs(extrap - exact) < Z * se
    assert runs[0.02][0] - exact > Z * runs[0.02][1]


def test_first_exit_stable_noise_approaches_the_width_law():
    """α = 1.5 at γ = 0.1: the mean exit time is within 20% of the width law α w^α/(2γC_α), from below, at two depths
    (the book's chapter 8 measures the approach as γ falls)."""
    from sgdnoise.sde import first_exit

    g = 0.1
    asym = 1.5 / (2 * levy.levy_constant(1.5) * g)
    for a, seed in ((1.0, 3), (2.0, 4)):
        r = first_exit(lambda x: -a * x, 0.0, -1.0, 1.0, sigma=SQRT2 * g ** (1 / 1.5), dt=0.02,
                       max_steps=round(6 * asym / 0.02), paths=1_000, generator=torch.Generator().manual_seed(seed),
                       driver="alpha_stable", alpha=1.5)
        assert 0.8 < r.times.mean() / asym < 1.0 + Z * r.times.std() / math.sqrt(1_000) / asym


def test_first_exit_bad_input_and_divergence():
    from sgdnoise.sde import first_exit

    g = torch.Generator().manual_seed(0)
    kw = dict(sigma=1.0, dt=0.01, max_steps=10, paths=5, generator=g)
    with pytest.raises(ValueError, match="need finite lower < x0 < upper"):
        first_exit(lambda x: -x, 2.0, -1.0, 1.0, **kw)
    with pytest.raises(ValueError, match="sigma=0"):
        first_exit(lambda x: -x, 0.0, -1.0, 1.0, **{**kw, "sigma": 0})
    with pytest.raises(TypeError, match="drift must be callable"):
        first_exit(None, 0.0, -1.0, 1.0, **kw)
    with pytest.raises(ValueError, match="scheme='rk4'"):
        first_exit(lambda x: -x, 0.0, -1.0, 1.0, scheme="rk4", **kw)
    with pytest.raises(ValueError, match=r"drift\(x\) returned shape \(5, 5\)"):
        first_exit(lambda x: -x * x.T, 0.0, -1.0, 1.0, **kw)
    with pytest.raises(FloatingPointError, match="drift_implicit"):
        first_exit(lambda x: -x**3, 0.0, -1e300, 1e300, sigma=SQRT2, dt=1e-3, max_steps=2_000, paths=2_000,
                   generator=torch.Generator().manual_seed(0), driver="alpha_stable", alpha=1.0)


def test_implicit_step_in_float32_converges():
    """The Newton tolerance is floored at the dtype's resolution: float32 states do not raise."""
    x0 = torch.zeros(200, 1, dtype=torch.float32)
    r = euler_maruyama(lambda x: -x**3, lambda x, v: v, x0, dt=0.01, steps=100, noise_dim=1,
                       generator=torch.Generator().manual_seed(0), driver="alpha_stable", alpha=1.0,
                       scheme="drift_implicit")
    assert r.thetas.dtype == torch.float32 and torch.isfinite(r.thetas).all()


def test_constant_drift_has_a_zero_jacobian():
    x0 = torch.zeros(10, 1, dtype=torch.float64)
    r = euler_maruyama(lambda x: torch.ones_like(x).detach(), lambda x, v: 0 * v, x0, dt=0.1, steps=5, noise_dim=1,
                       generator=torch.Generator().manual_seed(0), scheme="drift_implicit")
    assert torch.allclose(r.thetas[-1], torch.full((10, 1), 0.5, dtype=torch.float64))


def test_sgd_exit_steps_censors_and_names_bad_input():
    steps, censored = levy.sgd_exit_steps(1.0, 10.0, lr=0.1, noise="gaussian", scale=0.01, paths=50, max_steps=100)
    assert censored == 50 and np.isnan(steps).all()  # a tiny noise never reaches |θ| = 10 in 100 steps
    steps, censored = levy.sgd_exit_steps(1.0, 0.05, lr=0.1, noise="t1.5", scale=1.0, paths=200, max_steps=10_000)
    assert censored == 0 and np.all(steps >= 1)
    with pytest.raises(ValueError, match="noise"):
        levy.sgd_exit_steps(1.0, 1.0, lr=0.1, noise="cauchy", scale=1.0, paths=2, max_steps=2)
    with pytest.raises(ValueError, match="width"):
        levy.sgd_exit_steps(1.0, -1.0, lr=0.1, noise="gaussian", scale=1.0, paths=2, max_steps=2)


def test_median_matched_t_scale_matches_the_median():
    from scipy import stats

    s = levy.median_matched_t_scale(2.0, 1.5)
    assert abs(s * stats.t.ppf(0.75, 1.5) - 2.0 * stats.norm.ppf(0.75)) < 1e-12
    with pytest.raises(ValueError, match="gaussian_scale"):
        levy.median_matched_t_scale(-1.0)
