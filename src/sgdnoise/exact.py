"""Exact first and second moments of SGD, SVAG, its SDE and gradient flow on linear regression.

On a quadratic loss everything is linear in the *lifted* state ``z = (θ, 1)``: the per-sample gradient
is ``g_i = a_i θ - b_i`` with ``a_i = x_i x_iᵀ``, ``b_i = x_i y_i``, so one SGD step is
``z ← U_B z`` with ``U_B = [[I - η A_B, η b_B], [0, 1]]`` and ``U_B`` the average of the per-sample
``U_i``. The second moment ``Z = E[z zᵀ]`` (which holds ``E θ`` and ``E θθᵀ``) therefore follows an exact
linear recursion for SGD,

    Z ← (1/B) mean_i U_i Z U_iᵀ + (1 - 1/B) Ū Z Ūᵀ                  (with replacement),
    Z ← c₁ mean_i U_i Z U_iᵀ + (1 - c₁) Ū Z Ūᵀ, c₁ = (n-B)/(B(n-1))  (without replacement),

and an exact linear ODE for the SDE ``dθ = -∇L_n dt + sqrt(η c Σ_emp(θ)) dW`` (Itô):

    dZ/dt = F Z + Z Fᵀ + η c (mean_i ã_i Z ã_iᵀ - ã Z ãᵀ)   (θ-block),   F = [[-H, b̄], [0, 0]],

with ``ã_i = [a_i, -b_i]`` (so that ``g_i = ã_i z``). No Monte Carlo: weak errors between SGD, the SDE and
gradient flow are computed to machine precision. ``Z`` is ``(d+1) × (d+1)``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from . import _args
from ._args import is_one_of, show
from .gradients import check_data
from .noise import noise_covariance_factor
from .sgd import check_learning_rate, check_momentum, check_steps, svag_coefficients

__all__ = ["LinearMoments", "sgd_moment_operator", "sgd_moments", "sgd_stationary_moments", "sde_stationary_moments",
           "HeavyBallMoments", "heavy_ball_stationary_moments", "sde_moments", "sde_em_moments", "gradient_flow_moments", "initial_moments", "expected_loss"]


def _check_linear_data(X: Tensor, y: Tensor) -> tuple[int, int]:
    """Check that ``X`` is ``(n, d)`` and ``y`` is ``(n,)``, both finite; return ``(n, d)``."""
    n = check_data(X, y)
    if X.ndim != 2:
        raise ValueError(f"X has shape {tuple(X.shape)}; need the (n, d) design matrix")
    if y.ndim != 1:
        raise ValueError(f"y has shape {tuple(y.shape)}; need the ({n},) vector of targets")
    if X.shape[1] < 1:
        raise ValueError(f"X has d={X.shape[1]} columns; need d >= 1")
    if not (bool(torch.isfinite(X).all()) and bool(torch.isfinite(y).all())):
        raise ValueError("X and y must be finite; they hold NaN or ±inf values")
    return n, X.shape[1]


def _check_theta0(theta0: Tensor, d: int) -> None:
    if not isinstance(theta0, Tensor) or tuple(theta0.shape) != (d,):
        got = tuple(theta0.shape) if isinstance(theta0, Tensor) else type(theta0).__name__
        raise ValueError(f"theta0 has shape {got}; need ({d},), one entry per column of X (d={d})")
    if not bool(torch.isfinite(theta0).all()):
        raise ValueError(f"theta0={theta0.tolist()} must be finite")


def _check_dt(dt) -> None:
    try:
        ok = (isinstance(dt, (numbers.Real, Tensor)) and not isinstance(dt, bool)
              and math.isfinite(float(dt)) and float(dt) > 0)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"time step dt={dt!r} must be a finite number > 0")


def _check_times(times) -> list:
    """``times`` as a list (it may be a generator), each a finite number ``>= 0``; any order."""
    times = _args.items("times", times, "a sequence of times t >= 0, e.g. [1.0]")
    if not times:
        raise ValueError("times is empty; pass at least one time t >= 0, e.g. times=[1.0]")
    for t in times:
        try:
            ok = not isinstance(t, bool) and math.isfinite(float(t)) and float(t) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"time t={t!r} in times must be a finite number >= 0 (the moments run forward from t=0)")
    return times


def _check_finite_moments(Z: Tensor, what: str, where: str, remedy: str = "lower eta or raise B") -> None:
    """Raise ``FloatingPointError`` if ``Z`` (``(K, D, D)``) is not finite, naming the first bad index."""
    if bool(torch.isfinite(Z).all()):
        return
    first = int((~torch.isfinite(Z).flatten(1).all(1)).nonzero()[0])
    raise FloatingPointError(f"{what} overflowed to a non-finite value at {where.format(first)}; "
                             f"the second moments grow without bound there: {remedy}")


class LinearMoments:
    """Per-sample pieces of a linear-regression data set, lifted to ``z = (θ, 1)``."""

    def __init__(self, X: Tensor, y: Tensor):
        _check_linear_data(X, y)
        X = X.to(torch.float64)
        y = y.to(torch.float64)
        self.n, self.d = X.shape
        # ã_i = [x_i x_iᵀ, -x_i y_i]: (n, d, d+1), so that g_i = ã_i z
        self.At = torch.cat([X[:, :, None] * X[:, None, :], -(X * y[:, None])[:, :, None]], dim=2)
        self.At_mean = self.At.mean(0)
        self._eye = torch.eye(self.d + 1, dtype=torch.float64)

    def U(self, eta: float) -> tuple[Tensor, Tensor]:
        """Per-sample step maps ``U_i`` (n, d+1, d+1) and their mean ``Ū``."""
        Ui = self._eye.expand(self.n, -1, -1).clone()
        Ui[:, : self.d, :] -= eta * self.At
        return Ui, Ui.mean(0)

    def noise(self, Z: Tensor) -> Tensor:
        """``E[Σ_emp(θ)] = mean_i ã_i Z ã_iᵀ - ã Z ãᵀ`` (d × d), linear in ``Z``."""
        return torch.einsum("iab,bc,idc->ad", self.At, Z, self.At) / self.n - self.At_mean @ Z @ self.At_mean.T

    def drift_matrix(self) -> Tensor:
        """``F`` with ``dz/dt = F z`` for gradient flow in the lifted coordinates."""
        F = torch.zeros(self.d + 1, self.d + 1, dtype=torch.float64)
        F[: self.d, :] = -self.At_mean
        return F


def initial_moments(theta0: Tensor) -> Tensor:
    """``Z₀`` for a deterministic start ``θ₀``."""
    _args.tensor("theta0", theta0, "a 1-D tensor θ₀ of shape (d,)")
    if theta0.ndim != 1:
        raise ValueError(f"theta0 has shape {tuple(theta0.shape)}; need (d,), a single starting point")
    z = torch.cat([theta0.to(torch.float64), torch.ones(1, dtype=torch.float64)])
    return torch.outer(z, z)


def sgd_moment_operator(X: Tensor, y: Tensor, *, eta: float, B: int, scheme: str = "with_replacement",
                        svag_l: int = 1) -> Tensor:
    """The matrix ``T`` with ``vec(Z_{k+1}) = T vec(Z_k)`` for one unit of η (``l`` SVAG steps), ``(D², D²)``.

    ``T`` always has the eigenvalue 1 (the constant coordinate of ``z``); SGD's second moments converge iff
    every other eigenvalue has modulus < 1. ``svag_l`` is an int ``>= 1`` (1 is plain SGD).
    """
    eta = check_learning_rate(eta)
    if not is_one_of(scheme, ("with_replacement", "without_replacement")):
        raise ValueError(f"scheme={show(scheme)}: exact moments exist for independent batches only "
                         "('with_replacement', 'without_replacement')")
    if isinstance(svag_l, bool) or not isinstance(svag_l, numbers.Integral) or svag_l < 1:
        raise ValueError(f"svag_l={svag_l!r} must be an int >= 1 (1 is plain SGD)")
    lm = LinearMoments(X, y)
    n = lm.n
    c = noise_covariance_factor(n, B, scheme)  # weight of the per-sample term in E[U_B Z U_Bᵀ]
    l = svag_l
    if l > 1:
        if scheme != "with_replacement":
            raise ValueError("SVAG is implemented with independent with-replacement batches")
        c1, c2 = svag_coefficients(l)
        c = (c1**2 + c2**2) / B  # = l / B
    Ui, Ubar = lm.U(eta / l)
    D = lm.d + 1

    # E[U Z Uᵀ] = c · (mean_i U_i Z U_iᵀ - Ū Z Ūᵀ) + Ū Z Ūᵀ: the per-sample part is the noise. The map is
    # linear in Z; build it once as a D² × D² matrix, then each step is one small matrix-vector product.
    def step(Z):
        UZU = Ubar @ Z @ Ubar.T
        return UZU + c * (torch.einsum("iab,bc,idc->ad", Ui, Z, Ui) / n - UZU)

    T = torch.stack([step(E).reshape(-1) for E in torch.eye(D * D, dtype=torch.float64).view(D * D, D, D)], dim=1)
    return torch.linalg.matrix_power(T, l)


def sgd_moments(X: Tensor, y: Tensor, theta0: Tensor, *, eta: float, B: int, steps: int,
                scheme: str = "with_replacement", svag_l: int = 1) -> Tensor:
    """``Z_k`` for ``k = 0 … steps`` (in units of η; SVAG takes ``l`` steps of ``η/l`` per unit). Shape ``(steps+1, d+1, d+1)``.

    ``scheme`` is ``"with_replacement"`` or ``"without_replacement"`` (independent batches); random
    reshuffling has no such closed recursion. SVAG uses two independent with-replacement batches.

    When ``η`` is too large for ``B`` the second moments of the chain grow geometrically: that growth is
    the exact answer, not an error, and large finite values are returned as they are. Only a result that
    overflows to ``inf``/NaN raises ``FloatingPointError`` (naming ``eta``, ``B`` and the step).
    """
    T = sgd_moment_operator(X, y, eta=eta, B=B, scheme=scheme, svag_l=svag_l)
    D = X.shape[1] + 1
    _check_theta0(theta0, D - 1)
    steps = check_steps("steps", steps)
    v = initial_moments(theta0).reshape(-1)
    out = [v]
    for _ in range(steps):
        v = T @ v
        out.append(v)
    Z = torch.stack(out).view(steps + 1, D, D)
    _check_finite_moments(Z, f"sgd_moments with eta={eta}, B={B}, scheme={scheme!r}, svag_l={svag_l}", "step {}")
    return Z


def sgd_stationary_moments(X: Tensor, y: Tensor, *, eta: float, B: int, scheme: str = "with_replacement") -> Tensor | None:
    """SGD's exact stationary ``Z`` (the eigenvector of ``T`` for the eigenvalue 1 with ``Z[d, d] = 1``), or
    ``None`` when the second moments diverge (another eigenvalue of modulus ≥ 1)."""
    T = sgd_moment_operator(X, y, eta=eta, B=B, scheme=scheme)
    return _stationary_null_vector(T, X.shape[1] + 1, discrete=True)


def _stationary_null_vector(M: Tensor, D: int, *, discrete: bool) -> Tensor | None:
    """The stationary ``Z`` of a linear second-moment map ``M`` on ``vec(Z)`` (``D × D``), normalised so that
    the constant coordinate's entry is 1; ``None`` when another mode does not decay (``|λ| ≥ 1`` for a step,
    ``Re λ ≥ 0`` for a generator)."""
    vals, vecs = torch.linalg.eig(M)
    target = 1.0 if discrete else 0.0
    one = int(torch.argmin((vals - target).abs()))
    others = torch.cat([vals[:one], vals[one + 1 :]])
    if others.numel():
        if discrete and float(others.abs().max()) >= 1.0:
            return None
        if not discrete and float(others.real.max()) >= 0.0:
            return None
    Z = vecs[:, one].real.view(D, D)
    Z = Z / Z[D - 1, D - 1]
    return 0.5 * (Z + Z.T)


def sde_stationary_moments(X: Tensor, y: Tensor, *, eta: float, B: int, scheme: str = "with_replacement") -> Tensor | None:
    """The SDE's exact stationary ``Z`` (``d+1`` square: the null vector of its second-moment generator), or
    ``None`` when its second moments diverge. ``eta`` enters only through ``η · c(n, B)``: pass an effective
    learning rate (``η/(1-β)`` for heavy-ball momentum) to get that SDE's law."""
    eta = check_learning_rate(eta)
    lm = LinearMoments(X, y)
    c = noise_covariance_factor(lm.n, B, scheme)
    return _stationary_null_vector(_sde_generator(lm, eta, c), lm.d + 1, discrete=False)


