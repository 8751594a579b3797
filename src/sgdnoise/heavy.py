"""Heavy tails in SGD: heavy-tailed *iterates* without heavy-tailed noise, and a controlled test of a
Gaussian against an α-stable model of the noise.

**Streaming least squares in one dimension** (the setting of Gürbüzbalaban, Şimşekli & Zhu 2021).
Each step draws fresh data ``a_i ~ N(0, σ²)``, ``y_i = a_i θ* + ε_i`` with ``ε_i ~ N(0, σ_ε²)``. The
error ``u = θ - θ*`` follows the random affine recursion

    u ← M u + q,   M = 1 - (η/B) s,   s = Σ_{i∈B} a_i² ~ σ² χ²_B,   q = (η/B) Σ_{i∈B} a_i ε_i.

The gradient noise of one step is a product of Gaussians, so every moment of it is finite. Yet when
``E log|M| < 0`` the stationary law of ``u`` has a power tail ``P(|u| > t) ~ c t^{-α}`` whose index
solves ``E|M|^α = 1`` (Kesten 1973; Goldie 1991): :func:`kesten_index`. Its variance is finite iff
``E M² < 1``, i.e. iff ``η σ² < 2B/(B + 2)``.

The SDE of chapter 2 for the same problem, ``du = -σ² u dt + sqrt((η/B)(2σ⁴u² + σ²σ_ε²)) dW``, has the
stationary density ``∝ (2σ⁴u² + σ²σ_ε²)^{-1 - B/(2ησ²)}``: also a power tail, with index
``1 + B/(ησ²)`` (:func:`sde_tail_index`), and a finite variance iff ``ησ² < B``.

**Escape from a double well** (:func:`double_well_escape`). Per-sample losses
``ℓ_i(θ) = (θ² - 1)²/4 - (a_i - ā) θ`` have the double well ``L_n = (θ² - 1)²/4`` as their mean and
additive noise ``ξ = mean_B(a) - ā``, whose law is set by the data ``a`` alone. SGD is compared with
gradient descent plus Gaussian noise of the same variance, and with gradient descent plus symmetric
α-stable noise of a fitted index and scale: the discretisations, at ``dt = η``, of the Gaussian and
of the α-stable SDE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, optimize, stats

from . import _args
from ._args import is_one_of, show
from .sampling import check_generator
from .sde import check_alpha, symmetric_stable
from .sgd import DivergenceError, check_learning_rate

__all__ = ["log_multiplier_mean", "kesten_index", "gaussian_multiplier_index", "sde_tail_index", "sgd_stationary_variance",
           "sde_stationary_variance", "streaming_lr_1d", "log_multiplier_mean_isotropic", "kesten_index_isotropic",
           "divergence_lr_isotropic", "sde_tail_index_isotropic", "streaming_lr", "stable_scale_from_median", "EscapeRun",
           "double_well_escape", "quadratic_stationary", "NOISE_MODELS"]

NOISE_MODELS = ("sgd", "gaussian", "stable", "none")


def _check_B(B) -> int:
    return _args.integer("B", B, minimum=1, valid="a positive integer (the batch size)")


def _check_positive(name: str, value) -> float:
    return _args.real(name, value, gt=0, valid="a finite positive number")


def _as_data(name: str, a) -> torch.Tensor:
    """``a`` (a tensor, array or list of numbers) as a flat float64 tensor, or an error naming it."""
    return _args.number_array(name, a, "the data: a tensor, array or list of numbers").flatten()


def _chi2_logpdf(x: float, B: int) -> float:
    """``log`` of the χ²_B density at ``x > 0`` (scipy's formula without its per-call overhead, which dominates
    the quadratures below)."""
    return (B / 2 - 1) * math.log(x) - x / 2 - (B / 2) * _LOG2 - math.lgamma(B / 2) if x > 0 else -math.inf


_LOG2 = math.log(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _norm_logpdf(z: float) -> float:
    return -0.5 * z * z - _LOG_SQRT_2PI


def _moment_of_multiplier(p: float, c: float, B: int) -> float:
    """``E|1 - c X|^p`` for ``X ~ χ²_B``, by quadrature split at the zero ``X = 1/c``."""
    x0 = 1.0 / c

    def f(x):
        if x == x0 or x <= 0:
            return 0.0
        return math.exp(p * math.log(abs(1.0 - c * x)) + _chi2_logpdf(x, B))

    lo, _ = integrate.quad(f, 0.0, x0, limit=200)
    hi, _ = integrate.quad(f, x0, np.inf, limit=200)
    return lo + hi


def log_multiplier_mean(eta: float, B: int, sigma2: float = 1.0) -> float:
    """``E log|M|`` for ``M = 1 - (η/B) s``, ``s ~ σ²χ²_B``: the iterates converge in law iff it is negative."""
    eta, B, sigma2 = check_learning_rate(eta), _check_B(B), _check_positive("sigma2", sigma2)
    c = eta * sigma2 / B
    x0 = 1.0 / c
    f = lambda x: math.log(abs(1.0 - c * x)) * math.exp(_chi2_logpdf(x, B)) if x != x0 and x > 0 else 0.0  # noqa: E731
    return integrate.quad(f, 0.0, x0, limit=200)[0] + integrate.quad(f, x0, np.inf, limit=200)[0]


def _positive_root(h, eta: float, B: int, alpha_max: float) -> float:
    """The positive root of a convex ``h`` with ``h(0) = 0`` and ``h'(0) < 0`` (``h(p) = log E|M|^p``): bracket it by
    doubling from 1, then Brent. Raises ``ValueError`` when it lies above ``alpha_max``."""
    hi = 1.0
    while h(hi) < 0:
        hi *= 2
        if hi > alpha_max:
            raise ValueError(f"eta={eta}, B={B}: the tail index exceeds alpha_max={alpha_max}; raise eta or alpha_max")
    lo = hi / 2 if hi > 1.0 else 1e-6
    return float(optimize.brentq(h, lo, hi, xtol=1e-10, rtol=1e-10))


def kesten_index(eta: float, B: int, sigma2: float = 1.0, *, alpha_max: float = 200.0) -> float:
    """Tail index ``α`` of SGD's stationary iterates on 1D streaming least squares: ``E|M|^α = 1``.

    Raises ``ValueError`` when ``E log|M| ≥ 0`` (no stationary law: the iterates diverge) and when the
    root lies above ``alpha_max`` (tails too light to matter; the quadrature is then unreliable).
    """
    eta, B, sigma2 = check_learning_rate(eta), _check_B(B), _check_positive("sigma2", sigma2)
    alpha_max = _check_positive("alpha_max", alpha_max)
    lam = log_multiplier_mean(eta, B, sigma2)
    if lam >= 0:
        raise ValueError(f"eta={eta}, B={B}, sigma2={sigma2}: E log|M| = {lam:.3g} >= 0, so SGD has no stationary "
                         f"law (the iterates diverge); use eta*sigma2 below the point where E log|M| = 0")
    c = eta * sigma2 / B
    h = lambda p: math.log(_moment_of_multiplier(p, c, B))  # noqa: E731  (convex, h(0) = 0, h'(0) = E log|M| < 0)
    return _positive_root(h, eta, B, alpha_max)


def gaussian_multiplier_index(eta: float, B: int, sigma2: float = 1.0, *, alpha_max: float = 200.0) -> float:
    """Tail index of the same recursion with a *Gaussian* multiplier of SGD's mean and variance,
    ``M = 1 - ησ² + ησ²√(2/B) Z``: the positive root of ``E|M|^α = 1``.

    It isolates what the law of SGD's multiplier (a scaled χ²_B, bounded above by 1 and skewed) does to the tail
    index: a finite step with a Gaussian multiplier against SGD's own (:func:`kesten_index`), both against the
    SDE's ``1 + B/(ησ²)`` (:func:`sde_tail_index`).
    """
    eta, B, sigma2 = check_learning_rate(eta), _check_B(B), _check_positive("sigma2", sigma2)
    alpha_max = _check_positive("alpha_max", alpha_max)
    a, b = 1.0 - eta * sigma2, eta * sigma2 * math.sqrt(2.0 / B)
    z0 = -a / b  # the zero of M; |M| is smooth on either side

    def moment(p: float) -> float:
        f = lambda z: math.exp(p * math.log(abs(a + b * z)) + _norm_logpdf(z)) if z != z0 else 0.0  # noqa: E731
        return integrate.quad(f, -np.inf, z0, limit=200)[0] + integrate.quad(f, z0, np.inf, limit=200)[0]

    g = lambda z: math.log(abs(a + b * z)) * math.exp(_norm_logpdf(z)) if z != z0 else 0.0  # noqa: E731
    lam = integrate.quad(g, -np.inf, z0, limit=200)[0] + integrate.quad(g, z0, np.inf, limit=200)[0]
    if lam >= 0:
        raise ValueError(f"eta={eta}, B={B}, sigma2={sigma2}: E log|M| = {lam:.3g} >= 0 for the Gaussian multiplier, "
                         "so the recursion has no stationary law")
    h = lambda p: math.log(moment(p))  # noqa: E731
    return _positive_root(h, eta, B, alpha_max)


def sde_tail_index(eta: float, B: int, sigma2: float = 1.0) -> float:
    """Tail index ``1 + B/(ησ²)`` of the stationary law of SGD's (Gaussian, state-dependent) SDE."""
    eta, B, sigma2 = check_learning_rate(eta), _check_B(B), _check_positive("sigma2", sigma2)
    return 1.0 + B / (eta * sigma2)


