"""Stationary laws of SDEs driven by symmetric α-stable (Lévy) noise, ``dX = -V'(X) dt + σ dZ``.

Conventions. ``Z`` is the package's ``"alpha_stable"`` driver (:func:`sgdnoise.sde.symmetric_stable`):
``E exp(ik Z_t) = exp(-t |k|^α / 2^{α/2})``. The equation ``dX = -V'(X) dt + σ dZ`` then has *noise intensity*
``γ = (σ/√2)^α`` (:func:`noise_intensity`): ``σ Z_t`` has characteristic function ``exp(-t γ |k|^α)``, its Lévy
measure is ``γ C_α |z|^{-1-α} dz`` with ``C_α = Γ(1+α) sin(πα/2)/π`` (:func:`levy_constant`), and the density
``p`` of ``X`` solves the fractional Fokker–Planck equation ``∂_t p = ∂_x(V' p) - γ (-Δ)^{α/2} p``, whose Fourier
form (``p̂(k) = E e^{ikX}``) is ``∂_t p̂ = -ik FT[V' p] - γ |k|^α p̂``.

Three stationary laws are known in closed form or asymptotically:

* **Linear force** ``V' = hx`` (:func:`linear_stationary_intensity`): ``p̂ = exp(-γ|k|^α/(α h))``, a symmetric
  α-stable law; in the Fourier equation ``h k p̂' = -γ|k|^α p̂``. The drift-implicit Euler scheme with step ``dt``
  has the exact stationary law of the same family with intensity ``γ dt / ((1 + h dt)^α - 1)``; the explicit
  scheme, ``γ dt / (1 - |1 - h dt|^α)``.
* **Cauchy noise in a quartic well** ``V' = x³``, ``α = 1`` (Chechkin, Gonchar, Klafter, Metzler & Tanatarov
  2002): with ``s = γ^{1/3}``, ``p(x) = s³ / (π (s⁴ - s²x² + x⁴))`` (:func:`cauchy_quartic_density`), bimodal with
  maxima at ``±s/√2``, variance ``s²``; ``p̂(k) = e^{-s|k|/2} (cos(√3 s|k|/2) + sin(√3 s|k|/2)/√3)``.
* **The tail in a confining well** (:func:`tail_density`): for large ``|x|`` the drift's return flux
  ``|V'(x)| p(x)`` balances the rate of jumps from the bulk past ``x``, ``γ C_α/(α |x|^α)``, so
  ``p(x) ≈ γ C_α / (α |x|^α |V'(x)|)``. It gives the stable law's tail for the linear force and the exact
  ``s³/(π x⁴)`` of the Cauchy–quartic case; for ``V' = x^q`` it decays as ``|x|^{-(q+α)}``.
"""

from __future__ import annotations

import math

import numpy as np
import sympy as sp
import torch

from . import _args
from ._args import show

__all__ = ["median_matched_t_scale", "sgd_exit_steps", "noise_intensity", "levy_constant", "linear_stationary_intensity", "cauchy_quartic_density",
           "cauchy_quartic_charfn", "tail_density", "tail_probability", "empirical_charfn"]


def _alpha(alpha, *, upper_open: bool = False) -> float:
    a = _args.real("alpha", alpha)
    if not (0 < a < 2 if upper_open else 0 < a <= 2):
        raise ValueError(f"alpha={show(alpha)} must lie in (0, 2{')' if upper_open else ']'}"
                         + (" (a Gaussian driver has no jumps, so no Lévy tail)" if upper_open else ""))
    return a


def noise_intensity(sigma: float, alpha: float) -> float:
    """``γ = (σ/√2)^α``: the intensity of ``σ Z`` for the package's driver (characteristic exponent ``γ|k|^α``)."""
    return (_args.real("sigma", sigma, gt=0) / math.sqrt(2)) ** _alpha(alpha)


