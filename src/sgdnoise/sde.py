"""Euler–Maruyama for the SDE that is used to model SGD (notes, eq. (23)),

    dθ = -∇L_n(θ) dt + sqrt(η/B · Σ(θ)) dW,

over many paths at once, and a generic Euler–Maruyama integrator for testing and benchmarks.

No matrix square root is ever taken. With ``G̃`` the centred per-sample gradients (``n × d``) and
``z ~ N(0, I_n)``, the vector ``(1/√(nB)) G̃ᵀ z`` has covariance ``Σ_emp/B``; and
``G̃ᵀ v = ∇_θ Σ_i (v_i - v̄) ℓ_i(θ)`` is one backward pass with per-sample weights. So a whole
step, drift and noise together, is the gradient of one weighted loss,

    θ ← θ - ∇_θ Σ_i w_i ℓ_i(θ),     w_i = dt/n - s (v_i - v̄),   s = sqrt(η / (n B)),   v = √dt · z,

and costs ``O(n · d)``: one full-batch forward and backward pass per path.

Drivers: ``"gaussian"`` (Brownian motion); ``"alpha_stable"``, whose increments over ``dt`` are
``dt^{1/α}`` times independent symmetric α-stable variables drawn by the Chambers–Mallows–Stuck method, with
scale ``2^{-1/2}`` so that α = 2 gives exactly the Gaussian driver ("matched scale"); and
``"sub_gaussian_stable"``, whose increment over ``dt`` is ``dt^{1/α} √A z`` with ``z ~ N(0, I)`` and one
positive ``α/2``-stable ``A`` per path and step (:func:`positive_stable`): a sub-Gaussian α-stable vector,
which keeps the Gaussian driver's covariance shape and makes only its radial law heavy-tailed (α = 2 gives
the Gaussian driver).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from . import _args
from ._args import ArgumentTypeError, as_real, is_one_of, show
from .gradients import per_sample_grads
from .problems import Problem, check_problem
from .sampling import check_batch_size, check_generator
from .sgd import (_check_step_list, censor_diverged, check_bounded, check_learning_rate, check_threshold,
                  flat_grad_fn, parameter_batch)

__all__ = ["SDEPaths", "ExitTimes", "symmetric_stable", "positive_stable", "euler_maruyama", "first_exit",
           "gaussian_mean_exit_time", "sgd_sde"]

DRIVERS = ("gaussian", "alpha_stable", "sub_gaussian_stable")
SCHEMES = ("explicit", "drift_implicit")
ON_DIVERGENCE = ("raise", "censor")


@dataclass
class SDEPaths:
    """States at the recorded times: ``thetas`` has shape ``(R, P, d)``. ``diverged`` (``sgd_sde`` with
    ``on_divergence="censor"`` only; else ``None``): per path, the step at which it diverged, ``-1`` if never;
    a diverged path's later records are NaN."""

    times: list[float]
    thetas: Tensor
    diverged: "np.ndarray | None" = None


def check_alpha(alpha) -> float:
    """``alpha`` if it is a stability index in ``(0, 2]`` (a number as given, a 0-d tensor as a float); else an
    error naming it."""
    a = as_real(alpha)
    if a is None:
        raise ArgumentTypeError(f"alpha={show(alpha)} must lie in (0, 2]")
    if not 0 < a <= 2:
        raise ValueError(f"alpha={show(alpha)} must lie in (0, 2]")
    return alpha if isinstance(alpha, numbers.Real) else a


def _open_uniform(shape, generator: torch.Generator, dtype) -> Tensor:
    """``torch.rand`` with its exact zeros moved to the middle of their bin, ``[0, 2^-p)`` → ``2^-(p+1)``.

    ``torch.rand`` draws from the grid ``{0, 2^-p, …}`` (``p`` = 24 in float32, 53 in float64), so it returns an exact
    0 once in about 1.7e7 float32 draws. At ``U = 0`` the Chambers–Mallows–Stuck map sits on the edge of its
    domain, ``V = -π/2``, where float32's ``cos`` is slightly negative and the draw becomes NaN (found with 9e7
    float32 draws in chapter 4's network SDE). Every other draw is left exactly as it was.
    """
    U = torch.rand(shape, generator=generator, dtype=dtype, device=generator.device)
    return torch.where(U == 0, torch.finfo(dtype).eps / 4, U)


