"""Per-sample gradients, the full gradient, and the Gram matrix ``G Gᵀ``.

Conventions used everywhere in the package
------------------------------------------
* ``loss_fn(output, target)`` returns one loss per sample, shape ``(n,)``.
* The empirical risk is the *mean* of the per-sample losses, ``L_n = (1/n) Σ_i ℓ_i``, so
  ``g_n = (1/n) Σ_i g_i`` and ``Σ_emp = (1/n) Σ_i (g_i - g_n)(g_i - g_n)ᵀ``.
* The per-sample gradient matrix ``G`` has shape ``(n, d)``: row ``i`` is ``g_i``, flattened in
  ``model.parameters()`` order (parameters with ``requires_grad=False`` are skipped).

Routes
------
Per-sample gradients are defined only for a model whose samples do not interact: layers that couple
them or draw random numbers (batch norm, dropout in training mode) are refused, and a probe checks
that a sample's output does not change when it is run alone. Then:

* the **fast route**, where it is provably right (every trainable parameter the weight or bias of one
  plain ``nn.Linear``, called once, its output not overwritten in place, no hooks, and the weighted
  per-sample gradients adding up to autograd's gradient of the weighted loss);
* a **loop** of per-sample backward passes for recurrent layers (or on request);
* ``torch.func.vmap(torch.func.grad(...))`` otherwise.

On the fast route one forward and one backward pass give everything: for a layer with input ``a_i`` and
output gradient ``δ_i`` (the gradient of ``Σ_j ℓ_j`` with respect to the layer's output for
sample ``i``, which equals ``∂ℓ_i/∂z_i`` because the loss is per-sample), the per-sample weight
gradient is the outer product ``δ_i a_iᵀ`` and the bias gradient is ``δ_i`` (Goodfellow 2015).
The Gram matrix then needs no ``G`` at all:
``Σ_layers (A Aᵀ) ⊙ (Δ Δᵀ) + Δ Δᵀ`` costs ``O(n² · width)`` memory and time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from . import _args
from ._args import ArgumentTypeError, is_one_of, show

LossFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "per_sample_grads",
    "full_gradient",
    "gram_matrix",
    "flat_params",
    "set_flat_params",
    "num_params",
    "check_data",
    "center_gram",
    "centred_gram_lower",
    "per_sample_losses",
    "check_loss_contract",
    "check_per_sample_model",
    "replace_batch_norm",
]


def _check_module(model) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return model


def _trainable(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [(name, p) for name, p in _check_module(model).named_parameters() if p.requires_grad]


def num_params(model: nn.Module) -> int:
    """Number ``d`` of trainable scalars, the width of ``G``."""
    return sum(p.numel() for _, p in _trainable(model))


def flat_params(model: nn.Module) -> Tensor:
    """The trainable parameters as one vector ``θ`` of shape ``(d,)`` (a detached copy)."""
    return torch.cat([p.detach().reshape(-1) for _, p in _trainable(model)])


@torch.no_grad()
def set_flat_params(model: nn.Module, theta: Tensor) -> None:
    """Write a vector ``θ`` of shape ``(d,)`` back into the model's trainable parameters."""
    d = num_params(model)
    _args.tensor("theta", theta, f"a parameter vector of shape ({d},) (a tensor)")
    if theta.ndim != 1 or theta.numel() != d:
        raise ValueError(f"theta has shape {tuple(theta.shape)}; this model needs a vector of shape ({d},)")
    offset = 0
    for _, p in _trainable(model):
        p.copy_(theta[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def check_data(X: Tensor, y: Tensor) -> int:
    """Check that ``X`` and ``y`` hold the same number of samples and return it."""
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"X and y must be torch tensors, got {type(X).__name__} and {type(y).__name__}")
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError("X and y need a leading sample dimension; got a 0-d tensor")
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"X has n={X.shape[0]} samples but y has n={y.shape[0]}; they must hold the same samples"
        )
    if X.shape[0] == 0:
        raise ValueError("the data set is empty (n=0); need at least one sample")
    return X.shape[0]


