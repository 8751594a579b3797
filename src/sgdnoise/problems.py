"""Problems: a data set, a model and a per-sample loss, in one shape.

The loss convention, stated once for the whole book: ``loss_fn(output, target)`` returns one loss
per sample, and the empirical risk is their **mean**, ``L_n(θ) = (1/n) Σ_i ℓ(θ; x_i, y_i)``.

* :func:`linear_regression`: Gaussian design ``x ~ N(0, S)``, ``y = xᵀθ_true + ε``,
  ``ε ~ N(0, σ²)``, loss ``ℓ = ½(xᵀθ - y)²``. Everything is in closed form: the per-sample
  gradients, ``Σ_emp(θ)``, the Hessian ``XᵀX/n``, the optimum, and the population ``Σ_pop(θ)``.
* :func:`digits_mlp`: scikit-learn's 8×8 digits (ships with the package, no download), a
  64-128-128-10 tanh MLP and cross-entropy.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from . import _args
from ._args import ArgumentTypeError, show
from .gradients import check_data, check_loss_contract, flat_params, per_sample_losses, set_flat_params
from .sampling import check_generator

__all__ = ["Problem", "check_problem", "LinearRegressionProblem", "lr_draw", "lr_per_sample_grads", "lr_theta_star", "lr_sigma_emp", "lr_sigma_pop", "half_squared_error", "cross_entropy", "linear_regression", "digits_mlp", "mlp"]


def half_squared_error(output: Tensor, target: Tensor) -> Tensor:
    """Per-sample ``½‖f(x) - y‖²``; ``output`` of shape ``(n,)`` or ``(n, k)``."""
    _check_loss_inputs("half_squared_error", output, target)
    out2, tgt2 = output.reshape(output.shape[0], -1), target.reshape(target.shape[0], -1)
    if out2.shape != tgt2.shape:
        raise ValueError(
            f"half_squared_error: output of shape {tuple(output.shape)} and target of shape {tuple(target.shape)} "
            "do not match; they need the same number of samples and of outputs per sample (no broadcasting)"
        )
    return 0.5 * ((out2 - tgt2) ** 2).sum(dim=1)


def cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """Per-sample cross-entropy of logits ``(n, k)`` against class labels ``(n,)``."""
    _check_loss_inputs("cross_entropy", output, target)
    if output.ndim != 2 or target.ndim != 1:
        raise ValueError(f"cross_entropy: output must be (n, k) logits and target (n,) class labels; got shapes "
                         f"{tuple(output.shape)} and {tuple(target.shape)}")
    return nn.functional.cross_entropy(output, target, reduction="none")


def _check_loss_inputs(where: str, output, target) -> None:
    for name, v in (("output", output), ("target", target)):
        if not isinstance(v, Tensor) or v.ndim == 0:
            got = "a 0-d tensor" if isinstance(v, Tensor) else show(v)
            raise ArgumentTypeError(f"{where}: {name} must be a tensor with the sample axis first; got {got}")


@dataclass
class Problem:
    """A data set ``(X, y)``, a model and a per-sample loss ``loss_fn(output, target) -> (n,)``."""

    name: str
    X: Tensor
    y: Tensor
    model: nn.Module
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ArgumentTypeError(f"name={show(self.name)} must be a string, the problem's name")
        check_data(self.X, self.y)
        for name, v in (("X", self.X), ("y", self.y)):
            if v.dtype.is_floating_point or v.dtype.is_complex:
                bad = ~torch.isfinite(v).reshape(v.shape[0], -1).all(dim=1)
                if bool(bad.any()):
                    raise ValueError(f"{name} has non-finite values (NaN or ±inf) in {int(bad.sum())} sample(s), the first "
                                     f"at sample {int(bad.nonzero()[0])}; a problem's data must be finite (SGD on them "
                                     "would report a divergence that is not one)")
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(self.model).__name__}")
        if not callable(self.loss_fn):
            raise TypeError(f"loss_fn must be callable, loss_fn(output, target) -> (n,); got {type(self.loss_fn).__name__}")
        if not isinstance(self.info, dict):
            raise ArgumentTypeError(f"info={show(self.info)} must be a dict (notes about the problem)")
        check_loss_contract(self.model, self.loss_fn, self.X, self.y)

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return flat_params(self.model).numel()

    def theta(self) -> Tensor:
        return flat_params(self.model)

    def set_theta(self, theta: Tensor) -> None:
        set_flat_params(self.model, theta)

    @torch.no_grad()
    def loss(self, idx: Tensor | None = None) -> float:
        """``L_n(θ)`` at the current parameters (or the mean over ``idx``)."""
        X, y = (self.X, self.y) if idx is None else (self.X[idx], self.y[idx])
        return float(per_sample_losses(self.loss_fn, self.model(X), y, X.shape[0]).mean())

    @torch.no_grad()
    def accuracy(self) -> float:
        """Fraction of correctly classified samples (classification problems)."""
        return float((self.model(self.X).argmax(dim=1) == self.y).double().mean())


def check_problem(problem) -> "Problem":
    """``problem`` if it is a :class:`Problem`; else a ``TypeError`` that says how to build one."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a sgdnoise.problems.Problem (data, model and per-sample loss), e.g. "
                        f"Problem(name, X, y, model, loss_fn) or linear_regression(); got {type(problem).__name__}")
    return problem


