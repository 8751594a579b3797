"""Full-batch gradient descent at the edge of stability, and its central flow (Cohen, Damian, Talwalkar, Kolter and
Lee), on a small tanh network with the squared loss.

* :func:`digits_regression` — a fixed problem: the first ``n`` digits images, one-hot targets, and a
  64-``hidden``-10 tanh network written as a function of one flat parameter vector (so that Hessian-vector
  products and the gradient of the sharpness are one ``torch.func`` call each).
* :func:`top_eigenpair` — the Hessian's largest eigenvalue (the *sharpness* ``S``) and its eigenvector, by power
  iteration on Hessian-vector products, warm-started.
* :func:`run_gd` — gradient descent with step ``η``, recording the loss at every step and the sharpness every
  ``record_every`` steps; :func:`run_sgd` the same with minibatches.
* :func:`gradient_flow` — ``dw/dt = −∇L`` in continuous time ``t``, where step ``k`` of gradient descent sits at
  ``t = kη`` (in steps ``τ = t/η``: ``dw/dτ = −η∇L``); small Euler steps.
* :func:`central_flow` — the single-eigenvalue central flow, in the same time ``t``: ``dw/dt = −(∇L + ½σ²∇S)``,
  with ``σ² = 0`` while
  ``S < 2/η`` and, once ``S`` reaches ``2/η``, the ``σ² ≥ 0`` that holds ``S`` at ``2/η`` (``dS/dt = 0``). ``σ²`` is the
  predicted variance of GD's oscillation along the top eigenvector, and the predicted time-averaged loss is
  ``L(w) + ½σ² S(w)``. The gradient of the sharpness is ``∇S = ∇_w (uᵀ H(w) u)`` with the eigenvector ``u`` held
  fixed (Hellmann–Feynman).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.func import grad

from . import _args

__all__ = ["Regression", "digits_regression", "top_eigenpair", "run_gd", "run_sgd", "gradient_flow",
           "central_flow", "Trajectory"]


@dataclass(frozen=True)
class Regression:
    """A flat-parameter tanh network ``64 → hidden → 10`` and its squared loss ``½ mean_i |f(x_i) − y_i|²``."""

    X: Tensor
    Y: Tensor
    hidden: int
    theta0: Tensor

    def split(self, theta: Tensor):
        h, d_in, d_out = self.hidden, self.X.shape[1], self.Y.shape[1]
        sizes = [h * d_in, h, d_out * h, d_out]
        W1, b1, W2, b2 = theta.split(sizes)
        return W1.view(h, d_in), b1, W2.view(d_out, h), b2

    def loss(self, theta: Tensor, X: Tensor | None = None, Y: Tensor | None = None) -> Tensor:
        X = self.X if X is None else X
        Y = self.Y if Y is None else Y
        W1, b1, W2, b2 = self.split(theta)
        out = torch.tanh(X @ W1.T + b1) @ W2.T + b2
        return 0.5 * ((out - Y) ** 2).sum(1).mean()


def digits_regression(*, n: int = 500, hidden: int = 32, seed: int = 0) -> Regression:
    """The first ``n`` digits images (pixels in ``[0, 1]``), one-hot targets, a 64-``hidden``-10 tanh network with
    PyTorch's default initialisation scale (uniform in ``±1/√fan_in``), float64."""
    from sklearn.datasets import load_digits

    n = _args.integer("n", n, minimum=2, maximum=1797)
    hidden = _args.integer("hidden", hidden, minimum=1)
    Xn, yn = load_digits(return_X_y=True)
    X = torch.as_tensor(Xn[:n] / 16.0, dtype=torch.float64)
    Y = torch.nn.functional.one_hot(torch.as_tensor(yn[:n]), 10).to(torch.float64)
    gen = torch.Generator().manual_seed(_args.integer("seed", seed))

    def uniform(shape, fan_in):
        return (2 * torch.rand(shape, generator=gen, dtype=torch.float64) - 1) / math.sqrt(fan_in)

    theta0 = torch.cat([uniform((hidden * 64,), 64), uniform((hidden,), 64), uniform((10 * hidden,), hidden),
                        uniform((10,), hidden)])
    return Regression(X, Y, hidden, theta0)