class HeavyBallMoments:
    """Exact second moments of heavy-ball SGD on linear regression, batches drawn with replacement.

    The update is the package's (and PyTorch's): ``v ← βv + g_B(θ)``, ``θ ← θ - ηv``. In the lifted state
    ``w = (θ, v, 1)`` one step is ``w ← U_B w`` with ``U_B = [[I - ηA_B, -ηβI, ηb_B], [A_B, βI, -b_B], [0, 0, 1]]``,
    affine in the batch means ``A_B``, ``b_B``; so ``W = E[wwᵀ]`` follows
    ``W ← (1/B)(mean_i U_i W U_iᵀ - ŪWŪᵀ) + ŪWŪᵀ``, as for plain SGD, and the lag covariances of the
    stationary chain are ``E[w_{k+ℓ} w_kᵀ] = Ū^ℓ W`` (later batches are independent of ``w_k``).
    ``β = 0`` gives plain SGD.
    """

    def __init__(self, X: Tensor, y: Tensor, *, eta: float, B: int, beta: float):
        self.eta = check_learning_rate(eta)
        self.beta = check_momentum(beta)
        lm = LinearMoments(X, y)
        self.n, self.d = lm.n, lm.d
        self.B = _args.integer("B", B, minimum=1, valid="the batch size, an int >= 1 (batches are drawn with replacement)")
        d, D = self.d, 2 * self.d + 1
        I = torch.eye(d, dtype=torch.float64)
        A = lm.At[:, :, :d]  # a_i = x_i x_iᵀ
        b = -lm.At[:, :, d]  # b_i = x_i y_i
        Ui = torch.zeros(self.n, D, D, dtype=torch.float64)
        Ui[:, :d, :d] = I - self.eta * A
        Ui[:, :d, d : 2 * d] = -self.eta * self.beta * I
        Ui[:, :d, 2 * d] = self.eta * b
        Ui[:, d : 2 * d, :d] = A
        Ui[:, d : 2 * d, d : 2 * d] = self.beta * I
        Ui[:, d : 2 * d, 2 * d] = -b
        Ui[:, 2 * d, 2 * d] = 1.0
        self.Ui, self.Ubar, self.D = Ui, Ui.mean(0), D

    def step(self, W: Tensor) -> Tensor:
        UWU = self.Ubar @ W @ self.Ubar.T
        return UWU + (torch.einsum("iab,bc,idc->ad", self.Ui, W, self.Ui) / self.n - UWU) / self.B

    def operator(self) -> Tensor:
        """``T`` with ``vec(W_{k+1}) = T vec(W_k)``, ``(D², D²)`` with ``D = 2d + 1``."""
        D = self.D
        return torch.stack([self.step(E).reshape(-1) for E in torch.eye(D * D, dtype=torch.float64).view(D * D, D, D)],
                           dim=1)

    def stationary(self) -> Tensor | None:
        """The stationary ``W`` (``D × D``; ``W[:d, :d]`` holds ``E θθᵀ``, ``W[:d, -1]`` holds ``E θ``), or ``None``
        when the second moments diverge."""
        return _stationary_null_vector(self.operator(), self.D, discrete=True)

    def theta_autocovariance(self, W: Tensor, lags: int) -> Tensor:
        """``Cov(θ_{k+ℓ}, θ_k)`` of the stationary chain for ``ℓ = 0 … lags``, shape ``(lags + 1, d, d)``."""
        lags = _args.integer("lags", lags, minimum=0)
        d = self.d
        mean = W[:d, -1]
        out, M = [], W
        for _ in range(lags + 1):
            out.append(M[:d, :d] - torch.outer(mean, mean))
            M = self.Ubar @ M
        return torch.stack(out)


