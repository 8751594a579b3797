import pytest
import torch

from sgdnoise.noise import (
    batch_noise,
    effective_rank,
    empirical_noise_covariance,
    estimate_noise_covariance,
    estimator_expectation_factor,
    noise_covariance_factor,
    noise_spectrum,
    noise_sq_norms_from_gram,
)
from sgdnoise.sampling import SCHEMES, batches_per_epoch, sample_batches

Z = 4.0  # Monte-Carlo tolerance, in standard errors (fixed seeds)


def random_G(n=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5][:d] + [1.0] * max(0, d - 3), dtype=torch.float64)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("B", [1, 3, 8])
def test_noise_covariance_factor_monte_carlo(scheme, B):
    G = random_G()
    n = G.shape[0]
    m = 40000
    xi = batch_noise(G, sample_batches(n, B, m, scheme, torch.Generator().manual_seed(B)))
    sq = (xi**2).sum(1)
    expected = noise_covariance_factor(n, B, scheme) * torch.trace(empirical_noise_covariance(G))
    assert abs(sq.mean() - expected) < Z * sq.std() / m**0.5
    assert abs(xi.mean(0)).max() < Z * (xi.std(0).max() / m**0.5)
    # a direction: v^T Cov v
    v = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
    proj = (xi @ v) ** 2
    exp_v = noise_covariance_factor(n, B, scheme) * v @ empirical_noise_covariance(G) @ v
    assert abs(proj.mean() - exp_v) < Z * proj.std() / m**0.5


def test_noise_vanishes_at_full_batch_without_replacement():
    G = random_G()
    xi = batch_noise(G, sample_batches(12, 12, 5, "without_replacement", torch.Generator().manual_seed(0)))
    assert xi.abs().max() < 1e-12
    assert noise_covariance_factor(12, 12, "without_replacement") == 0.0


def test_gram_route_matches_batch_noise():
    G = random_G(n=20, d=7)
    batches = sample_batches(20, 5, 50, "with_replacement", torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise_sq_norms_from_gram(G @ G.T, batches), (batch_noise(G, batches) ** 2).sum(1))


@pytest.mark.parametrize("scheme, m", [("with_replacement", 5), ("without_replacement", 5), ("reshuffling", 2), ("reshuffling", 4)])
def test_estimator_expectation(scheme, m):
    G = random_G()
    n, B = G.shape[0], 3
    gen = torch.Generator().manual_seed(7)
    reps = 20000
    traces = []
    for _ in range(reps // 100):
        if scheme == "reshuffling":  # m batches of one epoch each
            per = batches_per_epoch(n, B)
            b = sample_batches(n, B, per * 100, scheme, gen).view(100, per, B)[:, :m]
        else:
            b = sample_batches(n, B, 100 * m, scheme, gen).view(100, m, B)
        for rows in b:
            gB = G[rows].mean(1)
            traces.append(torch.trace(estimate_noise_covariance(gB, B)))
    t = torch.stack(traces)
    expected = estimator_expectation_factor(n, B, scheme) * torch.trace(empirical_noise_covariance(G))
    assert abs(t.mean() - expected) < Z * t.std() / len(t) ** 0.5


@pytest.mark.parametrize("n, d", [(10, 4), (6, 30)])
def test_spectrum_from_gram(n, d):
    G = random_G(n=n, d=d, seed=2)
    direct = torch.linalg.eigvalsh(empirical_noise_covariance(G)).flip(0)
    via_gram = noise_spectrum(G @ G.T)
    k = min(n, d)
    torch.testing.assert_close(via_gram[:k], direct[:k].clamp_min(0), atol=1e-10, rtol=1e-8)
    assert via_gram[k:].abs().max() < 1e-10 if n > k else True


@pytest.mark.parametrize("case", ["mlp", "conv"])
def test_sigma_spectrum_matches_dense_route(case):
    """Straight from the model (lower-triangle fast path, or the general route) = eigenvalues of Σ_emp from G."""
    from torch import nn

    from sgdnoise import per_sample_grads
    from sgdnoise.noise import sigma_spectrum
    from sgdnoise.problems import cross_entropy, mlp

    g = torch.Generator().manual_seed(3)
    n = 300  # more rows than one 256-row block, so the blocked build is exercised
    X = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.randint(3, (n,), generator=g)
    if case == "mlp":
        model = mlp([5, 16, 3], generator=g, dtype=torch.float64)
    else:
        model = nn.Sequential(nn.Unflatten(1, (1, 5)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(6, 3)).double()
    G = per_sample_grads(model, cross_entropy, X, y)
    direct = torch.linalg.eigvalsh(empirical_noise_covariance(G)).flip(0).clamp_min(0)
    lam = sigma_spectrum(model, cross_entropy, X, y)
    k = min(n, G.shape[1])
    assert lam.shape == (n,)
    torch.testing.assert_close(lam[:k], direct[:k], atol=1e-12 * float(direct[0]), rtol=1e-8)


def test_effective_rank():
    assert effective_rank(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.tensor([2.0, 2.0, 2.0, 2.0])) == pytest.approx(4.0)
    assert effective_rank(torch.zeros(3)) == 0.0
    with pytest.raises(ValueError):
        effective_rank(torch.tensor([1.0, -1.0]))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"B=13 exceeds n=12"):
        noise_covariance_factor(12, 13, "without_replacement")
    with pytest.raises(ValueError, match=r"m >= 2"):
        estimate_noise_covariance(torch.zeros(1, 3), 2)
    with pytest.raises(ValueError, match=r"batch size B=0"):
        estimate_noise_covariance(torch.zeros(3, 3), 0)
    with pytest.raises(ValueError, match=r"\(n, d\) per-sample gradient matrix"):
        empirical_noise_covariance(torch.zeros(3))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 11\]"):
        batch_noise(random_G(), torch.tensor([[0, 12]]))
    with pytest.raises(ValueError, match="fewer than 2 batches"):
        estimator_expectation_factor(12, 7, "reshuffling")


