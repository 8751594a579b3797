"""What each assumption of the SDE picture does to one number: least squares' stationary excess loss.

Chapter 4 ranks the assumptions behind SGD's SDE. A ranking is a measurement only when every row is in one
unit; here the unit is the relative change of the stationary excess training loss
``E[L_n(θ)] − min L_n`` of SGD on linear regression, caused by violating one assumption while everything
else is held fixed. Each row compares two processes that differ in that one assumption:

- **η small**: SGD at η (with replacement) against its SDE (η → 0 with η/B fixed); both exact.
- **B ≪ n**: SGD without replacement against SGD with replacement; both exact.
- **no auto-correlation (reshuffling)**: SGD with random reshuffling (Monte Carlo) against SGD without
  replacement (exact): each reshuffled batch is drawn without replacement too, so this pair differs only in
  the dependence between the batches of an epoch.
- **momentum, through the rescaled SDE**: heavy-ball SGD (η, β) against the SDE at η/(1 − β); both exact.
  This row measures how well the rescaling describes heavy ball, finite-step error at the effective rate
  included, not the effect of the momentum's auto-correlation alone.
- **Σ constant**: the SDE with Σ(θ) against the SDE with Σ(θ*) frozen (a Lyapunov equation); both exact.
- **Gaussian noise**: SGD (exact) against gradient descent plus Gaussian noise of SGD's conditional
  covariance (Monte Carlo).

The Gaussian row is zero exactly, not only within its standard error: one step's second moment depends on
the noise only through its conditional covariance, which the Gaussian imitation matches, and on least
squares the gradient is affine and Σ(θ) quadratic in θ, so the second moments obey a closed recursion,
the same for both. The Monte-Carlo row measures that consequence on a process the exact
code does not model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from . import exact
from .gradients import check_data
from .sampling import check_batch_size, check_generator
from .sgd import check_learning_rate, check_momentum, check_steps

__all__ = ["excess_loss", "reshuffled_excess_loss", "gaussian_imitation_excess_loss", "frozen_noise_excess_loss",
           "assumption_effects"]


def _minimum(X: Tensor, y: Tensor) -> tuple[Tensor, float, Tensor]:
    H = X.T @ X / X.shape[0]
    theta_star = torch.linalg.solve(H, X.T @ y / X.shape[0])
    return theta_star, float(((X @ theta_star - y) ** 2).mean() / 2), H


def excess_loss(X: Tensor, y: Tensor, Z: Tensor | None) -> float:
    """``E[L_n] − min L_n`` under the second moments ``Z`` (as returned by :mod:`sgdnoise.exact`); ``inf`` when
    ``Z`` is ``None`` (the second moments diverge)."""
    if Z is None:
        return math.inf
    _, L_star, _ = _minimum(X, y)
    return float(exact.expected_loss(X, y, Z)) - L_star


def frozen_noise_excess_loss(X: Tensor, y: Tensor, *, eta: float, B: int) -> float:
    """The stationary excess loss of the SDE with its noise frozen at the minimum, ``Σ(θ*)/B``: an
    Ornstein–Uhlenbeck process whose covariance ``C`` solves ``HC + CH = (η/B) Σ(θ*)``; returns ``tr(HC)/2``."""
    import scipy.linalg

    eta = check_learning_rate(eta)
    n = check_data(X, y)
    check_batch_size(B, n, "with_replacement")
    theta_star, _, H = _minimum(X, y)
    G = X * (X @ theta_star - y)[:, None]
    Gc = G - G.mean(0)
    sigma = (Gc.T @ Gc / n).numpy()
    C = scipy.linalg.solve_continuous_lyapunov(H.numpy(), eta / B * sigma)
    return 0.5 * float(np.trace(H.numpy() @ C))


def _chain_mean(values: Tensor) -> tuple[float, float]:
    """Mean over chains of each chain's time average, and its standard error (chains are independent)."""
    per_chain = values.mean(0)
    return float(per_chain.mean()), float(per_chain.std() / math.sqrt(per_chain.numel()))


def _check_mc(chains, epochs, burn):
    chains, epochs, burn = check_steps("chains", chains), check_steps("epochs", epochs), check_steps("burn", burn)
    if chains < 2:
        raise ValueError(f"chains={chains}; need at least 2 for a standard error")
    if burn >= epochs:
        raise ValueError(f"burn={burn} must be smaller than epochs={epochs}")
    return chains, epochs, burn


