"""Per-sample gradients as an operator, for models too large for the ``m × d`` matrix and of any architecture.

The per-sample gradients ``g_i = ∇ℓ_i(θ)`` of ``m`` samples are the rows of the Jacobian ``G`` (``m × d``) of the
vector of per-sample losses. Two products with it cost about one pass each and need memory ``O(m + d)``:

* ``Gᵀ c`` (a vector of parameter space) is the gradient of ``Σ_i c_i ℓ_i``: one backward pass;
* ``G x`` (one number per sample) is the directional derivative of the losses along ``x``: one forward-mode
  pass (``torch.func.jvp``), several directions at once under ``torch.func.vmap``.

:class:`JacobianOperator` gives both for any model whose forward pass supports forward-mode differentiation
(linear, convolution, embedding, layer norm, attention on its math kernel, ...). From them:

* :func:`centred_gram_top_eigs`: the top eigenpairs of the centred Gram matrix ``K_c = C G Gᵀ C``
  (``C = I - 11ᵀ/m``) by Lanczos, each product ``K_c v = C G (Gᵀ C v)`` one backward and one forward-mode
  pass. ``K_c`` and ``m Σ̂ = G̃ᵀ G̃`` share their nonzero eigenvalues, so these are the top eigenvalues of
  the samples' noise covariance, exact up to the Lanczos tolerance: no sketching error.
* :func:`random_projection`: ``S = G Uᵀ/√k`` for ``k`` Gaussian directions ``u_j ~ N(0, I_d)``, drawn
  parameter by parameter, ``r`` at a time (never ``k × d`` at once, never ``m × d``). ``S Sᵀ`` is an unbiased
  estimate of ``G Gᵀ``, entry by entry (Johnson–Lindenstrauss).
* :func:`deflated_gram`: the two together. The top ``q`` eigenpairs are taken exactly and the projection
  sketches only the rest, ``K̂_c = Q Λ Qᵀ + (P S_c)(P S_c)ᵀ`` with ``P = I - QQᵀ``; then
  ``tr K̂_c = Σ_{j≤q} λ_j + ‖P S_c‖²_F``. The sketched part is a mean of ``k`` independent terms
  ``x_j = ‖P C G u_j‖²`` whose variance is ``2 ‖P K_c P‖²_F = 2 Σ_{j>q} λ_j²`` exactly (Gaussian ``u``), so its
  standard error is measured from the ``x_j`` and is at most ``√(2 λ_{q+1} t / k)`` with ``t`` the tail trace
  (this is the deflation idea of Hutch++, Meyer, Musco, Musco and Woodruff 2021, with Lanczos for the top part).
  Linear functionals of ``K̂_c`` (its entries, its trace) are unbiased; its eigenvalues beyond the top ``q`` are
  not (``(P S_c)(P S_c)ᵀ`` has rank at most ``k``, and its eigenvalues spread), so quantities read off them
  (an effective rank, a power-law fit of the tail) are biased.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import _args
from .curvature import _lanczos
from .gradients import (_check_model_inputs, _check_samples_independent, _trainable, check_data,
                        check_per_sample_model, per_sample_losses)
from .sampling import check_generator

__all__ = ["JacobianOperator", "centred_gram_top_eigs", "random_projection", "deflated_gram", "DeflatedGram"]


class JacobianOperator:
    """Products with the ``m × d`` per-sample gradient matrix ``G`` of ``model`` on ``(X, y)``, never ``G`` itself.

    The same checks as :func:`sgdnoise.gradients.per_sample_grads` (per-sample gradients defined by the model's mode,
    inputs on the parameters' device and dtype, samples independent, one loss per sample). Products are
    taken in the parameters' dtype and returned in float64; a non-finite product names the parameter.
    ``chunk_size`` forward-mode directions are ``vmap``-ed at once.
    """

    def __init__(self, model: nn.Module, loss_fn, X: Tensor, y: Tensor, *, chunk_size: int = 8):
        check_per_sample_model(model)
        self.m = check_data(X, y)
        _check_model_inputs(model, X)
        _check_samples_independent(model, X)
        self.model, self.loss_fn, self.X, self.y = model, loss_fn, X, y
        self.named = _trainable(model)
        self.names = [name for name, _ in self.named]
        self.shapes = [p.shape for _, p in self.named]
        self.sizes = [p.numel() for _, p in self.named]
        self.d = sum(self.sizes)
        self.chunk_size = _args.integer("chunk_size", chunk_size, minimum=1)
        self._primals = {name: p.detach() for name, p in self.named}
        with warnings.catch_warnings():  # torch.func.jvp's first call imports decompositions that torch.jit.script
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=DeprecationWarning)
            import torch._decomp.decompositions_for_jvp  # noqa: F401  (its deprecation warning is torch's own)

    # ------------------------------------------------------------------ Gᵀ c: one backward pass
    def rmatvec(self, c: Tensor) -> Tensor:
        """``Gᵀ c`` (``(d,)``, float64) for ``c`` of shape ``(m,)``."""
        c = torch.as_tensor(c)
        if c.shape != (self.m,):
            raise ValueError(f"c has shape {tuple(c.shape)}; need ({self.m},), one weight per sample")
        params = [p for _, p in self.named]
        with torch.enable_grad():
            losses = per_sample_losses(self.loss_fn, self.model(self.X), self.y, self.m)
            grads = torch.autograd.grad((losses * c.to(losses.device, losses.dtype)).sum(), params, allow_unused=True)
        out = []
        for name, p, g in zip(self.names, params, grads):
            g = torch.zeros_like(p) if g is None else g
            if not bool(torch.isfinite(g).all()):
                raise FloatingPointError(f"non-finite gradient for parameter '{name}' in Gᵀc; gradients must be "
                                         "finite: check the learning rate, the data and the loss")
            out.append(g.reshape(-1).double().cpu())
        return torch.cat(out)

    def rmatmat(self, C: Tensor) -> Tensor:
        """``Gᵀ C`` (``(d, k)``, float64) for ``C`` of shape ``(m, k)``: one backward pass per column."""
        return torch.stack([self.rmatvec(C[:, j]) for j in range(C.shape[1])], 1)

    # ------------------------------------------------------------------ G x: forward mode
    def _losses(self, params: dict) -> Tensor:
        from torch.func import functional_call

        return per_sample_losses(self.loss_fn, functional_call(self.model, params, (self.X,)), self.y, self.m)

    def matmat_blocks(self, blocks: list[Tensor]) -> Tensor:
        """``G x_j`` for ``r`` directions given parameter by parameter: ``blocks[l]`` has shape
        ``(r, *shape_l)`` in the order of the trainable parameters. Returns ``(m, r)``, float64."""
        from torch.func import jvp, vmap

        if len(blocks) != len(self.named):
            raise ValueError(f"got {len(blocks)} blocks; need one per trainable parameter ({len(self.named)})")
        r = blocks[0].shape[0]
        tangents = {}
        for (name, p), b in zip(self.named, blocks):
            if tuple(b.shape) != (r, *p.shape):
                raise ValueError(f"the block for '{name}' has shape {tuple(b.shape)}; need {(r, *p.shape)}")
            tangents[name] = b.to(p.device, p.dtype)

        def one(t):
            return jvp(self._losses, (self._primals,), (t,))[1]

        out = vmap(one, chunk_size=self.chunk_size)(tangents) if r > 1 else one(
            {k: v[0] for k, v in tangents.items()})[None]
        out = out.T.double().cpu()  # (m, r)
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError("non-finite directional derivative G x; gradients must be finite: check the "
                                     "learning rate, the data and the loss")
        return out

    def matvec(self, x: Tensor) -> Tensor:
        """``G x`` (``(m,)``, float64) for a flat ``x`` of shape ``(d,)``."""
        x = torch.as_tensor(x)
        if x.shape != (self.d,):
            raise ValueError(f"x has shape {tuple(x.shape)}; need ({self.d},), a flat vector of parameter space")
        return self.matmat_blocks([b.reshape(1, *s) for b, s in zip(x.split(self.sizes), self.shapes)])[:, 0]

    def matmat(self, V: Tensor) -> Tensor:
        """``G V`` (``(m, r)``) for ``V`` of shape ``(d, r)``."""
        if V.ndim != 2 or V.shape[0] != self.d:
            raise ValueError(f"V has shape {tuple(V.shape)}; need ({self.d}, r)")
        return self.matmat_blocks([b.T.reshape(V.shape[1], *s) for b, s in zip(V.split(self.sizes), self.shapes)])


def _centre(v: Tensor) -> Tensor:
    return v - v.mean(0, keepdim=True)


def centred_gram_top_eigs(op: JacobianOperator, k: int, *, iters: int | None = None, tol: float | None = None,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs ``(λ (k,), Q (m, k))`` of the centred Gram matrix ``K_c = C G Gᵀ C`` by Lanczos
    with full reorthogonalisation (each product one backward and one forward-mode pass; at most ``iters``,
    default ``min(m, 4k + 40)``; stops when every Ritz residual is below ``tol`` times the largest Ritz value,
    default ``1e-8`` for float64 models and ``1e-5`` for others, whose products are accurate to about ``1e-7``:
    an eigenvalue's error is of the order of the residual squared over its gap). ``λ / m`` are the top
    eigenvalues of the samples' ``Σ̂ = G̃ᵀ G̃ / m``."""
    m = op.m
    k = _args.integer("k", k, minimum=1)
    if tol is None:
        tol = 1e-8 if op.named[0][1].dtype == torch.float64 else 1e-5
    if k > m - 1:
        raise ValueError(f"k={k}; the centred Gram matrix of m={m} samples has rank at most {m - 1}")
    iters = min(m, 4 * k + 40) if iters is None else _args.integer("iters", iters, minimum=k)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)

    def mv(v):
        return _centre(op.matvec(op.rmatvec(_centre(v))))

    lam, Q = _lanczos(mv, m, k, "LA", iters, tol, gen)
    return lam.clamp_min(0.0), Q


