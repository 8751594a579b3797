"""Curvature through Hessian-vector products: the sharpness (top Hessian eigenvalue) of ``L_n``.

Never forms a ``d × d`` Hessian: each product ``H v`` is a reverse-over-reverse pass (the gradient
of ``⟨∇L_n(θ), v⟩``), at the cost of a few gradient evaluations. (Forward-over-reverse would be
cheaper, but torch's forward-mode AD emits a deprecation warning from its internals in this version.)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .problems import Problem
from .sgd import flat_loss_fn

__all__ = ["hvp_fn", "sharpness"]


def hvp_fn(problem: Problem, theta: Tensor):
    """``v ↦ ∇²L_n(θ) v`` at a fixed ``θ`` (flat vectors of length ``d``)."""
    from torch.func import grad

    f = flat_loss_fn(problem)
    w = torch.full((problem.n,), 1.0 / problem.n, dtype=theta.dtype, device=theta.device)
    g = grad(lambda th: f(th, problem.X, problem.y, w))
    return lambda v: grad(lambda th: (g(th) * v).sum())(theta)


def sharpness(problem: Problem, theta: Tensor | None = None, *, iters: int = 100, tol: float = 1e-6,
              generator: torch.Generator | None = None) -> float:
    """Largest-magnitude eigenvalue of ``∇²L_n(θ)`` by power iteration on Hessian-vector products.

    Stops when the Rayleigh quotient changes by less than ``tol`` (relative). GD on a quadratic is
    stable only for ``η < 2 / sharpness``.
    """
    theta = problem.theta() if theta is None else theta
    H = hvp_fn(problem, theta)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
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