def per_sample_losses(loss_fn: LossFn, out: Tensor, y: Tensor, n: int | None = None) -> Tensor:
    """``loss_fn(out, y)``, checked to hold one loss per sample: shape ``(n,)``, ``n = out.shape[0]``.

    Every place in the package where a user's loss meets data goes through this check, so a loss that
    averages (``reduction="mean"``) or broadcasts (targets of shape ``(n, 1)`` against a
    ``reduction="none"`` loss that returns ``(n, n)``) is refused instead of silently scaling the
    gradient or the noise. It is a comparison of static shapes: it costs nothing and works inside
    ``torch.func.vmap``.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, loss_fn(output, target) -> (n,) per-sample losses; "
                        f"got {type(loss_fn).__name__}")
    if not isinstance(out, Tensor) or out.ndim == 0:
        got = "a 0-d tensor" if isinstance(out, Tensor) else type(out).__name__
        raise ArgumentTypeError(f"out, the model's output, must be a tensor with the sample axis first; got {got}")
    if not isinstance(y, Tensor) or y.ndim == 0:
        got = "a 0-d tensor" if isinstance(y, Tensor) else type(y).__name__
        raise ArgumentTypeError(f"y, the targets, must be a tensor with the sample axis first; got {got}")
    if n is None:
        n = out.shape[0]
    else:
        n = _args.integer("n", n, minimum=0, valid="None or an int >= 0 (the number of samples)")
    losses = loss_fn(out, y)
    if not isinstance(losses, Tensor) or losses.shape != (n,):
        shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        tshape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(
            f"loss_fn must return one loss per sample, shape ({n},); it returned shape {shape} for outputs of "
            f"shape {tuple(out.shape)} and targets of shape {tshape}. Use a per-sample loss, e.g. "
            "nn.CrossEntropyLoss(reduction='none'), and targets shaped like the outputs (a loss that "
            "returns (n, 1) or broadcasts to (n, n) is not per-sample)."
        )
    return losses


def check_loss_contract(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor) -> None:
    """Check, on the first two samples, that ``loss_fn(model(X), y)`` holds one loss per sample.

    Run where a :class:`~sgdnoise.problems.Problem` is built, so a wrong loss fails there and not
    as a silently rescaled gradient later. The model's buffers and the global random state are
    restored afterwards: the check leaves no trace (batch norm's running averages do not move).
    """
    m = min(check_data(X, y), 2)
    _check_module(model)
    saved = {k: b.clone() for k, b in model.named_buffers()}
    rng = torch.random.get_rng_state()
    try:
        with torch.no_grad():
            per_sample_losses(loss_fn, model(X[:m]), y[:m], m)
    finally:
        torch.random.set_rng_state(rng)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])


# --------------------------------------------------------------------------- what the model may hold
_COUPLING_OR_RANDOM = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.RReLU)


def check_per_sample_model(model: nn.Module) -> None:
    """Refuse a model whose per-sample gradients are not defined by its current mode.

    Batch normalisation in training mode normalises each sample with its batch's statistics (the
    samples' losses are coupled, and its running averages move on every forward pass); dropout and
    RReLU in training mode draw random numbers, so ``G`` would differ on every call; instance norm
    that tracks running statistics moves them in training mode. Such a model gets one error that
    names the layers and says what to do; its buffers are never touched.
    """
    _check_module(model)
    bad = []
    for name, m in model.named_modules():
        if not m.training:
            continue
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p == 0:
            continue
        tracking_in = isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats
        rnn_dropout = isinstance(m, nn.RNNBase) and m.dropout > 0 and m.num_layers > 1
        if isinstance(m, _COUPLING_OR_RANDOM) or tracking_in or rnn_dropout:
            bad.append(f"'{name or '(model)'}' ({type(m).__name__})")
    batch_stats = [f"'{name or '(model)'}' ({type(m).__name__})" for name, m in model.named_modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats]
    if batch_stats:
        raise ValueError(
            "per-sample gradients are not defined for batch norm without running statistics "
            "(track_running_stats=False), which normalises with the batch's statistics even in eval mode: "
            + ", ".join(batch_stats) + ". Use a per-sample normalisation instead: "
            "sgdnoise.gradients.replace_batch_norm(model) returns a copy with GroupNorm layers."
        )
    if bad:
        raise ValueError(
            "per-sample gradients are not defined for layers in training mode that couple the samples of a "
            "batch, draw random numbers or update running statistics: " + ", ".join(bad) + ". Call "
            "model.eval() first (dropout off, batch norm on its running statistics: the network as it is "
            "evaluated), or, for batch norm, audit a per-sample-safe variant, "
            "sgdnoise.gradients.replace_batch_norm(model), a copy with GroupNorm layers (a different network: "
            "it normalises each sample by itself)."
        )


def _group_count(channels: int, most: int) -> int:
    """The largest divisor of ``channels`` that is at most ``most``."""
    return max(g for g in range(1, min(most, channels) + 1) if channels % g == 0)


def replace_batch_norm(model: nn.Module, max_groups: int = 32) -> nn.Module:
    """A deep copy of ``model`` with every batch norm layer replaced by group norm: a per-sample-safe variant.

    Batch norm in training mode couples the samples of a batch, so per-sample gradients (and the noise model
    built on them) are not defined for it. Group norm normalises each sample by its own statistics over groups
    of channels: one group for ``BatchNorm1d`` (feature vectors: layer norm over the features, with batch
    norm's per-channel affine; one group per channel would leave a single value per group), and for
    ``BatchNorm2d``/``3d`` the largest divisor of the channel count up to ``max_groups`` (as is usual for
    networks trained with per-sample gradients); the affine weight and bias are copied, the running statistics
    dropped. The copy is a different network: its noise is that of a group-normalised model at the same
    weights, not that of the batch-normalised one. The original is left untouched.
    """
    import copy

    _check_module(model)
    max_groups = _args.integer("max_groups", max_groups, minimum=1)
    out = copy.deepcopy(model)
    if isinstance(out, nn.modules.batchnorm._BatchNorm):  # the model is one batch norm layer
        holder = nn.Sequential(out)
        return replace_batch_norm(holder, max_groups)[0]
    targets = [(name, mod) for name, mod in out.named_modules() if isinstance(mod, nn.modules.batchnorm._BatchNorm)]
    for name, bn in targets:
        # feature vectors (BatchNorm1d, usually (n, C) inputs): one group, i.e. layer norm over the features with
        # batch norm's per-channel affine (C groups would leave one value per group); images: up to max_groups
        groups = 1 if isinstance(bn, nn.BatchNorm1d) else _group_count(bn.num_features, max_groups)
        gn = nn.GroupNorm(groups, bn.num_features, eps=bn.eps, affine=bn.affine)
        if bn.affine:
            with torch.no_grad():
                gn.weight.copy_(bn.weight)
                gn.bias.copy_(bn.bias)
        ref = bn.weight if bn.affine else (bn.running_mean if bn.running_mean is not None else None)
        if ref is not None:
            gn = gn.to(ref.device, ref.dtype)
        gn.train(bn.training)
        parent_name, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, child, gn)
    return out


def _check_model_inputs(model: nn.Module, X: Tensor) -> None:
    """The model's trainable parameters and floating inputs share a dtype and a device (else: say which)."""
    params = [p for _, p in _trainable(model)]
    if not params:
        raise ValueError("the model has no trainable parameters (none with requires_grad=True); G would have no columns")
    p = params[0]
    if X.device != p.device:
        raise ValueError(f"X is on {X.device} but the model's parameters are on {p.device}; move one, "
                         f"e.g. X.to({str(p.device)!r})")
    if X.dtype.is_floating_point and X.dtype != p.dtype:
        raise TypeError(f"X has dtype {X.dtype} but the model's parameters are {p.dtype}; convert one, "
                        f"e.g. X.to({p.dtype}) or model.to({X.dtype})")


def _check_samples_independent(model: nn.Module, X: Tensor) -> None:
    """A probe of the premise of per-sample gradients: sample 0's output does not depend on the others.

    The model is run on the first three samples and on the first alone; the two outputs for sample 0
    must agree up to rounding. A forward that mixes samples (``h - h.mean(0)``, batch statistics) or
    draws random numbers fails, on any route and any device. Buffers and the random state are restored.
    """
    n = X.shape[0]
    if n < 2:
        return
    saved = {k: b.clone() for k, b in model.named_buffers()}
    rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        with torch.no_grad():
            many, one = model(X[: min(n, 3)]), model(X[:1])
    finally:
        torch.random.set_rng_state(rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])
    if not (isinstance(many, Tensor) and isinstance(one, Tensor)) or many.shape[1:] != one.shape[1:]:
        return  # outputs that are not one tensor per sample: the loss check reports them
    a, b = many[:1], one
    if not (a.dtype.is_floating_point or a.dtype.is_complex):
        return
    scale = float(torch.maximum(a.abs().max(), b.abs().max())) if a.numel() else 0.0
    tol = 1e3 * torch.finfo(a.dtype).eps * max(scale, torch.finfo(a.dtype).tiny)
    if not bool(((a - b).abs() <= tol).all()) and bool(torch.isfinite(a).all() & torch.isfinite(b).all()):
        raise ValueError(
            "the model's output for a sample depends on the other samples of the batch, or on random numbers "
            f"(sample 0's output differs by {float((a - b).abs().max()):.3g} when run alone): per-sample gradients "
            "are not defined. Remove the coupling (batch statistics, means over the batch) or the randomness "
            "(model.eval() for dropout) first."
        )


def _random_forward_error(where: str) -> ValueError:
    return ValueError(
        f"the model's forward pass draws random numbers ({where}), so its per-sample gradients differ on "
        "every call; call model.eval() or remove the random operation (e.g. a functional dropout) first"
    )


def _check_finite(G: Tensor, model: nn.Module) -> None:
    # min and max propagate NaN and ±inf: one cheap reduction, no n × d boolean temporary.
    lo, hi = torch.aminmax(G)
    if bool(torch.isfinite(lo) & torch.isfinite(hi)):
        return
    bad = ~torch.isfinite(G)
    offset = 0
    for name, p in _trainable(model):
        block = bad[:, offset : offset + p.numel()]
        if block.any():
            sample = int(block.any(dim=1).nonzero()[0])
            raise FloatingPointError(
                f"non-finite per-sample gradient for parameter '{name}' (first at sample {sample}); "
                "gradients must be finite: check the learning rate, the data and the loss"
            )
        offset += p.numel()


# --------------------------------------------------------------------------- fast path
@dataclass
class _LinearCapture:
    """Inputs ``A`` and output-gradients ``Δ`` of each ``nn.Linear``, from one forward/backward."""

    layers: list[nn.Linear]
    inputs: list[Tensor]
    grads: list[Tensor]


_LINEAR_FORWARD = nn.Linear.forward


def _hooks_free(module: nn.Module) -> bool:
    return not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def _fast_path_layers(model: nn.Module) -> list[nn.Linear] | None:
    """The ``nn.Linear`` layers that own every trainable parameter, or ``None`` if the fast route is
    not provably right for this model.

    Proof obligations checked here (the forward pass checks the rest): every trainable parameter is
    the ``weight`` or ``bias`` of exactly one module (a tied parameter, e.g. an embedding shared with
    the output head, gets contributions from two places and must take the general route), that
    module is an ``nn.Linear`` whose ``forward`` is ``nn.Linear.forward`` (a subclass that scales its
    input or weight computes something else), and no hook can change its input or output.
    """
    from torch.nn.modules import module as _module

    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return None
    owners: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                owners.setdefault(id(p), []).append(module)
    layers: list[nn.Linear] = []
    for _, p in _trainable(model):
        mods = owners.get(id(p), [])
        if len(mods) != 1:
            return None
        module = mods[0]
        if not isinstance(module, nn.Linear) or type(module).forward is not _LINEAR_FORWARD:
            return None
        if p is not module.weight and p is not module.bias:
            return None
        if not _hooks_free(module):
            return None
        if module not in layers:
            layers.append(module)
    return layers


def _capture_linear(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor) -> _LinearCapture | None:
    """One forward and one backward pass; ``None`` where the fast route cannot be shown right.

    Beyond the structural checks of :func:`_fast_path_layers`, three things are checked on the pass
    itself: each layer is called once, on inputs with the sample axis first; neither its input nor
    its output is modified in place afterwards (an ``inplace=True`` activation overwrites the
    captured output: the pass is repeated with the output cloned, so the captured tensor is the
    layer's own); and the per-sample gradients add up to the full gradient that autograd computes
    for each parameter, which catches any use of a parameter outside its layer's ``forward``.
    """
    layers = _fast_path_layers(model)
    if not layers:
        return None
    cap = _capture_pass(model, loss_fn, X, y, layers, clone_outputs=False)
    if cap == "modified":
        cap = _capture_pass(model, loss_fn, X, y, layers, clone_outputs=True)
    if not isinstance(cap, _LinearCapture):
        return None
    return cap


def _capture_pass(model, loss_fn, X, y, layers, *, clone_outputs: bool):
    n = X.shape[0]
    inputs: dict[nn.Linear, list[Tensor]] = {m: [] for m in layers}
    outputs: dict[nn.Linear, list[Tensor]] = {m: [] for m in layers}
    versions: dict[nn.Linear, tuple[int, int]] = {}

    def hook(module, args, kwargs, out):
        a = args[0] if args else kwargs.get("input")
        if not isinstance(a, Tensor):
            return None
        inputs[module].append(a.detach())
        outputs[module].append(out)
        versions[module] = (a._version, out._version)
        if clone_outputs:
            return out.clone()  # later in-place ops change the clone, not the captured output
        return None

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in layers]
    rng = torch.random.get_rng_state()
    try:
        with torch.enable_grad():
            out = model(X)
            if not torch.equal(rng, torch.random.get_rng_state()):
                torch.random.set_rng_state(rng)
                raise _random_forward_error("found on the one-backward-pass route")
            losses = per_sample_losses(loss_fn, out, y, n)
            # A layer called twice (weight sharing) or on inputs without a leading sample axis of
            # length n takes the general route.
            if any(len(outputs[m]) != 1 or inputs[m][0].shape[0] != n for m in layers):
                return None
            if any(versions[m][0] != inputs[m][0]._version for m in layers):
                return None  # an input overwritten after the layer read it
            if any(versions[m][1] != outputs[m][0]._version for m in layers):
                return "modified"
            outs = [outputs[m][0] for m in layers]
            if not all(o.requires_grad for o in outs):
                return None
            params = [p for _, p in _trainable(model)]
            deltas = torch.autograd.grad(losses.sum(), outs, allow_unused=True, retain_graph=True)
            if any(d is None for d in deltas):
                return None
            # The check below compares Σ_i w_i g_i, from the captured factors, with autograd's gradient of
            # Σ_i w_i ℓ_i, for weights w_i in [1, 2] from a private generator. With w = 1 a missed
            # contribution could cancel at a stationary point of the loss (Σ_i g_i = 0 there), which is
            # where the noise is usually measured.
            w = 1 + torch.rand(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            w = w.to(device=losses.device, dtype=losses.dtype)
            full = torch.autograd.grad((losses * w).sum(), params, allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    deltas = [d.detach() for d in deltas]
    a_list = [inputs[m][0] for m in layers]
    wdeltas = [d * w.view(-1, *([1] * (d.ndim - 1))) for d in deltas]
    if not _sums_match(layers, a_list, wdeltas, params, full):
        return None
    return _LinearCapture(layers, a_list, deltas)


def _sums_match(layers, inputs, wdeltas, params, full) -> bool:
    """Do the captured per-sample gradients, weighted by ``w``, add up to autograd's gradient of ``Σ_i w_i ℓ_i``?

    Compared through two random projections per parameter, ``vᵀ (Σ_i w_i δ_i a_iᵀ) u = (Δ_w v)ᵀ (A u)``
    against ``vᵀ ∇_W u``: ``O(n (in + out))`` work instead of another ``n × in × out`` product. Every
    quantity is a sum of products computed in different orders on the two sides; the tolerance is the
    rounding bound ``4 (k + in + out) eps`` times the same sum taken over absolute values, so a
    difference above it is a contribution the capture misses (a parameter used outside its layer, a
    rescaled input or weight), never rounding. A missed contribution survives the projection only if it
    is orthogonal to both random directions (probability zero).
    """
    reference = {id(p): g for p, g in zip(params, full)}
    gen = torch.Generator().manual_seed(1)
    for layer, a, wdelta in zip(layers, inputs, wdeltas):
        a2, d2 = a.reshape(-1, a.shape[-1]), wdelta.reshape(-1, wdelta.shape[-1])
        k, n_in, n_out = d2.shape[0], a2.shape[1], d2.shape[1]
        eps = torch.finfo(d2.dtype).eps
        for _ in range(2):
            u = torch.randn(n_in, generator=gen, dtype=torch.float64).to(a2)
            v = torch.randn(n_out, generator=gen, dtype=torch.float64).to(d2)
            dv, au = d2 @ v, a2 @ u
            checks = []
            if layer.weight.requires_grad:
                checks.append((layer.weight, (dv * au).sum(), (d2.abs() @ v.abs()) @ (a2.abs() @ u.abs()),
                               lambda g: v @ g @ u))
            if layer.bias is not None and layer.bias.requires_grad:
                checks.append((layer.bias, dv.sum(), (d2.abs() @ v.abs()).sum(), lambda g: v @ g))
            for p, mine, scale, project in checks:
                ref = reference[id(p)]
                ref = torch.zeros((), dtype=mine.dtype, device=mine.device) if ref is None else project(ref)
                if not bool(torch.isfinite(scale) & torch.isfinite(ref) & torch.isfinite(mine)):
                    return True  # a non-finite gradient: the callers' finiteness checks name the parameter
                if not bool((mine - ref).abs() <= 4 * (k + n_in + n_out) * eps * scale + torch.finfo(d2.dtype).tiny):
                    return False
    return True


def _grads_from_capture(cap: _LinearCapture, model: nn.Module) -> Tensor:
    trainable = _trainable(model)
    offsets, offset = {}, 0
    for _, p in trainable:
        offsets[id(p)] = offset
        offset += p.numel()
    n = cap.inputs[0].shape[0]
    # Written straight into views of one preallocated array: the cost is one pass over n × d.
    G = cap.inputs[0].new_empty((n, offset))
    for layer, a, delta in zip(cap.layers, cap.inputs, cap.grads):
        a3 = a.reshape(n, -1, a.shape[-1])  # (n, T, in): T = 1 for ordinary 2-d inputs
        d3 = delta.reshape(n, -1, delta.shape[-1])  # (n, T, out)
        out_f, in_f = d3.shape[-1], a3.shape[-1]
        if layer.weight.requires_grad:
            o = offsets[id(layer.weight)]
            view = G[:, o : o + out_f * in_f].view(n, out_f, in_f)
            if a3.shape[1] == 1:
                torch.mul(d3[:, 0, :, None], a3[:, 0, None, :], out=view)
            else:
                view.copy_(torch.einsum("nto,nti->noi", d3, a3))
        if layer.bias is not None and layer.bias.requires_grad:
            o = offsets[id(layer.bias)]
            G[:, o : o + out_f] = d3.sum(dim=1)
    return G


# --------------------------------------------------------------------------- general path
def _grads_functorch(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor, chunk_size: int | None) -> Tensor:
    n = X.shape[0]
    with torch.no_grad():
        per_sample_losses(loss_fn, model(X[:1]), y[:1], 1)  # shape check, cheap
    trainable = {k: v.detach() for k, v in _trainable(model)}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_one(params, x, t):
        out = functional_call(model, {**params, **frozen, **buffers}, (x.unsqueeze(0),))
        return per_sample_losses(loss_fn, out, t.unsqueeze(0), 1).reshape(())

    try:
        g = vmap(grad(loss_one), in_dims=(None, 0, 0), chunk_size=chunk_size)(trainable, X, y)
    except RuntimeError as err:
        if "random operation" in str(err):
            raise _random_forward_error("torch.func.vmap refused a random operation") from err
        raise
    return torch.cat([g[k].reshape(n, -1) for k in trainable], dim=1)


def _grads_loop(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor) -> Tensor:
    """One backward pass per sample: slow, and right for any model whose samples are independent."""
    params = [p for _, p in _trainable(model)]
    rows = []
    with torch.enable_grad():
        for i in range(X.shape[0]):
            loss = per_sample_losses(loss_fn, model(X[i : i + 1]), y[i : i + 1], 1)[0]
            gs = torch.autograd.grad(loss, params, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, gs)]))
    return torch.stack(rows)


