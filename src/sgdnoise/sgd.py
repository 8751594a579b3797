"""Plain SGD on a :class:`~sgdnoise.problems.Problem`, with the update of the notes' Algorithm 1:

    θ_{k+1} = θ_k - η_k g_{B_k}(θ_k),

(optionally with heavy-ball momentum). Batches come from :func:`sgdnoise.sampling.sample_batches`
with an explicit generator. A run that diverges stops with an error naming ``η``, ``B`` and the step;
no partial result is returned as if it were complete.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from . import _args
from ._args import ArgumentTypeError, as_int, as_real, flag, items, show, tensor
from .gradients import check_data, flat_params, per_sample_losses, set_flat_params
from .problems import Problem, check_problem
from .sampling import batches_per_epoch, check_batch_size, check_generator, sample_batches

__all__ = ["SGDRun", "DivergenceError", "check_learning_rate", "train_sgd", "ChainsRun", "run_chains", "flat_loss_fn", "flat_grad_fn", "svag_coefficients", "linear_regression_chains", "check_bounded", "parameter_batch"]


class DivergenceError(FloatingPointError):
    """SGD produced a non-finite or exploding loss."""


def check_learning_rate(eta) -> float:
    """``eta`` as a ``float`` if it is a finite number ``> 0``; else a ``ValueError`` naming it."""
    return _args.real("learning rate eta", eta, gt=0)


def check_momentum(momentum) -> float:
    """The heavy-ball coefficient as a ``float`` in ``[0, 1)``; else an error naming it."""
    return _args.real("momentum", momentum, ge=0, lt=1)


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
    ``explode_factor`` times its initial full-data value; the model's parameters are then restored to
    their values before the run, so a diverged run leaves nothing half-trained behind.
    """
    eta = check_learning_rate(eta)
    n = check_problem(problem).n
    check_batch_size(B, n, scheme)
    check_generator(generator)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, callback(step, problem), or None; got {type(callback).__name__}")
    steps = check_steps("steps", steps)
    momentum = check_momentum(momentum)
    snaps = _check_step_list("snapshot_at", [] if snapshot_at is None else snapshot_at, steps)
    explode_factor = check_threshold("explode_factor", explode_factor)
    theta_start = flat_params(problem.model)
    try:
        return _train_sgd(problem, eta, B, steps, scheme, generator, momentum, snaps, explode_factor, callback)
    except DivergenceError:
        set_flat_params(problem.model, theta_start)  # a diverged run leaves the model as it found it
        raise


def _train_sgd(problem, eta, B, steps, scheme, generator, momentum, snaps, explode_factor, callback) -> SGDRun:
    n = problem.n
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
            final = problem.loss()  # the last update is checked too, on the full data
            if not math.isfinite(final) or final > explode_factor * scale:
                raise DivergenceError(
                    f"SGD diverged in its last step ({steps - 1}): full-data loss {final:.3g} (initial loss "
                    f"{scale:.3g}) with eta={eta}, B={B}, scheme={scheme!r}; lower eta or raise B"
                )
            break
        if pos == len(batches):
            batches = sample_batches(n, B, chunk, scheme, generator).to(problem.X.device)
            pos = 0
        idx = batches[pos]
        pos += 1
        loss = per_sample_losses(problem.loss_fn, problem.model(problem.X[idx]), problem.y[idx], len(idx)).mean()
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


# ----------------------------------------------------------------------------- many chains at once
def _pieces_loss(problem: Problem):
    """``(sizes, loss)`` with ``loss(pieces, X, y, w) = Σ_i w_i ℓ_i`` at the trainable tensors ``pieces``
    (one per trainable parameter, in ``model.parameters()`` order), via ``torch.func.functional_call``."""
    from torch.func import functional_call

    model = check_problem(problem).model
    trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    names, shapes = [k for k, _ in trainable], [p.shape for _, p in trainable]
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss(pieces, X, y, w):
        params = {k: t.view(shape) for k, t, shape in zip(names, pieces, shapes)}
        out = functional_call(model, {**params, **frozen, **buffers}, (X,))
        return (per_sample_losses(problem.loss_fn, out, y, X.shape[0]) * w).sum()

    return [p.numel() for _, p in trainable], loss


