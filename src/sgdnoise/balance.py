"""Which minimum? Layer balancedness of a scalar deep linear network under SGD and its SDEs (chapter 5).

The network is ``f(x) = a x`` with ``a = w_D ⋯ w_1`` (scalar layers), trained on ``ℓ_i = ½(a x_i - y_i)²``. Its
zero-gradient set ``a = â`` (the least-squares slope) is a curve of minima along which the layers can be
distributed in many ways; the sharpness ``tr H = (Σ_l (a/w_l)²) · mean(x²)`` is smallest where the layers are
balanced, ``|w_l| = |â|^{1/D}``. The imbalance of two neighbouring layers is ``δ_l = w_{l+1}² - w_l²``.

Three facts make the question "where on the curve does training end?" exactly solvable (chapter 5 derives
and checks them):

* one SGD step with any batch multiplies each ``δ_l`` by ``1 - η² m² q_l``, where ``m = ∂ℓ_batch/∂a`` and
  ``q_l = Π_{j ∉ {l, l+1}} w_j²`` (gradient flow conserves ``δ_l``);
* under the Gaussian SDE, ``d log|δ_l| = -(η V(a) / B) q_l dt``, with no noise term, where ``V(a)`` is the
  per-sample variance of ``∂ℓ_i/∂a``; with inputs ``x_i = ±1`` (any ``x_i² = const`` would do) it does not depend
  on ``a`` and the rate is constant;
* under a symmetric α-stable driver with Lévy scale ``γ`` of the kicks, ``log|δ|`` decays at the rate
  ``-2 Γ(α) cos(πα/2) γ^α`` (:func:`stable_balancing_rate`): for ``1 < α ≤ 2`` the layers balance, for
  ``α = 1`` nothing happens, for ``α < 1`` they unbalance.

:func:`simulate` runs depth-2 paths of gradient descent, SGD (batches drawn with replacement), and the
Gaussian and α-stable SDEs with SGD's noise covariance ``(η V / B) ∇a ∇aᵀ``. The SDEs are integrated by
splitting: a noise kick (Euler), then the gradient flow, which keeps ``δ`` fixed and moves ``a`` by an
exponential step. Unlike explicit Euler, this cannot blow up after a large jump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import _args
from .sampling import check_generator
from .sde import check_alpha, symmetric_stable

__all__ = ["rademacher_regression", "walsh_regression", "label_noise_variance", "stable_balancing_rate", "sgd_balancing_rate", "sgd_balancing_curve",
           "median_matching_factor", "BalancePaths", "simulate", "METHODS", "gamma_stationary_law"]

METHODS = ("gd", "sgd", "gaussian_sde", "stable_sde")


def rademacher_regression(n: int, *, slope: float = 1.0, label_noise: float = 1.0, seed: int = 0):
    """``n`` samples ``x_i = ±1``, ``y_i = slope · x_i + label_noise · ε_i`` with ``ε_i ~ N(0, 1)``, as float64
    numpy arrays. With ``x_i² = 1`` the per-sample gradient ``∂ℓ_i/∂a = a - x_i y_i`` has a variance that does
    not depend on ``a``."""
    n = _args.integer("n", n, minimum=2)
    slope = _args.real("slope", slope)
    label_noise = _args.real("label_noise", label_noise, ge=0)
    g = torch.Generator().manual_seed(_args.integer("seed", seed))
    x = (2 * torch.randint(0, 2, (n,), generator=g) - 1).double()
    y = slope * x + label_noise * torch.randn(n, generator=g, dtype=torch.float64)
    return x.numpy(), y.numpy()


def walsh_regression(M, *, label_noise: float):
    """A matrix regression data set on which Gaussian noise with SGD's covariance balances a depth-2 linear
    network at exactly the scalar rate. With ``k = M.shape[1]`` inputs, the ``n = 2^k`` inputs are every
    ``x ∈ {±1}^k`` (so ``XᵀX/n = I`` and ``‖x_i‖² = k``), and ``y_i = M x_i + e_i`` with ``e_i`` built from ``M.shape[0]``
    Walsh interaction columns of the same design (products of two, then three, ... input coordinates) times
    ``label_noise``: ``‖e_i‖² = V = (rows of M) · label_noise²`` for every ``i``, ``EᵀE/n = label_noise² I`` and
    ``XᵀE = 0``, so the least-squares map is ``M`` and its residuals are ``e_i``. Then
    ``S_e = (1/n) Σ ‖e_i‖² x_i x_iᵀ = V I`` and ``S_x = (1/n) Σ ‖x_i‖² e_i e_iᵀ = k·label_noise² I``; for a square
    ``M`` both equal ``V I``. Returns ``(X, Y)`` as float64 tensors ``(n, k)`` and ``(n, rows of M)``."""
    import itertools

    M = _args.tensor("M", M, "a (k_out, k) matrix").to(torch.float64)
    if M.ndim != 2:
        raise ValueError(f"M has shape {tuple(M.shape)}; need a (k_out, k) matrix")
    k_out, k = M.shape
    sigma = _args.real("label_noise", label_noise, ge=0)
    if not 2 <= k <= 12:
        raise ValueError(f"M has k={k} columns; walsh_regression builds 2^k samples and needs 2 <= k <= 12")
    X = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=k)), dtype=torch.float64)
    cols = [X[:, list(c)].prod(1) for r in range(2, k + 1) for c in itertools.combinations(range(k), r)]
    if len(cols) < k_out:
        raise ValueError(f"M has {k_out} rows; a design with k={k} has only {len(cols)} interaction columns")
    E = sigma * torch.stack(cols[:k_out], dim=1)
    return X, X @ M.T + E


def _check_data(x, y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(f"x and y must be 1-D arrays of one length >= 2; got shapes {x.shape} and {y.shape}")
    if not np.all(np.abs(x) == 1):
        raise ValueError("x must hold only +1 and -1 (the model's noise variance is then independent of a); "
                         f"got values such as {x[np.abs(x) != 1][:3].tolist()}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y holds non-finite values")
    return x, y


def label_noise_variance(x, y) -> tuple[float, float]:
    """``(â, V)``: the least-squares slope ``â = mean(x y)`` and the per-sample gradient variance
    ``V = mean((x_i y_i - â)²)`` (the empirical covariance's normalisation, 1/n)."""
    x, y = _check_data(x, y)
    xy = x * y
    return float(xy.mean()), float(((xy - xy.mean()) ** 2).mean())


def stable_balancing_rate(alpha: float, gamma: float) -> float:
    """Rate at which ``log|δ|`` decays when the kicks ``J`` along ``∇a`` are the jumps of a symmetric α-stable
    Lévy process whose characteristic function per unit time is ``exp(-γ^α |t|^α)``:

        -∫ log|1 - J²| ν(dJ) = -2 Γ(α) cos(πα/2) γ^α,

    positive (balancing) for ``1 < α ≤ 2``, zero at ``α = 1``, negative (unbalancing) for ``α < 1``. As ``α → 2``
    it tends to ``2γ²``, the Gaussian rate (the kick variance per unit time); at ``α = 2`` that limit is returned."""
    alpha = check_alpha(alpha)
    gamma = _args.real("gamma", gamma, gt=0)
    return float(-2 * math.gamma(alpha) * math.cos(math.pi * alpha / 2) * gamma**alpha)


def sgd_balancing_rate(eta: float, B: int, V: float, sharpness) -> np.ndarray:
    """SGD's decay rate of ``log|δ|`` per unit time ``t = η k`` at depth 2, to leading order in the noise:
    ``(η V / B) · 2 / (2 - η h)``, where ``h = w_1² + w_2²`` is the sharpness (``tr H``) at the current point.
    The factor ``2 / (2 - η h)`` is the finite-step excess over the SDE's ``η V / B``: the fluctuations of ``a``
    about ``â`` add ``Var(a - â)`` to ``E m²``, and they grow without bound as ``η h → 2``."""
    eta = _args.real("eta", eta, gt=0)
    B = _args.integer("B", B, minimum=1)
    V = _args.real("V", V, ge=0)
    h = np.asarray(sharpness, dtype=float)
    if np.any(eta * h >= 2):
        raise ValueError(f"eta * sharpness reaches {float(np.max(eta * h)):.3g}; the formula needs eta * h < 2 "
                         "(beyond it gradient descent is unstable at the minimum)")
    return eta * V / B * 2 / (2 - eta * h)


def sgd_balancing_curve(eta: float, B: int, V: float, a_hat: float, delta0: float, times) -> np.ndarray:
    """SGD's predicted ``log|δ(t)/δ(0)|`` at depth 2 on the curve of minima: the solution of
    ``d log|δ|/dt = -`` :func:`sgd_balancing_rate` ``(η, B, V, h)`` with ``h = √(δ² + 4â²)`` (the sharpness of
    the minimum with imbalance ``δ``), from ``δ(0) = delta0``, at ``times`` (increasing, from 0)."""
    from scipy.integrate import solve_ivp

    a_hat, delta0 = _args.real("a_hat", a_hat), _args.real("delta0", delta0)
    t = np.asarray(times, dtype=float)
    if t.ndim != 1 or len(t) < 1 or t[0] < 0 or np.any(np.diff(t) <= 0):
        raise ValueError("times must be an increasing 1-D array of times >= 0")
    sgd_balancing_rate(eta, B, V, math.hypot(delta0, 2 * a_hat))  # checks the arguments and η h < 2 at the start

    def rhs(_, ell):
        return -sgd_balancing_rate(eta, B, V, np.hypot(delta0 * np.exp(ell), 2 * a_hat))

    sol = solve_ivp(rhs, (0.0, float(t[-1])), [0.0], t_eval=t, rtol=1e-10, atol=1e-12)
    return sol.y[0]


def median_matching_factor(alpha: float, dt: float, *, draws: int = 400_000, seed: int = 0) -> float:
    """``ω`` such that the α-stable kick ``ω dt^{1/α} S`` (``S`` from :func:`~sgdnoise.sde.symmetric_stable`)
    has the median absolute value of the Gaussian kick ``√dt Z`` over one step ``dt``: the two noises agree
    in bulk and differ in the tail."""
    alpha = check_alpha(alpha)
    dt = _args.real("dt", dt, gt=0)
    S = symmetric_stable((_args.integer("draws", draws, minimum=1000),), alpha, torch.Generator().manual_seed(seed))
    gauss_median = 0.6744897501960817  # median of |Z|, Z ~ N(0, 1)
    return float(gauss_median * dt**0.5 / (dt ** (1 / alpha) * S.abs().median()))


def gamma_stationary_law(a_hat: float, A2: float):
    """The Gaussian SDE's stationary law of ``a`` on the balanced set ``w_1 = w_2`` at depth 2:
    ``da = (-2a(a - â) + A² a) dt + 2A a dW`` has the density ``∝ a^{â/A² - 3/2} e^{-a/A²}``, a Gamma law with
    shape ``â/A² - 1/2`` and scale ``A²`` (``A² = η V / B``); returned as a frozen ``scipy.stats`` law."""
    from scipy import stats

    a_hat, A2 = _args.real("a_hat", a_hat), _args.real("A2", A2, gt=0)
    if a_hat / A2 <= 0.5:
        raise ValueError(f"need a_hat / A2 > 1/2 for a normalisable law; got a_hat={a_hat}, A2={A2}")
    return stats.gamma(a_hat / A2 - 0.5, scale=A2)


@dataclass
class BalancePaths:
    """Depth-2 paths: ``log_imbalance`` is ``log|w_2² - w_1²|`` at ``times`` (shape ``(R, P)``); ``w`` the final
    layers (``(P, 2)``); ``diverged[p]`` the step at which path ``p`` left the finite range (``-1``: never).
    A diverged path is censored: its later records are NaN."""

    method: str
    eta: float
    B: int
    dt: float
    times: np.ndarray
    log_imbalance: np.ndarray
    a: np.ndarray
    w: np.ndarray
    diverged: np.ndarray
    alpha: float = 2.0
    kappa: float = 1.0

    def rate(self) -> tuple[float, float]:
        """Mean decay rate of ``log|δ|`` per unit time from start to end, and its standard error over the paths
        that did not diverge. Raises when any path diverged (report those as censored data instead)."""
        if np.any(self.diverged >= 0):
            raise ValueError(f"{int(np.sum(self.diverged >= 0))} of {len(self.diverged)} paths diverged; a rate over "
                             "the survivors would select the sample")
        r = -(self.log_imbalance[-1] - self.log_imbalance[0]) / (self.times[-1] - self.times[0])
        return float(r.mean()), float(r.std(ddof=1) / math.sqrt(len(r)))


def simulate(x, y, w0, *, method: str, eta: float, B: int = 1, steps: int, paths: int, generator: torch.Generator,
             alpha: float = 2.0, kappa: float = 1.0, dt: float | None = None, records: int = 50,
             explode: float = 1e6) -> BalancePaths:
    """Run ``paths`` depth-2 paths from ``w0 = (w_1, w_2)``.

    ``method``: ``"gd"`` and ``"sgd"`` (``steps`` steps of size ``eta``, batches of ``B`` drawn with
    replacement); ``"gaussian_sde"`` and ``"stable_sde"`` (``steps`` steps of size ``dt``, default ``eta``, of
    ``dθ = -∇L dt + √(η V / B) ∇a dL``, with ``dL`` Brownian or ``ω`` times the package's α-stable driver).
    Time is ``t = η k`` for GD and SGD and ``t = dt k`` for the SDEs. ``records`` evenly spaced records.
    """
    x, y = _check_data(x, y)
    if method not in METHODS:
        raise ValueError(f"method={method!r}; valid methods are {METHODS}")
    eta = _args.real("eta", eta, gt=0)
    B = _args.integer("B", B, minimum=1)
    steps = _args.integer("steps", steps, minimum=1)
    P = _args.integer("paths", paths, minimum=1)
    records = _args.integer("records", records, minimum=2)
    check_generator(generator)
    alpha = check_alpha(alpha)
    kappa = _args.real("kappa", kappa, gt=0)
    if method != "stable_sde" and (alpha != 2.0 or kappa != 1.0):
        raise ValueError(f"alpha and kappa apply to method='stable_sde' only; got alpha={alpha}, kappa={kappa} "
                         f"with method={method!r}")
    h = eta if dt is None else _args.real("dt", dt, gt=0)
    if dt is not None and method in ("gd", "sgd"):
        raise ValueError(f"dt applies to the SDEs only; {method} takes steps of size eta")
    w0 = np.asarray(w0, dtype=float)
    if w0.shape != (2,) or not np.all(np.isfinite(w0)) or w0[0] ** 2 == w0[1] ** 2:
        raise ValueError(f"w0 must be two finite layer weights with w_1² ≠ w_2² (an imbalance to follow); got {w0}")
    a_hat, V = label_noise_variance(x, y)
    xy = x * y
    A = math.sqrt(eta * V / B)
    w1, w2 = np.full(P, w0[0]), np.full(P, w0[1])
    a_s = w1 * w2
    log_d = np.log(np.abs(w2**2 - w1**2))
    d_sign = np.sign(w2**2 - w1**2)
    big_sign = np.full(P, 1.0 if (w0[1] if w0[1] ** 2 > w0[0] ** 2 else w0[0]) >= 0 else -1.0)

    def delta_s():
        return d_sign * np.exp(log_d)

    diverged = np.full(P, -1)
    rec_steps = np.unique(np.linspace(0, steps, records).round().astype(int))
    rec_set = set(rec_steps.tolist())
    logs, a_rec = [], []
    chunk = 1024
    draws = None
    for k in range(steps + 1):
        if method in ("gaussian_sde", "stable_sde") and (k in rec_set or k == steps):
            w1, w2 = _layers(a_s, delta_s(), big_sign, d_sign > 0)
        if k in rec_set:
            if method in ("gd", "sgd"):
                with np.errstate(divide="ignore"):
                    lg = np.where(diverged >= 0, np.nan, np.log(np.abs(w2**2 - w1**2)))
            else:
                lg = np.where(diverged >= 0, np.nan, log_d)
            logs.append(lg)
            a_rec.append(np.where(diverged >= 0, np.nan, w1 * w2))
        if k == steps:
            break
        j = k % chunk
        if j == 0:
            size = min(chunk, steps - k)
            if method == "sgd":
                idx = torch.randint(0, len(xy), (size, P, B), generator=generator).numpy()
                draws = xy[idx].mean(axis=-1)
            elif method == "gaussian_sde":
                draws = (torch.randn((size, P), generator=generator, dtype=torch.float64) * math.sqrt(h)).numpy()
            elif method == "stable_sde":
                draws = (kappa * h ** (1 / alpha) * symmetric_stable((size, P), alpha, generator)).numpy()
        if method in ("gd", "sgd"):
            m = w1 * w2 - (a_hat if method == "gd" else draws[j])
            w1, w2 = w1 - eta * m * w2, w2 - eta * m * w1
            bad = (diverged < 0) & ~(np.isfinite(w1) & np.isfinite(w2) & (np.abs(w1 * w2) < explode))
            diverged[bad] = k
            w1, w2 = np.where(diverged >= 0, w0[0], w1), np.where(diverged >= 0, w0[1], w2)
            continue
        # The SDE's state is carried as (a, log|δ|, sign δ, sign of the larger layer), so that δ keeps its full
        # relative precision when it is far smaller than w² (w_2² - w_1² would round to 0).
        xi = A * draws[j]  # the noise kick along ∇a = (w_2, w_1): w_1 += ξ w_2, w_2 += ξ w_1, exactly
        delta = delta_s()
        flip = np.abs(xi) > 1  # only such a kick can change which layer is the larger, or its sign
        if flip.any():
            p1, p2 = _layers(a_s[flip], delta[flip], big_sign[flip], d_sign[flip] > 0)
            k1, k2 = p1 + xi[flip] * p2, p2 + xi[flip] * p1
            d_sign[flip] *= np.sign(1 - xi[flip] ** 2)
            new_big = np.where(d_sign[flip] > 0, np.sign(k2), np.sign(k1))
            big_sign[flip] = np.where(new_big == 0, 1.0, new_big)
        a = a_s * (1 + xi**2) + xi * np.hypot(delta, 2 * a_s)  # w_1' w_2' = a (1 + ξ²) + ξ (w_1² + w_2²)
        with np.errstate(divide="ignore"):
            log_d = log_d + np.log(np.abs(1 - xi**2))  # w_2'² - w_1'² = (w_2² - w_1²)(1 - ξ²)
        # gradient flow over dt keeps δ and moves a towards â at the rate w_1² + w_2² (an exponential step)
        a_s = a_hat + (a - a_hat) * np.exp(-np.hypot(delta_s(), 2 * a) * h)
        bad = (diverged < 0) & ~(np.isfinite(a_s) & np.isfinite(log_d))
        diverged[bad] = k
    t_unit = eta if method in ("gd", "sgd") else h
    return BalancePaths(method, eta, B, h, rec_steps * t_unit, np.array(logs), np.array(a_rec), np.stack([w1, w2], 1),
                        diverged, alpha, kappa)


def _layers(a, delta, big_sign, w2_big):
    """The layers ``(w_1, w_2)`` with product ``a`` and ``w_2² - w_1² = δ``; the larger one (``w_2`` where
    ``w2_big``) has the sign ``big_sign``, the smaller one the sign that gives ``a``."""
    r = np.hypot(delta, 2 * a)
    mag2, mag1 = np.sqrt(np.maximum(r + delta, 0) / 2), np.sqrt(np.maximum(r - delta, 0) / 2)
    small_sign = np.where(a >= 0, 1.0, -1.0) * big_sign
    return np.where(w2_big, small_sign, big_sign) * mag1, np.where(w2_big, big_sign, small_sign) * mag2