def _needs_loop(model: nn.Module) -> bool:
    # torch.func cannot vmap the fused recurrent kernels (their hidden state is written in place).
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


# --------------------------------------------------------------------------- public API
def per_sample_grads(
    model: nn.Module,
    loss_fn: LossFn,
    X: Tensor,
    y: Tensor,
    *,
    chunk_size: int | None = None,
    method: str = "auto",
) -> Tensor:
    """Per-sample gradient matrix ``G``, shape ``(n, d)``, row ``i`` = ``∇_θ ℓ(θ; x_i, y_i)``.

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated at its current parameters. Layers in training mode that couple samples (batch
        norm) or draw random numbers (dropout) make per-sample gradients ill-defined: such a model
        is refused with an error naming the layers (call ``model.eval()``).
    loss_fn : callable
        ``loss_fn(output, target)`` returning a tensor of shape ``(n,)``, one loss per sample.
    X, y : torch.Tensor
        Inputs and targets with the same leading dimension ``n``.
    chunk_size : int, optional
        Samples per vmap chunk on the general path (bounds memory).
    method : {"auto", "linear", "functorch", "loop"}
        ``"auto"`` uses the one-backward-pass route where it is provably right (every trainable
        parameter the weight or bias of one plain ``nn.Linear``, called once, its output not
        overwritten in place, the per-sample gradients adding up to autograd's full gradient),
        a loop of per-sample backward passes for recurrent layers, and ``torch.func`` otherwise.
        ``"linear"`` insists on the fast route; ``"loop"`` is the slow reference for any model.

    Returns
    -------
    torch.Tensor
        ``G`` of shape ``(n, d)``, in ``model.parameters()`` order, dtype of the parameters.
    """
    n = check_data(X, y)
    if not is_one_of(method, ("auto", "linear", "functorch", "loop")):
        raise ValueError(f"method={show(method)}; valid values are 'auto', 'linear', 'functorch', 'loop'")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be None or a positive int")
    check_per_sample_model(model)
    _check_model_inputs(model, X)
    _check_samples_independent(model, X)
    G = None
    if method in ("auto", "linear"):
        cap = _capture_linear(model, loss_fn, X, y)
        if cap is not None:
            G = _grads_from_capture(cap, model)
        elif method == "linear":
            raise ValueError(
                "method='linear' needs every trainable parameter to be the weight or bias of one plain "
                "nn.Linear, called once per forward pass, whose output is not overwritten in place and "
                "whose parameters are used nowhere else; use method='auto' for other models"
            )
    if G is None:
        if method == "loop" or (method == "auto" and _needs_loop(model)):
            G = _grads_loop(model, loss_fn, X, y)
        else:
            G = _grads_functorch(model, loss_fn, X, y, chunk_size)
    assert G.shape == (n, num_params(model))
    _check_finite(G, model)
    return G


