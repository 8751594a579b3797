import itertools

import math

import pytest
import torch

from sgdnoise import diagnostics as dg
from sgdnoise.diagnostics import (
    autocorrelation,
    noise_scale,
    noise_scale_from_gram,
    noise_scale_two_batch,
    noise_top_eigs,
    random_reshuffling_lag_correlation,
    random_subspace_overlap,
    subspace_overlap,
    trace_h_sigma,
)
from sgdnoise.noise import batch_noise, empirical_noise_covariance
from sgdnoise.problems import digits_mlp, linear_regression
from sgdnoise.sampling import sample_batches

Z = 4.0  # Monte-Carlo tolerance, in standard errors (fixed seeds)
F64 = torch.float64


def random_G(n=12, d=3, seed=0, shift=0.7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=F64) * torch.linspace(0.5, 2.0, d, dtype=F64) + shift


def random_orthonormal(d, k, seed):
    return torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=F64))[0]


# ----------------------------------------------------------------------------- noise scale
def test_noise_scale_is_trace_sigma_over_squared_gradient_norm():
    G = random_G(n=15, d=4)
    exact = float(torch.trace(empirical_noise_covariance(G)) / (G.mean(0) ** 2).sum())
    assert noise_scale(G) == pytest.approx(exact, rel=1e-12)
    assert noise_scale_from_gram(G @ G.T) == pytest.approx(exact, rel=1e-10)


@pytest.mark.parametrize("scheme, B_small, B_big", [("with_replacement", 2, 6), ("with_replacement", 3, 20),
                                                    ("without_replacement", 2, 6), ("without_replacement", 3, 12)])
def test_two_batch_estimates_are_unbiased(scheme, B_small, B_big):
    G = random_G()
    est = noise_scale_two_batch(G, B_small, B_big, 40000, torch.Generator().manual_seed(B_big), scheme)
    trace = float(torch.trace(empirical_noise_covariance(G)))
    g2 = float((G.mean(0) ** 2).sum())
    assert est.trace_sigma_draws.shape == est.grad_sq_draws.shape == (40000,)
    assert abs(est.trace_sigma - trace) < Z * est.trace_sigma_se
    assert abs(est.grad_sq - g2) < Z * est.grad_sq_se + 1e-12  # exact when B_big = n without replacement
    assert est.b_simple == pytest.approx(noise_scale(G), rel=0.05)


def test_two_batch_rejects_bad_sizes():
    G, gen = random_G(), torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="B_small=6, B_big=2"):
        noise_scale_two_batch(G, 6, 2, 10, gen)
    with pytest.raises(ValueError, match="pairs=1"):
        noise_scale_two_batch(G, 2, 6, 1, gen)
    with pytest.raises(ValueError, match="B_big=13 exceeds n=12"):
        noise_scale_two_batch(G, 2, 13, 10, gen, "without_replacement")