def random_projection(op: JacobianOperator, k: int, *, generator: torch.Generator | None = None,
                      per_pass: int = 16) -> Tensor:
    """``S = G Uᵀ / √k`` (``(m, k)``, float64) for ``k`` directions ``u_j ~ N(0, I_d)``, drawn parameter by
    parameter, ``per_pass`` directions at a time: memory ``per_pass × d``, never ``m × d``. ``E[S Sᵀ] = G Gᵀ``."""
    k = _args.integer("k", k, minimum=1)
    per_pass = _args.integer("per_pass", per_pass, minimum=1)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    cols = []
    for start in range(0, k, per_pass):
        r = min(per_pass, k - start)
        blocks = [torch.randn((r, *s), generator=gen, dtype=torch.float64) for s in op.shapes]
        cols.append(op.matmat_blocks(blocks))
    return torch.cat(cols, 1) / math.sqrt(k)


@dataclass(frozen=True)
class DeflatedGram:
    """The centred Gram matrix, its top ``q`` eigenpairs exact and the rest sketched (see the module docstring).

    ``K_c`` (``m × m``) is unbiased entry by entry; ``eigenvalues`` and ``vectors`` are the exact top ``q``;
    ``tail_trace`` estimates ``Σ_{j>q} λ_j`` with standard error ``tail_trace_se`` (from the ``k`` independent
    terms) and the bound ``tail_trace_se_bound = √(2 λ_q t / k)`` (``λ_q ≥ λ_{q+1}``, and ``t`` the estimated tail
    trace in place of the true one: a guide, not a sure bound);
    ``trace = Σ λ + tail_trace`` is ``tr K_c``. ``row`` is ``K 1 / m`` and ``mean`` is ``1ᵀK1/m²`` of the
    uncentred Gram matrix ``K = G Gᵀ``, both exact (one backward and one forward-mode pass); ``gbar`` is the mean
    gradient ``Gᵀ1/m`` (``(d,)``) they are formed from.
    """

    K_c: Tensor
    eigenvalues: Tensor
    vectors: Tensor
    tail_trace: float
    tail_trace_se: float
    tail_trace_se_bound: float
    trace: float
    columns: int
    row: Tensor
    mean: float
    gbar: Tensor

    @property
    def trace_relative_se(self) -> float:
        return self.tail_trace_se / self.trace if self.trace > 0 else math.nan

    def uncentred(self) -> Tensor:
        """``K̂ = K̂_c + r1ᵀ + 1rᵀ - (1ᵀK1/m²) 11ᵀ`` with ``r = K1/m``: the uncentred Gram matrix, unbiased."""
        r = self.row[:, None]
        return self.K_c + r + r.T - self.mean