def heavy_ball_stationary_moments(X: Tensor, y: Tensor, *, eta: float, B: int, beta: float) -> Tensor | None:
    """Heavy-ball SGD's exact stationary ``W`` (see :class:`HeavyBallMoments`), or ``None`` if it diverges."""
    return HeavyBallMoments(X, y, eta=eta, B=B, beta=beta).stationary()


def _sde_generator(lm: LinearMoments, eta: float, c: float) -> Tensor:
    """The linear map ``vec(Z) ↦ vec(dZ/dt)`` of the SDE's second-moment ODE, as a matrix."""
    D = lm.d + 1
    F = lm.drift_matrix()
    cols = []
    for Zb in torch.eye(D * D, dtype=torch.float64).view(D * D, D, D):
        dZ = F @ Zb + Zb @ F.T
        dZ[: lm.d, : lm.d] += eta * c * lm.noise(Zb)
        cols.append(dZ.reshape(-1))
    return torch.stack(cols, dim=1)


def sde_em_moments(X: Tensor, y: Tensor, theta0: Tensor, *, eta: float, B: int, dt: float, steps: int,
                   scheme: str = "with_replacement") -> Tensor:
    """``Z_k`` of the Euler–Maruyama chain of the SDE with step ``dt`` (what :func:`sgdnoise.sde.sgd_sde` simulates).

    ``dt`` is a finite number ``> 0`` and ``steps`` an int ``>= 0``; the result has ``steps + 1`` entries,
    ``Z_0 … Z_steps``. Large finite moments are returned as they are; a non-finite result raises
    ``FloatingPointError``.
    """
    eta = check_learning_rate(eta)
    _check_dt(dt)
    steps = check_steps("steps", steps)
    lm = LinearMoments(X, y)
    _check_theta0(theta0, lm.d)
    c = noise_covariance_factor(lm.n, B, scheme)
    A = torch.eye(lm.d + 1, dtype=torch.float64) + dt * lm.drift_matrix()
    Z = initial_moments(theta0)
    out = [Z]
    for _ in range(steps):
        Zn = A @ Z @ A.T
        Zn[: lm.d, : lm.d] += dt * eta * c * lm.noise(Z)
        Z = Zn
        out.append(Z)
    Z = torch.stack(out)
    _check_finite_moments(Z, f"sde_em_moments with eta={eta}, B={B}, dt={dt}", "step {}", "lower dt (or eta)")
    return Z