def levy_constant(alpha):
    """``C_α = Γ(1+α) sin(πα/2)/π``: the symmetric α-stable law with characteristic exponent ``γ|k|^α`` has Lévy
    density ``γ C_α |z|^{-1-α}`` and tail ``P(X > x) ~ γ C_α/(α x^α)``. A sympy expression if ``alpha`` is one."""
    if isinstance(alpha, sp.Basic):
        return sp.gamma(1 + alpha) * sp.sin(sp.pi * alpha / 2) / sp.pi
    a = _alpha(alpha, upper_open=True)
    return math.gamma(1 + a) * math.sin(math.pi * a / 2) / math.pi


def linear_stationary_intensity(h: float, gamma: float, alpha: float, *, dt: float | None = None,
                                scheme: str = "drift_implicit") -> float:
    """The intensity ``γ_∞`` of the stationary law ``p̂ = exp(-γ_∞|k|^α)`` of ``dX = -hX dt + σ dZ`` (``γ`` from
    :func:`noise_intensity`): ``γ/(α h)`` for the SDE; with ``dt``, the exact stationary intensity of the Euler
    scheme ``scheme`` (``"drift_implicit"``: ``γ dt/((1+h dt)^α - 1)``; ``"explicit"``: ``γ dt/(1 - |1-h dt|^α)``,
    which needs ``0 < h dt < 2``)."""
    h, gamma, a = _args.real("h", h, gt=0), _args.real("gamma", gamma, gt=0), _alpha(alpha)
    if dt is None:
        return gamma / (a * h)
    dt = _args.real("dt", dt, gt=0)
    if scheme == "drift_implicit":
        return gamma * dt / ((1 + h * dt) ** a - 1)
    if scheme == "explicit":
        if not h * dt < 2:
            raise ValueError(f"h*dt={h * dt!r}: the explicit scheme has no stationary law unless "
                             "0 < h*dt < 2")
        return gamma * dt / (1 - abs(1 - h * dt) ** a)
    raise ValueError(f"scheme={show(scheme)}; valid: drift_implicit, explicit")


def cauchy_quartic_density(x, gamma: float):
    """Stationary density of ``dX = -X³ dt + σ dZ`` with Cauchy noise (α = 1, ``γ = σ/√2``):
    ``s³ / (π (s⁴ - s²x² + x⁴))`` with ``s = γ^{1/3}``. ``x``: a number, an array, or a sympy expression (then
    ``γ`` may be one too)."""
    if isinstance(x, sp.Basic) or isinstance(gamma, sp.Basic):
        s = sp.cbrt(gamma)
        return s**3 / (sp.pi * (s**4 - s**2 * x**2 + x**4))
    s = _args.real("gamma", gamma, gt=0) ** (1 / 3)
    x = np.asarray(x, dtype=float)
    return s**3 / (math.pi * (s**4 - s**2 * x**2 + x**4))


def cauchy_quartic_charfn(k, gamma: float):
    """``E cos(kX)`` under :func:`cauchy_quartic_density`: ``e^{-s|k|/2}(cos(√3s|k|/2) + sin(√3s|k|/2)/√3)``."""
    if isinstance(k, sp.Basic) or isinstance(gamma, sp.Basic):
        s = sp.cbrt(gamma)
        u = sp.Abs(k) if not (isinstance(k, sp.Symbol) and k.is_nonnegative) else k
        return sp.exp(-s * u / 2) * (sp.cos(sp.sqrt(3) * s * u / 2) + sp.sin(sp.sqrt(3) * s * u / 2) / sp.sqrt(3))
    s = _args.real("gamma", gamma, gt=0) ** (1 / 3)
    u = np.abs(np.asarray(k, dtype=float))
    return np.exp(-s * u / 2) * (np.cos(math.sqrt(3) * s * u / 2) + np.sin(math.sqrt(3) * s * u / 2) / math.sqrt(3))


def tail_density(x, alpha: float, gamma: float, force):
    """The flux-balance tail ``γ C_α / (α |x|^α |V'(x)|)`` of the stationary density in a confining potential;
    ``force(x)`` is ``V'(x)`` (vectorised over an array ``x``). Valid for large ``|x|``, ``0 < α < 2``."""
    a, gamma = _alpha(alpha, upper_open=True), _args.real("gamma", gamma, gt=0)
    if not callable(force):
        raise TypeError(f"force must be callable (x -> V'(x)); got {type(force).__name__}")
    x = np.asarray(x, dtype=float)
    return gamma * levy_constant(a) / (a * np.abs(x) ** a * np.abs(force(x)))