def flat_loss_fn(problem: Problem):
    """``f(theta, X, y, w) = Σ_i w_i ℓ_i``: the weighted loss of ``problem.model`` at a flat ``theta``.

    Can be ``vmap``-ed over chains (a batch of parameter vectors) and differentiated with
    ``torch.func.grad``; ``w = 1/n`` gives the mean loss.
    """
    sizes, loss = _pieces_loss(problem)
    d = sum(sizes)

    def f(theta, X, y, w):
        if not isinstance(theta, Tensor) or theta.ndim != 1 or theta.shape[0] != d:
            error = ValueError if isinstance(theta, Tensor) else ArgumentTypeError
            raise error(f"theta must be a flat parameter vector of shape ({d},) (vmap over a batch of them); "
                        f"got {_shape(theta)}")
        if not isinstance(w, Tensor) and as_real(w) is None:
            raise ArgumentTypeError(f"w={show(w)} must be the per-sample weights: a tensor of shape (n,) or a number")
        return loss(theta.split(sizes), X, y, w)

    return f


def flat_grad_fn(problem: Problem, in_dims=(0, 0, 0, None)):
    """``(theta (C, d), X, y, w) ↦ ∇_θ Σ_i w_i ℓ_i`` for ``C`` parameter vectors at once, shape ``(C, d)``.

    Differentiates with respect to the per-parameter tensors (not slices of one flat vector, whose
    backward would materialise a ``C × d`` zero array per parameter) and concatenates the result.
    """
    from torch.func import grad, vmap

    if not (isinstance(in_dims, tuple) and len(in_dims) == 4
            and all(d is None or as_int(d) is not None for d in in_dims)):
        raise ArgumentTypeError(f"in_dims={show(in_dims)} must be a tuple of 4 entries, each None or an int: the "
                                "vmap axis of (theta, X, y, w), e.g. (0, 0, 0, None)")
    sizes, loss = _pieces_loss(problem)
    g = vmap(grad(loss), in_dims=in_dims)

    def grad_fn(theta, X, y, w):
        pieces = tuple(t.contiguous() for t in theta.split(sizes, dim=1))
        return torch.cat([t.reshape(theta.shape[0], -1) for t in g(pieces, X, y, w)], dim=1)

    return grad_fn


def parameter_batch(problem: Problem, theta0: Tensor, letter: str = "C") -> Tensor:
    """A copy of ``theta0`` as a ``(letter, d)`` batch of parameter vectors on the problem's device and dtype."""
    if not isinstance(letter, str):
        raise ArgumentTypeError(f"letter={show(letter)} must be a string: the name of the batch axis in messages")
    d = check_problem(problem).d
    tensor("theta0", theta0, f"a tensor of starting points, shape ({letter}, {d}) or ({d},)")
    dtype = next(problem.model.parameters()).dtype
    theta = theta0.detach().clone().to(device=problem.X.device, dtype=dtype)
    if theta.ndim == 1:
        theta = theta[None]
    if theta.ndim != 2 or theta.shape[1] != d:
        raise ValueError(f"theta0 has shape {tuple(theta0.shape)}; need ({letter}, {d}) or ({d},)")
    return theta


def check_threshold(name: str, value) -> float:
    """A divergence threshold must be a positive number (``inf``: stop only on non-finite values)."""
    return _args.real(name, value, gt=0, finite=False, valid="a positive number (inf stops only on non-finite values)")


def check_steps(name: str, value) -> int:
    """A step count must be a non-negative int."""
    return _args.integer(name, value, minimum=0, valid="a non-negative int")


def _check_step_list(name: str, values, steps: int) -> list[int]:
    """Steps as sorted unique ints in ``[0, steps]``; integer numpy scalars and 0-d tensors count as ints."""
    values = items(name, values, f"a sequence of ints in [0, {steps}]")
    ints = [as_int(v) for v in values]
    if any(k is None or not 0 <= k <= steps for k in ints):
        raise ValueError(f"{name}={show(values)} must hold ints in [0, {steps}]")
    return sorted(set(ints))