def sde_moments(X: Tensor, y: Tensor, theta0: Tensor, *, eta: float, B: int, times,
                scheme: str = "with_replacement", noise: bool = True) -> Tensor:
    """``Z(t)`` of the SDE (``noise=False``: gradient flow) at each time in ``times``, exactly (matrix exponential).

    ``times`` is a non-empty sequence of finite times ``t >= 0``, in any order (each is computed from
    ``t = 0`` independently). A non-finite result raises ``FloatingPointError``.
    """
    eta = check_learning_rate(eta)
    times = _check_times(times)
    noise = _args.flag("noise", noise)
    lm = LinearMoments(X, y)
    _check_theta0(theta0, lm.d)
    c = noise_covariance_factor(lm.n, B, scheme) if noise else 0.0
    M = _sde_generator(lm, eta, c)
    z0 = initial_moments(theta0).reshape(-1)
    D = lm.d + 1
    Z = torch.stack([(torch.linalg.matrix_exp(M * float(t)) @ z0).view(D, D) for t in times])
    what = f"sde_moments with eta={eta}, B={B}" if noise else "gradient_flow_moments"
    _check_finite_moments(Z, what, "times[{}]", "use earlier times" if not noise else "lower eta, raise B or use earlier times")
    return Z


def gradient_flow_moments(X: Tensor, y: Tensor, theta0: Tensor, *, times) -> Tensor:
    """``Z(t)`` of gradient flow (deterministic: ``Z = z zᵀ``)."""
    return sde_moments(X, y, theta0, eta=1.0, B=1, times=times, noise=False)


def expected_loss(X: Tensor, y: Tensor, Z: Tensor) -> Tensor:
    """``E[L_n(θ)]`` for second moments ``Z`` (any leading shape)."""
    _, d = _check_linear_data(X, y)
    if not isinstance(Z, Tensor) or Z.ndim < 2 or tuple(Z.shape[-2:]) != (d + 1, d + 1):
        got = tuple(Z.shape) if isinstance(Z, Tensor) else type(Z).__name__
        raise ValueError(f"Z has shape {got}; need (..., {d + 1}, {d + 1}) (d + 1 with d={d} columns of X)")
    r = torch.cat([X.to(torch.float64), -y.to(torch.float64)[:, None]], dim=1)
    return 0.5 * torch.einsum("ia,...ab,ib->...", r, Z, r) / X.shape[0]