# ----------------------------------------------------------------------------- linear regression
# Closed forms, written with broadcasting so that many data sets can be handled at once:
# X has shape (..., n, d), y (..., n), theta (..., d).


def _check_lr_shapes(X: Tensor, y: Tensor, theta: Tensor | None = None, *, need_theta: bool = False) -> None:
    _args.tensor("X", X, "a (..., n, d) tensor of inputs")
    _args.tensor("y", y, "a (..., n) tensor of targets")
    if need_theta or theta is not None:
        _args.tensor("theta", theta, "a (..., d) tensor of parameters")
    if X.ndim < 2 or tuple(y.shape) != tuple(X.shape[:-1]):
        raise ValueError(f"X of shape {tuple(X.shape)} and y of shape {tuple(y.shape)} do not match; "
                         "need X (..., n, d) and y (..., n) with the same n")
    if theta is not None and (theta.ndim < 1 or theta.shape[-1] != X.shape[-1]):
        raise ValueError(f"theta has shape {tuple(theta.shape)}; need (..., {X.shape[-1]}), one entry per column of X")


def lr_per_sample_grads(X: Tensor, y: Tensor, theta: Tensor) -> Tensor:
    """``g_i = x_i (x_iᵀθ - y_i)``, shape ``(..., n, d)``."""
    _check_lr_shapes(X, y, theta, need_theta=True)
    return X * ((X @ theta[..., :, None])[..., 0] - y)[..., None]


def lr_theta_star(X: Tensor, y: Tensor) -> Tensor:
    """Least-squares optimum ``(XᵀX)⁻¹ Xᵀy``, shape ``(..., d)``."""
    _check_lr_shapes(X, y)
    Xt = X.transpose(-1, -2)
    return torch.linalg.solve(Xt @ X, (Xt @ y[..., None]))[..., 0]


def lr_sigma_emp(X: Tensor, y: Tensor, theta: Tensor) -> Tensor:
    """``Σ_emp(θ) = (1/n) Σ g_i g_iᵀ - g_n g_nᵀ``, shape ``(..., d, d)``."""
    G = lr_per_sample_grads(X, y, theta)
    gn = G.mean(dim=-2)
    return G.transpose(-1, -2) @ G / X.shape[-2] - gn[..., :, None] * gn[..., None, :]


