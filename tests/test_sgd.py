import pytest
import torch

from sgdnoise.problems import linear_regression
from sgdnoise.sgd import DivergenceError, train_sgd


def test_sgd_converges_on_linear_regression():
    p = linear_regression(n=100, d=3, sigma=0.1, seed=0)
    run = train_sgd(p, eta=0.1, B=10, steps=500, generator=torch.Generator().manual_seed(0), snapshot_at=[0, 500])
    assert run.snapshot_steps == [0, 500]
    assert (run.snapshots[-1] - p.theta_star()).norm() < 0.1
    assert len(run.losses) == 500


@pytest.mark.parametrize("scheme", ["without_replacement", "reshuffling"])
def test_schemes_and_momentum_run(scheme):
    p = linear_regression(n=30, d=2, seed=0)
    run = train_sgd(p, eta=0.05, B=4, steps=40, scheme=scheme, momentum=0.9, generator=torch.Generator().manual_seed(1))
    assert len(run.losses) == 40


def test_divergence_names_eta_B_and_step():
    p = linear_regression(n=50, d=3, seed=0)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: .*eta=5.0, B=5"):
        train_sgd(p, eta=5.0, B=5, steps=200, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("eta", [0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rate(eta):
    p = linear_regression(n=10, d=2)
    with pytest.raises(ValueError, match="learning rate eta="):
        train_sgd(p, eta=eta, B=2, steps=1, generator=torch.Generator())


def test_bad_batch_size():
    p = linear_regression(n=10, d=2)
    with pytest.raises(ValueError, match="B=20 exceeds n=10"):
        train_sgd(p, eta=0.1, B=20, steps=1, scheme="without_replacement", generator=torch.Generator())


# ----------------------------------------------------------------------------- many chains
from sgdnoise.sgd import run_chains  # noqa: E402

Z = 4.0


def gd_iterates(p, theta, eta, steps):
    for _ in range(steps):
        theta = theta - eta * p.X.T @ (p.X @ theta - p.y) / p.n
    return theta


@pytest.mark.parametrize("scheme", ["with_replacement", "without_replacement"])
@pytest.mark.parametrize("svag_l", [1, 4])
def test_chain_mean_follows_gradient_descent(scheme, svag_l):
    """On linear regression E[θ_k] of SGD (and of SVAG) is exactly the GD iterate: the gradient is
    linear and each batch is independent of θ_k. (Not so under reshuffling: θ_k depends on the earlier
    batches of the epoch, which exclude the current one's indices.)"""
    p = linear_regression(40, 3, sigma=0.5, seed=0)
    C, eta, steps = 3000, 0.1, 10
    th0 = torch.zeros(C, 3, dtype=torch.float64)
    run = run_chains(p, th0, eta=eta, B=4, steps=steps, scheme=scheme, svag_l=svag_l,
                     generator=torch.Generator().manual_seed(1))
    final = run.thetas[-1]
    gd = gd_iterates(p, torch.zeros(3, dtype=torch.float64), eta / svag_l, steps * svag_l)
    assert ((final.mean(0) - gd).abs() < Z * final.std(0) / C**0.5).all()


def test_svag_noise_covariance_is_l_times_sgd():
    """SVAG's gradient estimator (the weights run_chains uses): unbiased, covariance l · Σ_emp/B."""
    from sgdnoise.sgd import svag_coefficients

    p = linear_regression(30, 2, sigma=0.5, seed=2)
    theta = torch.tensor([0.3, -0.7], dtype=torch.float64)
    C, B, l = 40000, 3, 5
    c1, c2 = svag_coefficients(l)
    G = p.per_sample_grads_closed_form(theta)
    from sgdnoise.noise import batch_gradients
    from sgdnoise.sampling import sample_batches

    gen = torch.Generator().manual_seed(5)
    g = c1 * batch_gradients(G, sample_batches(30, B, C, "with_replacement", gen)) + c2 * batch_gradients(
        G, sample_batches(30, B, C, "with_replacement", gen)
    )
    dev = g - G.mean(0)
    assert (dev.mean(0).abs() < Z * dev.std(0) / C**0.5).all()
    prods = dev[:, :, None] * dev[:, None, :]
    assert ((prods.mean(0) - l * p.sigma_emp(theta) / B).abs() < Z * prods.std(0) / C**0.5).all()


def test_chains_divergence_and_bad_input():
    p = linear_regression(50, 3, seed=0)
    with pytest.raises(DivergenceError, match=r"chains diverged at step \d+ .*eta=5.0, B=5"):
        run_chains(p, torch.zeros(4, 3, dtype=torch.float64), eta=5.0, B=5, steps=500, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"need \(C, 3\)"):
        run_chains(p, torch.zeros(4, 2), eta=0.1, B=5, steps=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="svag_l=0"):
        run_chains(p, torch.zeros(3), eta=0.1, B=5, steps=1, svag_l=0, generator=torch.Generator())


def test_linear_regression_chains_match_exact_moments():
    from sgdnoise.exact import sgd_moments
    from sgdnoise.sgd import linear_regression_chains

    p = linear_regression(20, 2, sigma=0.5, seed=0)
    th0 = torch.tensor([2.0, -1.0], dtype=torch.float64)
    C = 40000
    out = linear_regression_chains(p.X, p.y, th0.repeat(C, 1), eta=0.3, B=3, steps=6,
                                   generator=torch.Generator().manual_seed(1), record_from=6)
    Zk = sgd_moments(p.X, p.y, th0, eta=0.3, B=3, steps=6)[-1]
    t = out[-1]
    assert ((t.mean(0) - Zk[:2, 2]).abs() < Z * t.std(0) / C**0.5).all()
    prods = t[:, :, None] * t[:, None, :]
    assert ((prods.mean(0) - Zk[:2, :2]).abs() < Z * prods.std(0) / C**0.5).all()
    with pytest.raises(DivergenceError, match="eta=5.0, B=1"):
        linear_regression_chains(p.X, p.y, th0.repeat(10, 1), eta=5.0, B=1, steps=300, generator=torch.Generator())


def test_chains_record_losses_and_noise():
    """Recorded losses are the full-data losses; recorded noise has mean zero and covariance Σ_emp/B."""
    from sgdnoise.noise import noise_covariance_factor

    p = linear_regression(30, 2, sigma=0.5, seed=2)
    theta = torch.tensor([0.3, -0.7], dtype=torch.float64)
    C, B = 20000, 3
    run = run_chains(p, theta.repeat(C, 1), eta=0.1, B=B, steps=1, record_steps=[0, 1], record_loss=True,
                     record_noise=True, generator=torch.Generator().manual_seed(4))
    assert run.losses.shape == (2, C) and run.noise.shape == (1, C, 2)
    expected_loss = float(0.5 * ((p.X @ theta - p.y) ** 2).mean())
    torch.testing.assert_close(run.losses[0], torch.full((C,), expected_loss, dtype=torch.float64))
    xi = run.noise[0]
    assert (xi.mean(0).abs() < Z * xi.std(0) / C**0.5).all()
    prods = xi[:, :, None] * xi[:, None, :]
    target = noise_covariance_factor(30, B, "with_replacement") * p.sigma_emp(theta)
    assert ((prods.mean(0) - target).abs() < Z * prods.std(0) / C**0.5).all()


def test_chains_stop_on_exploding_loss():
    p = linear_regression(50, 3, seed=0)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: full-data loss .*eta=3.0, B=5"):
        run_chains(p, torch.zeros(4, 3, dtype=torch.float64), eta=3.0, B=5, steps=400, record_steps=list(range(401)),
                   record_loss=True, explode_loss=1e3, generator=torch.Generator().manual_seed(0))
