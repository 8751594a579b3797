"""Heavy-ball SGD on a quadratic with constant gradient noise: its exact stationary law and its two SDE limits.

The update, with ``v`` the velocity (the last step) and ``ξ_k`` independent noise of covariance ``Σ`` added to the
gradient ``H x`` of ``L(x) = ½ xᵀHx``::

    v_{k+1} = β v_k - η (H x_k + ξ_k),     x_{k+1} = x_k + v_{k+1}.

The lifted state ``z = (x, v)`` follows ``z_{k+1} = A z_k + b ξ_k`` with ``A = [[I - ηH, βI], [-ηH, βI]]`` and
``b = [-ηI; -ηI]``, so its stationary covariance ``P`` solves the discrete Lyapunov equation
``P = A P Aᵀ + b Σ bᵀ`` (when every eigenvalue of ``A`` is inside the unit circle) and its autocovariance at lag
``ℓ`` is ``A^ℓ P``. Two continuous-time models:

* **first order** (``β`` fixed, ``η → 0``): ``dX = -H X dt + √(η_eff Σ) dW`` in the time ``t = k η_eff`` with
  ``η_eff = η/(1-β)``: the momentum-filtered noise ``Σ_j β^j ξ_{k-j}`` has autocorrelation ``β^ℓ`` and long-run
  covariance ``Σ/(1-β)²``, white on time scales much longer than ``1/(1-β)`` steps. Stationary
  ``H P_x + P_x H = η_eff Σ``; no velocity.
* **underdamped** (``1 - β = γ√η``, ``η → 0``): ``dX = V dt``, ``dV = -γ V dt - H X dt + η^{1/4} Σ^{1/2} dW`` in the
  time ``t = k√η``. Stationary ``Cov X`` as above (``= η Σ/(2(1-β)) H⁻¹`` for commuting ``H, Σ``), ``Cov(X, V) = 0``
  and, in the per-step units of ``v = √η V``, ``Cov v = η² Σ/(2(1-β))``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from . import _args

__all__ = ["lifted_matrices", "heavy_ball_stationary", "heavy_ball_autocovariance", "first_order_stationary",
           "underdamped_stationary", "simulate_heavy_ball"]


def _as_matrix(name: str, M, d: int | None = None) -> np.ndarray:
    M = np.atleast_2d(np.asarray(M, dtype=float))
    if M.ndim != 2 or M.shape[0] != M.shape[1] or (d is not None and M.shape[0] != d):
        want = "square" if d is None else f"({d}, {d})"
        raise ValueError(f"{name} has shape {M.shape}; need a {want} matrix")
    if not np.allclose(M, M.T):
        raise ValueError(f"{name} must be symmetric")
    return M


def lifted_matrices(eta: float, H, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` of the lifted heavy-ball recursion ``z_{k+1} = A z_k + b ξ_k`` for ``z = (x, v)``."""
    eta = _args.real("eta", eta, gt=0, valid="a positive learning rate")
    beta = _args.real("beta", beta, ge=0, lt=1, valid="a momentum in [0, 1)")
    H = _as_matrix("H", H)
    d = H.shape[0]
    eye = np.eye(d)
    A = np.block([[eye - eta * H, beta * eye], [-eta * H, beta * eye]])
    b = np.vstack([-eta * eye, -eta * eye])
    return A, b