# ----------------------------------------------------------------------------- autocorrelation
def test_autocorrelation_definition_and_shapes():
    xi = torch.randn(50, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    ac = autocorrelation(xi, 4)
    assert ac.rho.shape == ac.se.shape == (5,)
    assert ac.rho[0] == 1.0 and ac.se[0] == 0.0
    direct = (xi[:-2] * xi[2:]).sum(1).mean() / (xi**2).sum(1).mean()
    assert float(ac.rho[2]) == pytest.approx(float(direct), rel=1e-12)
    # scalars are one-dimensional vectors; centring removes a constant offset
    torch.testing.assert_close(autocorrelation(xi[:, 0], 3).rho, autocorrelation(xi[:, :1], 3).rho)
    torch.testing.assert_close(autocorrelation(xi + 5.0, 3, center=True).rho, autocorrelation(xi - xi.mean(0), 3).rho)
    with pytest.raises(ValueError, match="max_lag=49"):
        autocorrelation(xi, 49)
    with pytest.raises(ValueError, match=r"shape \(T,\) or \(T, d\)"):
        autocorrelation(xi[None], 2)


@pytest.mark.parametrize("n, B", [(6, 2), (7, 2), (8, 3)])
def test_reshuffled_batch_correlation_by_exact_enumeration(n, B):
    """Over all n! permutations: Cov(ξ_j, ξ_k) / Var ξ_j = -B/(n-B) for every pair of batches j ≠ k of one epoch."""
    G = random_G(n=n, d=3, seed=n)
    m = n // B
    perms = torch.tensor(list(itertools.permutations(range(n))))[:, : m * B]
    xi = batch_noise(G, perms.reshape(-1, B)).view(len(perms), m, 3)
    var = (xi**2).sum(-1).mean(0)  # E‖ξ_j‖², the same for every position j
    for j, k in itertools.combinations(range(m), 2):
        corr = float((xi[:, j] * xi[:, k]).sum(-1).mean() / var[j])
        assert corr == pytest.approx(-B / (n - B), rel=1e-10)
    rho = random_reshuffling_lag_correlation(n, B, m + 1)
    expected = [1.0] + [-(m - lag) / m * B / (n - B) for lag in range(1, m)] + [0.0, 0.0]
    torch.testing.assert_close(rho, torch.tensor(expected, dtype=F64))
    if n % B == 0:  # exact partition: -(m - ℓ) / (m (m - 1))
        torch.testing.assert_close(rho[1:m], torch.tensor([-(m - lag) / (m * (m - 1)) for lag in range(1, m)], dtype=F64))


@pytest.mark.parametrize("n, B", [(12, 3), (13, 3)])
def test_reshuffling_autocorrelation_monte_carlo(n, B):
    G = random_G(n=n, d=3, seed=1)
    m, T = n // B, 40000
    xi = batch_noise(G, sample_batches(n, B, T, "reshuffling", torch.Generator().manual_seed(n)))
    ac = autocorrelation(xi, 2 * m, block=5 * m)  # epochs are independent: blocks of several epochs
    expected = random_reshuffling_lag_correlation(n, B, 2 * m, num_steps=T)
    assert ((ac.rho - expected).abs() < Z * ac.se + 1e-12).all(), (ac.rho, expected, ac.se)
    assert expected[1] < -0.2 and (expected[m:] == 0).all()


def test_with_replacement_noise_is_uncorrelated():
    G = random_G(n=12, d=3, seed=2)
    xi = batch_noise(G, sample_batches(12, 3, 20000, "with_replacement", torch.Generator().manual_seed(3)))
    ac = autocorrelation(xi, 6)
    assert (ac.rho[1:].abs() < Z * ac.se[1:]).all(), (ac.rho, ac.se)
    assert (ac.se[1:] < 0.02).all()


def test_reshuffling_lag_correlation_rejects_zero_noise():
    with pytest.raises(ValueError, match="B=5 >= n=5"):
        random_reshuffling_lag_correlation(5, 5, 2)
    with pytest.raises(ValueError, match="num_steps=3"):
        random_reshuffling_lag_correlation(12, 3, 4, num_steps=3)


# ----------------------------------------------------------------------------- spectra and overlaps
@pytest.mark.parametrize("n, d", [(20, 5), (8, 30)])
def test_noise_top_eigs_match_dense_sigma(n, d):
    G = random_G(n=n, d=d, seed=4)
    lam, U = torch.linalg.eigh(empirical_noise_covariance(G))
    lam, U = lam.flip(0), U.flip(1)
    k = 4
    for vals, V in [noise_top_eigs(G, k), noise_top_eigs(G, k, K=G @ G.T), noise_top_eigs(G, k, method="lanczos", tol=1e-13)]:
        torch.testing.assert_close(vals, lam[:k], atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(V.T @ V, torch.eye(k, dtype=F64), atol=1e-10, rtol=0)
        torch.testing.assert_close((V * U[:, :k]).sum(0).abs(), torch.ones(k, dtype=F64), atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="rank at most"):
        noise_top_eigs(G, min(n - 1, d) + 1)
    G[:, 1:] = G[:, :1]  # Σ_emp of rank one
    with pytest.raises(ValueError, match="numerical rank 1"):
        noise_top_eigs(G, 2)


def test_subspace_overlap_extremes_and_random_baseline():
    d = 12
    Q = random_orthonormal(d, d, 0)
    assert subspace_overlap(Q[:, :3], Q[:, :3]) == pytest.approx(1.0)
    assert subspace_overlap(Q[:, :2], Q[:, :5]) == pytest.approx(1.0)  # smaller inside larger
    assert subspace_overlap(Q[:, :3], Q[:, 3:7]) == pytest.approx(0.0, abs=1e-12)
    assert subspace_overlap(Q[:, :3], Q[:, :3] @ random_orthonormal(3, 3, 1)) == pytest.approx(1.0)  # basis-free
    U = Q[:, :2]
    for k_v in (2, 4):  # 3000 uniformly random k_v-subspaces (QR of Gaussian matrices), in one batch
        Vs = torch.linalg.qr(torch.randn(3000, d, k_v, generator=torch.Generator().manual_seed(k_v), dtype=F64))[0]
        draws = (U.T @ Vs).pow(2).sum((1, 2)) / 2
        assert float(draws[0]) == pytest.approx(subspace_overlap(U, Vs[0]))
        assert abs(float(draws.mean()) - random_subspace_overlap(d, 2, k_v)) < Z * float(draws.std()) / 3000**0.5
    assert random_subspace_overlap(d, 2, 4) == 4 / 12
    with pytest.raises(ValueError, match="not orthonormal"):
        subspace_overlap(2 * U, U)
    with pytest.raises(ValueError, match="different spaces"):
        subspace_overlap(U, random_orthonormal(5, 2, 0))
    with pytest.raises(ValueError, match=r"V has 24 non-finite value\(s\)"):
        subspace_overlap(U, torch.full((d, 2), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match=r"U has 1 non-finite value\(s\)"):
        bad = U.clone()
        bad[0, 0] = float("inf")
        subspace_overlap(bad, U)


@pytest.mark.parametrize("method", ["eigh", "lanczos", "auto"])
def test_non_finite_gradients_are_rejected(method):
    G = torch.randn(20, 5, generator=torch.Generator().manual_seed(0), dtype=F64)
    bad = G.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"G has 1 non-finite value\(s\)"):
        noise_top_eigs(bad, 1, method=method)
    with pytest.raises(ValueError, match=r"G has 100 non-finite value\(s\)"):
        noise_scale(G * float("nan"))
    bad[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"G has 1 non-finite value\(s\)"):
        noise_scale(bad)
    with pytest.raises(ValueError, match=r"K has 400 non-finite value\(s\)"):
        noise_scale_from_gram((G @ G.T) * float("nan"))
    with pytest.raises(ValueError, match=r"K has 1 non-finite value\(s\)"):
        K = G @ G.T
        K[0, 0] = float("nan")
        noise_top_eigs(G, 1, K=K)


# ----------------------------------------------------------------------------- tr(HΣ)
def test_trace_h_sigma_exact_on_linear_regression():
    p = linear_regression(200, 6, seed=5)
    theta = torch.linspace(-1.0, 1.0, 6, dtype=F64)
    G = p.per_sample_grads_closed_form(theta)
    H, Sigma = p.hessian(), p.sigma_emp(theta)
    exact = float(torch.trace(H @ Sigma))
    iso = float(torch.trace(H) * torch.trace(Sigma)) / 6
    r = trace_h_sigma(p, theta, G, probes=None)
    assert r.trace_h_sigma == pytest.approx(exact, rel=1e-10) and r.trace_h_sigma_se == 0.0
    assert r.trace_h == pytest.approx(float(torch.trace(H)), rel=1e-12) and r.trace_h_se == 0.0
    assert r.isotropic == pytest.approx(iso, rel=1e-10) and r.ratio == pytest.approx(exact / iso, rel=1e-9)
    assert r.m == 200 and r.probes is None
    # subsampled rows and Hutchinson probes: unbiased, within their standard errors
    r = trace_h_sigma(p, theta, G, m=50, generator=torch.Generator().manual_seed(0), probes=200)
    assert abs(r.trace_h_sigma - exact) < Z * r.trace_h_sigma_se
    assert abs(r.trace_h - float(torch.trace(H))) < Z * r.trace_h_se
    assert abs(r.ratio - exact / iso) < Z * r.ratio_se
    with pytest.raises(ValueError, match="m=1"):
        trace_h_sigma(p, theta, G, m=1)
    with pytest.raises(ValueError, match="d=5 columns"):
        trace_h_sigma(p, theta, G[:, :5])


def test_trace_h_sigma_on_a_small_network_matches_the_dense_hessian():
    from torch.func import grad, jacrev

    from sgdnoise.gradients import per_sample_grads
    from sgdnoise.sgd import flat_loss_fn

    p = digits_mlp(n=40, hidden=4, dtype=F64)
    theta = p.theta()
    f = flat_loss_fn(p)
    H = jacrev(grad(lambda th: f(th, p.X, p.y, torch.full((40,), 1 / 40, dtype=F64))))(theta)
    G = per_sample_grads(p.model, p.loss_fn, p.X, p.y)
    r = trace_h_sigma(p, theta, G, probes=None)
    assert r.trace_h_sigma == pytest.approx(float(torch.trace(H @ empirical_noise_covariance(G))), rel=1e-9)
    assert r.trace_h == pytest.approx(float(torch.trace(H)), rel=1e-9)


# ------------------------------------------------------------------ the commutator [H, Σ] (issue 17, item 8)
def _axis_aligned_problem():
    """Least squares whose samples each lie along one axis, at its minimiser: H and Σ_emp are both diagonal."""
    from sgdnoise.gradients import per_sample_grads
    from sgdnoise.problems import linear_regression

    p = linear_regression(60, 3, seed=0)
    g = torch.Generator().manual_seed(1)
    axis = torch.arange(60) % 3
    X = torch.zeros(60, 3, dtype=torch.float64)
    scale = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)[axis]
    X[torch.arange(60), axis] = torch.randn(60, generator=g, dtype=torch.float64) * scale
    p.X, p.y = X, torch.randn(60, generator=g, dtype=torch.float64)
    p.set_theta(torch.linalg.lstsq(p.X, p.y).solution)
    return p, per_sample_grads(p.model, p.loss_fn, p.X, p.y)


def test_commutator_vanishes_for_commuting_h_and_sigma_and_not_otherwise():
    from sgdnoise.gradients import per_sample_grads
    from sgdnoise.problems import linear_regression

    p, G = _axis_aligned_problem()
    c = dg.commutator_in_top_subspace(p, p.theta(), G, 2, permutations=2)
    assert c.relative < 1e-12 and c.leakage < 1e-12 and len(c.null_relative) == 2
    S = torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 2.0]], dtype=torch.float64)
    q = linear_regression(60, 3, seed=0, S=S)
    c2 = dg.commutator_in_top_subspace(q, q.theta(), per_sample_grads(q.model, q.loss_fn, q.X, q.y), 2, permutations=0)
    assert c2.relative > 1e-3 and c2.null_relative == ()
    # the same computation by dense matrices
    Gc = per_sample_grads(q.model, q.loss_fn, q.X, q.y)
    Gc = Gc - Gc.mean(0)
    Sig = Gc.T @ Gc / q.n
    lam, V = torch.linalg.eigh(Sig)
    V = V[:, [2, 1]]
    H = q.hessian()
    C = (H @ Sig - Sig @ H) @ V
    dense = float(C.norm() / ((H @ Sig @ V).norm() + (Sig @ H @ V).norm()))
    assert c2.relative == pytest.approx(dense, rel=1e-8)