def _hvp(f, theta: Tensor, v: Tensor) -> Tensor:
    """``H(θ) v`` by differentiating ``⟨∇f(θ), v⟩`` (reverse over reverse)."""
    th = theta.detach().requires_grad_(True)
    g = torch.autograd.grad(f(th), th, create_graph=True)[0]
    return torch.autograd.grad(g @ v, th)[0]


def _grad_sharpness(f, theta: Tensor, u: Tensor) -> Tensor:
    """``∇_θ (uᵀ H(θ) u)`` with ``u`` fixed: the gradient of the top eigenvalue when ``u`` is its unit
    eigenvector."""
    th = theta.detach().requires_grad_(True)
    g = torch.autograd.grad(f(th), th, create_graph=True)[0]
    Hu = torch.autograd.grad(g @ u, th, create_graph=True)[0]
    return torch.autograd.grad(u @ Hu, th)[0]


def top_eigenpair(f, theta: Tensor, u0: Tensor | None = None, *, iters: int = 20, tol: float = 1e-6):
    """The Hessian's top eigenvalue and unit eigenvector at ``theta`` by power iteration from ``u0`` (random if
    None), stopping when the Rayleigh quotient changes by less than ``tol`` relatively. Power iteration finds
    the eigenvalue of largest modulus; on these losses the top of the spectrum is positive and dominates."""
    if u0 is None:
        u0 = torch.randn(theta.shape, generator=torch.Generator().manual_seed(0), dtype=theta.dtype)
    u = u0 / u0.norm()
    lam = float("nan")
    for _ in range(_args.integer("iters", iters, minimum=1)):
        Hu = _hvp(f, theta, u)
        new = float(u @ Hu)
        u = Hu / Hu.norm()
        if abs(new - lam) < tol * abs(new):
            lam = new
            break
        lam = new
    return lam, u


@dataclass(frozen=True)
class Trajectory:
    """A run: ``times`` (in steps), ``loss`` at those times, ``sharpness`` (at ``sharp_times``), and for the
    central flow ``sigma2`` (the predicted oscillation variance) and ``predicted_loss`` (``L + ½σ²S``)."""

    times: np.ndarray
    loss: np.ndarray
    sharp_times: np.ndarray
    sharpness: np.ndarray
    theta: Tensor
    sigma2: np.ndarray | None = None
    predicted_loss: np.ndarray | None = None


def _recorded_run(problem: Regression, update, *, steps: int, record_every: int, loss_every_step: bool,
                  diverged: str | None) -> Trajectory:
    """The loop that :func:`run_gd`, :func:`run_sgd` and :func:`gradient_flow` share: from ``problem.theta0``,
    the sharpness every ``record_every`` steps, the full-batch loss at every step (``loss_every_step``) or at the
    recorded ones, an error naming ``diverged`` if that loss is not finite (no check if None), and
    ``theta ← update(theta)`` between steps."""
    f = problem.loss
    theta, u = problem.theta0.clone(), None
    times, losses, st, sh = [], [], [], []
    for k in range(steps + 1):
        recorded = k % record_every == 0
        if recorded:
            lam, u = top_eigenpair(f, theta, u)
            st.append(k)
            sh.append(lam)
        if loss_every_step or recorded:
            times.append(k)
            losses.append(float(f(theta)))
            if diverged is not None and not math.isfinite(losses[-1]):
                raise FloatingPointError(f"{diverged} diverged at step {k}")
        if k < steps:
            theta = update(theta)
    return Trajectory(np.array(times, float), np.array(losses), np.array(st, float), np.array(sh), theta)


def run_gd(problem: Regression, *, lr: float, steps: int, record_every: int = 10) -> Trajectory:
    """Full-batch gradient descent from ``problem.theta0``."""
    lr = _args.real("lr", lr, gt=0)
    steps = _args.integer("steps", steps, minimum=1)
    record_every = _args.integer("record_every", record_every, minimum=1)
    g = grad(problem.loss)
    return _recorded_run(problem, lambda th: th - lr * g(th), steps=steps, record_every=record_every,
                         loss_every_step=True, diverged=f"gradient descent (lr={lr})")


