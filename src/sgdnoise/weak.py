"""Weak errors of SGD against its SDEs on a one-dimensional quadratic (or quartic) loss when one hypothesis of
the weak-approximation theorem (Li, Tai and E) fails, computed exactly: no Monte Carlo.

The setting: ``θ_{k+1} = θ_k − η(∇L(θ_k) + ξ_k)`` with ``L = hθ²/2`` (or ``θ⁴/4``) and noise ``ξ_k`` of variance
``σ²``, ``K = T/η`` steps, against the Ornstein–Uhlenbeck SDEs of order 1 (rate ``h``) and 2 (rate ``h(1 + ηh/2)``,
the modified drift), both with diffusion ``ησ²``.

* **Moments of every order** (:func:`cos_moment_sgd`, :func:`student_t_charfn`): with ``θ_K = a^K θ₀ − η Σ_j
  a^{K−1−j} ξ_j`` (``a = 1 − ηh``) and symmetric i.i.d. noise, ``E cos θ_K = cos(a^K θ₀) Π_j φ(η a^{K−1−j})`` with
  ``φ`` the noise's characteristic function; for Student-t noise with ``ν`` degrees of freedom (finite variance
  for ``ν > 2``, but no moments of order ``≥ ν``), ``φ(u) = 1 − u²/2 + c|u|^ν + …`` for ``2 < ν < 4``, each step
  errs by ``O(η^ν)`` against a Gaussian step, and the global error of the order-2 SDE is ``O(η^{min(2, ν−1)})``.
* **Independent sampling** (:func:`second_moment_quadratic`): per-sample gradients ``h(θ − b_i)`` over ``N``
  samples (``Σ b_i = 0``), batch size 1, drawn with replacement or by random reshuffling (a fresh permutation
  each epoch). Reshuffling makes an epoch's noise sum to nothing to first order, so the SDE's diffusion,
  ``O(η)`` over a fixed horizon, is itself the error.
* **A fixed horizon** (:func:`mean_escape_time_sgd`, :func:`mean_escape_time_sde`): on the double well
  ``V = (θ² − 1)²/4`` the time to cross the barrier grows like ``e^{2ΔV/(ησ²)}``, far beyond any fixed ``T``;
  the mean escape times of SGD and of its SDE are computed exactly (a linear solve on a fine grid, and the
  one-dimensional first-passage formula).
* **Linear growth** (:func:`cubic_second_moment_lower_bound`): for ``L = θ⁴/4`` and Gaussian noise, an exact
  lower bound on ``E θ_K²`` from the event that one step throws the iterate beyond ``2/√η``, after which the
  explicit step's ``|θ|(ηθ² − 1)`` grows it at least threefold per step (Hutzenthaler, Jentzen and Kloeden 2011).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from . import _args

__all__ = ["student_t_charfn", "gaussian_charfn", "cos_moment_sgd", "cos_moment_ou", "second_moment_quadratic",
           "second_moment_ou", "cubic_second_moment_lower_bound", "mean_escape_time_sgd", "mean_escape_time_sde"]


def gaussian_charfn(u):
    """``E e^{iuξ}`` for a standard normal ``ξ``."""
    return np.exp(-0.5 * np.asarray(u, dtype=float) ** 2)


def student_t_charfn(u, nu: float):
    """``E e^{iuξ}`` for a Student-t variable with ``nu > 2`` degrees of freedom scaled to unit variance:
    ``φ(u) = (√ν s|u|)^{ν/2} K_{ν/2}(√ν s|u|) / (Γ(ν/2) 2^{ν/2−1})`` with ``s = √((ν−2)/ν)``."""
    nu = _args.real("nu", nu, gt=2, valid="a number of degrees of freedom above 2 (finite variance)")
    u = np.abs(np.asarray(u, dtype=float))
    z = math.sqrt(nu) * math.sqrt((nu - 2) / nu) * u
    out = np.ones_like(z)
    pos = z > 0
    half = nu / 2
    out[pos] = np.exp(half * np.log(z[pos]) + np.log(special.kv(half, z[pos])) - special.gammaln(half)
                      - (half - 1) * math.log(2))
    return out


def _steps(eta, T) -> int:
    eta = _args.real("eta", eta, gt=0)
    T = _args.real("T", T, gt=0)
    K = round(T / eta)
    if abs(K * eta - T) > 1e-9 * T:
        raise ValueError(f"T={T} must be a whole number of steps of eta={eta}")
    return K


def cos_moment_sgd(eta: float, h: float, theta0: float, T: float, charfn) -> float:
    """``E cos θ_K`` for SGD on ``hθ²/2`` with i.i.d. symmetric noise of characteristic function ``charfn``
    (unit variance), ``K = T/η`` steps from ``theta0``."""
    K = _steps(eta, T)
    a = 1 - eta * _args.real("h", h, gt=0)
    powers = a ** np.arange(K)
    return float(math.cos(a**K * theta0) * np.prod(charfn(eta * powers)))


def cos_moment_ou(rate: float, diffusion: float, theta0: float, T: float) -> float:
    """``E cos X_T`` for ``dX = −rate X dt + √diffusion dW``, ``X_0 = theta0``: ``cos(m) e^{−v/2}``."""
    m = theta0 * math.exp(-rate * T)
    v = diffusion * (1 - math.exp(-2 * rate * T)) / (2 * rate)
    return math.cos(m) * math.exp(-v / 2)


def second_moment_ou(rate: float, diffusion: float, theta0: float, T: float) -> float:
    """``E X_T²`` for ``dX = −rate X dt + √diffusion dW``, ``X_0 = theta0``."""
    return theta0**2 * math.exp(-2 * rate * T) + diffusion * (1 - math.exp(-2 * rate * T)) / (2 * rate)


def second_moment_quadratic(eta: float, h: float, offsets, theta0: float, T: float, scheme: str) -> float:
    """``E θ_K²`` exactly, for SGD with batch size 1 on the per-sample losses ``h(θ − b_i)²/2`` (``offsets`` ``b``,
    of mean zero), ``K = T/η`` steps, ``scheme`` ``"with_replacement"`` or ``"reshuffle"`` (``K`` must then be a
    whole number of epochs of ``N = len(offsets)`` steps).

    With replacement: ``E θ'² = a² E θ² + η²h² s²`` (``a = 1 − ηh``, ``s² = mean b²``). Reshuffled, over one epoch
    ``θ_N = a^N θ₀ + ηh Σ_k c_k b_{π(k)}`` with ``c_k = a^{N−1−k}``; a random permutation has
    ``Cov(b_{π(k)}, b_{π(l)}) = −s²/(N − 1)`` (``k ≠ l``), so the epoch's noise has variance
    ``η²h² s² (N Σc_k² − (Σc_k)²)/(N − 1)`` and mean zero."""
    K = _steps(eta, T)
    h = _args.real("h", h, gt=0)
    b = np.asarray(offsets, dtype=float)
    if b.ndim != 1 or len(b) < 2 or abs(b.mean()) > 1e-12 * max(1.0, np.abs(b).max()):
        raise ValueError(f"offsets={_args.show(offsets)} must be at least two numbers of mean zero")
    N, s2, a = len(b), float(np.mean(b**2)), 1 - eta * h
    if scheme == "with_replacement":
        m = theta0**2
        for _ in range(K):
            m = a * a * m + (eta * h) ** 2 * s2
        return m
    if scheme == "reshuffle":
        if K % N:
            raise ValueError(f"T/eta = {K} steps is not a whole number of epochs of {N} steps")
        c = a ** np.arange(N - 1, -1, -1)
        var = (eta * h) ** 2 * s2 * (N * np.sum(c**2) - np.sum(c) ** 2) / (N - 1)
        m = theta0**2
        for _ in range(K // N):
            m = a ** (2 * N) * m + var
        return float(m)
    raise ValueError(f"scheme={scheme!r}; valid: 'with_replacement', 'reshuffle'")


def cubic_second_moment_lower_bound(eta: float, T: float, theta0: float = 1.0) -> float:
    """``log₁₀`` of a lower bound on ``E θ_K²`` for explicit SGD on ``L = θ⁴/4`` with standard Gaussian gradient
    noise, ``θ_{k+1} = θ_k − η(θ_k³ + ξ_k)``, ``K = T/η`` steps.

    On the event ``A``: the first step lands at ``|θ_1| ≥ x* = 2/√η`` (``ξ_0 ≤ −(x* + |θ₀ − ηθ₀³|)/η``) and every
    later ``|ξ_k| ≤ M = 1/√η``, induction gives ``|θ_{k+1}| ≥ |θ_k|(η θ_k² − 1) − ηM ≥ 2|θ_k|``, so
    ``E θ_K² ≥ P(A) y_K²`` with ``y`` that recursion from ``y_1 = x*``, computed in logarithms."""
    K = _steps(eta, T)
    if K < 2:
        raise ValueError(f"T/eta = {K}: the bound needs at least two steps")
    x_star, M = 2 / math.sqrt(eta), 1 / math.sqrt(eta)
    z_star = (x_star + abs(theta0 - eta * theta0**3)) / eta
    log_p = special.log_ndtr(-z_star) + (K - 1) * math.log1p(-2 * special.ndtr(-M))
    u = math.log(x_star)  # log y_1
    for _ in range(K - 1):
        a_ = math.log(eta) + 2 * u  # log(η y²) ≥ log 4
        u = u + a_ + math.log1p(-(1 + eta * M * math.exp(-u)) * math.exp(-a_))
    return float((log_p + 2 * u) / math.log(10))


def _double_well_force(x):
    return x**3 - x


def mean_escape_time_sgd(eta: float, sigma: float, *, start: float = -1.0, barrier: float = 0.0,
                         cells_per_width: int = 16, left: float = -3.0) -> float:
    """The mean time (in units of ``η`` per step) for SGD on the double well ``V = (θ² − 1)²/4`` with Gaussian
    gradient noise of standard deviation ``sigma``, ``θ' = θ − η(V'(θ) + σξ)``, to first cross ``barrier`` from
    ``start``: the exact expected number of steps of the chain discretised on cells of width
    ``ησ/cells_per_width`` (``(I − P)τ = 1`` on the cells left of the barrier; mass sent below ``left`` returns
    to the first cell), times ``η``."""
    eta = _args.real("eta", eta, gt=0)
    sigma = _args.real("sigma", sigma, gt=0)
    cells_per_width = _args.integer("cells_per_width", cells_per_width, minimum=2)
    s = eta * sigma
    h = s / cells_per_width
    x = np.arange(left, barrier, h) + h / 2
    if len(x) > 8000:
        raise ValueError(f"{len(x)} cells: eta={eta} and sigma={sigma} need too fine a grid for a dense solve")
    mu = x - eta * _double_well_force(x)
    edges = np.concatenate([x - h / 2, [barrier]])
    cdf = special.ndtr((edges[None, :] - mu[:, None]) / s)
    P = np.diff(cdf, axis=1)
    P[:, 0] += cdf[:, 0]
    tau = np.linalg.solve(np.eye(len(x)) - P, np.ones(len(x)))
    return float(np.interp(start, x, tau) * eta)


def mean_escape_time_sde(eta: float, sigma: float, *, start: float = -1.0, barrier: float = 0.0,
                         left: float = -3.0) -> float:
    """The same for the SDE ``dθ = −V'(θ) dt + √η σ dW`` (diffusion ``D = ησ²/2``, reflected at ``left``), by the
    exact formula ``τ = (1/D) ∫_start^barrier e^{V(y)/D} ∫_left^y e^{−V(z)/D} dz dy``."""
    from scipy import integrate

    eta = _args.real("eta", eta, gt=0)
    sigma = _args.real("sigma", sigma, gt=0)
    D = eta * sigma**2 / 2
    V = lambda u: (u * u - 1) ** 2 / 4  # noqa: E731
    ref = V(barrier)

    def inner(y):
        return integrate.quad(lambda z: math.exp(-(V(z) - ref) / D), left, y, limit=200, epsabs=0, epsrel=1e-11)[0]

    outer = integrate.quad(lambda y: math.exp((V(y) - ref) / D) * inner(y), start, barrier, limit=200, epsabs=0,
                           epsrel=1e-10)[0]
    return outer / D