def check_bounded(theta: Tensor, explode: float, what: str) -> None:
    """Raise :class:`DivergenceError` (message ``what``) if ``theta`` is non-finite or exceeds ``explode``."""
    tensor("theta", theta)
    if not isinstance(what, str):
        raise ArgumentTypeError(f"what={show(what)} must be a string: the message, with {{size}} for the largest "
                                "|theta|")
    check_threshold("explode", explode)
    lo, hi = torch.aminmax(theta)
    size = max(-float(lo), float(hi))
    if not math.isfinite(size) or size > explode:
        raise DivergenceError(what.format(size=size))


def censor_diverged(theta: Tensor, explode: float, diverged: np.ndarray, step: int) -> Tensor:
    """The ``on_divergence="censor"`` counterpart of :func:`check_bounded`: rows of ``theta`` (paths or chains)
    that are non-finite or exceed ``explode`` become NaN, and ``diverged[row]`` records ``step`` the first time
    (it stays ``-1`` for the others). Returns ``theta``; ``diverged`` is updated in place."""
    bad = ~(theta.abs() <= explode).all(dim=1)  # also catches NaN
    if bool(bad.any()):
        new = bad.cpu().numpy() & (diverged < 0)
        diverged[new] = step
        theta = torch.where(bad[:, None], torch.full_like(theta, math.nan), theta)
    return theta


def svag_coefficients(l: int) -> tuple[float, float]:
    """SVAG's weights ``((1+√(2l-1))/2, (1-√(2l-1))/2)``: they sum to 1 and their squares to ``l``,
    so ``c₁ g_{B_1} + c₂ g_{B_2}`` (independent batches) is unbiased with ``l`` times the noise covariance."""
    if isinstance(l, bool) or not isinstance(l, numbers.Real) or not 1 <= l < math.inf:
        raise ValueError(f"l={l!r} must be a finite number >= 1 (1 is plain SGD)")
    r = math.sqrt(2 * l - 1)
    return (1 + r) / 2, (1 - r) / 2


@dataclass
class ChainsRun:
    """What :func:`run_chains` recorded at the recorded steps: iterates ``thetas`` ``(R, C, d)``; with
    ``record_loss``, the full-data losses ``losses`` ``(R, C)``; with ``record_noise``, the noise draws
    ``noise`` ``(R', C, d)``, ``ξ_k = g_n(θ_k) - ĝ_k`` for the gradient estimate ``ĝ_k`` actually used at
    step ``k`` (``R' = R`` minus the last step if it is the final one, where no step is taken). With
    ``on_divergence="censor"``, ``diverged`` ``(C,)``: the step (in units of ``η``) after which a chain left
    the finite range, ``-1`` if never; its later records are NaN."""

    eta: float
    B: int
    scheme: str
    record_steps: list[int]
    thetas: Tensor
    svag_l: int = 1
    losses: Tensor | None = None
    noise: Tensor | None = None
    diverged: "np.ndarray | None" = None