def test_noise_trace_scan_matches_direct_draws():
    from sgdnoise.noise import noise_trace_scan

    G = random_G(n=15, d=4)
    K = G @ G.T
    mean, se = noise_trace_scan(K, [1, 4, 15], "without_replacement", 20000, torch.Generator().manual_seed(0))
    trS = torch.trace(empirical_noise_covariance(G))
    for B, mu, s in zip([1, 4, 15], mean, se):
        expected = noise_covariance_factor(15, B, "without_replacement") * trS
        assert abs(mu - expected) <= Z * s + 1e-12


def test_estimator_trace_draws_match_direct_computation():
    from sgdnoise.noise import estimator_trace_draws

    G = random_G(n=12, d=3)
    for scheme in SCHEMES:
        draws = estimator_trace_draws(G @ G.T, 3, 3, scheme, 5, torch.Generator().manual_seed(1))
        gen = torch.Generator().manual_seed(1)
        if scheme == "reshuffling":
            b = sample_batches(12, 3, 4 * 5, scheme, gen).view(5, 4, 3)[:, :3]
        else:
            b = sample_batches(12, 3, 15, scheme, gen).view(5, 3, 3)
        direct = torch.stack([torch.trace(estimate_noise_covariance(G[rows].mean(1), 3)) for rows in b])
        torch.testing.assert_close(draws, direct)


def test_loglog_slope():
    from sgdnoise.noise import loglog_slope

    x = torch.tensor([1.0, 2.0, 4.0, 8.0])
    slope, se = loglog_slope(x, 3 * x**-1.0)
    assert slope == pytest.approx(-1.0) and se < 1e-8
    with pytest.raises(ValueError):
        loglog_slope([1, 2], [1, 2])


def test_loglog_slope_ci_covers_the_true_slope():
    from sgdnoise.noise import loglog_slope_ci

    x = torch.tensor([0.1, 0.05, 0.025, 0.0125])
    y = 2.0 * x
    slope, lo, hi = loglog_slope_ci(x, y, 0.02 * y)
    assert lo < 1.0 < hi and hi - lo < 0.2
    slope0, lo0, hi0 = loglog_slope_ci(x, y, 0.0 * y)
    assert abs(slope0 - 1.0) < 1e-12 and hi0 - lo0 < 1e-9


def test_sigma_top_eigenvalues_by_lanczos_equal_the_dense_spectrum():
    from sgdnoise.noise import sigma_top_eigenvalues
    from sgdnoise.problems import digits_mlp

    p = digits_mlp(seed=0, n=300)
    model = p.model.double()
    X = p.X.double()
    from sgdnoise.gradients import per_sample_grads

    G = per_sample_grads(model, p.loss_fn, X, p.y).double()
    n = G.shape[0]
    Gc = G - G.mean(0)
    for centered, A in ((True, Gc), (False, G)):
        dense = torch.linalg.eigvalsh(A @ A.T / n).flip(0)[:8]
        got = sigma_top_eigenvalues(model, p.loss_fn, X, p.y, 8, centered=centered)
        assert torch.allclose(got, dense, rtol=1e-8), (centered, got, dense)
    # the failing variant: the two quantities differ (M = Σ + g gᵀ), and the routes tell them apart
    top_sigma = torch.linalg.eigvalsh(Gc @ Gc.T / n)[-1]
    assert sigma_top_eigenvalues(model, p.loss_fn, X, p.y, 1, centered=False)[0] > top_sigma * (1 + 1e-6)
    # a tiny loss scale (K of order 1e-12) keeps the relative accuracy: ARPACK runs on the rescaled matrix
    tiny = sigma_top_eigenvalues(model, lambda o, t: 1e-6 * p.loss_fn(o, t), X, p.y, 8)
    assert torch.allclose(tiny, 1e-12 * torch.linalg.eigvalsh(Gc @ Gc.T / n).flip(0)[:8], rtol=1e-8)
    with pytest.raises(ValueError, match="k=0"):
        sigma_top_eigenvalues(model, p.loss_fn, X, p.y, 0)