def full_gradient(model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor) -> Tensor:
    """``g_n(θ) = ∇L_n(θ)``, the gradient of the *mean* loss, shape ``(d,)``."""
    n = check_data(X, y)
    check_per_sample_model(model)
    _check_model_inputs(model, X)
    params = [p for _, p in _trainable(model)]
    with torch.enable_grad():
        losses = per_sample_losses(loss_fn, model(X), y, n)
        gs = torch.autograd.grad(losses.mean(), params)
    g = torch.cat([t.reshape(-1) for t in gs])
    if not torch.isfinite(g).all():
        _check_finite(g[None], model)
    return g


def _gram_not_finite(what: str, dtype: torch.dtype, cap: _LinearCapture | None = None, model=None) -> None:
    """Raise for a non-finite Gram matrix: naming the parameter if a gradient is not finite, else overflow."""
    if cap is not None:
        _check_finite(_grads_from_capture(cap, model), model)
    raise FloatingPointError(
        f"{what} overflows {dtype} although every per-sample gradient is finite; rescale the loss or the data"
        + (" or use float64" if dtype != torch.float64 else "")
    )


def gram_matrix(
    model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor, *, centered: bool = False
) -> Tensor:
    """The Gram matrix ``K = G Gᵀ`` (shape ``(n, n)``), without forming ``G`` where possible.

    With ``centered=True`` it returns ``G̃ G̃ᵀ`` with ``G̃ = G - 1 g_nᵀ``, whose non-zero
    eigenvalues divided by ``n`` are those of ``Σ_emp(θ)`` (the same ``n × n`` route works when
    ``d ≫ n``). On the fast path (all trainable parameters in ``nn.Linear`` layers fed 2-d inputs)
    the cost is ``O(n² · Σ_layers (in + out))`` and no ``n × d`` array is ever allocated.
    """
    n = check_data(X, y)
    if not isinstance(centered, bool):
        raise TypeError(f"centered={centered!r} must be True or False")
    check_per_sample_model(model)
    _check_model_inputs(model, X)
    _check_samples_independent(model, X)
    cap = _capture_linear(model, loss_fn, X, y)
    if cap is not None and all(a.ndim == 2 for a in cap.inputs):
        K = X.new_zeros((n, n), dtype=cap.inputs[0].dtype)
        for layer, a, delta in zip(cap.layers, cap.inputs, cap.grads):
            dd = delta @ delta.T  # (Δ Δᵀ): the bias block, and one factor of the weight block
            w, b = layer.weight.requires_grad, layer.bias is not None and layer.bias.requires_grad
            if w and b:
                # (A Aᵀ + 1) ⊙ Δ Δᵀ = weight block + bias block, in one pass
                K.addcmul_(torch.addmm(a.new_ones(()).expand(n, n), a, a.T), dd)
            elif w:
                K.addcmul_(a @ a.T, dd)
            elif b:
                K += dd
        if not torch.isfinite(K).all():
            _gram_not_finite("G Gᵀ", K.dtype, cap, model)
    else:
        G = per_sample_grads(model, loss_fn, X, y)  # raises on a non-finite gradient
        K = G @ G.T
        if not torch.isfinite(K).all():
            _gram_not_finite("G Gᵀ", K.dtype)
    if centered:
        row = K.mean(dim=1, keepdim=True)
        K -= row
        K -= row.T
        K += row.mean()
    return K