def heavy_ball_stationary(eta: float, H, beta: float, Sigma) -> np.ndarray:
    """The stationary covariance ``P`` (``2d × 2d``) of ``(x, v)``; raises when the recursion is unstable
    (some eigenvalue of ``A`` on or outside the unit circle: for ``H = h`` that is ``η h ≥ 2(1 + β)``)."""
    A, b = lifted_matrices(eta, H, beta)
    Sigma = _as_matrix("Sigma", Sigma, A.shape[0] // 2)
    rho = float(np.max(np.abs(np.linalg.eigvals(A))))
    if rho >= 1:
        raise ValueError(f"heavy ball is unstable at eta={eta}, beta={beta}: the spectral radius of the lifted "
                         f"matrix is {rho:.4g} >= 1 (for a curvature h it needs eta*h < 2(1 + beta))")
    return scipy.linalg.solve_discrete_lyapunov(A, b @ Sigma @ b.T)


def heavy_ball_autocovariance(eta: float, H, beta: float, Sigma, lags) -> np.ndarray:
    """``Cov(x_{k+ℓ}, x_k)`` at stationarity for each lag ``ℓ`` in ``lags``: shape ``(len(lags), d, d)``."""
    A, _ = lifted_matrices(eta, H, beta)
    P = heavy_ball_stationary(eta, H, beta, Sigma)
    d = A.shape[0] // 2
    out = []
    for lag in lags:
        lag = _args.integer("lag", lag, minimum=0)
        out.append((np.linalg.matrix_power(A, lag) @ P)[:d, :d])
    return np.array(out)


def first_order_stationary(eta: float, H, beta: float, Sigma) -> np.ndarray:
    """``P_x`` solving ``H P + P H = η/(1-β) Σ``: the first-order SDE's stationary covariance of ``x``."""
    eta = _args.real("eta", eta, gt=0, valid="a positive learning rate")
    beta = _args.real("beta", beta, ge=0, lt=1, valid="a momentum in [0, 1)")
    H = _as_matrix("H", H)
    Sigma = _as_matrix("Sigma", Sigma, H.shape[0])
    return scipy.linalg.solve_continuous_lyapunov(H, eta / (1 - beta) * Sigma)


def underdamped_stationary(eta: float, H, beta: float, Sigma) -> np.ndarray:
    """The underdamped SDE's stationary covariance of ``(X, √η V)`` (per-step units, ``2d × 2d``): the Lyapunov
    equation ``M P + P Mᵀ = D`` of ``d(X, V) = M (X, V) dt + ...`` with ``γ = (1-β)/√η`` and ``D = √η Σ`` on ``V``."""
    eta = _args.real("eta", eta, gt=0, valid="a positive learning rate")
    beta = _args.real("beta", beta, ge=0, lt=1, valid="a momentum in [0, 1)")
    H = _as_matrix("H", H)
    Sigma = _as_matrix("Sigma", Sigma, H.shape[0])
    d = H.shape[0]
    gamma = (1 - beta) / np.sqrt(eta)
    M = np.block([[np.zeros((d, d)), np.eye(d)], [-H, -gamma * np.eye(d)]])
    D = np.zeros((2 * d, 2 * d))
    D[d:, d:] = np.sqrt(eta) * Sigma
    P = scipy.linalg.solve_continuous_lyapunov(M, -D)
    S = np.diag(np.r_[np.ones(d), np.full(d, np.sqrt(eta))])
    return S @ P @ S


def simulate_heavy_ball(eta: float, H, beta: float, Sigma, *, chains: int, steps: int, seed: int,
                        record_every: int = 1) -> np.ndarray:
    """``chains`` independent heavy-ball runs from ``x = v = 0`` with Gaussian noise ``N(0, Σ)``; returns the
    recorded states ``(records, chains, 2d)`` (``x`` then ``v``), every ``record_every`` steps."""
    A, b = lifted_matrices(eta, H, beta)
    d = A.shape[0] // 2
    Sigma = _as_matrix("Sigma", Sigma, d)
    chains = _args.integer("chains", chains, minimum=1)
    steps = _args.integer("steps", steps, minimum=1)
    record_every = _args.integer("record_every", record_every, minimum=1)
    rng = np.random.default_rng(_args.integer("seed", seed, minimum=0))
    L = np.linalg.cholesky(Sigma + 1e-300 * np.eye(d))
    z = np.zeros((chains, 2 * d))
    out = []
    for k in range(1, steps + 1):
        xi = rng.standard_normal((chains, d)) @ L.T
        z = z @ A.T + xi @ b.T
        if k % record_every == 0:
            out.append(z.copy())
    return np.array(out)