def symmetric_stable(shape, alpha: float, generator: torch.Generator, dtype=torch.float64, device="cpu") -> Tensor:
    """Symmetric α-stable variables (Chambers, Mallows & Stuck 1976), scale ``2^{-1/2}``.

    Characteristic function ``E exp(itX) = exp(-|t|^α / 2^{α/2})``; for ``α = 2`` this is ``N(0, 1)``.
    ``shape`` is an int or a tuple of ints; ``device=None`` leaves the draws on the generator's device.
    """
    shape = _args.shape("shape", shape)
    alpha = check_alpha(alpha)
    check_generator(generator)
    dtype = _args.float_dtype("dtype", dtype)
    device = None if device is None else _args.device("device", device)
    V = (_open_uniform(shape, generator, dtype) - 0.5) * math.pi
    W = -torch.log1p(-_open_uniform(shape, generator, dtype))  # Exp(1)
    if alpha == 1.0:
        X = torch.tan(V)
    else:
        X = torch.sin(alpha * V) / torch.cos(V) ** (1 / alpha) * (torch.cos(V - alpha * V) / W) ** ((1 - alpha) / alpha)
    if not bool(torch.isfinite(X).all()):  # small alpha: the powers 1/alpha overflow (inf, and 0 · inf = NaN)
        raise FloatingPointError(
            f"alpha={alpha}: symmetric alpha-stable draws overflow {dtype} (|X| beyond {torch.finfo(dtype).max:.3g} "
            "has probability ~ |X|^-alpha, not negligible for small alpha); use a larger alpha"
        )
    return (X / math.sqrt(2)).to(device)


def positive_stable(shape, a: float, generator: torch.Generator, dtype=torch.float64, device="cpu") -> Tensor:
    """Positive (totally skewed) ``a``-stable variables, ``0 < a < 1``, with Laplace transform
    ``E exp(-sA) = exp(-s^a)`` (Kanter 1975): ``A = sin(aU) / (sin U)^{1/a} · (sin((1-a)U)/E)^{(1-a)/a}`` with
    ``U ~ Uniform(0, π)`` and ``E ~ Exp(1)``.

    With ``a = α/2`` and ``G`` Gaussian, ``√A · G`` is a *sub-Gaussian* symmetric α-stable vector: every
    projection ``vᵀ√A G`` is symmetric α-stable with scale proportional to ``√(vᵀ Cov(G) v)``, so the vector
    keeps the Gaussian's covariance shape and only its radial law becomes heavy-tailed.
    """
    shape = _args.shape("shape", shape)
    a = _args.real("a", a)
    if not 0 < a < 1:
        raise ValueError(f"a={a!r} must lie in (0, 1) (the index of a positive stable law; a = alpha/2 for a "
                         "sub-Gaussian alpha-stable vector with 0 < alpha < 2)")
    check_generator(generator)
    dtype = _args.float_dtype("dtype", dtype)
    device = None if device is None else _args.device("device", device)
    U = _open_uniform(shape, generator, dtype) * math.pi
    E = -torch.log1p(-_open_uniform(shape, generator, dtype))  # Exp(1)
    A = torch.sin(a * U) / torch.sin(U) ** (1 / a) * (torch.sin((1 - a) * U) / E) ** ((1 - a) / a)
    if not bool(torch.isfinite(A).all()):
        raise FloatingPointError(f"a={a}: positive stable draws overflow {dtype}; use a larger a")
    return A.to(device)


def _increments(P: int, m: int, dt: float, driver: str, alpha: float, generator, dtype, device) -> Tensor:
    # Drawn on the generator's device: pass a CUDA generator to keep the draws on the GPU.
    if driver == "gaussian":
        z = torch.randn((P, m), generator=generator, dtype=dtype, device=generator.device)
        return (z * math.sqrt(dt)).to(device)
    if driver == "sub_gaussian_stable":
        z = torch.randn((P, m), generator=generator, dtype=dtype, device=generator.device)
        if alpha == 2:
            return (z * math.sqrt(dt)).to(device)
        A = positive_stable((P, 1), alpha / 2, generator, dtype, generator.device)
        return (z * A.sqrt() * dt ** (1 / alpha)).to(device)
    return symmetric_stable((P, m), alpha, generator, dtype, device) * dt ** (1 / alpha)