def centred_gram_lower(
    model: nn.Module, loss_fn: LossFn, X: Tensor, y: Tensor, *, block_rows: int = 128
) -> Tensor | None:
    """The lower triangle (diagonal included) of ``G̃ G̃ᵀ``, on the fast path only; else ``None``.

    A symmetric eigen-solver reads one triangle, so the other half of the ``n²`` products need not be
    computed: rows are taken in blocks of ``block_rows`` and block ``i`` is multiplied only with the
    columns ``≤`` its last row. Entries above the diagonal blocks are zero; inside a diagonal block
    the full square is filled. The centring needs no full matrix either: the row means of
    ``K = G Gᵀ`` are ``r_i = ⟨g_i, g_n⟩ = Σ_layers a_iᵀ (Aᵀ Δ / n) δ_i`` and their mean is
    ``‖g_n‖²``, so ``(G̃ G̃ᵀ)_ij = K_ij − r_i − r_j + ‖g_n‖²`` entry by entry.

    The result is row-major; its transpose ``K.mT`` is column-major with the same entries in its
    upper triangle, which is the layout LAPACK reads without a transposing copy
    (``torch.linalg.eigvalsh(K.mT, UPLO="U")``).
    """
    n = check_data(X, y)
    block_rows = _args.integer("block_rows", block_rows, minimum=1, valid="a positive integer")
    check_per_sample_model(model)
    _check_model_inputs(model, X)
    _check_samples_independent(model, X)
    cap = _capture_linear(model, loss_fn, X, y)
    if cap is None or not all(a.ndim == 2 for a in cap.inputs):
        return None
    factors = []  # per layer: (A or None, Δ); with a bias the 1 is folded into the A-factor
    r = cap.grads[0].new_zeros(n)
    # |(G Gᵀ)_ij| ≤ bound = Σ_layers max‖a‖² max‖δ‖² (Cauchy-Schwarz), and |r_i| ≤ bound too, so
    # every entry below, partial sums included, is at most 4·bound: a finite bound well under the
    # dtype's largest number proves the result finite without a pass over the n × n array.
    bound = cap.grads[0].new_zeros(())
    for layer, a, delta in zip(cap.layers, cap.inputs, cap.grads):
        w, b = layer.weight.requires_grad, layer.bias is not None and layer.bias.requires_grad
        delta_sq = delta.square().sum(dim=1).max()
        if w:
            at = torch.cat([a, a.new_ones(n, 1)], dim=1) if b else a
            mean_grad = at.T @ delta / n  # (in [+1], out): this layer's block of g_n
            r += ((at @ mean_grad) * delta).sum(dim=1)
            factors.append((at, delta))
            bound = bound + at.square().sum(dim=1).max() * delta_sq
        elif b:
            r += delta @ delta.mean(dim=0)
            factors.append((None, delta))
            bound = bound + delta_sq
    # The centring -r_i - r_j + m is the rank-2 matrix -(u 1ᵀ + 1 uᵀ) with u = r - m/2: one product.
    u = r - r.mean() / 2
    left = torch.stack([u, torch.ones_like(u)], dim=1)  # (n, 2)
    right = -left.flip(1)  # (n, 2): left_i · right_j = -(u_i + u_j)
    K = cap.grads[0].new_empty((n, n))
    # Two scratch arrays reused by every block (fresh temporaries per block cost as much as the
    # products with ~100 columns that fill them).
    rows = min(block_rows, n)
    scratch_a, scratch_d = K.new_empty(rows * n), K.new_empty(rows * n)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        K[r0:r1, r1:].zero_()
        blk = K[r0:r1, :r1]
        aa = scratch_a[: (r1 - r0) * r1].view(r1 - r0, r1)
        dd = scratch_d[: (r1 - r0) * r1].view(r1 - r0, r1)
        torch.mm(left[r0:r1], right[:r1].T, out=blk)
        for at, delta in factors:
            torch.mm(delta[r0:r1], delta[:r1].T, out=dd)
            if at is None:
                blk += dd
            else:
                torch.mm(at[r0:r1], at[:r1].T, out=aa)
                blk.addcmul_(aa, dd)
    if not bool(bound < torch.finfo(K.dtype).max / 8):  # False for a NaN or infinite bound too
        if not torch.isfinite(K).all():
            _gram_not_finite("G̃ G̃ᵀ", K.dtype, cap, model)
    return K


def center_gram(K: Tensor) -> Tensor:
    """``C K C`` with ``C = I - 11ᵀ/n``: the Gram matrix of the centred rows (one new n × n array)."""
    if not isinstance(K, Tensor) or K.ndim != 2 or K.shape[0] != K.shape[1]:
        shape = tuple(K.shape) if isinstance(K, Tensor) else type(K).__name__
        raise ValueError(f"K must be a square (n, n) Gram matrix; got {shape}")
    row = K.mean(dim=1, keepdim=True)
    Kc = K - row
    Kc -= row.T
    Kc += row.mean()
    return Kc