def sgd_stationary_variance(eta: float, B: int, sigma2: float = 1.0, noise_var: float = 1.0) -> float:
    """``E u²`` under SGD's stationary law: ``E q² / (1 - E M²)``, or ``inf`` when ``E M² ≥ 1``.

    ``sigma2 = σ²`` (the variance of the data ``a_i``) and ``noise_var = σ_ε²`` are finite numbers ``> 0``.
    """
    eta, B = check_learning_rate(eta), _check_B(B)
    sigma2, noise_var = _check_positive("sigma2", sigma2), _check_positive("noise_var", noise_var)
    m2 = 1 - 2 * eta * sigma2 + eta**2 * sigma2**2 * (B + 2) / B
    return math.inf if m2 >= 1 else eta**2 * sigma2 * noise_var / B / (1 - m2)


def sde_stationary_variance(eta: float, B: int, sigma2: float = 1.0, noise_var: float = 1.0) -> float:
    """``E u²`` under the SDE's stationary law (from ``dE u²/dt = 0``), or ``inf`` when ``ησ² ≥ B``.

    ``sigma2 = σ²`` and ``noise_var = σ_ε²`` are finite numbers ``> 0``, as for :func:`sgd_stationary_variance`.
    """
    eta, B = check_learning_rate(eta), _check_B(B)
    sigma2, noise_var = _check_positive("sigma2", sigma2), _check_positive("noise_var", noise_var)
    rate = 2 * sigma2 - 2 * eta * sigma2**2 / B
    return math.inf if rate <= 0 else eta * sigma2 * noise_var / B / rate