def run_sgd(problem: Regression, *, lr: float, batch: int, steps: int, record_every: int = 10,
            seed: int = 0) -> Trajectory:
    """Minibatch SGD (batches drawn with replacement) from ``problem.theta0``; the recorded loss and sharpness
    are the full-batch ones, every ``record_every`` steps."""
    lr = _args.real("lr", lr, gt=0)
    batch = _args.integer("batch", batch, minimum=1)
    steps = _args.integer("steps", steps, minimum=1)
    record_every = _args.integer("record_every", record_every, minimum=1)
    g = grad(problem.loss)
    gen = torch.Generator().manual_seed(seed)
    n = problem.X.shape[0]

    def update(theta):
        idx = torch.randint(n, (batch,), generator=gen)
        return theta - lr * g(theta, problem.X[idx], problem.Y[idx])

    return _recorded_run(problem, update, steps=steps, record_every=record_every, loss_every_step=False,
                         diverged=f"SGD (lr={lr})")


def gradient_flow(problem: Regression, *, lr: float, steps: int, substeps: int = 8,
                  record_every: int = 10) -> Trajectory:
    """Gradient flow over the time of ``steps`` steps of size ``lr`` (Euler with ``substeps`` per step)."""
    lr = _args.real("lr", lr, gt=0)
    steps = _args.integer("steps", steps, minimum=1)
    substeps = _args.integer("substeps", substeps, minimum=1)
    record_every = _args.integer("record_every", record_every, minimum=1)
    g = grad(problem.loss)
    h = lr / substeps

    def update(theta):
        for _ in range(substeps):
            theta = theta - h * g(theta)
        return theta

    return _recorded_run(problem, update, steps=steps, record_every=record_every, loss_every_step=True,
                         diverged=None)


def central_flow(problem: Regression, *, lr: float, steps: int, substeps: int = 4, record_every: int = 10,
                 eig_iters: int = 10, eig_tol: float = 1e-6) -> Trajectory:
    """The single-eigenvalue central flow over the time of ``steps`` GD steps (Euler, ``substeps`` per step).

    While ``S < 2/η`` it is gradient flow. Once ``S ≥ 2/η``: ``σ² = max(0, 2(−⟨∇S, ∇L⟩ + (S − 2/η)/h)/|∇S|²)``
    with ``h`` the Euler step, which makes each step land ``S`` back on ``2/η`` to first order; the update is
    ``w ← w − h(∇L + ½σ²∇S)``. The eigenpair is found by power iteration to convergence at the start and then
    tracked with ``eig_iters`` warm-started iterations per Euler step."""
    lr = _args.real("lr", lr, gt=0)
    steps = _args.integer("steps", steps, minimum=1)
    substeps = _args.integer("substeps", substeps, minimum=1)
    f = problem.loss
    g = grad(f)
    theta, u = problem.theta0.clone(), None
    threshold, h = 2 / lr, lr / substeps
    times, losses, st, sh, s2, pred = [], [], [], [], [], []
    for k in range(steps + 1):
        for j in range(substeps if k < steps else 1):
            lam, u = top_eigenpair(f, theta, u, iters=eig_iters if u is not None else 200, tol=eig_tol)
            gL = g(theta)
            sigma2 = 0.0
            if lam >= threshold:
                gS = _grad_sharpness(f, theta, u.detach())
                sigma2 = max(0.0, 2 * (-float(gS @ gL) + (lam - threshold) / h) / float(gS @ gS))
            if j == 0 and k % record_every == 0:
                L = float(f(theta))
                times.append(k)
                losses.append(L)
                st.append(k)
                sh.append(lam)
                s2.append(sigma2)
                pred.append(L + 0.5 * sigma2 * lam)
            if k < steps:
                step = gL if sigma2 == 0.0 else gL + 0.5 * sigma2 * gS
                theta = theta - h * step
        if not torch.isfinite(theta).all():
            raise FloatingPointError(f"the central flow became non-finite at step {k}")
    return Trajectory(np.array(times, float), np.array(losses), np.array(st, float), np.array(sh), theta,
                      np.array(s2), np.array(pred))