def lr_sigma_pop(theta: Tensor, theta_true: Tensor, S: Tensor, sigma: float) -> Tensor:
    """Population covariance of ``g = x(xᵀθ - y)`` for ``x ~ N(0, S)``, ``y = xᵀθ_true + ε``.

    With ``r = θ - θ_true`` and Isserlis' theorem, ``Σ_pop(θ) = (rᵀ S r + σ²) S + S r rᵀ S``.
    """
    S = _args.tensor("S", S, "a (..., d, d) design covariance (a tensor)")
    if S.ndim < 2 or S.shape[-1] != S.shape[-2]:
        raise ValueError(f"S has shape {tuple(S.shape)}; need (..., d, d), a square design covariance")
    d = S.shape[-1]
    for name, v in (("theta", theta), ("theta_true", theta_true)):
        _args.tensor(name, v, f"a (..., {d}) tensor")
        if v.ndim < 1 or v.shape[-1] != d:
            raise ValueError(f"{name} has shape {tuple(v.shape)}; need (..., {d}), one entry per row of S")
    if not isinstance(sigma, Tensor):
        sigma = _args.real("sigma", sigma, ge=0, valid="a finite number >= 0 (or a tensor of them)", as_given=True)
    Sr = (S @ (theta - theta_true)[..., :, None])[..., 0]
    quad = ((theta - theta_true) * Sr).sum(-1)
    return (quad + sigma**2)[..., None, None] * S + Sr[..., :, None] * Sr[..., None, :]