def streaming_lr_1d(eta: float, B: int, *, chains: int, steps: int, rng: np.random.Generator,
                    sigma2: float = 1.0, noise_var: float = 1.0) -> np.ndarray:
    """Final errors ``u = θ - θ*`` of ``chains`` independent SGD runs on 1D streaming least squares.

    Exact in law: per step, ``s ~ σ²χ²_B`` and, given ``s``, ``Σ a_i ε_i ~ N(0, σ_ε² s)``. Starts at
    ``u = 0``. Raises :class:`~sgdnoise.sgd.DivergenceError` if an iterate stops being finite.
    """
    eta, B = check_learning_rate(eta), _check_B(B)
    sigma2, noise_var = _check_positive("sigma2", sigma2), _check_positive("noise_var", noise_var)
    chains, steps = _args.integer("chains", chains, minimum=1), _args.integer("steps", steps, minimum=1)
    if not isinstance(rng, (np.random.Generator, np.random.RandomState)):
        raise TypeError(f"rng={rng!r} must be a seeded numpy random generator, e.g. np.random.default_rng(0)")
    u = np.zeros(chains)
    for k in range(steps):
        s = sigma2 * rng.chisquare(B, chains)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught below, with its step
            u = (1 - eta / B * s) * u + eta / B * np.sqrt(noise_var * s) * rng.standard_normal(chains)
        if not np.isfinite(u).all():
            raise DivergenceError(f"streaming SGD diverged at step {k} with eta={eta}, B={B}, sigma2={sigma2}")
    return u