def run_chains(
    problem: Problem,
    theta0: Tensor,
    *,
    eta: float,
    B: int,
    steps: int,
    scheme: str = "with_replacement",
    generator: torch.Generator,
    momentum: float = 0.0,
    record_steps: list[int] | None = None,
    svag_l: int = 1,
    explode: float = 1e8,
    record_loss: bool = False,
    record_noise: bool = False,
    explode_loss: float = 1e6,
    on_divergence: str = "raise",
) -> ChainsRun:
    """Run ``C`` independent SGD chains at once, from ``theta0`` of shape ``(C, d)``.

    Each chain draws its own minibatches (``scheme``), and the gradients of all chains are computed
    in one vectorised call (``torch.func.vmap`` over chains). With ``svag_l = l > 1`` the chains run
    SVAG (Li, Malladi & Arora 2021): step ``η/l`` and gradient
    ``((1+√(2l-1))/2) g_{B_1} + ((1-√(2l-1))/2) g_{B_2}`` from two independent batches, whose noise
    covariance is ``l`` times SGD's; ``l = 1`` is plain SGD. ``steps`` counts SGD-time units of
    ``η``: SVAG takes ``l · steps`` steps, and ``record_steps`` refer to multiples of ``η``.

    A chain whose parameters become non-finite, or exceed ``explode`` in absolute value, stops the
    run with :class:`DivergenceError` naming ``η``, ``B`` and the step; with ``record_loss`` so does a
    recorded full-data loss that is non-finite or above ``explode_loss`` times the largest initial one.
    With ``on_divergence="censor"`` (not with ``record_loss``) such a chain is stopped instead: it is NaN from
    that step on, the others go on unaffected (their gradients are computed independently, so their draws and
    iterates are those of a run without it), and ``ChainsRun.diverged`` gives the step.
    ``record_noise`` stores the gradient noise of the steps taken at the recorded steps (one full-data
    gradient per chain per recorded step).
    """
    eta = check_learning_rate(eta)
    n = check_problem(problem).n
    check_batch_size(B, n, scheme)
    check_generator(generator)
    if isinstance(svag_l, bool) or not isinstance(svag_l, int) or svag_l < 1:
        raise ValueError(f"svag_l={svag_l!r} must be an int >= 1 (1 is plain SGD)")
    if svag_l > 1 and momentum:
        raise ValueError("SVAG is defined for plain SGD; use momentum=0 with svag_l > 1")
    momentum = check_momentum(momentum)
    steps = check_steps("steps", steps)
    explode, explode_loss = check_threshold("explode", explode), check_threshold("explode_loss", explode_loss)
    theta = parameter_batch(problem, theta0, "C")
    C = theta.shape[0]
    record = _check_step_list("record_steps", record_steps if record_steps is not None else [steps], steps)
    record_loss, record_noise = flag("record_loss", record_loss), flag("record_noise", record_noise)
    if on_divergence not in ("raise", "censor"):
        raise ValueError(f"on_divergence={show(on_divergence)}; valid values are ('raise', 'censor')")
    censor = on_divergence == "censor"
    if censor and record_loss:
        raise ValueError("on_divergence='censor' cannot be combined with record_loss=True (the loss check stops the run)")
    diverged = np.full(C, -1, dtype=np.int64) if censor else None
    if not record:
        raise ValueError("record_steps is empty; record at least one step (the default records the last)")

    w = torch.full((B,), 1.0 / B, dtype=theta.dtype, device=theta.device)
    grad_chains = flat_grad_fn(problem)
    X, y = problem.X, problem.y
    l = svag_l
    c1, c2 = svag_coefficients(l)
    lr = eta / l
    velocity = torch.zeros_like(theta)
    total_steps = steps * l

    per_epoch = batches_per_epoch(n, B)
    epoch = {"batches": None, "pos": per_epoch}

    def next_batches() -> Tensor:
        if scheme != "reshuffling":
            return sample_batches(n, B, C, scheme, generator).to(X.device)
        if epoch["pos"] == per_epoch:
            # one fresh uniform permutation per chain (argsort of i.i.d. uniform keys), cut into batches
            perms = torch.rand((C, n), generator=generator).argsort(dim=1)
            epoch["batches"] = perms[:, : per_epoch * B].view(C, per_epoch, B).to(X.device)
            epoch["pos"] = 0
        epoch["pos"] += 1
        return epoch["batches"][:, epoch["pos"] - 1]

    full_w = torch.full((n,), 1.0 / n, dtype=theta.dtype, device=theta.device)
    if record_loss:
        from torch.func import vmap

        loss_chains = vmap(flat_loss_fn(problem), in_dims=(0, None, None, None))
    if record_noise:
        full_grad_chains = flat_grad_fn(problem, in_dims=(0, None, None, None))
    out, losses, noise = [], [], []
    loss_scale = None
    rec_iter = iter(record)
    nxt = next(rec_iter, None)
    for k in range(total_steps + 1):
        recording = k % l == 0 and nxt is not None and k // l == nxt
        if recording:
            out.append(theta.clone())
            nxt = next(rec_iter, None)
            if record_loss:
                lk = loss_chains(theta, X, y, full_w).detach()
                loss_scale = float(lk.max()) if loss_scale is None else loss_scale
                if not torch.isfinite(lk).all() or float(lk.max()) > explode_loss * max(loss_scale, 1e-12):
                    raise DivergenceError(f"SGD chains diverged at step {k // l}: full-data loss "
                                          f"{float(lk.max()):.3g} (initial {loss_scale:.3g}) with eta={eta}, B={B}, "
                                          f"scheme={scheme!r}, svag_l={l}; lower eta or raise B")
                losses.append(lk)
        if k == total_steps:
            break
        idx = next_batches()
        g = grad_chains(theta, X[idx], y[idx], w)
        if l > 1:
            idx2 = next_batches()
            g = c1 * g + c2 * grad_chains(theta, X[idx2], y[idx2], w)
        if recording and record_noise:
            noise.append(full_grad_chains(theta, X, y, full_w) - g)
        if momentum:
            velocity.mul_(momentum).add_(g)
            g = velocity
        theta = theta - lr * g
        if censor:  # a stopped chain's velocity is NaN too, through its NaN gradient
            theta = censor_diverged(theta, explode, diverged, k // l + 1)
            continue
        check_bounded(theta, explode, f"SGD chains diverged at step {k} (of {total_steps}): parameters reached "
                      f"{{size:.3g}} with eta={eta}, B={B}, scheme={scheme!r}, svag_l={l}; lower eta or raise B")
    return ChainsRun(eta=eta, B=B, scheme=scheme, record_steps=record, thetas=torch.stack(out), svag_l=l,
                     losses=torch.stack(losses) if record_loss else None,
                     noise=torch.stack(noise) if record_noise and noise else None, diverged=diverged)


def linear_regression_chains(X: Tensor, y: Tensor, theta0: Tensor, *, eta: float, B: int, steps: int,
                             generator: torch.Generator, record_from: int = 0, record_every: int = 1,
                             momentum: float = 0.0) -> Tensor:
    """Many SGD chains on linear regression with closed-form gradients (batches with replacement).

    ``θ ← θ - η (A_B θ - b_B)`` with ``A_B``, ``b_B`` the batch means of ``x_i x_iᵀ`` and ``x_i y_i``; much
    faster than :func:`run_chains` for this one model. With ``momentum = β > 0``, heavy ball as in
    :func:`train_sgd`: ``v ← βv + g_B``, ``θ ← θ - ηv``, from ``v = 0``. ``theta0`` is ``(C, d)``; returns the iterates at
    steps ``record_from, record_from + record_every, …`` as ``(R, C, d)``. Raises
    :class:`DivergenceError` if a chain becomes non-finite or exceeds 1e8 in absolute value.
    """
    eta = check_learning_rate(eta)
    n = check_data(X, y)
    if X.ndim != 2 or y.ndim != 1:
        raise ValueError(f"X must be (n, d) and y (n,); got shapes {tuple(X.shape)} and {tuple(y.shape)}")
    d = X.shape[1]
    check_batch_size(B, n, "with_replacement")
    check_generator(generator)
    tensor("theta0", theta0, f"a (C, {d}) tensor of starting points")
    if theta0.ndim != 2 or theta0.shape[1] != d:
        raise ValueError(f"theta0 has shape {tuple(theta0.shape)}; need (C, {d})")
    steps, record_from = check_steps("steps", steps), check_steps("record_from", record_from)
    if record_from > steps:
        raise ValueError(f"record_from={record_from} must not exceed steps={steps}")
    if isinstance(record_every, bool) or not isinstance(record_every, numbers.Integral) or record_every < 1:
        raise ValueError(f"record_every={record_every!r} must be an int >= 1")
    beta = check_momentum(momentum)
    theta = theta0.clone().to(X.dtype)
    velocity = torch.zeros_like(theta)
    C = theta.shape[0]
    out = []
    for k in range(steps + 1):
        if k >= record_from and (k - record_from) % record_every == 0:
            out.append(theta.clone())
        if k == steps:
            break
        idx = torch.randint(n, (C, B), generator=generator)
        Xb, yb = X[idx], y[idx]  # (C, B, d), (C, B)
        resid = (Xb @ theta[:, :, None])[..., 0] - yb
        g = (Xb * resid[..., None]).mean(1)
        if beta:
            velocity = beta * velocity + g
            g = velocity
        theta = theta - eta * g
        if k % 100 == 99:
            check_bounded(theta, 1e8, f"SGD chains diverged by step {k} with eta={eta}, B={B}; lower eta or raise B")
    check_bounded(theta, 1e8, f"SGD chains diverged by step {steps} with eta={eta}, B={B}; lower eta or raise B")
    return torch.stack(out)


def _shape(v) -> str:
    """``v``'s shape if it is a tensor, else its type (for messages about a wrong argument)."""
    return str(tuple(v.shape)) if isinstance(v, Tensor) else f"a {type(v).__name__}"