def test_commutator_bad_input():
    p, G = _axis_aligned_problem()
    with pytest.raises(ValueError, match="theta has 2 entries"):
        dg.commutator_in_top_subspace(p, torch.zeros(2, dtype=torch.float64), G, 1)
    with pytest.raises(ValueError, match="permutations=-1"):
        dg.commutator_in_top_subspace(p, p.theta(), G, 1, permutations=-1)
    with pytest.raises(ValueError, match="k=5"):
        dg.commutator_in_top_subspace(p, p.theta(), G, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_autocorrelation_gram_route_equals_the_lag_passes(monkeypatch, dtype):
    gen = torch.Generator().manual_seed(5)
    xi = torch.randn(300, 50, generator=gen, dtype=dtype).cumsum(0) * 0.1 + torch.randn(300, 50, generator=gen, dtype=dtype)
    fast = dg.autocorrelation(xi, 30, block=4)
    monkeypatch.setattr(dg, "_GRAM_MAX_T", 0)  # force the passes over the array
    slow = dg.autocorrelation(xi, 30, block=4)
    torch.testing.assert_close(fast.rho, slow.rho, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0)
    torch.testing.assert_close(fast.se, slow.se, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-12)  # lag 0: se = 0


def test_two_batch_b_simple_se_matches_the_spread_over_repetitions():
    """The delta-method SE of the two-batch B_simple against the SD of B_simple over 300 independent runs
    (agreement to 15%, a few Monte-Carlo SEs of an SD from 300 draws), and the ratio's covariance term is
    not negligible on this problem."""
    gen = torch.Generator().manual_seed(3)
    G = torch.randn(400, 20, generator=gen, dtype=torch.float64) + 0.3
    runs = [noise_scale_two_batch(G, 4, 64, 200, torch.Generator().manual_seed(100 + i)) for i in range(300)]
    sd = torch.tensor([r.b_simple for r in runs]).std().item()
    se = sum(r.b_simple_se for r in runs) / len(runs)
    assert abs(se / sd - 1) < 0.15, (se, sd)
    r = runs[0]
    S, g = r.trace_sigma_draws, r.grad_sq_draws
    no_cov = r.b_simple * math.sqrt((S.var() / S.mean() ** 2 + g.var() / g.mean() ** 2).item() / S.numel())
    assert abs(r.b_simple_se - no_cov) > 1e-3 * r.b_simple_se  # the covariance term matters here