def tail_probability(x: float, alpha: float, gamma: float, exponent: float, coefficient: float = 1.0) -> float:
    """``P(|X| > x)`` from :func:`tail_density` for ``V'(x) = coefficient · x^exponent`` (``x > 0`` large):
    ``2 γ C_α / (α · coefficient · (α + exponent - 1) · x^{α + exponent - 1})``."""
    a, gamma = _alpha(alpha, upper_open=True), _args.real("gamma", gamma, gt=0)
    x, coefficient = _args.real("x", x, gt=0), _args.real("coefficient", coefficient, gt=0)
    exponent = _args.real("exponent", exponent)
    if not a + exponent - 1 > 0:
        raise ValueError(f"alpha + exponent - 1 = {a + exponent - 1!r} must be > 0 for a normalisable tail")
    s = a + exponent - 1
    return 2 * gamma * levy_constant(a) / (a * coefficient * s * x**s)


def empirical_charfn(X, k) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, se)`` of ``cos(kX)`` over the samples ``X`` (1D) for each ``k``: a bounded statistic, so its
    standard error is the plain one even when ``X`` has no variance."""
    X = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X, dtype=float).ravel()
    if X.size < 2 or not np.isfinite(X).all():
        raise ValueError(f"X must hold at least 2 finite samples; got {X.size} (finite: {bool(np.isfinite(X).all())})")
    k = np.atleast_1d(np.asarray(k, dtype=float))
    c = np.cos(np.outer(k, X))
    return c.mean(1), c.std(1, ddof=1) / math.sqrt(X.size)


def median_matched_t_scale(gaussian_scale: float, df: float = 1.5) -> float:
    """The scale of Student-t noise with ``df`` degrees of freedom whose median ``|ξ|`` equals that of Gaussian noise
    of standard deviation ``gaussian_scale``: the same bulk, a heavier tail."""
    from scipy import stats

    gaussian_scale = _args.real("gaussian_scale", gaussian_scale, gt=0)
    df = _args.real("df", df, gt=0)
    return float(gaussian_scale * stats.norm.ppf(0.75) / stats.t.ppf(0.75, df))


def sgd_exit_steps(depth: float, width: float, *, lr: float, noise: str, scale: float, paths: int,
                   max_steps: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """SGD in a quadratic well, ``θ' = θ − lr (depth·θ + scale·ξ)`` from ``θ = 0``, until ``|θ| ≥ width``: the
    step at which each path leaves (``nan`` for paths still inside after ``max_steps``: right-censored) and the
    number censored. ``noise`` is ``"gaussian"`` (standard normal ``ξ``) or ``"t1.5"`` (Student-t with 1.5 degrees
    of freedom: infinite variance, tail index 1.5)."""
    depth = _args.real("depth", depth, gt=0)
    width = _args.real("width", width, gt=0)
    lr = _args.real("lr", lr, gt=0)
    scale = _args.real("scale", scale, gt=0)
    paths = _args.integer("paths", paths, minimum=1)
    max_steps = _args.integer("max_steps", max_steps, minimum=1)
    if noise not in ("gaussian", "t1.5"):
        raise ValueError(f"noise={noise!r}; valid: 'gaussian', 't1.5'")
    rng = np.random.default_rng(seed)
    th = np.zeros(paths)
    steps = np.full(paths, np.nan)
    alive = np.arange(paths)
    for k in range(1, max_steps + 1):
        xi = rng.standard_normal(len(alive)) if noise == "gaussian" else rng.standard_t(1.5, size=len(alive))
        th[alive] -= lr * (depth * th[alive] + scale * xi)
        out = np.abs(th[alive]) >= width
        steps[alive[out]] = k
        alive = alive[~out]
        if not len(alive):
            break
    return steps, len(alive)