def deflated_gram(op: JacobianOperator, q: int, k: int, *, tol: float | None = None,
                  generator: torch.Generator | None = None) -> DeflatedGram:
    """Lanczos for the top ``q`` eigenpairs of ``K_c``, a ``k``-column random projection for the rest."""
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    q = _args.integer("q", q, minimum=0)
    k = _args.integer("k", k, minimum=2)
    m = op.m
    if q > 0:
        lam, Q = centred_gram_top_eigs(op, min(q, m - 1), tol=tol, generator=gen)
    else:
        lam, Q = torch.zeros(0, dtype=torch.float64), torch.zeros((m, 0), dtype=torch.float64)
    S = _centre(random_projection(op, k, generator=gen))
    R = S - Q @ (Q.T @ S)  # the sketch of the part of G̃ outside the top-q subspace
    x = k * (R**2).sum(0)  # k independent terms ‖P C G u_j‖², mean = tail trace
    tail = float(x.mean())
    tail_se = float(x.std()) / math.sqrt(k)
    lam_q = float(lam[-1]) if q > 0 else math.inf
    bound = math.sqrt(2 * lam_q * max(tail, 0.0) / k) if q > 0 else math.nan
    Kc = Q @ torch.diag(lam) @ Q.T + R @ R.T
    gbar = op.rmatvec(torch.full((m,), 1.0 / m, dtype=torch.float64))
    row = op.matvec(gbar)  # K1/m = G ḡ
    return DeflatedGram(Kc, lam, Q, tail, tail_se, bound, float(lam.sum()) + tail, k, row, float(row.mean()), gbar)
