"""``NoiseTracker``: the noise statistics along a training run, cheap ones every step, the audit on a schedule.

Every step, from the batch the step uses anyway, two unbiased estimates (McCandlish et al. 2018, appendix A,
with the batch's own per-sample gradients as the small batches):

* with ``s = mean_i ‖g_i‖²`` over the ``B`` samples of the batch and ``q = ‖g_B‖²`` (the batch gradient),
  ``E s = ‖g‖² + tr Σ`` and ``E q = ‖g‖² + tr Σ/B`` (samples drawn independently, i.e. with replacement), so
  ``S = B (s - q)/(B - 1)`` is unbiased for ``tr Σ`` and ``Q = q - S/B`` for ``‖g‖²``. For a batch drawn without
  replacement from ``N`` samples (also one of a reshuffled epoch) ``E S = N/(N-1) · tr Σ`` and
  ``E Q = ‖g‖² - tr Σ/(N-1)``: biases of order ``1/N``, which matter only when ``‖g‖²`` is itself that small.

The per-sample norms ``‖g_i‖²`` come without per-sample gradients: for a ``nn.Linear`` fed ``a`` (``n × in``)
whose output receives ``δ`` (``n × out``) the weight gradient of sample ``i`` is ``δ_i a_iᵀ`` and its squared
norm ``‖δ_i‖² ‖a_i‖²`` (and ``Σ_{t,s} (a_t·a_s)(δ_t·δ_s)`` over the positions of a sequence, the "ghost norm"),
one pass over the layer's inputs and output gradients (the batch must be the leading axis of every layer's
input; a layer fed another leading axis switches the tracker to the route below). When a trainable
parameter lies outside such layers
(embeddings, normalisations, transformers' ``Conv1D``), or a layer is called twice or shares its weight, the
tracker falls back to two half-batches: ``s`` is then the mean of the halves' ``‖g_{B/2}‖²``, with
``E = ‖g‖² + 2 tr Σ/B`` in the formulas above (two backward passes of half the size instead of one).

``noise_scale()`` is the ratio of the means of ``S`` and ``Q`` over the last ``window`` steps, with a
delta-method SE that treats those steps as independent (the parameters move: read it as a running value).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _args
from ._stats import ratio_of_means
from ..gradients import _trainable, per_sample_losses
from ..sampling import check_scheme
from ._audit import audit as _audit


class NoiseTracker:
    """Record ``tr Σ``, ``‖g‖²`` and the noise scale at every step, and run :func:`sgdnoise.audit.audit` every
    ``audit_every`` steps on ``audit_data``. Replace ``loss.backward()`` by ``tracker.backward(xb, yb)``::

        tracker = NoiseTracker(model, loss_fn, lr=0.1, batch_size=32, audit_every=500, audit_data=(X, y))
        for xb, yb in batches:
            opt.zero_grad()
            loss = tracker.backward(xb, yb)  # the batch gradient in .grad, as loss.backward() would leave it
            opt.step()
        tracker.history  # dict of lists: step, loss, trace_sigma, grad_norm_sq (per-step unbiased estimates)

    ``every=k`` records every ``k``-th step only (the others are plain backward passes): on small models the
    statistics' fixed cost per step (hooks, a dozen small tensor operations) is a large fraction of a step
    (``benchmarks/audit_tracker.py`` prints it). ``progress=True`` shows a progress bar (``total`` steps) with
    the running noise scale.
    """

    def __init__(self, model: nn.Module, loss_fn, *, lr: float, batch_size: int, scheme: str = "with_replacement",
                 every: int = 1, window: int = 50, audit_every: int | None = None, audit_data=None, audit_kwargs: dict | None = None,
                 progress: bool = False, total: int | None = None):
        if not isinstance(model, nn.Module):
            raise _args.ArgumentTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model, self.loss_fn = model, loss_fn
        self.lr = _args.real("lr", lr, gt=0)
        self.batch_size = _args.integer("batch_size", batch_size, minimum=2)
        self.scheme = check_scheme(scheme)
        self.every = _args.integer("every", every, minimum=1)
        self.window = _args.integer("window", window, minimum=2)
        if audit_every is not None:
            audit_every = _args.integer("audit_every", audit_every, minimum=1)
            if audit_data is None:
                raise ValueError("audit_every is set but audit_data is None; pass the training set (X, y) to audit")
        self.audit_every, self.audit_data = audit_every, audit_data
        self.audit_kwargs = dict(audit_kwargs or {})
        self.audits: dict[int, object] = {}
        self.history: dict[str, list] = {"step": [], "loss": [], "trace_sigma": [], "grad_norm_sq": []}
        self.steps = 0
        self._params = [p for _, p in _trainable(model)]
        self._layers = self._ghost_layers()
        self.route = "ghost norms" if self._layers is not None else "half batches"
        self._bar = None
        if progress:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, desc="training")

    # ----------------------------------------------------------------- which route
    def _ghost_layers(self):
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)
                   and any(p is not None and p.requires_grad for p in (m.weight, m.bias))]
        owned = {}
        for m in linears:
            for p in (m.weight, m.bias):
                if p is not None and p.requires_grad:
                    if id(p) in owned:
                        return None  # a shared weight: the per-layer norms would not add up
                    owned[id(p)] = m
        if {id(p) for _, p in _trainable(self.model)} != set(owned):
            return None
        return linears

    # ----------------------------------------------------------------- one step
    def backward(self, X: Tensor, y: Tensor) -> float:
        """Fill ``.grad`` with the gradient of the batch's mean loss (added to what is there, as
        ``loss.backward()`` does), record the step's statistics, and return the batch's mean loss."""
        if self.audit_every is not None and self.steps % self.audit_every == 0:
            self._run_audit()
        B = X.shape[0]
        if B < 2:
            raise ValueError(f"the batch has {B} sample(s); the tracker needs at least 2 to separate noise from signal")
        if self.steps % self.every:  # not a recorded step: a plain backward pass
            loss = per_sample_losses(self.loss_fn, self.model(X), y, B).mean()
            loss.backward()
            self.steps += 1
            if self._bar is not None:
                self._bar.update(1)
            return float(loss.detach())
        step = self._ghost_step(X, y) if self._layers is not None else None
        if step is not None:
            loss, s, q = step
            S = B * (s - q) / (B - 1)
        else:
            loss, s, q = self._halves_step(X, y)
            b1 = B // 2
            # E s = ‖g‖² + c_s tr Σ with c_s the mean of 1/b over the two halves; E q = ‖g‖² + tr Σ/B
            c_s = 0.5 * (1 / b1 + 1 / (B - b1))
            S = (s - q) / (c_s - 1 / B)
        Q = q - S / B
        h = self.history
        h["step"].append(self.steps)
        h["loss"].append(loss)
        h["trace_sigma"].append(S)
        h["grad_norm_sq"].append(Q)
        self.steps += 1
        if self._bar is not None:
            ns = self.noise_scale()
            self._bar.set_postfix_str(f"B_simple≈{ns[0]:.3g}" if math.isfinite(ns[0]) else "")
            self._bar.update(1)
        return loss

    def _ghost_step(self, X, y):
        # Hooks record each layer's input and output gradient; everything stays in the parameters' dtype and
        # on their device, and one synchronising float() per statistic is taken at the end.
        recs: list = []
        handles = []

        def fwd(module, inputs, output):
            rec = [module, inputs[0].detach(), None]
            recs.append(rec)
            if output.requires_grad:
                output.register_hook(lambda g, rec=rec: rec.__setitem__(2, g.detach()))

        for m in self._layers:
            handles.append(m.register_forward_hook(fwd))
        try:
            loss = per_sample_losses(self.loss_fn, self.model(X), y, X.shape[0]).mean()
            grads = torch.autograd.grad(loss, self._params, allow_unused=True)
        finally:
            for hd in handles:
                hd.remove()
        if len(recs) != len(self._layers) or any(r[2] is None for r in recs):
            raise RuntimeError("an nn.Linear was called more or less than once in the forward pass, or its output got "
                               "no gradient; the ghost-norm route needs each layer called exactly once")
        B = X.shape[0]
        if any(a.shape[0] != B or go.shape[0] != B for _, a, go in recs):
            # a layer fed another leading axis (flattened tokens (B·T, in), or the batch on axis 1): its rows are
            # not the samples, so the norms would be wrong. Undo nothing (no gradient was written yet) and take
            # the half-batch route from now on.
            self._layers, self.route = None, "half batches"
            return None
        norms = 0.0
        for m, a, go in recs:
            if a.ndim == 2:
                gg = (go * go).sum(1)
                if m.weight.requires_grad:
                    norms = norms + (a * a).sum(1) * gg
                if m.bias is not None and m.bias.requires_grad:
                    norms = norms + gg
            else:  # (B, ..., in): ‖Σ_t δ_t a_tᵀ‖² = Σ_{t,s} (a_t·a_s)(δ_t·δ_s)
                a2, g2 = a.reshape(B, -1, a.shape[-1]), go.reshape(B, -1, go.shape[-1])
                gg = g2 @ g2.transpose(1, 2)
                if m.weight.requires_grad:
                    norms = norms + ((a2 @ a2.transpose(1, 2)) * gg).sum((1, 2))
                if m.bias is not None and m.bias.requires_grad:
                    gs = g2.sum(1)
                    norms = norms + (gs * gs).sum(1)
        sq = []
        with torch.no_grad():
            for p, g in zip(self._params, grads):
                if g is None:
                    continue
                sq.append((g * g).sum())
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
        # the mean loss's output gradient is δ_i/B: the per-sample norms carry a factor B²
        return float(loss.detach()), float(norms.double().mean()) * B * B, float(torch.stack(sq).double().sum())

    def _halves_step(self, X, y):
        B = X.shape[0]
        b1 = B // 2
        params = self._params
        grads, losses = [], []
        for sl, w in ((slice(0, b1), b1 / B), (slice(b1, B), (B - b1) / B)):
            loss = per_sample_losses(self.loss_fn, self.model(X[sl]), y[sl], X[sl].shape[0]).mean()
            gs = torch.autograd.grad(loss, params, allow_unused=True)
            grads.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)])
            losses.append((float(loss.detach()), w))
        with torch.no_grad():
            for p, g1, g2 in zip(params, *grads):
                full = (b1 * g1 + (B - b1) * g2) / B
                p.grad = full.clone() if p.grad is None else p.grad + full
        sq = [sum(float((g.double() ** 2).sum()) for g in gl) for gl in grads]
        q = sum(float((((b1 * g1 + (B - b1) * g2) / B).double() ** 2).sum()) for g1, g2 in zip(*grads))
        return sum(v * w for v, w in losses), 0.5 * (sq[0] + sq[1]), q

    def _run_audit(self):
        saved = [None if p.grad is None else p.grad.clone() for _, p in _trainable(self.model)]
        kwargs = {"lr": self.lr, "batch_size": self.batch_size, "scheme": self.scheme}
        kwargs.update(self.audit_kwargs)
        self.audits[self.steps] = _audit(self.model, self.loss_fn, self.audit_data, **kwargs)
        for (_, p), g in zip(_trainable(self.model), saved):
            p.grad = g

    # ----------------------------------------------------------------- read-outs
    def noise_scale(self, window: int | None = None) -> tuple[float, float]:
        """``(B_simple, SE)`` from the means of the last ``window`` steps' ``tr Σ`` and ``‖g‖²`` estimates."""
        w = self.window if window is None else _args.integer("window", window, minimum=2)
        return ratio_of_means(self.history["trace_sigma"][-w:], self.history["grad_norm_sq"][-w:])

    def to_frame(self):
        """The history as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def close(self):
        if self._bar is not None:
            self._bar.close()
