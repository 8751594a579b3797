import pytest
import torch

from sgdnoise.curvature import _lanczos, batched_hvp, hessian_top_eigs, hvp_fn, sharpness
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
    from torch.func import grad, jacrev  # vectorised reverse-over-reverse: one call, not d backward passes

    H = jacrev(grad(lambda th: f(th, p.X, p.y, w)))(theta)
    torch.testing.assert_close(hvp_fn(p, theta)(v), H @ v, atol=1e-10, rtol=1e-8)


# ----------------------------------------------------------------------------- hessian_top_eigs
def _assert_same_eigvecs(V, U, atol):
    """Columns agree up to sign."""
    assert V.shape == U.shape
    torch.testing.assert_close((V * U).sum(0).abs(), torch.ones(U.shape[1], dtype=torch.float64), atol=atol, rtol=0)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_hessian_top_eigs_of_linear_regression(k):
    p = linear_regression(100, 8, seed=3)
    lam, U = torch.linalg.eigh(p.hessian())
    vals, V = hessian_top_eigs(p, k=k, tol=1e-12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vals, lam.flip(0)[:k], atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(V.T @ V, torch.eye(k, dtype=torch.float64), atol=1e-12, rtol=0)
    _assert_same_eigvecs(V, U.flip(1)[:, :k], atol=1e-8)


def test_hessian_top_eigs_of_a_small_network_match_the_dense_hessian():
    from torch.func import grad, jacrev  # reverse over reverse: torch.func.hessian's forward mode warns here

    from sgdnoise.sgd import flat_loss_fn

    p = digits_mlp(n=40, hidden=4, dtype=torch.float64)
    theta = p.theta()
    f = flat_loss_fn(p)
    w = torch.full((40,), 1 / 40, dtype=torch.float64)
    lam, U = torch.linalg.eigh(jacrev(grad(lambda th: f(th, p.X, p.y, w)))(theta))
    assert (lam < -1e-8).any()  # away from a minimum: an indefinite Hessian
    k = 4
    for which, order in [("LM", torch.argsort(lam.abs(), descending=True)), ("LA", torch.argsort(lam, descending=True))]:
        vals, V = hessian_top_eigs(p, theta, k, which=which, tol=1e-10, iters=330)
        torch.testing.assert_close(vals, lam[order[:k]], atol=1e-9, rtol=1e-7)
        _assert_same_eigvecs(V, U[:, order[:k]], atol=1e-6)


def test_lanczos_recovers_repeated_eigenvalues_and_low_rank():
    Q = torch.linalg.qr(torch.randn(7, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64))[0]
    A = Q @ torch.diag(torch.tensor([3.0, 3.0, 3.0, -2.0, 1.0, 0.5, 0.0], dtype=torch.float64)) @ Q.T
    vals, V = _lanczos(lambda v: A @ v, 7, 4, "LM", 50, 1e-12, torch.Generator().manual_seed(0))
    torch.testing.assert_close(vals, torch.tensor([3.0, 3.0, 3.0, -2.0], dtype=torch.float64))
    torch.testing.assert_close(A @ V, V * vals, atol=1e-12, rtol=0)
    p = linear_regression(4, 10, seed=0)  # rank-4 Hessian in d = 10: breakdown, then stop
    vals, _ = hessian_top_eigs(p, k=4, tol=1e-12)
    torch.testing.assert_close(vals, torch.linalg.eigvalsh(p.hessian()).flip(0)[:4])


def test_batched_hvp_matches_single_products():
    p = digits_mlp(n=30, hidden=8, dtype=torch.float64)
    theta = p.theta()
    V = torch.randn(5, theta.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    H = hvp_fn(p, theta)
    torch.testing.assert_close(batched_hvp(p, theta, V, chunk_size=2), torch.stack([H(v) for v in V]))


def test_hessian_top_eigs_rejects_bad_arguments():
    p = linear_regression(20, 3, seed=0)
    for kwargs, word in [({"k": 0}, "k=0"), ({"k": 4}, "d=3"), ({"k": 2, "which": "SA"}, "which='SA'"), ({"k": 3, "iters": 2}, "iters=2"),
                         ({"k": 2, "tol": 0.0}, "tol=0.0")]:
        with pytest.raises(ValueError, match=word):
            hessian_top_eigs(p, **kwargs)
    with pytest.raises(ValueError, match="V has shape"):
        batched_hvp(p, p.theta(), torch.zeros(2, 4, dtype=torch.float64))