def _isotropic_expectation(p: float | None, c: float, B: int, d: int, nodes: int = 64) -> float:
    """For independent ``X ~ χ²_B``, ``W ~ χ²_{d-1}`` and ``R² = (1 - cX)² + c² X W``: ``E R^p`` (``p`` a number),
    or ``E log R`` (``p=None``). Quadrature in ``X`` split at the zero ``X = 1/c`` of the first term,
    generalised Gauss–Laguerre in ``W``; the moments are summed in log space, so that large ``p`` and large
    ``X`` do not overflow."""
    from scipy import special

    if d == 1:
        w, log_omega = np.zeros(1), np.zeros(1)
    else:
        t, omega = special.roots_genlaguerre(nodes, (d - 1) / 2 - 1)
        w, log_omega = 2 * t, np.log(omega) - math.lgamma((d - 1) / 2)
    x0 = 1.0 / c

    def f(x):
        if x <= 0 or x == x0 and d == 1:
            return 0.0
        with np.errstate(divide="ignore"):
            log_r2 = np.log((1.0 - c * x) ** 2 + c * c * x * w)
        if p is None:
            return float(np.dot(np.exp(log_omega), 0.5 * log_r2)) * math.exp(_chi2_logpdf(x, B))
        return math.exp(float(special.logsumexp(log_omega + 0.5 * p * log_r2)) + _chi2_logpdf(x, B))

    return integrate.quad(f, 0.0, x0, limit=200)[0] + integrate.quad(f, x0, np.inf, limit=200)[0]


def _check_d(d) -> int:
    return _args.integer("d", d, minimum=1, valid="a positive integer (the dimension)")


def log_multiplier_mean_isotropic(eta: float, B: int, d: int, sigma2: float = 1.0) -> float:
    """``E log‖M e₁‖`` for streaming least squares in ``d`` dimensions with isotropic Gaussian data
    ``a ~ N(0, σ² I_d)``, ``M = I - (η/B) Σ_{i∈B} a_i a_iᵀ``: the iterates converge in law iff it is negative.

    By rotational invariance ``‖M e₁‖² = (1 - cX)² + c² X W`` with ``c = ησ²/B``, ``X ~ χ²_B`` and
    ``W ~ χ²_{d-1}`` independent (the first column's own entry, and its overlap with the other ``d - 1``
    coordinates).
    """
    eta, B, d, sigma2 = check_learning_rate(eta), _check_B(B), _check_d(d), _check_positive("sigma2", sigma2)
    return _isotropic_expectation(None, eta * sigma2 / B, B, d)


def kesten_index_isotropic(eta: float, B: int, d: int, sigma2: float = 1.0, *, alpha_max: float = 200.0) -> float:
    """Tail index ``α`` of SGD's stationary iterates on ``d``-dimensional streaming least squares with
    isotropic Gaussian data: the positive root of ``E‖M e₁‖^α = 1`` (Gürbüzbalaban, Şimşekli & Zhu 2021, whose
    characterisation for this case reduces the products of random matrices to one column by rotational
    invariance). ``d = 1`` is :func:`kesten_index`. Raises ``ValueError`` when the iterates have no stationary
    law (``E log‖M e₁‖ ≥ 0``) or the root lies above ``alpha_max``.
    """
    eta, B, d, sigma2 = check_learning_rate(eta), _check_B(B), _check_d(d), _check_positive("sigma2", sigma2)
    alpha_max = _check_positive("alpha_max", alpha_max)
    lam = log_multiplier_mean_isotropic(eta, B, d, sigma2)
    if lam >= 0:
        raise ValueError(f"eta={eta}, B={B}, d={d}, sigma2={sigma2}: E log‖M e1‖ = {lam:.3g} >= 0, so SGD has no "
                         "stationary law (the iterates diverge); lower eta")
    c = eta * sigma2 / B
    h = lambda p: math.log(_isotropic_expectation(p, c, B, d))  # noqa: E731
    return _positive_root(h, eta, B, alpha_max)


def divergence_lr_isotropic(B: int, d: int, sigma2: float = 1.0) -> float:
    """The learning rate ``η*`` at which ``E log‖M e₁‖ = 0`` for ``d``-dimensional streaming least squares with
    isotropic Gaussian data: below it SGD's iterates have a stationary law (heavy-tailed close to it), above it
    they diverge."""
    B, d, sigma2 = _check_B(B), _check_d(d), _check_positive("sigma2", sigma2)
    f = lambda e: log_multiplier_mean_isotropic(e, B, d, sigma2)  # noqa: E731  (negative, then positive)
    hi = 2.0 * B / sigma2
    while f(hi) < 0:
        hi *= 2
    lo = hi / 2
    while f(lo) >= 0:
        lo /= 2
    return float(optimize.brentq(f, lo, hi, xtol=1e-12, rtol=1e-10))


