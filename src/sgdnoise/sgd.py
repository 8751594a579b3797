"""Plain SGD on a :class:`~sgdnoise.problems.Problem`, with the update of the notes' Algorithm 1:

    θ_{k+1} = θ_k - η_k g_{B_k}(θ_k),

(optionally with heavy-ball momentum). Batches come from :func:`sgdnoise.sampling.sample_batches`
with an explicit generator. A run that diverges stops with an error naming ``η``, ``B`` and the step;
no partial result is returned as if it were complete.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .gradients import flat_params
from .problems import Problem
from .sampling import batches_per_epoch, check_batch_size, sample_batches

__all__ = ["SGDRun", "DivergenceError", "check_learning_rate", "train_sgd"]


class DivergenceError(FloatingPointError):
    """SGD produced a non-finite or exploding loss."""


def check_learning_rate(eta) -> float:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta <= 0:
        raise ValueError(f"learning rate eta={eta!r} must be a finite number > 0")
    return float(eta)


@dataclass
class SGDRun:
    """What :func:`train_sgd` recorded: losses at every step, parameter snapshots where asked."""

    eta: float
    B: int
    scheme: str
    losses: list[float] = field(default_factory=list)  # minibatch loss before each step
    snapshot_steps: list[int] = field(default_factory=list)
    snapshots: list[Tensor] = field(default_factory=list)


def train_sgd(
    problem: Problem,
    *,
    eta: float,
    B: int,
    steps: int,
    scheme: str = "with_replacement",
    generator: torch.Generator,
    momentum: float = 0.0,
    snapshot_at: list[int] | None = None,
    explode_factor: float = 1e6,
    callback: Callable[[int, Problem], None] | None = None,
) -> SGDRun:
    """Run ``steps`` SGD steps in place on ``problem.model``.

    ``snapshot_at`` lists steps ``k`` (``0 ≤ k ≤ steps``) at which ``θ_k`` is stored. The run stops
    with :class:`DivergenceError` when the minibatch loss becomes non-finite or exceeds
    ``explode_factor`` times its initial full-data value.
    """
    eta = check_learning_rate(eta)
    n = problem.n
    check_batch_size(B, n, scheme)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative int")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum={momentum} must lie in [0, 1)")
    snaps = sorted(set(snapshot_at or []))
    if snaps and (snaps[0] < 0 or snaps[-1] > steps):
        raise ValueError(f"snapshot steps must lie in [0, {steps}]; got {snaps[0]}..{snaps[-1]}")
    run = SGDRun(eta=eta, B=B, scheme=scheme)
    params = [p for p in problem.model.parameters() if p.requires_grad]
    velocity = [torch.zeros_like(p) for p in params]
    scale = max(problem.loss(), 1e-12)
    chunk = max(1, batches_per_epoch(n, B)) if scheme == "reshuffling" else 1024
    batches = torch.empty((0, B), dtype=torch.long)
    pos = 0
    snap_iter = iter(snaps)
    next_snap = next(snap_iter, None)
    for k in range(steps + 1):
        if k == next_snap:
            run.snapshot_steps.append(k)
            run.snapshots.append(flat_params(problem.model))
            next_snap = next(snap_iter, None)
        if k == steps:
            break
        if pos == len(batches):
            batches = sample_batches(n, B, chunk, scheme, generator).to(problem.X.device)
            pos = 0
        idx = batches[pos]
        pos += 1
        loss = problem.loss_fn(problem.model(problem.X[idx]), problem.y[idx]).mean()
        value = float(loss.detach())
        if not math.isfinite(value) or value > explode_factor * scale:
            raise DivergenceError(
                f"SGD diverged at step {k}: minibatch loss {value:.3g} (initial loss {scale:.3g}) with "
                f"eta={eta}, B={B}, scheme={scheme!r}; lower eta or raise B"
            )
        run.losses.append(value)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, g, v in zip(params, grads, velocity):
                if momentum:
                    v.mul_(momentum).add_(g)
                    g = v
                p.sub_(eta * g)
        if callback is not None:
            callback(k, problem)
    return run
