"""Curvature through Hessian-vector products: the sharpness (top Hessian eigenvalue) of ``L_n``.

Never forms a ``d × d`` Hessian: each product ``H v`` is a reverse-over-reverse pass (the gradient
of ``⟨∇L_n(θ), v⟩``), at the cost of a few gradient evaluations. (Forward-over-reverse would be
cheaper, but torch's forward-mode AD emits a deprecation warning from its internals in this version.)

:func:`hessian_top_eigs` runs the Lanczos iteration with full reorthogonalisation on these
products: after ``j`` steps the orthonormal Krylov basis ``Q_j`` and the tridiagonal
``T_j = Q_jᵀ H Q_j`` give Ritz pairs ``(θ_i, Q_j s_i)``, whose residual is exactly
``‖H Q_j s_i - θ_i Q_j s_i‖ = β_j |s_i[-1]|`` in exact arithmetic; the iteration stops when that
bound is below ``tol · max|θ|`` for every wanted pair. When ``β_j`` vanishes (an invariant
subspace, e.g. an exactly repeated eigenvalue, of which one Krylov space holds a single copy) it
restarts from a random vector orthogonal to ``Q_j`` and stops once a restart adds no wanted pair.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from . import _args
from ._args import ArgumentTypeError, is_one_of, show
from .problems import Problem, check_problem
from .sampling import check_generator
from .sgd import flat_loss_fn

__all__ = ["hvp_fn", "sharpness", "batched_hvp", "hessian_top_eigs"]


def hvp_fn(problem: Problem, theta: Tensor):
    """``v ↦ ∇²L_n(θ) v`` at a fixed ``θ`` (flat vectors of length ``d``)."""
    from torch.func import grad

    d = _check_theta(problem, theta)
    if not torch.isfinite(theta).all():
        raise ValueError("theta has non-finite entries; the Hessian is defined only at a finite θ")
    f = flat_loss_fn(problem)
    w = torch.full((problem.n,), 1.0 / problem.n, dtype=theta.dtype, device=theta.device)
    g = grad(lambda th: f(th, problem.X, problem.y, w))

    def hvp(v):
        if not isinstance(v, Tensor) or v.shape != (d,):
            error = ValueError if isinstance(v, Tensor) else ArgumentTypeError
            raise error(f"v={show(v)} must be a vector of shape ({d},), like theta")
        return grad(lambda th: (g(th) * v).sum())(theta)

    return hvp


def _check_theta(problem: Problem, theta) -> int:
    """``d`` if ``theta`` is a flat parameter vector of ``problem``, shape ``(d,)``; else an error naming it."""
    d = check_problem(problem).d
    if not isinstance(theta, Tensor) or theta.shape != (d,):
        shape = tuple(theta.shape) if isinstance(theta, Tensor) else type(theta).__name__
        error = ValueError if isinstance(theta, Tensor) else ArgumentTypeError
        raise error(f"theta must be a flat parameter vector of shape ({d},); got {shape}")
    return d


def sharpness(problem: Problem, theta: Tensor | None = None, *, iters: int = 100, tol: float = 1e-6,
              generator: torch.Generator | None = None) -> float:
    """Largest-magnitude eigenvalue of ``∇²L_n(θ)`` by power iteration on Hessian-vector products.

    Stops when the Rayleigh quotient changes by less than ``tol`` (relative). GD on a quadratic is
    stable only for ``η < 2 / sharpness``.
    """
    theta = check_problem(problem).theta() if theta is None else theta
    iters = _args.integer("iters", iters, minimum=1)
    tol = _args.real("tol", tol, ge=0, as_given=True)
    H = hvp_fn(problem, theta)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    v = torch.randn(theta.shape, generator=gen, dtype=theta.dtype).to(theta.device)
    v = v / v.norm()
    lam = 0.0
    for _ in range(iters):
        w = H(v)
        new = float(v @ w)
        v = w / w.norm()
        if abs(new - lam) <= tol * abs(new):
            return new
        lam = new
    return lam


def batched_hvp(problem: Problem, theta: Tensor, V: Tensor, *, chunk_size: int = 16) -> Tensor:
    """``H v_r`` for every row of ``V`` (shape ``(m, d)``), ``torch.func.vmap``-ed in chunks; returns ``(m, d)``."""
    from torch.func import vmap

    d = _check_theta(problem, theta)
    _args.tensor("V", V, f"a (m, {d}) tensor of vectors, one per row")
    if V.ndim != 2 or V.shape[1] != d:
        raise ValueError(f"V has shape {tuple(V.shape)}; need (m, {d}) rows of length d")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int")
    if V.shape[0] == 0:
        return V.new_zeros((0, d))
    return vmap(hvp_fn(problem, theta), chunk_size=chunk_size)(V.to(theta.device, theta.dtype))


def _lanczos(matvec, d: int, k: int, which: str, iters: int, tol: float, gen: torch.Generator):
    """Top-``k`` Ritz pairs of a symmetric operator ``matvec`` (float64 vectors of length ``d``)."""
    Q = torch.empty((min(iters, d), d), dtype=torch.float64)
    alpha, beta = [], []

    def fresh():  # a random unit vector orthogonal to the basis so far
        q = torch.randn(d, generator=gen, dtype=torch.float64)
        for _ in range(2):
            q -= Q[:j].T @ (Q[:j] @ q)
        return q / q.norm()

    j, start, q, b, converged = 0, 0, None, 0.0, False
    while j < Q.shape[0]:
        Q[j] = fresh() if b == 0.0 else q  # (re)start after breakdown: T gets a zero off-diagonal
        w = matvec(Q[j])
        alpha.append(float(Q[j] @ w))
        if not math.isfinite(alpha[-1]):
            raise FloatingPointError("the matrix-vector product returned non-finite values; check θ and the data "
                                     "(or G) for nan/inf")
        for _ in range(2):  # full reorthogonalisation (twice is enough)
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
        b = float(w.norm())
        j += 1
        off = torch.tensor(beta, dtype=torch.float64)
        T = torch.diag(torch.tensor(alpha, dtype=torch.float64)) + torch.diag(off, 1) + torch.diag(off, -1)
        theta_s, S = torch.linalg.eigh(T)
        idx = torch.argsort(theta_s.abs() if which == "LM" else theta_s, descending=True)[:k]
        scale = max(float(theta_s.abs().max()), 1e-300)
        if b <= 1e-12 * scale:  # invariant subspace: its Ritz pairs are exact. Stop once a restart
            b = 0.0  # (orthogonal to it) adds no wanted pair, else restart to catch repeated eigenvalues
            if j >= k and start > 0 and float(S[start:, idx].norm(dim=0).max()) <= 1e-6:
                converged = True
                break
            start = j
        elif j >= k and bool((b * S[-1, idx].abs() <= tol * scale).all()):
            converged = True
            break
        beta.append(b)
        q = w / b if b > 0.0 else None
    if not converged and j < d:
        warnings.warn(f"Lanczos did not reach tol={tol} in iters={iters} steps; raise iters", RuntimeWarning, stacklevel=3)
    return theta_s[idx], Q[:j].T @ S[:, idx]


def hessian_top_eigs(problem: Problem, theta: Tensor | None = None, k: int = 5, *, which: str = "LM", iters: int = 300,
                     tol: float = 1e-6, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs of ``∇²L_n(θ)`` by Lanczos on Hessian-vector products (no ``d × d`` matrix).

    ``which="LM"`` (default, as :func:`sharpness`): the ``k`` eigenvalues of largest magnitude, sorted
    by ``|λ|`` descending (away from a minimum some may be negative); ``which="LA"``: the ``k``
    algebraically largest, sorted descending. Returns ``(eigenvalues (k,), eigenvectors (d, k))``
    in float64, the columns orthonormal; products are taken in the problem's dtype, so a float32
    model limits the accuracy to about ``1e-6`` relative. At most ``iters`` products; stops when each
    wanted Ritz residual is below ``tol · max|θ|`` (warns if it never is).
    """
    theta = check_problem(problem).theta() if theta is None else theta
    d = _check_theta(problem, theta)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
        raise ValueError(f"k={k!r}; need an int with 1 <= k <= d={d}")
    if not is_one_of(which, ("LM", "LA")):
        raise ValueError(f"which={show(which)}; valid values are 'LM' (largest magnitude) and 'LA' (largest algebraic)")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < k:
        raise ValueError(f"iters={iters!r}; need an int >= k={k}")
    tol = _args.real("tol", tol, gt=0, valid="a finite tolerance > 0", as_given=True)
    H = hvp_fn(problem, theta)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    # Lanczos runs on the CPU in float64; each product is taken on the device of θ, in its dtype
    return _lanczos(lambda v: H(v.to(theta.device, theta.dtype)).to(torch.float64).cpu(), d, k, which, iters, tol, gen)
