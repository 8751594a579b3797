"""Noise diagnostics along a training run: noise scale, autocorrelation, spectra, alignment with curvature.

Notation of :mod:`sgdnoise.noise`: ``G`` is the ``(n, d)`` per-sample gradient matrix, ``g_n`` its row
mean, ``G̃ = G - 1 g_nᵀ`` and ``Σ = Σ_emp = (1/n) G̃ᵀ G̃`` (the 1/n normalisation, not 1/(n-1)).

* **Simple noise scale** (McCandlish et al. 2018): ``B_simple = tr Σ / ‖g_n‖²``. From batch-gradient
  norms alone: ``E‖g_B‖² = ‖g_n‖² + c(B) tr Σ`` with ``c(B) = noise_covariance_factor(n, B, scheme)``
  (``1/B`` with replacement), so for two batch sizes with ``c_s = c(B_small) > c_b = c(B_big)``

      ``S_est = (‖g_s‖² - ‖g_b‖²) / (c_s - c_b)``,   ``|G|²_est = (c_s ‖g_b‖² - c_b ‖g_s‖²) / (c_s - c_b)``

  are unbiased for ``tr Σ`` and ``‖g_n‖²`` (with ``c = 1/B``: ``(B_b‖g_b‖² - B_s‖g_s‖²)/(B_b - B_s)``,
  their Appendix A); the ratio of their means over independent pairs is consistent for ``B_simple``.
* **Autocorrelation** of noise vectors ``ξ_k``: ``ρ(ℓ) = mean_k ⟨ξ_k, ξ_{k+ℓ}⟩ / mean_k ‖ξ_k‖²``, the
  numerator over the ``T - ℓ`` overlapping pairs, the denominator over all ``T`` steps. Random
  reshuffling makes disjoint batches of one epoch anti-correlated: ``Cov(ξ_j, ξ_k) = -Σ/(n-1)`` and
  ``Cov ξ_j = c Σ`` with ``c = (n-B)/(B(n-1))``, so their correlation is ``-B/(n-B)``
  (``= -1/(m-1)`` when ``B`` divides ``n``, ``m = n/B``: the ``m`` noises of an epoch sum to zero).
  Across epochs it is 0, and a lag-``ℓ`` pair lies in one epoch for a fraction ``(m-ℓ)/m`` of start
  positions, whence ``ρ(ℓ) = -(m-ℓ)/m · B/(n-B)`` for ``1 ≤ ℓ < m``, 0 for ``ℓ ≥ m``.
* **Spectra and overlaps**: the top eigenpairs of ``Σ`` from the ``n × n`` Gram matrix
  (``v = G̃ᵀ u / √(nλ)``), and ``overlap(U, V) = ‖UᵀV‖_F² / min(k_U, k_V)`` whose mean for a uniformly
  random ``k_V``-subspace of ``R^d`` is ``max(k_U, k_V)/d`` (``E[V Vᵀ] = (k_V/d) I``).
* **Alignment with curvature** (Zhu et al. 2019): ``tr(HΣ) = mean_i (g_i - g_n)ᵀ H (g_i - g_n)`` against
  the isotropic reference ``tr H · tr Σ / d`` (the value for ``Σ`` replaced by ``(tr Σ/d) I``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import _args
from ._args import is_one_of, show
from .curvature import _check_theta, batched_hvp
from .gradients import center_gram
from .noise import _check_G, batch_gradients, noise_covariance_factor
from .problems import Problem
from .sampling import check_batch_size, check_generator, sample_batches

__all__ = [
    "NoiseScaleEstimate", "noise_scale", "noise_scale_from_gram", "noise_scale_two_batch", "Autocorrelation",
    "autocorrelation", "random_reshuffling_lag_correlation", "noise_top_eigs", "subspace_overlap",
    "random_subspace_overlap", "TraceHSigma", "trace_h_sigma", "CommutatorInSubspace", "commutator_in_top_subspace",
    "trace_h_sigma_from_quadratic_forms", "commutator_from_products",
]


def _pos_int(name: str, value, low: int = 1) -> int:
    return _args.integer(name, value, minimum=low, valid=f"an int >= {low}")


def _check_finite_G(G: Tensor) -> None:
    # min and max propagate NaN and ±inf: one reduction, no n × d boolean temporary on the good path.
    lo, hi = torch.aminmax(G)
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        bad = int((~torch.isfinite(G)).sum())
        raise ValueError(f"G has {bad} non-finite value(s) (NaN or ±inf); per-sample gradients must be finite")


def _centred(G: Tensor) -> Tensor:
    _check_G(G)
    return G - G.mean(dim=0, keepdim=True)


# ----------------------------------------------------------------------------- noise scale
def noise_scale(G: Tensor) -> float:
    """``B_simple = tr Σ_emp / ‖g_n‖²`` from the ``(n, d)`` per-sample gradients (``Σ_emp`` with 1/n)."""
    n = _check_G(G)
    gn = G.mean(dim=0)
    g2 = float((gn.double() ** 2).sum())
    s = float(((G - gn) ** 2).sum(dtype=torch.float64))
    if not (math.isfinite(g2) and math.isfinite(s)):  # NaN/inf in G propagate to both sums: no extra pass
        _check_finite_G(G)
        raise ValueError(f"G is finite but its sums overflowed (n·tr Σ = {s:.3g}, ‖g_n‖² = {g2:.3g}); rescale G")
    return s / n / g2 if g2 > 0 else math.inf


def noise_scale_from_gram(K: Tensor) -> float:
    """``B_simple`` from the Gram matrix ``K = G Gᵀ`` alone: ``tr Σ = tr(K_c)/n``, ``‖g_n‖² = 1ᵀK1/n²``."""
    _args.tensor("K", K, "a square (n, n) Gram matrix (a tensor)")
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        raise ValueError(f"K must be a square (n, n) Gram matrix; got shape {tuple(K.shape)}")
    n, K = K.shape[0], K.double()
    g2 = float(K.sum()) / n**2
    if not math.isfinite(g2):  # NaN/inf anywhere in K propagate to its sum
        bad = int((~torch.isfinite(K)).sum())
        raise ValueError(f"K has {bad} non-finite value(s) (NaN or ±inf); the Gram matrix must be finite" if bad else
                         f"K is finite but its sum overflowed ({g2 * n**2:.3g}); rescale K")
    return float(torch.trace(center_gram(K))) / n / g2 if g2 > 0 else math.inf


@dataclass(frozen=True)
class NoiseScaleEstimate:
    """Two-batch estimate: ``b_simple = trace_sigma / grad_sq`` (means over pairs), with per-pair draws."""

    b_simple: float
    trace_sigma: float
    trace_sigma_se: float
    grad_sq: float
    grad_sq_se: float
    trace_sigma_draws: Tensor  # (pairs,) unbiased for tr Σ_emp
    grad_sq_draws: Tensor  # (pairs,) unbiased for ‖g_n‖²

    @property
    def b_simple_se(self) -> float:
        """Delta-method standard error of ``b_simple``, a ratio of two means over the same pairs (their
        covariance included)."""
        S, g = self.trace_sigma_draws.double(), self.grad_sq_draws.double()
        cov = float(torch.cov(torch.stack([S, g]))[0, 1])
        rel_var = (float(S.var()) / float(S.mean()) ** 2 + float(g.var()) / float(g.mean()) ** 2
                   - 2 * cov / (float(S.mean()) * float(g.mean()))) / S.numel()
        return self.b_simple * math.sqrt(max(rel_var, 0.0))


def noise_scale_two_batch(G: Tensor, B_small: int, B_big: int, pairs: int, generator: torch.Generator,
                          scheme: str = "with_replacement") -> NoiseScaleEstimate:
    """McCandlish et al.'s estimator of ``B_simple`` from ``‖g_B‖²`` at two batch sizes (module docstring).

    Each of ``pairs`` independent pairs draws one batch of each size by ``sample_batches(..., scheme)``
    (for ``"reshuffling"`` consecutive batches share an epoch: still unbiased, the SEs are then approximate).
    """
    n = _check_G(G)
    for name, B in (("B_small", B_small), ("B_big", B_big)):
        check_batch_size(B, n, scheme, name=name)
    if not B_small < B_big:
        raise ValueError(f"need B_small < B_big; got B_small={B_small}, B_big={B_big}")
    pairs = _pos_int("pairs", pairs, 2)
    c_s, c_b = noise_covariance_factor(n, B_small, scheme), noise_covariance_factor(n, B_big, scheme)
    sq_s = (batch_gradients(G, sample_batches(n, B_small, pairs, scheme, generator).to(G.device)).double() ** 2).sum(1)
    sq_b = (batch_gradients(G, sample_batches(n, B_big, pairs, scheme, generator).to(G.device)).double() ** 2).sum(1)
    S = ((sq_s - sq_b) / (c_s - c_b)).cpu()
    g2 = ((c_s * sq_b - c_b * sq_s) / (c_s - c_b)).cpu()
    root = math.sqrt(pairs)
    return NoiseScaleEstimate(float(S.mean() / g2.mean()), float(S.mean()), float(S.std()) / root,
                              float(g2.mean()), float(g2.std()) / root, S, g2)


# ----------------------------------------------------------------------------- autocorrelation
@dataclass(frozen=True)
class Autocorrelation:
    """``rho[ℓ]`` and its standard error ``se[ℓ]`` for ``ℓ = 0 … max_lag``."""

    rho: Tensor
    se: Tensor


_GRAM_MAX_T = 4096  # autocorrelation's Gram-matrix route up to this many steps


def autocorrelation(xi: Tensor, max_lag: int, *, center: bool = False, block: int = 1) -> Autocorrelation:
    """``ρ(ℓ) = mean_{k<T-ℓ} ⟨ξ_k, ξ_{k+ℓ}⟩ / mean_{k<T} ‖ξ_k‖²`` for ``xi`` of shape ``(T, d)`` or ``(T,)``.

    No centring by default (SGD noise has mean zero by construction); ``center=True`` subtracts the
    sample mean first. The SE is the delta-method one: the spread of ``r_k = ⟨ξ_k, ξ_{k+ℓ}⟩ - ρ(ℓ) ‖ξ_k‖²``
    over the ``T - ℓ`` pairs divided by ``√(T-ℓ) · mean ‖ξ‖²``, which assumes the ``r_k`` independent;
    with ``block > 1`` the spread of means over non-overlapping blocks of ``block`` steps is used
    instead (valid when the dependence is shorter than a block, e.g. an epoch plus ``ℓ``).
    """
    if not isinstance(xi, Tensor) or xi.ndim not in (1, 2):
        got = tuple(xi.shape) if isinstance(xi, Tensor) else type(xi).__name__
        raise ValueError(f"xi must have shape (T,) or (T, d); got {got}")
    T = xi.shape[0]
    max_lag, block = _pos_int("max_lag", max_lag, 0), _pos_int("block", block)
    center = _args.flag("center", center)
    if (T - max_lag) // block < 2:
        raise ValueError(f"max_lag={max_lag}, block={block} leave fewer than 2 blocks of T={T} steps; "
                         "need (T - max_lag) // block >= 2")
    X = xi.reshape(T, -1)
    if center:
        X = X - X.mean(dim=0, keepdim=True)
    # The inner products <ξ_k, ξ_{k+ℓ}> are the ℓ-th diagonal of the T x T Gram matrix: one matrix product
    # instead of max_lag + 1 passes over the (T, d) array (10x faster at T = 320, d = 26k); a long run falls back
    # to the passes, whose memory does not grow like T².
    gram = None
    if T <= _GRAM_MAX_T and T * X.shape[1] <= 2**25:  # the float64 copy stays under 256 MiB
        Xd = X.to(torch.float64)
        gram = Xd @ Xd.T
        s = torch.diagonal(gram).clone()
    else:
        s = (X * X).sum(1, dtype=torch.float64)
    mean_s = s.mean()
    rho, se = [], []
    for lag in range(max_lag + 1):
        if gram is not None:
            p = torch.diagonal(gram, offset=lag)
        else:
            p = (X[: T - lag] * X[lag:]).sum(1, dtype=torch.float64)
        r = p.mean() / mean_s
        res = p - r * s[: T - lag]
        nb = (T - lag) // block
        res = res[: nb * block].view(nb, block).mean(1)
        rho.append(r)
        se.append(res.std() / math.sqrt(nb) / mean_s)
    return Autocorrelation(torch.stack(rho).cpu(), torch.stack(se).cpu())


def random_reshuffling_lag_correlation(n: int, B: int, max_lag: int, num_steps: int | None = None) -> Tensor:
    """Lag-``ℓ`` correlation of the batch noise under random reshuffling, ``ℓ = 0 … max_lag``.

    Returns ``E[Σ_k ⟨ξ_k, ξ_{k+ℓ}⟩/(T-ℓ)] / E‖ξ_k‖²``, what :func:`autocorrelation` estimates, for any
    ``Σ_emp``: ``-f(ℓ) · B/(n-B)`` with ``f(ℓ)`` the fraction of lag-``ℓ`` pairs of steps in one epoch of
    ``m = ⌊n/B⌋`` batches (drop-last when ``B ∤ n``). ``num_steps=None`` averages over the position in
    the epoch, ``f = (m-ℓ)/m``; ``num_steps=T`` counts the pairs of a run of ``T`` steps started at an
    epoch boundary, as produced by ``sample_batches(n, B, T, "reshuffling", ·)``.
    """
    check_batch_size(B, n, "reshuffling")
    if B >= n:
        raise ValueError(f"B={B} >= n={n}: the reshuffled batch noise is zero; need 1 <= B < n")
    max_lag = _pos_int("max_lag", max_lag, 0)
    if num_steps is not None and _pos_int("num_steps", num_steps) <= max_lag:
        raise ValueError(f"num_steps={num_steps} must exceed max_lag={max_lag}")
    m = n // B
    out = torch.zeros(max_lag + 1, dtype=torch.float64)
    out[0] = 1.0
    for lag in range(1, min(max_lag, m - 1) + 1):
        if num_steps is None:
            frac = (m - lag) / m
        else:
            frac = float((torch.arange(num_steps - lag) % m < m - lag).double().mean())
        out[lag] = -frac * B / (n - B)
    return out


# ----------------------------------------------------------------------------- spectra and overlaps
def noise_top_eigs(G: Tensor, k: int, *, K: Tensor | None = None, method: str = "auto",
                   tol: float = 1e-8) -> tuple[Tensor, Tensor]:
    """Top-``k`` eigenpairs of ``Σ_emp = G̃ᵀ G̃ / n``: ``(eigenvalues (k,) descending, eigenvectors (d, k))``.

    ``method="eigh"``: a dense eigen-solve of the smaller of ``G̃ᵀG̃/n`` (``d × d``) and ``G̃ G̃ᵀ/n``
    (``n × n``, also used when the Gram matrix ``K = G Gᵀ`` is passed), mapping ``v = G̃ᵀ u / √(nλ)``
    (unit norm). ``method="lanczos"``: Lanczos on ``v ↦ G̃ᵀ(G̃ v)/n`` to relative residual ``tol``,
    ``O(nd)`` per product and no ``n²d`` Gram matrix. ``"auto"``: eigh when ``K`` is given or
    ``min(n, d) <= 1000``. Float64 results; ``k`` must not exceed the numerical rank of ``Σ_emp``.
    """
    from .curvature import _lanczos

    n, d = _check_G(G), G.shape[1]
    if not is_one_of(method, ("auto", "eigh", "lanczos")):
        raise ValueError(f"method={show(method)}; valid values are 'auto', 'eigh', 'lanczos'")
    if K is not None:
        _args.tensor("K", K, f"None or the ({n}, {n}) Gram matrix G Gᵀ (a tensor)")
        if K.shape != (n, n):
            raise ValueError(f"K has shape {tuple(K.shape)}; need the ({n}, {n}) Gram matrix G Gᵀ")
    tol = _args.real("tol", tol, gt=0, as_given=True)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(n - 1, d):
        raise ValueError(f"k={k!r}; Σ_emp has rank at most min(n-1, d)={min(n - 1, d)}, need an int 1 <= k <= that")
    _check_finite_G(G)
    if K is not None and not bool(torch.isfinite(K).all()):
        raise ValueError(f"K has {int((~torch.isfinite(K)).sum())} non-finite value(s) (NaN or ±inf); "
                         "the Gram matrix must be finite")
    Gc = _centred(G)
    V = None
    if method == "lanczos" or (method == "auto" and K is None and min(n, d) > 1000):
        matvec = lambda v: (Gc.T @ (Gc @ v.to(Gc.dtype))).double().cpu() / n  # noqa: E731
        lam, V = _lanczos(matvec, d, k, "LA", min(d, 300 + k), tol, torch.Generator().manual_seed(0))
    elif K is None and d <= n:
        lam, V = torch.linalg.eigh(Gc.double().T @ Gc.double() / n)
        lam, V = lam.flip(0), V.flip(1)
    else:
        lam, U = torch.linalg.eigh((Gc @ Gc.T if K is None else center_gram(K)).double() / n)
        lam, U = lam.flip(0), U.flip(1)
    rank = int((lam > torch.finfo(G.dtype).eps * max(n, d) * lam[0].clamp_min(1e-300)).sum())
    if k > rank:
        raise ValueError(f"k={k}; Σ_emp has numerical rank {rank}, need 1 <= k <= {rank}")
    if V is None:
        V = (Gc.T @ U[:, :k].to(Gc.dtype)).double().cpu() / torch.sqrt(n * lam[:k]).cpu()
    return lam[:k].cpu(), V[:, :k].cpu()  # on the CPU whatever the device of G, as the Lanczos route returns them


def _orthonormal(name: str, U: Tensor) -> Tensor:
    if not isinstance(U, Tensor) or U.ndim != 2 or not 1 <= U.shape[1] <= U.shape[0]:
        got = tuple(U.shape) if isinstance(U, Tensor) else type(U).__name__
        raise ValueError(f"{name} must be a (d, k) matrix with 1 <= k <= d; got {got}")
    U = U.double()
    err = float((U.T @ U - torch.eye(U.shape[1], dtype=torch.float64, device=U.device)).abs().max())
    if not math.isfinite(err):  # NaN/inf in U propagate to UᵀU (NaN compares False below)
        bad = int((~torch.isfinite(U)).sum())
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or ±inf); need finite orthonormal columns")
    if err > 1e-4:
        raise ValueError(f"the columns of {name} are not orthonormal (max |{name}ᵀ{name} - I| = {err:.2g} > 1e-4)")
    return U


def subspace_overlap(U: Tensor, V: Tensor) -> float:
    """``‖UᵀV‖_F² / min(k_U, k_V)`` in ``[0, 1]`` for orthonormal ``(d, k_U)`` and ``(d, k_V)`` columns.

    1 when the smaller subspace lies in the larger, 0 when they are orthogonal.
    """
    U, V = _orthonormal("U", U), _orthonormal("V", V)
    if U.shape[0] != V.shape[0]:
        raise ValueError(f"U and V live in different spaces: d={U.shape[0]} and d={V.shape[0]}")
    return float((U.T @ V).pow(2).sum()) / min(U.shape[1], V.shape[1])


def random_subspace_overlap(d: int, k_u: int, k_v: int | None = None) -> float:
    """Mean :func:`subspace_overlap` with a uniformly random ``k_v``-dim subspace of ``R^d``: ``max(k_u, k_v)/d``."""
    k_v = k_u if k_v is None else k_v
    d = _pos_int("d", d)
    if not (_pos_int("k_u", k_u) <= d and _pos_int("k_v", k_v) <= d):
        raise ValueError(f"k_u={k_u}, k_v={k_v} must not exceed d={d}")
    return max(k_u, k_v) / d


# ----------------------------------------------------------------------------- alignment with curvature
@dataclass(frozen=True)
class TraceHSigma:
    """``tr(HΣ)`` against the isotropic reference ``tr H · tr Σ / d``; ``ratio`` = their quotient."""

    trace_h_sigma: float
    trace_h_sigma_se: float  # 0 when all n samples are used
    trace_h: float
    trace_h_se: float  # Hutchinson SE; 0 when exact
    trace_sigma: float  # exact, from G
    isotropic: float  # tr H · tr Σ / d
    ratio: float
    ratio_se: float  # delta method, the two estimates independent
    m: int  # samples used for tr(HΣ)
    probes: int | None  # Rademacher probes for tr H (None: exact)


def trace_h_sigma(problem: Problem, theta: Tensor, G: Tensor, m: int | None = None, generator: torch.Generator | None = None, *,
                  probes: int | None = 100, chunk_size: int | None = None) -> TraceHSigma:
    """``tr(HΣ_emp)`` from Hessian-vector products on the centred per-sample gradients, and its isotropic reference.

    ``m=None`` uses all ``n`` rows of ``G̃`` (exact up to round-off); ``m`` rows drawn without
    replacement give an unbiased mean with SE ``std · √((1 - m/n)/m)``. ``tr H`` is Hutchinson's
    ``mean_r z_rᵀ H z_r`` over ``probes`` Rademacher vectors (SE from their spread); ``probes=None``
    computes it exactly from the ``d`` unit vectors (small ``d`` only). ``G`` must be taken at ``theta``.
    Products are ``vmap``-ed ``chunk_size`` vectors at a time (default ``max(8, 2^15 // n)``).
    """
    n, d = _check_G(G), G.shape[1]
    chunk_size = max(8, 2**15 // n) if chunk_size is None else chunk_size
    _args.tensor("theta", theta, f"the flat parameter vector, shape ({d},), at which G was taken")
    if theta.numel() != d:
        raise ValueError(f"theta has {theta.numel()} entries but G has d={d} columns; they must match")
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    Gc = _centred(G)
    trace_sigma = float((Gc.double() ** 2).sum()) / n
    if m is None:
        rows = Gc
    else:
        if not 2 <= _pos_int("m", m) <= n:
            raise ValueError(f"m={m}; need 2 <= m <= n={n} (or m=None for all samples)")
        rows = Gc[torch.randperm(n, generator=gen)[:m].to(G.device)]
    q = (batched_hvp(problem, theta, rows, chunk_size=chunk_size).double() * rows.double()).sum(1)
    return trace_h_sigma_from_quadratic_forms(problem, theta, q, n, trace_sigma, gen, probes=probes,
                                              chunk_size=chunk_size)


def trace_h_sigma_from_quadratic_forms(problem: Problem, theta: Tensor, q: Tensor, n: int, trace_sigma: float,
                                       generator: torch.Generator, *, probes: int | None = 100,
                                       chunk_size: int = 8) -> TraceHSigma:
    """:func:`trace_h_sigma` given ``q_i = g_ciᵀ H g_ci`` for ``len(q)`` of the ``n`` centred per-sample gradients
    (drawn without replacement; all ``n`` for the exact value) and ``tr Σ_emp``: for routes that never hold ``G``
    (the rows are formed a few at a time). ``tr H`` by Hutchinson as there."""
    d = _check_theta(problem, theta)
    gen = check_generator(generator)
    q = torch.as_tensor(q, dtype=torch.float64)
    m = q.numel()
    if not 2 <= m <= n:
        raise ValueError(f"q has {m} entries; need 2 <= len(q) <= n={n}")
    ths = float(q.mean())
    ths_se = 0.0 if m == n else float(q.std()) * math.sqrt((1 - m / n) / m)
    if probes is None:
        eye = torch.eye(d, dtype=theta.dtype, device=theta.device)
        tr_h, tr_h_se = float(torch.diagonal(batched_hvp(problem, theta, eye, chunk_size=chunk_size)).double().sum()), 0.0
    else:
        z = (torch.randint(2, (_pos_int("probes", probes, 2), d), generator=gen) * 2 - 1).to(theta.device, theta.dtype)
        hz = (batched_hvp(problem, theta, z, chunk_size=chunk_size).double() * z.double()).sum(1)
        tr_h, tr_h_se = float(hz.mean()), float(hz.std()) / math.sqrt(probes)
    iso = tr_h * trace_sigma / d
    ratio = ths / iso if iso else math.nan
    ratio_se = abs(ratio) * math.hypot(ths_se / abs(ths) if ths else 0.0, tr_h_se / abs(tr_h)) if iso else math.nan
    return TraceHSigma(ths, ths_se, tr_h, tr_h_se, trace_sigma, iso, ratio, ratio_se, m, probes)


@dataclass(frozen=True)
class CommutatorInSubspace:
    """How far ``H`` and ``Σ_emp`` are from commuting on the top-``k`` eigenvectors ``V`` of ``Σ_emp``.

    ``relative = ‖[H, Σ]V‖_F / (‖HΣV‖_F + ‖ΣHV‖_F)``: 0 when ``H`` maps each of those eigenvectors into the
    eigenspace of its own eigenvalue (so, for distinct eigenvalues, when they are eigenvectors of ``H`` too);
    at most 1. ``leakage = ‖(I - VVᵀ)HV‖_F / ‖HV‖_F``: the part of ``HV`` outside the subspace (0 when the subspace
    is invariant under ``H``). ``null_relative``: the same ``relative`` with the coordinates of the per-sample
    gradients randomly permuted (``Σ → PΣPᵀ``, the same spectrum, its alignment with ``H`` destroyed), one value
    per permutation: the chance level the measured value is read against.
    """

    k: int
    relative: float
    leakage: float
    null_relative: tuple[float, ...]


def commutator_in_top_subspace(problem: Problem, theta: Tensor, G: Tensor, k: int, *, permutations: int = 5,
                               generator: torch.Generator | None = None, chunk_size: int = 16) -> CommutatorInSubspace:
    """Measure the commutator ``[H, Σ_emp]`` on the top-``k`` eigenvectors of ``Σ_emp`` (what chapter 3's current
    depends on), with ``k`` Hessian-vector products per evaluation; see :class:`CommutatorInSubspace`.

    ``G`` are the per-sample gradients at ``theta``; ``Σ_emp`` is applied as ``G̃ᵀ(G̃ x)/n``, never formed.
    ``permutations`` (an int ``>= 0``) random coordinate permutations give the chance level.
    """
    n, d = _check_G(G), G.shape[1]
    _args.tensor("theta", theta, f"the flat parameter vector, shape ({d},), at which G was taken")
    if theta.numel() != d:
        raise ValueError(f"theta has {theta.numel()} entries but G has d={d} columns; they must match")
    permutations = _args.integer("permutations", permutations, minimum=0)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    Gc = _centred(G).double()
    lam, V = noise_top_eigs(Gc, k)  # a permutation of the coordinates permutes the eigenvectors' rows, nothing else
    perms = [torch.randperm(d, generator=gen) for _ in range(permutations)]
    return _commutator(problem, theta, lam, V, lambda X: Gc.T @ (Gc @ X) / n,
                       lambda P: (lambda X: Gc[:, P].T @ (Gc[:, P] @ X) / n), perms, chunk_size)


def _commutator(problem: Problem, theta: Tensor, lam: Tensor, V: Tensor, sigma, sigma_permuted, perms,
                chunk_size: int) -> CommutatorInSubspace:
    """The measurement of :func:`commutator_in_top_subspace` given the top eigenpairs ``(lam, V)`` of ``Σ_emp`` and
    its product ``sigma(X) = Σ_emp X`` (``X`` of shape ``(d, k)``); ``sigma_permuted(P)`` is the product with
    ``Σ_emp`` after permuting the coordinates by ``P`` (the null)."""

    def measure(apply, V_):
        HV = batched_hvp(problem, theta, V_.to(theta.dtype).T.contiguous(), chunk_size=chunk_size).double().T  # (d, k)
        SHV = apply(HV)
        HSV = HV * lam
        rel = float((HSV - SHV).norm() / (HSV.norm() + SHV.norm()))
        leak = float((HV - V_ @ (V_.T @ HV)).norm() / HV.norm())
        return rel, leak

    rel, leak = measure(sigma, V)
    null = tuple(measure(sigma_permuted(P), V[P])[0] for P in perms)
    return CommutatorInSubspace(int(V.shape[1]), rel, leak, null)


def commutator_from_products(problem: Problem, theta: Tensor, lam: Tensor, V: Tensor, sigma, *, permutations: int = 5,
                             generator: torch.Generator | None = None, chunk_size: int = 16) -> CommutatorInSubspace:
    """:func:`commutator_in_top_subspace` for routes that never hold ``G``: the top eigenpairs ``(lam (k,), V (d, k))``
    of ``Σ_emp`` and its product ``sigma(X) = Σ_emp X`` for ``X`` of shape ``(d, r)`` are given. The null permutes
    the coordinates: ``Σ_P X = (Σ_emp X')[P]`` with ``X'[P] = X``."""
    d = _check_theta(problem, theta)
    if V.ndim != 2 or V.shape[0] != d or lam.shape != (V.shape[1],):
        raise ValueError(f"V must be (d={d}, k) and lam (k,); got {tuple(V.shape)} and {tuple(lam.shape)}")
    permutations = _args.integer("permutations", permutations, minimum=0)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    perms = [torch.randperm(d, generator=gen) for _ in range(permutations)]

    def permuted(P):
        def apply(X):
            Xs = torch.empty_like(X)
            Xs[P] = X
            return sigma(Xs)[P]
        return apply

    return _commutator(problem, theta, lam.double(), V.double(), sigma, permuted, perms, chunk_size)
