"""Estimators of the stationary probability current from trajectories, with error bars.

For a stationary Itô diffusion with density ``p`` and current ``J = a p - ½∇·(Dp)``:

* **Binned increments.** ``J(x) = lim_{τ→0} E[(X_{t+τ} - X_{t-τ}) / (2τ) | X_t = x] p(x)``: the symmetric
  (midpoint) difference cancels the drift's even part and the noise, leaving the current. Averaged in
  the bins of a grid; error bars from the spread between independent chains.
* **Antisymmetric lag covariance.** ``Ω(τ) = (R(τ) - R(τ)ᵀ) / (2τ)`` with ``R(τ) = E[X_{t+τ} X_tᵀ]`` (centred)
  tends to ``½ ∫ (J xᵀ - x Jᵀ) dx`` as ``τ → 0``: a single matrix that is zero under detailed balance
  and measures the circulation otherwise. For an Ornstein–Uhlenbeck process ``dX = -AX dt + √D dW``
  with stationary covariance ``C``, it equals ``-(AC - CAᵀ)/2``.

Trajectories are arrays of shape ``(chains, steps, d)`` sampled every ``dt``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _args
from ._args import ArgumentTypeError, show

__all__ = ["BinnedCurrent", "binned_current", "antisymmetric_lag_covariance"]


def _floats(name: str, value, what: str) -> np.ndarray:
    """``value`` as a float array (a tensor, array or nested list of numbers), or an error naming it."""
    try:
        bad = value is None or isinstance(value, (str, bytes, dict))
        a = None if bad else np.asarray(value, dtype=float)
    except (TypeError, ValueError, RuntimeError):
        a = None
    if a is None:
        raise ArgumentTypeError(f"{name}={show(value)} must be {what}")
    return a


def _check_paths(paths, dt: float, d: int | None = None) -> tuple[np.ndarray, float]:
    """The paths as a float array and ``dt`` as a float, checked."""
    X = _floats("paths", paths, "an array of shape (chains, steps, d)")
    if X.ndim != 3:
        raise ValueError(f"paths must have shape (chains, steps, d); got {X.shape}")
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 independent chains for error bars; got {X.shape[0]}")
    if X.shape[1] < 3:
        raise ValueError(f"need at least 3 time steps per chain; got {X.shape[1]}")
    if d is not None and X.shape[2] != d:
        raise ValueError(f"paths have dimension {X.shape[2]}; this estimator needs d = {d}")
    dt = _args.real("dt", dt, gt=0, as_given=True)
    if not np.isfinite(X).all():
        raise ValueError("paths contain non-finite values")
    return X, dt


@dataclass
class BinnedCurrent:
    x_edges: np.ndarray
    y_edges: np.ndarray
    density: np.ndarray  # (bx, by) histogram density
    Jx: np.ndarray  # (bx, by) current estimate
    Jy: np.ndarray
    Jx_se: np.ndarray  # standard errors from the spread between chains
    Jy_se: np.ndarray


def binned_current(paths, dt: float, x_edges, y_edges) -> BinnedCurrent:
    """Current of a 2D stationary process on a grid of bins, from midpoint increments.

    Each interior time ``t`` of each chain contributes ``(X_{t+1} - X_{t-1}) / (2 dt)`` to the bin of
    ``X_t``; dividing the sum by the number of points and the bin area gives ``J`` (density × velocity).
    Standard errors come from the chain-to-chain spread of the per-chain estimates.
    """
    X, dt = _check_paths(paths, dt, d=2)
    what = "a 1-D array of at least 2 finite, increasing bin edges"
    xe, ye = _floats("x_edges", x_edges, what), _floats("y_edges", y_edges, what)
    for name, e in (("x_edges", xe), ("y_edges", ye)):
        if e.ndim != 1 or e.size < 2 or not np.isfinite(e).all() or not (np.diff(e) > 0).all():
            raise ValueError(f"{name} must be a 1-D array of at least 2 finite, increasing bin edges (one bin or "
                             f"more); got {e.size if e.ndim == 1 else e.shape} value(s)")
    C, T, _ = X.shape
    mid = X[:, 1:-1]
    vel = (X[:, 2:] - X[:, :-2]) / (2 * dt)
    area = np.outer(np.diff(xe), np.diff(ye))
    per_chain_J = np.empty((C, 2, len(xe) - 1, len(ye) - 1))
    per_chain_p = np.empty((C, len(xe) - 1, len(ye) - 1))
    for c in range(C):
        count, _, _ = np.histogram2d(mid[c, :, 0], mid[c, :, 1], bins=(xe, ye))
        n = mid.shape[1]
        per_chain_p[c] = count / (n * area)
        for k in range(2):
            s, _, _ = np.histogram2d(mid[c, :, 0], mid[c, :, 1], bins=(xe, ye), weights=vel[c, :, k])
            per_chain_J[c, k] = s / (n * area)
    J = per_chain_J.mean(0)
    se = per_chain_J.std(0, ddof=1) / np.sqrt(C)
    return BinnedCurrent(xe, ye, per_chain_p.mean(0), J[0], J[1], se[0], se[1])


def antisymmetric_lag_covariance(paths, dt: float, lag: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``Ω = (R(τ) - R(τ)ᵀ) / (2τ)`` at ``τ = lag · dt``, and its standard error (chain-to-chain spread).

    Returns ``(Ω, se)``, both ``(d, d)`` and antisymmetric. Zero within error under detailed balance.
    """
    X, dt = _check_paths(paths, dt)
    if not isinstance(lag, (int, np.integer)) or not 1 <= lag < X.shape[1]:
        raise ValueError(f"lag={lag!r} must be an int in [1, {X.shape[1] - 1}]")
    Xc = X - X.mean(axis=(0, 1), keepdims=True)
    tau = lag * dt
    a, b = Xc[:, lag:], Xc[:, :-lag]
    Cc = np.einsum("cti,ctj->cij", a, b) / a.shape[1]  # per chain: E[X_{t+τ} X_tᵀ]
    Om = (Cc - np.transpose(Cc, (0, 2, 1))) / (2 * tau)
    return Om.mean(0), Om.std(0, ddof=1) / np.sqrt(X.shape[0])