def lr_draw(R: int, n: int, d: int, *, sigma: float, S: Tensor | None = None, theta_true: Tensor | None = None,
            generator: torch.Generator, dtype=torch.float64) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``R`` independent data sets at once: returns ``X (R, n, d)``, ``y (R, n)``, ``θ_true``, ``S``."""
    check_generator(generator)
    for name, v in (("R", R), ("n", n), ("d", d)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name}={v!r} must be an int >= 1")
    if _args.real("sigma", sigma, valid="a finite number >= 0 (the label-noise standard deviation)") < 0:
        raise ValueError(f"label-noise sigma={sigma} must be finite and >= 0")
    dtype = _args.float_dtype("dtype", dtype)
    if S is not None:
        _args.tensor("S", S, f"None or a ({d}, {d}) design covariance (a tensor)")
    if theta_true is not None:
        _args.tensor("theta_true", theta_true, f"None or a ({d},) tensor")
    S = torch.eye(d, dtype=dtype) if S is None else S.to(dtype)
    if S.shape != (d, d):
        raise ValueError(f"S has shape {tuple(S.shape)}; need ({d}, {d})")
    theta_true = torch.ones(d, dtype=dtype) if theta_true is None else theta_true.to(dtype)
    if theta_true.shape != (d,):
        raise ValueError(f"theta_true has shape {tuple(theta_true.shape)}; need ({d},)")
    L = torch.linalg.cholesky(S)
    X = torch.randn((R, n, d), generator=generator, dtype=dtype) @ L.T
    y = X @ theta_true + sigma * torch.randn((R, n), generator=generator, dtype=dtype)
    return X, y, theta_true, S


@dataclass
class LinearRegressionProblem(Problem):
    """Linear regression with Gaussian design; closed forms for the quantities of chapter 1."""

    theta_true: Tensor = None
    S: Tensor = None  # design covariance
    sigma: float = 0.0  # label-noise standard deviation

    def per_sample_grads_closed_form(self, theta: Tensor) -> Tensor:
        """``g_i = x_i (x_iᵀθ - y_i)``, shape ``(n, d)``."""
        return lr_per_sample_grads(self.X, self.y, theta)

    def hessian(self) -> Tensor:
        """``∇²L_n = XᵀX / n`` (constant in θ)."""
        return self.X.T @ self.X / self.n

    def theta_star(self) -> Tensor:
        """Least-squares optimum ``argmin L_n = (XᵀX)⁻¹ Xᵀy``."""
        return lr_theta_star(self.X, self.y)

    def sigma_emp(self, theta: Tensor) -> Tensor:
        """``Σ_emp(θ)`` in closed form."""
        return lr_sigma_emp(self.X, self.y, theta)

    def sigma_pop(self, theta: Tensor) -> Tensor:
        """``Σ_pop(θ) = (rᵀ S r + σ²) S + S r rᵀ S`` with ``r = θ - θ_true``."""
        return lr_sigma_pop(theta, self.theta_true, self.S, self.sigma)

    def population_gradient(self, theta: Tensor) -> Tensor:
        """``g(θ) = S (θ - θ_true)``."""
        return self.S @ (theta - self.theta_true)


def linear_regression(
    n: int = 200,
    d: int = 5,
    *,
    sigma: float = 0.5,
    S: Tensor | None = None,
    theta_true: Tensor | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> LinearRegressionProblem:
    """A fresh data set of ``n`` samples ``x ~ N(0, S)``, ``y = xᵀθ_true + N(0, σ²)``.

    The model is ``nn.Linear(d, 1, bias=False)`` initialised at zero, loss ``½(xᵀθ - y)²``.
    Pass ``generator`` to draw many data sets from one stream; otherwise ``seed`` seeds one.
    """
    seed = _args.integer("seed", seed)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(seed)
    X, y, theta_true, S = lr_draw(1, n, d, sigma=sigma, S=S, theta_true=theta_true, generator=gen, dtype=dtype)
    X, y = X[0], y[0]
    model = nn.Linear(d, 1, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.zero_()
    return LinearRegressionProblem(
        name=f"linear regression (n={n}, d={d})",
        X=X,
        y=y,
        model=model,
        loss_fn=half_squared_error,
        theta_true=theta_true,
        S=S,
        sigma=float(sigma),
    )


def mlp(widths: list[int], *, activation: type[nn.Module] = nn.Tanh, generator: torch.Generator, dtype=torch.float32) -> nn.Sequential:
    """A fully connected network; weights and biases ``U(-1/√fan_in, 1/√fan_in)`` from ``generator``."""
    check_generator(generator)
    widths = _args.items("widths", widths, "a list of layer widths (ints >= 1), e.g. [64, 128, 10]")
    _args.function("activation", activation, "activation() -> an nn.Module, e.g. nn.Tanh")
    dtype = _args.float_dtype("dtype", dtype)
    if len(widths) < 2 or any(isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1 for w in widths):
        raise ValueError(f"widths={widths!r} must list at least two layer widths, each an int >= 1")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b).to(dtype)
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            lin.weight.copy_((torch.rand((b, a), generator=generator, dtype=dtype) * 2 - 1) * bound)
            lin.bias.copy_((torch.rand(b, generator=generator, dtype=dtype) * 2 - 1) * bound)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def digits_mlp(
    *, seed: int = 0, n: int | None = None, hidden: int = 128, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> Problem:
    """scikit-learn's digits (1797 images, 8×8, 10 classes) and a 64-``hidden``-``hidden``-10 tanh MLP.

    Pixels are scaled to ``[0, 1]``. ``n`` keeps the first ``n`` images (all by default); ``seed``
    seeds the initialisation.
    """
    from sklearn.datasets import load_digits

    seed = _args.integer("seed", seed)
    hidden = _args.integer("hidden", hidden, minimum=1)
    dtype = _args.float_dtype("dtype", dtype)
    device = None if device is None else _args.device("device", device)
    Xn, yn = load_digits(return_X_y=True)
    if n is not None:
        if not 1 <= _args.integer("n", n, valid=f"None or an int in [1, {len(yn)}]") <= len(yn):
            raise ValueError(f"n={n}; the digits data set has 1 <= n <= {len(yn)} samples")
        Xn, yn = Xn[:n], yn[:n]
    X = torch.as_tensor(Xn / 16.0, dtype=dtype, device=device)
    y = torch.as_tensor(yn, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(seed)
    model = mlp([64, hidden, hidden, 10], generator=gen, dtype=dtype).to(device)
    return Problem(name=f"digits MLP 64-{hidden}-{hidden}-10", X=X, y=y, model=model, loss_fn=cross_entropy)