def reshuffled_excess_loss(X: Tensor, y: Tensor, *, eta: float, B: int, chains: int, epochs: int, burn: int,
                           generator: torch.Generator) -> tuple[float, float]:
    """SGD with random reshuffling (each epoch a fresh permutation, cut into ``n/B`` batches) from the
    minimum: the stationary excess loss averaged over every step after ``burn`` epochs, with its standard
    error over ``chains`` independent chains. ``B`` must divide ``n``."""
    eta = check_learning_rate(eta)
    n = check_data(X, y)
    check_batch_size(B, n, "reshuffling")
    check_generator(generator)
    chains, epochs, burn = _check_mc(chains, epochs, burn)
    if n % B:
        raise ValueError(f"B={B} must divide n={n} for whole epochs of reshuffled batches")
    theta_star, _, H = _minimum(X, y)
    theta = theta_star.expand(chains, -1).clone()
    out = []
    for epoch in range(epochs):
        perm = torch.argsort(torch.rand(chains, n, generator=generator, dtype=X.dtype), dim=1)
        for j in range(n // B):
            idx = perm[:, j * B:(j + 1) * B]
            xb, yb = X[idx], y[idx]
            residual = (xb @ theta[:, :, None])[..., 0] - yb
            theta = theta - eta * (xb * residual[..., None]).mean(1)
            if epoch >= burn:
                e = theta - theta_star
                out.append(0.5 * ((e @ H) * e).sum(1))
    if not torch.isfinite(theta).all():
        raise FloatingPointError(f"reshuffled SGD diverged at eta={eta}, B={B}; lower eta")
    return _chain_mean(torch.stack(out))


def gaussian_imitation_excess_loss(X: Tensor, y: Tensor, *, eta: float, B: int, chains: int, epochs: int, burn: int,
                                   generator: torch.Generator, scale: float = 1.0) -> tuple[float, float]:
    """Gradient descent plus Gaussian noise with SGD's conditional covariance ``Σ(θ)/B`` at every step (what
    SGD with replacement would add, made Gaussian), from the minimum; ``epochs`` counts blocks of ``n/B``
    steps, as for :func:`reshuffled_excess_loss`. ``scale`` multiplies the covariance (1 is the imitation;
    anything else is a deliberately wrong variant, which the tests use)."""
    eta = check_learning_rate(eta)
    n = check_data(X, y)
    check_batch_size(B, n, "with_replacement")
    check_generator(generator)
    chains, epochs, burn = _check_mc(chains, epochs, burn)
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale={scale!r}; expected a positive number (1 for the imitation)")
    theta_star, _, H = _minimum(X, y)
    d = X.shape[1]
    theta = theta_star.expand(chains, -1).clone()
    jitter = 1e-14 * torch.eye(d, dtype=X.dtype)
    out = []
    for epoch in range(epochs):
        for _ in range(max(n // B, 1)):
            residual = X @ theta.T - y[:, None]  # (n, C)
            G = X[:, None, :] * residual[:, :, None]  # per-sample gradients, (n, C, d)
            g = G.mean(0)
            Gc = G - g
            cov = torch.einsum("ncd,nce->cde", Gc, Gc) / n * (scale / B)
            z = torch.randn(chains, d, 1, generator=generator, dtype=X.dtype)
            theta = theta - eta * (g + (torch.linalg.cholesky(cov + jitter) @ z)[..., 0])
            if epoch >= burn:
                e = theta - theta_star
                out.append(0.5 * ((e @ H) * e).sum(1))
    if not torch.isfinite(theta).all():
        raise FloatingPointError(f"the Gaussian imitation diverged at eta={eta}, B={B}; lower eta")
    return _chain_mean(torch.stack(out))


def assumption_effects(X: Tensor, y: Tensor, *, eta: float, B: int, beta: float, chains: int, epochs: int, burn: int,
                       generator: torch.Generator) -> list[dict]:
    """One row per assumption (see the module docstring): the stationary excess loss with the assumption
    violated and with it satisfied, and the relative effect ``violated / satisfied − 1`` with its standard
    error (zero for the exact rows). ``beta`` is the momentum of the heavy-ball row."""
    eta = check_learning_rate(eta)
    beta = check_momentum(beta)
    if not 0 < beta < 1:
        raise ValueError(f"beta={beta!r}; the momentum row needs 0 < beta < 1")
    sgd = excess_loss(X, y, exact.sgd_stationary_moments(X, y, eta=eta, B=B))
    rows = []

    def add(assumption, violated, satisfied, value, reference, se=0.0):
        effect = value / reference - 1
        rows.append({"assumption": assumption, "violated": violated, "satisfied": satisfied,
                     "excess loss, violated": value, "excess loss, satisfied": reference,
                     "relative effect": effect, "± SE": se / reference})

    add("η small", f"SGD at η = {eta:g}", "its SDE (η → 0, η/B fixed)", sgd,
        excess_loss(X, y, exact.sde_stationary_moments(X, y, eta=eta, B=B)))
    add("B ≪ n", "SGD without replacement", "SGD with replacement",
        excess_loss(X, y, exact.sgd_stationary_moments(X, y, eta=eta, B=B, scheme="without_replacement")), sgd)
    m, se = reshuffled_excess_loss(X, y, eta=eta, B=B, chains=chains, epochs=epochs, burn=burn, generator=generator)
    without = excess_loss(X, y, exact.sgd_stationary_moments(X, y, eta=eta, B=B, scheme="without_replacement"))
    add("no auto-correlation (reshuffling)", "SGD with random reshuffling", "SGD without replacement", m, without, se)
    W = exact.heavy_ball_stationary_moments(X, y, eta=eta, B=B, beta=beta)  # lifted state (θ, v, 1)
    d = X.shape[1]
    keep = list(range(d)) + [2 * d]
    hb = excess_loss(X, y, None if W is None else W[keep][:, keep])
    add("momentum, through the rescaled SDE", f"heavy ball, β = {beta:g}", f"the SDE at η/(1 − β) = {eta / (1 - beta):g}", hb,
        excess_loss(X, y, exact.sde_stationary_moments(X, y, eta=eta / (1 - beta), B=B)))
    add("Σ constant", "SDE with Σ(θ)", "SDE with Σ(θ*)",
        excess_loss(X, y, exact.sde_stationary_moments(X, y, eta=eta, B=B)), frozen_noise_excess_loss(X, y, eta=eta, B=B))
    m, se = gaussian_imitation_excess_loss(X, y, eta=eta, B=B, chains=chains, epochs=epochs, burn=burn,
                                           generator=generator)
    add("Gaussian noise", "SGD", "GD + Gaussian noise of SGD's covariance", sgd, m, se * sgd / m)
    return rows