def _check_driver(driver: str, alpha: float) -> float:
    """Check the driver and ``alpha`` (also when the Gaussian driver ignores it); return ``alpha`` as a float."""
    if not is_one_of(driver, DRIVERS):
        raise ValueError(f"driver={show(driver)}; valid drivers are {DRIVERS}")
    return check_alpha(alpha)


def _shape(v) -> str:
    return f"shape {tuple(v.shape)}" if isinstance(v, Tensor) else f"a {type(v).__name__}"


def _check_scheme(scheme: str) -> str:
    if not is_one_of(scheme, SCHEMES):
        raise ValueError(f"scheme={show(scheme)}; valid: {', '.join(SCHEMES)}")
    return scheme


def _check_steps(dt: float, steps: int, record_steps) -> list[int]:
    if isinstance(dt, bool) or not (isinstance(dt, numbers.Real) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"time step dt={dt!r} must be a finite number > 0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative int")
    record = _check_step_list("record_steps", [steps] if record_steps is None else record_steps, steps)
    if not record:
        raise ValueError("record_steps is empty; record at least one step (the default records the last)")
    return record


def _drift_jacobian(drift, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(drift(y), J)`` with ``J`` of shape ``(P, d, d)``: each path's Jacobian, one backward pass per output
    coordinate (the drift acts on each row alone, so the sum over paths separates them)."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        a = drift(y)
        if not a.requires_grad:  # a drift that does not depend on the state: its Jacobian is zero
            return a.detach(), torch.zeros(y.shape[0], y.shape[1], y.shape[1], dtype=y.dtype, device=y.device)
        rows = [torch.autograd.grad(a[:, j].sum(), y, retain_graph=j < y.shape[1] - 1, allow_unused=True)[0]
                for j in range(y.shape[1])]
    rows = [torch.zeros_like(y) if r is None else r for r in rows]
    return a.detach(), torch.stack(rows, 1)


def _implicit_step(drift, jacobian, c: Tensor, guess: Tensor, dt: float, tol: float, max_iter: int,
                   step: int) -> Tensor:
    """Solve ``y - dt·drift(y) = c`` per path by Newton's method from ``guess``. All paths iterate while many are
    still moving (one more Newton iteration leaves a converged path converged), then only the moving ones (a
    large jump needs many iterations). A path whose target ``c`` is already non-finite is left as it is (the
    caller's end check reports it); one that Newton's method drives to a non-finite value raises here."""
    y = torch.where(torch.isfinite(guess), guess, c)
    P, d = y.shape
    eye = torch.eye(d, dtype=y.dtype, device=y.device)
    tol = max(tol, 8 * torch.finfo(y.dtype).eps)  # float32 cannot resolve 1e-12

    def newton(yi, ci):
        if jacobian is None:
            a, J = _drift_jacobian(drift, yi)
        else:
            a, J = drift(yi), jacobian(yi)
            if getattr(J, "shape", None) != (yi.shape[0], d, d):
                raise ValueError(f"drift_jacobian(x) returned {_shape(J)}; need ({yi.shape[0]}, {d}, {d}): one "
                                 "d × d Jacobian per path")
        F = yi - dt * a - ci
        M = eye - dt * J
        if d == 1:
            delta = F / M[:, 0]
        elif d == 2:  # Cramer's rule: several times faster than a batched solve of 2 × 2 systems
            det = M[:, 0, 0] * M[:, 1, 1] - M[:, 0, 1] * M[:, 1, 0]
            delta = torch.stack([M[:, 1, 1] * F[:, 0] - M[:, 0, 1] * F[:, 1],
                                 M[:, 0, 0] * F[:, 1] - M[:, 1, 0] * F[:, 0]], 1) / det[:, None]
        else:
            delta = torch.linalg.solve(M, F.unsqueeze(-1)).squeeze(-1)
        yi = yi - delta
        lost = ~torch.isfinite(yi).all(1) & torch.isfinite(ci).all(1)
        if bool(lost.any()):
            first = int(lost.nonzero()[0])
            raise FloatingPointError(
                f"euler_maruyama(scheme='drift_implicit'): Newton's method left the finite numbers at step {step} "
                f"(state {yi[first].tolist()} from the explicit target {ci[first].tolist()}): the drift or its Jacobian "
                f"overflowed; lower dt={dt}, or check the drift")
        return yi, (delta.abs() > tol * (1 + yi.abs())).any(1) & torch.isfinite(yi).all(1)

    idx = None  # None: every path iterates
    for _ in range(max_iter):
        if idx is None:
            y, moving = newton(y, c)
            n = int(moving.sum())
            if n * 16 < P:
                idx = moving.nonzero().squeeze(1)
        else:
            yi, moving = newton(y[idx], c[idx])
            y = y.index_copy(0, idx, yi)
            idx = idx[moving]
            n = idx.numel()
        if n == 0:
            return y
    first = int(moving.nonzero()[0]) if idx is None else int(idx[0])
    raise FloatingPointError(
        f"euler_maruyama(scheme='drift_implicit'): Newton's method did not converge in {max_iter} iterations at "
        f"step {step} (path {first}, state {y[first].tolist()}); the implicit equation y - dt·drift(y) = c has one "
        f"solution when dt times the drift's one-sided Lipschitz constant is below 1: lower dt={dt}, or raise "
        "newton_max_iter")


def euler_maruyama(
    drift: Callable[[Tensor], Tensor],
    diffusion: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    *,
    dt: float,
    steps: int,
    noise_dim: int,
    generator: torch.Generator | None = None,
    increments: Tensor | None = None,
    driver: str = "gaussian",
    alpha: float = 2.0,
    record_steps: list[int] | None = None,
    scheme: str = "explicit",
    newton_tol: float = 1e-12,
    newton_max_iter: int = 100,
    drift_jacobian: Callable[[Tensor], Tensor] | None = None,
) -> SDEPaths:
    """``x ← x + drift(x) dt + diffusion(x, ΔW)`` for ``P`` paths at once; ``x0`` is ``(P, d)``.

    ``scheme="drift_implicit"`` takes the drift at the *new* point instead,
    ``x' = x + drift(x') dt + diffusion(x, ΔW)``, solved per path by Newton's method (the drift's Jacobian by
    autograd, ``d`` backward passes per iteration, or ``drift_jacobian(x)`` of shape ``(P, d, d)`` if given, which is
    several times faster; the drift must act on each path's row alone). This step is
    stable for drifts that grow faster than linearly, such as ``-x³``, where the explicit step blows up after one
    large jump of an α-stable driver: for a drift with one-sided Lipschitz constant ``μ`` (``⟨a(x) - a(y), x - y⟩
    ≤ μ|x - y|²``), the equation has one solution whenever ``μ dt < 1``. Newton stops when every path's update is
    below ``newton_tol · (1 + |x'|)`` (``newton_tol`` floored at 8 machine epsilons of the dtype); a path still
    moving after ``newton_max_iter`` iterations raises ``FloatingPointError`` (``dt`` too large for the drift). Both schemes have weak order 1 for smooth
    coefficients of linear growth; for a superlinear drift only the drift-implicit one stays stable.

    ``diffusion(x, v)`` applies the diffusion matrix at ``x`` (``d × noise_dim`` per path) to the
    driver increments ``v`` of shape ``(P, noise_dim)``. Pass ``increments`` of shape
    ``(steps, P, noise_dim)`` to drive several step sizes with one path (strong-order tests);
    otherwise they are drawn from ``generator``. Paths that become non-finite raise
    ``FloatingPointError`` (checked once, at the end, on every recorded state and the final one), so no
    state with an ``inf`` or ``nan`` is ever returned.
    """
    for name, f in (("drift", drift), ("diffusion", diffusion)):
        if not callable(f):
            raise TypeError(f"{name} must be callable ({name}(x){', dW' if name == 'diffusion' else ''} -> a tensor of x's "
                            f"shape); got {type(f).__name__}")
    record = _check_steps(dt, steps, record_steps)
    alpha = _check_driver(driver, alpha)
    _check_scheme(scheme)
    newton_tol = _args.real("newton_tol", newton_tol, gt=0)
    newton_max_iter = _args.integer("newton_max_iter", newton_max_iter, minimum=1)
    if drift_jacobian is not None and not callable(drift_jacobian):
        raise TypeError(f"drift_jacobian must be None or callable (x -> a (P, d, d) tensor); got "
                        f"{type(drift_jacobian).__name__}")
    if not isinstance(x0, Tensor) or x0.ndim != 2:
        raise ValueError(f"x0 must be a (P, d) tensor of starting points; got {_shape(x0)}")
    noise_dim = _args.integer("noise_dim", noise_dim, minimum=1)
    x = x0.clone()
    P = x.shape[0]
    if increments is not None:
        _args.tensor("increments", increments, f"None or a ({steps}, {P}, {noise_dim}) tensor of driver increments")
        if tuple(increments.shape) != (steps, P, noise_dim):
            raise ValueError(f"increments have shape {tuple(increments.shape)}; need ({steps}, {P}, {noise_dim})")
    if generator is not None:
        check_generator(generator)
    elif increments is None:
        raise TypeError("generator=None: pass a seeded torch.Generator (or explicit increments)")
    out, times = [], []
    rec = iter(record)
    nxt = next(rec, None)
    for k in range(steps + 1):
        if k == nxt:
            out.append(x.clone())
            times.append(k * dt)
            nxt = next(rec, None)
        if k == steps:
            break
        dW = increments[k] if increments is not None else _increments(P, noise_dim, dt, driver, alpha, generator, x.dtype, x.device)
        a, s = drift(x), diffusion(x, dW)
        if getattr(a, "shape", None) != x.shape or getattr(s, "shape", None) != x.shape:
            raise ValueError(
                f"drift(x) returned {_shape(a)} and diffusion(x, dW) {_shape(s)}; both must "
                f"return the state's shape {tuple(x.shape)} (P paths × d), never broadcast to a larger one"
            )
        if scheme == "explicit":
            x = x + a * dt + s
        else:
            x = _implicit_step(drift, drift_jacobian, x + s, x + a * dt + s, dt, newton_tol, newton_max_iter, k)
    thetas = torch.stack(out)
    # checked once at the end (no device sync per step): the final state and every recorded one
    if not (torch.isfinite(x).all() and torch.isfinite(thetas).all()):
        bad = (~torch.isfinite(thetas).flatten(1).all(1)).nonzero()
        where = f"by step {record[int(bad[0])]} (t = {times[int(bad[0])]:.4g})" if len(bad) else f"by step {steps}"
        hint = "; a drift growing faster than linearly needs scheme='drift_implicit'" if scheme == "explicit" else ""
        raise FloatingPointError(f"euler_maruyama: the paths became non-finite {where} with dt={dt}; "
                                 f"lower dt, or check the drift and the diffusion{hint}")
    return SDEPaths(times, thetas)


@dataclass
class ExitTimes:
    """First exit times from an interval: ``times[i]`` is path ``i``'s exit time, or the horizon if it had not left
    (``exited[i]`` False: right-censored, to be treated as such, e.g. by :func:`sgdnoise.survival.rmst`)."""

    times: np.ndarray
    exited: np.ndarray
    horizon: float


def first_exit(
    drift: Callable[[Tensor], Tensor],
    x0: float,
    lower: float,
    upper: float,
    *,
    sigma: float,
    dt: float,
    max_steps: int,
    paths: int,
    generator: torch.Generator,
    driver: str = "gaussian",
    alpha: float = 2.0,
    scheme: str = "explicit",
    drift_jacobian: Callable[[Tensor], Tensor] | None = None,
    dtype=torch.float64,
) -> ExitTimes:
    """First exit of ``dX = drift(X) dt + σ dZ`` (one dimension; ``Z`` the ``driver``) from ``(lower, upper)``,
    started at ``x0``, for ``paths`` independent paths, with the Euler step ``scheme`` (see :func:`euler_maruyama`). A path exits at the
    first step whose end lies outside the interval (a jump can leave it in one step); paths still inside after
    ``max_steps`` steps are censored at ``max_steps · dt``. Only the paths still inside are stepped."""
    if not callable(drift):
        raise TypeError(f"drift must be callable (x -> a tensor of x's shape); got {type(drift).__name__}")
    lower, upper, x0 = _args.real("lower", lower), _args.real("upper", upper), _args.real("x0", x0)
    if not (math.isfinite(lower) and math.isfinite(upper) and lower < x0 < upper):
        raise ValueError(f"need finite lower < x0 < upper; got lower={show(lower)}, x0={show(x0)}, upper={show(upper)}")
    sigma = _args.real("sigma", sigma, gt=0)
    _check_steps(dt, max_steps, None)
    paths = _args.integer("paths", paths, minimum=1)
    alpha = _check_driver(driver, alpha)
    _check_scheme(scheme)
    check_generator(generator)
    x = torch.full((paths, 1), float(x0), dtype=dtype)
    alive = torch.arange(paths)
    times = np.full(paths, max_steps * dt)
    exited = np.zeros(paths, dtype=bool)
    for k in range(max_steps):
        if alive.numel() == 0:
            break
        dL = _increments(alive.numel(), 1, dt, driver, alpha, generator, dtype, "cpu")
        if k == 0:
            a0 = drift(x)
            if getattr(a0, "shape", None) != x.shape:
                raise ValueError(f"drift(x) returned {_shape(a0)}; it must return the state's shape {tuple(x.shape)} "
                                 "(paths × 1), never broadcast to a larger one")
        if scheme == "explicit":
            x = x + drift(x) * dt + sigma * dL
        else:
            c = x + sigma * dL
            x = _implicit_step(drift, drift_jacobian, c, c + drift(x) * dt, dt, 1e-12, 100, k)
        if not bool(torch.isfinite(x).all()):
            raise FloatingPointError(f"first_exit: a path became non-finite at step {k + 1} with dt={dt}; lower dt, "
                                     "or use scheme='drift_implicit' for a drift growing faster than linearly")
        out = ((x[:, 0] <= lower) | (x[:, 0] >= upper))
        if bool(out.any()):
            idx = alive[out].numpy()
            times[idx] = (k + 1) * dt
            exited[idx] = True
            keep = ~out
            alive, x = alive[keep], x[keep]
    return ExitTimes(times, exited, max_steps * dt)


def gaussian_mean_exit_time(potential: Callable[[float], float], gamma: float, w: float) -> float:
    """The exact mean exit time from ``(-w, w)``, started at 0, of ``dX = -V'(X) dt + √(2γ) dW`` for a symmetric
    ``V`` (``potential``, a function of a float): ``γ⁻¹ ∫_0^w e^{V(y)/γ} ∫_0^y e^{-V(z)/γ} dz dy``, the solution of
    ``γT'' - V'T' = -1``, ``T(±w) = 0`` at 0 (by quadrature). The reference :func:`first_exit` is checked against
    for Gaussian noise."""
    from scipy.integrate import quad

    if not callable(potential):
        raise TypeError(f"potential must be callable (y -> V(y)); got {type(potential).__name__}")
    gamma, w = _args.real("gamma", gamma, gt=0), _args.real("w", w, gt=0)
    inner = lambda y: quad(lambda z: math.exp(-potential(z) / gamma), 0, y)[0]  # noqa: E731
    return quad(lambda y: math.exp(potential(y) / gamma) * inner(y), 0, w)[0] / gamma


def sgd_sde(
    problem: Problem,
    theta0: Tensor,
    *,
    eta: float,
    B: int,
    dt: float,
    steps: int,
    generator: torch.Generator,
    scheme: str = "with_replacement",
    covariance: str = "state",
    theta_ref: Tensor | None = None,
    driver: str = "gaussian",
    alpha: float = 2.0,
    record_steps: list[int] | None = None,
    explode: float = 1e8,
    noise_scale: float = 1.0,
    on_divergence: str = "raise",
) -> SDEPaths:
    """Euler–Maruyama for ``dθ = -∇L_n dt + sqrt(c · η Σ_emp(θ)) dW`` over ``P`` paths.

    ``c = 1/B`` for ``scheme="with_replacement"``, ``(n-B)/((n-1)B)`` otherwise (the
    without-replacement factor of chapter 1). ``covariance="constant"`` freezes ``Σ_emp`` at
    ``theta_ref`` (default: the first path's start). ``theta0`` is ``(P, d)`` or ``(d,)``. Works on the
    device of ``problem.X``. One step costs one weighted full-batch backward pass per path.

    ``noise_scale`` multiplies the noise term (a heavy-tailed driver matched to the Gaussian one in bulk
    uses a factor ``ω``; see :func:`sgdnoise.experiments.deep_linear.bulk_matched_scale`). A path whose parameters
    become non-finite or exceed ``explode`` raises :class:`sgdnoise.sgd.DivergenceError` with
    ``on_divergence="raise"``; with ``"censor"`` it is stopped there instead (its later records are NaN, the
    other paths are unaffected: they are computed independently) and ``SDEPaths.diverged`` gives the step.
    """
    from .noise import noise_covariance_factor

    eta = check_learning_rate(eta)
    n = check_problem(problem).n
    check_batch_size(B, n, scheme)
    record = _check_steps(dt, steps, record_steps)
    check_generator(generator)
    alpha = _check_driver(driver, alpha)
    noise_scale = _args.real("noise_scale", noise_scale, gt=0)
    explode = check_threshold("explode", explode)
    if not is_one_of(on_divergence, ON_DIVERGENCE):
        raise ValueError(f"on_divergence={show(on_divergence)}; valid values are {ON_DIVERGENCE}")
    if not is_one_of(covariance, ("state", "constant")):
        raise ValueError(f"covariance={show(covariance)}; valid values are 'state' and 'constant'")
    theta = parameter_batch(problem, theta0, "P")
    if theta_ref is not None:
        d = theta.shape[1]
        _args.tensor("theta_ref", theta_ref, f"None or a parameter vector of shape ({d},)")
        if tuple(theta_ref.shape) != (d,):
            raise ValueError(f"theta_ref has shape {tuple(theta_ref.shape)}; need ({d},), one parameter vector")
    dtype = theta.dtype
    P = theta.shape[0]
    s = noise_scale * math.sqrt(eta * noise_covariance_factor(n, B, scheme) / n)
    X, y = problem.X, problem.y
    step_grad = flat_grad_fn(problem, in_dims=(0, None, None, 0))
    Gc_ref = None
    if covariance == "constant":
        ref = (theta[0] if theta_ref is None else theta_ref.to(theta)).clone()
        saved = problem.theta()
        problem.set_theta(ref)
        try:
            G = per_sample_grads(problem.model, problem.loss_fn, X, y)
        finally:  # the model keeps its parameters even when the reference point is bad
            problem.set_theta(saved)
        Gc_ref = G - G.mean(dim=0, keepdim=True)

    out, times = [], []
    rec = iter(record)
    nxt = next(rec, None)
    censor = on_divergence == "censor"
    diverged = np.full(P, -1, dtype=np.int64) if censor else None
    for k in range(steps + 1):
        if k == nxt:
            out.append(theta.clone())
            times.append(k * dt)
            nxt = next(rec, None)
        if k == steps:
            break
        v = _increments(P, n, dt, driver, alpha, generator, dtype, theta.device)
        v = v - v.mean(dim=1, keepdim=True)
        if Gc_ref is None:
            w = dt / n - s * v  # drift and noise in one weighted backward pass
            theta = theta - step_grad(theta, X, y, w)
        else:
            w = torch.full((P, n), dt / n, dtype=dtype, device=theta.device)
            theta = theta - step_grad(theta, X, y, w) + s * (v @ Gc_ref)
        if censor:  # stop the paths that left the range; NaN stays in its own path (the step is vmapped)
            theta = censor_diverged(theta, explode, diverged, k + 1)
            continue
        check_bounded(theta, explode, f"SDE paths diverged at step {k} (t = {(k + 1) * dt:.4g}): parameters reached "
                      f"{{size:.3g}} with eta={eta}, B={B}, dt={dt}; lower dt or eta")
    return SDEPaths(times, torch.stack(out), diverged)