def sde_tail_index_isotropic(eta: float, B: int, d: int, sigma2: float = 1.0) -> float:
    """Tail index of ``‖u‖`` under the stationary law of SGD's (Gaussian, state-dependent) SDE on
    ``d``-dimensional streaming least squares with isotropic Gaussian data: ``1 + B/(ησ²) − (d − 1)/2``.

    With ``Σ(u) = σ⁴(‖u‖² I + uuᵀ) + σ²σ_ε² I``, Itô's formula gives ``r = ‖u‖`` the drift
    ``(−σ² + k(d − 1)/2) r`` and the squared diffusion ``2k r²`` for large ``r``, ``k = ησ⁴/B``; a density
    ``∝ r^{2a/b − 2}`` follows for drift ``a r`` and squared diffusion ``b r²``. ``d = 1`` is
    :func:`sde_tail_index`. Raises ``ValueError`` when the index is not positive (no stationary law).
    """
    eta, B, d, sigma2 = check_learning_rate(eta), _check_B(B), _check_d(d), _check_positive("sigma2", sigma2)
    alpha = 1.0 + B / (eta * sigma2) - (d - 1) / 2
    if alpha <= 0:
        raise ValueError(f"eta={eta}, B={B}, d={d}, sigma2={sigma2}: the SDE has no stationary law "
                         f"(its tail index 1 + B/(ησ²) − (d − 1)/2 = {alpha:.3g} is not positive); lower eta")
    return alpha


def streaming_lr(eta: float, B: int, d: int, *, chains: int, steps: int, generator: torch.Generator,
                 sigma2: float = 1.0, noise_var: float = 1.0) -> torch.Tensor:
    """Final errors ``u = θ - θ*`` (``(chains, d)``) of independent SGD runs on ``d``-dimensional streaming least
    squares: each step draws ``B`` fresh samples ``a_i ~ N(0, σ² I_d)``, ``y_i = a_iᵀθ* + ε_i`` with
    ``ε_i ~ N(0, σ_ε²)``, so ``u ← u - (η/B) Σ a_i (a_iᵀu - ε_i)``. Starts at ``u = 0``. Raises
    :class:`~sgdnoise.sgd.DivergenceError` if an iterate stops being finite."""
    eta, B, d = check_learning_rate(eta), _check_B(B), _check_d(d)
    sigma2, noise_var = _check_positive("sigma2", sigma2), _check_positive("noise_var", noise_var)
    chains, steps = _args.integer("chains", chains, minimum=1), _args.integer("steps", steps, minimum=1)
    check_generator(generator)
    u = torch.zeros(chains, d, dtype=torch.float64)
    sa, se = math.sqrt(sigma2), math.sqrt(noise_var)
    for k in range(steps):
        a = sa * torch.randn(chains, B, d, generator=generator, dtype=torch.float64)
        eps = se * torch.randn(chains, B, generator=generator, dtype=torch.float64)
        residual = (a @ u[:, :, None])[..., 0] - eps  # (chains, B)
        u = u - (eta / B) * (a * residual[..., None]).sum(1)
        if not torch.isfinite(u).all():
            raise DivergenceError(f"streaming SGD diverged at step {k} with eta={eta}, B={B}, d={d}, sigma2={sigma2}")
    return u


def stable_scale_from_median(xi, alpha: float, *, draws: int = 200_000, seed: int = 0) -> float:
    """Scale ``c`` such that ``c · S`` (``S`` from :func:`~sgdnoise.sde.symmetric_stable`) has the median
    absolute value of the sample ``xi``: the α-stable law matched to the noise at its bulk."""
    alpha = check_alpha(alpha)
    draws, seed = _args.integer("draws", draws, minimum=1), _args.integer("seed", seed)
    xi = _as_data("xi", xi)
    if xi.numel() < 2 or not torch.isfinite(xi).all():
        raise ValueError(f"xi must hold at least 2 finite values; got {xi.numel()} values")
    S = symmetric_stable((draws,), alpha, torch.Generator().manual_seed(seed))
    return float(xi.abs().median() / S.abs().median())


def _noise_setup(a, B: int, chains: int, noise: str, alpha: float, scale):
    """Validate the data and the noise model; return a function ``generator ↦ ξ`` of shape ``(chains,)``."""
    if not is_one_of(noise, NOISE_MODELS):
        raise ValueError(f"noise={show(noise)}; valid models are {NOISE_MODELS}")
    a = _as_data("a", a)
    n = a.numel()
    if n < 2 or not torch.isfinite(a).all():
        raise ValueError(f"a must hold at least 2 finite data values; got {n} values")
    # the alpha and scale of the stable model are checked whatever the model: a bad one is a mistake either way
    alpha = check_alpha(alpha)
    scale = None if scale is None else _check_positive("scale", scale)
    if noise == "stable" and scale is None:
        raise ValueError("noise='stable' needs scale (see stable_scale_from_median)")
    a = a - a.mean()
    sd = float(a.pow(2).mean().sqrt()) / math.sqrt(B)

    def draw(generator):
        if noise == "sgd":
            return a[torch.randint(n, (chains, B), generator=generator)].mean(dim=1)
        if noise == "gaussian":
            return sd * torch.randn(chains, generator=generator, dtype=torch.float64)
        if noise == "stable":
            return scale * symmetric_stable((chains,), alpha, generator)
        return torch.zeros(chains, dtype=torch.float64)

    return draw


@dataclass(frozen=True)
class EscapeRun:
    """First times (in steps) at which each chain crossed the barrier at ``θ = 0``; ``max_steps`` if never."""

    noise: str
    eta: float
    B: int
    steps: np.ndarray
    censored: float  # fraction of chains that had not escaped after max_steps

    def mean(self) -> tuple[float, float]:
        """Mean escape time and its standard error (a lower bound if any chain is censored)."""
        s = self.steps.astype(float)
        return float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s)))


def double_well_escape(a, *, eta: float, B: int, chains: int, max_steps: int, generator: torch.Generator,
                       noise: str = "sgd", alpha: float = 2.0, scale: float | None = None) -> EscapeRun:
    """Escape times from the left well of ``L_n(θ) = (θ² - 1)²/4``, starting at ``θ = -1``.

    ``noise``: ``"sgd"`` draws batches of size ``B`` with replacement from the data ``a`` (noise
    ``mean_B(a) - ā``); ``"gaussian"`` uses ``N(0, var(a)/B)``; ``"stable"`` uses ``scale · S_α`` with
    ``S_α`` from :func:`~sgdnoise.sde.symmetric_stable` (``scale`` is required); ``"none"`` is gradient
    descent. Every model takes the step ``θ ← θ - η(θ³ - θ) + η ξ``.
    """
    eta, B = check_learning_rate(eta), _check_B(B)
    chains, max_steps = _args.integer("chains", chains, minimum=1), _args.integer("max_steps", max_steps, minimum=1)
    check_generator(generator)
    draw = _noise_setup(a, B, chains, noise, alpha, scale)
    theta = torch.full((chains,), -1.0, dtype=torch.float64)
    first = torch.full((chains,), max_steps, dtype=torch.long)
    alive = torch.ones(chains, dtype=torch.bool)
    for k in range(max_steps):
        xi = draw(generator)
        theta = theta - eta * (theta**3 - theta) + eta * xi
        crossed = alive & (theta > 0)
        first[crossed] = k + 1
        alive &= ~crossed
        # an escaped chain is no longer followed: reset it inside the well to keep the cubic drift finite
        theta = torch.where(alive, theta, torch.full_like(theta, -1.0))
        if not alive.any():
            break
        if not torch.isfinite(theta).all():
            raise DivergenceError(f"double-well chains diverged at step {k} with eta={eta}, B={B}, noise={noise!r}")
    return EscapeRun(noise, eta, B, first.numpy(), float(alive.float().mean()))


def quadratic_stationary(a, *, eta: float, B: int, chains: int, steps: int, generator: torch.Generator,
                         noise: str = "sgd", alpha: float = 2.0, scale: float | None = None) -> np.ndarray:
    """Positions after ``steps`` steps of ``θ ← θ - ηθ + ηξ`` from ``θ = 0`` (the quadratic ``L_n = θ²/2``),
    with the noise models of :func:`double_well_escape`: the stationary spread of each model.

    For SGD the stationary variance is exactly ``η var(a) / (B(2 - η))``; the α-stable model's is
    infinite for ``α < 2``, so compare quantiles.
    """
    eta, B = check_learning_rate(eta), _check_B(B)
    if eta >= 2:
        raise ValueError(f"eta={eta}: gradient descent on θ²/2 is unstable for eta >= 2; use 0 < eta < 2")
    chains, steps = _args.integer("chains", chains, minimum=1), _args.integer("steps", steps, minimum=1)
    check_generator(generator)
    draw = _noise_setup(a, B, chains, noise, alpha, scale)
    theta = torch.zeros(chains, dtype=torch.float64)
    for _ in range(steps):
        theta = (1 - eta) * theta + eta * draw(generator)
    return theta.numpy()
