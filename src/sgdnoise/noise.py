"""The gradient noise of SGD: ``g_n``, ``Σ_emp(θ)``, batch noise, its covariance, estimators, spectra.

Notation (mean-loss convention, see :mod:`sgdnoise.gradients`): ``G`` is the ``(n, d)`` matrix of
per-sample gradients ``g_i``, ``g_n = (1/n) Σ_i g_i``, ``g_B = (1/B) Σ_{i∈B} g_i`` and the noise is
``ξ = g_n - g_B`` (the sign used by the research notes, §1.6). The empirical noise covariance is

    Σ_emp(θ) = (1/n) Σ_i (g_i - g_n)(g_i - g_n)ᵀ = (1/n) G̃ᵀ G̃,   G̃ = G - 1 g_nᵀ,

with the 1/n normalisation of the notes' §1.8.1 (not 1/(n-1)).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

from . import _args
from ._args import ArgumentTypeError, show
from .gradients import center_gram, centred_gram_lower, gram_matrix
from .sampling import check_batch_size, check_generator, check_scheme

__all__ = [
    "sigma_top_eigenvalues",
    "noise_covariance_factor",
    "empirical_noise_covariance",
    "batch_gradients",
    "batch_noise",
    "batch_weights",
    "noise_sq_norms_from_gram",
    "estimate_noise_covariance",
    "estimator_expectation_factor",
    "noise_spectrum",
    "sigma_spectrum",
    "effective_rank",
    "noise_trace_scan",
    "estimator_trace_draws",
    "loglog_slope",
    "loglog_slope_ci",
]


def _check_G(G: Tensor) -> int:
    if not isinstance(G, Tensor) or G.ndim != 2:
        shape = tuple(G.shape) if isinstance(G, Tensor) else type(G).__name__
        raise ValueError(f"G must be the (n, d) per-sample gradient matrix; got shape {shape}")
    if G.shape[0] < 1:
        raise ValueError("G has no rows (n=0)")
    if not G.dtype.is_floating_point:
        raise TypeError(f"G has dtype {G.dtype}; per-sample gradients are real: pass a float32 or float64 tensor")
    return G.shape[0]


def noise_covariance_factor(n: int, B: int, scheme: str) -> float:
    """``c(n, B)`` in ``Cov[ξ | D_n, θ] = c(n, B) · Σ_emp(θ)`` for one step of ``scheme``.

    ``1/B`` with replacement (notes, Prop. 1); ``(n - B) / (B (n - 1))`` without replacement and for
    a single reshuffled batch (the finite-population correction of §1.8.4, item 4). Proved in
    chapter 1 and checked there by exact enumeration.
    """
    check_batch_size(B, n, scheme)
    if scheme == "with_replacement":
        return 1.0 / B
    if n == 1:
        return 0.0
    return (n - B) / (B * (n - 1))


def empirical_noise_covariance(G: Tensor) -> Tensor:
    """``Σ_emp = (1/n) G̃ᵀ G̃``, shape ``(d, d)``. Forms a ``d × d`` matrix: small ``d`` only."""
    n = _check_G(G)
    Gc = G - G.mean(dim=0, keepdim=True)
    return Gc.T @ Gc / n


def batch_weights(batches: Tensor, n: int, dtype=torch.float64) -> Tensor:
    """Row ``k`` holds the weights ``w_k`` with ``g_{B_k} = w_kᵀ G``: ``counts / B``. Shape ``(m, n)``."""
    _args.tensor("batches", batches, "a (m, B) tensor of sample indices, one batch per row")
    n = _args.integer("n", n, minimum=1, valid="a positive int (the number of samples)")
    dtype = _args.float_dtype("dtype", dtype)
    if batches.ndim != 2 or batches.shape[1] < 1:
        raise ValueError(f"batches must have shape (m, B) with B >= 1; got {tuple(batches.shape)}")
    m, B = batches.shape
    if batches.numel() and (batches.min() < 0 or batches.max() >= n):
        raise ValueError(f"batch indices must lie in [0, {n - 1}]; got range [{int(batches.min())}, {int(batches.max())}]")
    W = torch.zeros((m, n), dtype=dtype)
    W.scatter_add_(1, batches, torch.full(batches.shape, 1.0 / B, dtype=dtype))
    return W


def batch_gradients(G: Tensor, batches: Tensor) -> Tensor:
    """``g_{B_k}`` for each row of ``batches`` (shape ``(m, B)``); returns ``(m, d)``."""
    n = _check_G(G)
    return batch_weights(batches, n, G.dtype).to(G.device) @ G


def batch_noise(G: Tensor, batches: Tensor) -> Tensor:
    """Noise draws ``ξ_k = g_n - g_{B_k}``, shape ``(m, d)``."""
    _check_G(G)
    return G.mean(dim=0) - batch_gradients(G, batches)


def noise_sq_norms_from_gram(K: Tensor, batches: Tensor) -> Tensor:
    """``‖ξ_k‖²`` for each batch from the Gram matrix ``K = G Gᵀ`` alone (no ``G``): shape ``(m,)``.

    With ``u = 1/n`` and batch weights ``w_k``, ``ξ_k = (u - w_k)ᵀ G`` so
    ``‖ξ_k‖² = (u - w_k)ᵀ K (u - w_k)``; cost ``O(m n²)``, independent of ``d``.
    """
    _args.tensor("K", K, "a square (n, n) Gram matrix (a tensor)")
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (n, n) Gram matrix; got shape {tuple(K.shape)}")
    n = K.shape[0]
    V = batch_weights(batches, n, K.dtype).to(K.device) - 1.0 / n
    return ((V @ K) * V).sum(dim=1)


def estimate_noise_covariance(batch_grads: Tensor, B: int) -> Tensor:
    """The estimator of the notes' §1.8.5: ``Σ̂ = B/(m-1) Σ_j (g_{B_j} - ḡ)(g_{B_j} - ḡ)ᵀ``.

    ``batch_grads`` has shape ``(m, d)``, ``m ≥ 2`` minibatch gradients at one ``θ``. Its expectation
    is ``ζ · Σ_emp`` with ``ζ`` from :func:`estimator_expectation_factor`: unbiased only when the
    batches are drawn with replacement (chapter 1).
    """
    _args.tensor("batch_grads", batch_grads, "a (m, d) tensor of m >= 2 batch gradients")
    if batch_grads.ndim != 2 or batch_grads.shape[0] < 2:
        raise ValueError(f"batch_grads must hold m >= 2 batch gradients, shape (m, d); got shape "
                         f"{tuple(batch_grads.shape)}")
    if isinstance(B, bool) or not isinstance(B, int) or B < 1:
        raise ValueError(f"batch size B={B!r} must be a positive int")
    m = batch_grads.shape[0]
    D = batch_grads - batch_grads.mean(dim=0, keepdim=True)
    return B * (D.T @ D) / (m - 1)


def estimator_expectation_factor(n: int, B: int, scheme: str) -> float:
    """``ζ`` in ``E[Σ̂] = ζ Σ_emp`` for the §1.8.5 estimator.

    * with replacement (independent batches): ``ζ = 1``;
    * without replacement (independent batches): ``ζ = (n - B)/(n - 1)``;
    * random reshuffling, ``m ≥ 2`` batches from one epoch: ``ζ = n/(n - 1)``, whatever ``m``:
      disjoint batches are negatively correlated, ``Cov(g_{B_j}, g_{B_k}) = -Σ_emp/(n - 1)``.
    """
    check_scheme(scheme)
    check_batch_size(B, n, scheme)
    if n < 2:
        raise ValueError(f"the estimator's expectation needs n >= 2 samples; got n={n}")
    if scheme == "with_replacement":
        return 1.0
    if scheme == "without_replacement":
        return (n - B) / (n - 1)
    if 2 * B > n:
        raise ValueError(f"reshuffling with B={B}, n={n} gives fewer than 2 batches per epoch; the estimator needs m >= 2")
    return n / (n - 1)


def noise_spectrum(K: Tensor, *, centered: bool = False) -> Tensor:
    """Eigenvalues of ``Σ_emp`` in decreasing order, from the ``(n, n)`` Gram matrix.

    ``Σ_emp = (1/n) G̃ᵀ G̃`` and ``(1/n) G̃ G̃ᵀ`` share their non-zero eigenvalues, so the whole
    non-zero spectrum costs one ``n × n`` symmetric eigen-solve, even when ``d ≫ n``. Pass the
    uncentred ``K = G Gᵀ`` (it is centred here) or ``centered=True`` if ``K`` is already ``G̃ G̃ᵀ``.
    Returns ``min(n, d)``-many values at most (``n``), clipped at zero (round-off). Only the lower
    triangle of ``K`` (after centring) is read.
    """
    _args.tensor("K", K, "a square (n, n) Gram matrix (a tensor)")
    centered = _args.flag("centered", centered)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (n, n) Gram matrix; got shape {tuple(K.shape)}")
    n = K.shape[0]
    Kc = K if centered else center_gram(K)
    eig = torch.linalg.eigvalsh(Kc.mT, UPLO="U") / n  # Kc's lower triangle, in LAPACK's layout
    return eig.flip(0).clamp_min(0.0)


def sigma_spectrum(model, loss_fn, X: Tensor, y: Tensor) -> Tensor:
    """Eigenvalues of ``Σ_emp(θ)`` in decreasing order, straight from the model and the data.

    The same values as ``noise_spectrum(gram_matrix(model, loss_fn, X, y, centered=True),
    centered=True)``, with half of the Gram products: on the fast path (every trainable parameter in an
    ``nn.Linear``) only the lower triangle of ``G̃ G̃ᵀ`` is built
    (:func:`sgdnoise.gradients.centred_gram_lower`), the centring needs no pass over a full matrix,
    and no ``n × d`` array is ever formed. Other models take the general route through the full
    Gram matrix.
    """
    Kl = centred_gram_lower(model, loss_fn, X, y)
    if Kl is None:
        Kl = gram_matrix(model, loss_fn, X, y, centered=True)
    return noise_spectrum(Kl, centered=True)  # reads only the lower triangle


def sigma_top_eigenvalues(model, loss_fn, X: Tensor, y: Tensor, k: int, *, centered: bool = True,
                          tol: float = 1e-10) -> Tensor:
    """The ``k`` largest eigenvalues of ``Σ_emp(θ)`` (``centered=True``) or of the uncentred second moment
    ``M = GᵀG/n`` (the "empirical Fisher"), in decreasing order, by Lanczos on the ``n × n`` Gram matrix.

    The Gram matrix is built as in :func:`sgdnoise.gradients.gram_matrix` (on the fast path without forming ``G``), and
    its top ``k`` eigenvalues, divided by ``n``, are those wanted (``G Gᵀ`` and ``GᵀG`` share their nonzero
    eigenvalues). The implicitly restarted Lanczos of ARPACK (``scipy.sparse.linalg.eigsh``, on the matrix scaled
    to a unit largest diagonal, each Ritz value to relative accuracy about ``tol``, from a fixed start vector)
    costs a few dozen ``n × n`` products instead of a full eigen-solve (on the digits MLP, n = 1797: about
    0.015 s against 0.9 s).
    """
    import numpy as np
    from scipy.sparse.linalg import eigsh

    K = gram_matrix(model, loss_fn, X, y, centered=_args.flag("centered", centered))
    n = K.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n - 1:
        raise ValueError(f"k={k!r}; need an int 1 <= k <= n - 1 = {n - 1}")
    tol = _args.real("tol", tol, gt=0, as_given=True)
    Kd = K.double().cpu().numpy()
    scale = float(np.abs(np.diag(Kd)).max()) or 1.0  # ARPACK's test has an absolute floor: work at unit scale
    v0 = np.random.default_rng(0).standard_normal(n)  # a fixed start: the same Ritz values on every call
    lam = eigsh(Kd / scale, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return torch.from_numpy(np.sort(lam)[::-1].copy()) * scale / n


def effective_rank(eigenvalues: Tensor) -> float:
    """Participation ratio ``(Σ λ)² / Σ λ²`` of a spectrum: 1 for rank one, ``r`` for ``r`` equal values."""
    lam = _args.number_array("eigenvalues", eigenvalues, "a 1-D spectrum: a tensor, array or list of numbers")
    if lam.ndim != 1:
        raise ValueError(f"eigenvalues must be a 1-D spectrum; got shape {tuple(lam.shape)} "
                         "(for a covariance matrix, pass torch.linalg.eigvalsh(matrix))")
    if (lam < 0).any():
        raise ValueError("eigenvalues of a covariance must be non-negative")
    s2 = float((lam**2).sum())
    if s2 == 0.0:
        return 0.0
    return float(lam.sum()) ** 2 / s2


def _centred_quadratic_forms(K: Tensor, W: Tensor) -> Tensor:
    """``w_kᵀ K_c w_k`` per row of ``W`` (batch weights), with ``K_c`` the centred Gram matrix.

    ``K_c 1 = 0``, so ``(w - u)ᵀ K (w - u) = wᵀ K_c w``: centring first avoids the cancellation
    that the uncentred form suffers when ``B`` approaches ``n``.
    """
    Kc = center_gram(K)
    return ((W @ Kc) * W).sum(dim=1)


def noise_trace_scan(K: Tensor, batch_sizes, scheme: str, num_batches: int, generator: torch.Generator):
    """Monte-Carlo ``E‖ξ‖² = tr Cov[ξ]`` for each batch size, from the Gram matrix ``K = G Gᵀ``.

    Returns ``(mean, standard_error)`` as float64 tensors of shape ``(len(batch_sizes),)``; the
    prediction is ``noise_covariance_factor(n, B, scheme) · tr Σ_emp``.
    """
    from .sampling import sample_batches

    n = _check_K(K)
    if isinstance(num_batches, bool) or not isinstance(num_batches, numbers.Integral) or num_batches < 2:
        raise ValueError(f"num_batches={num_batches!r} must be an int >= 2 (the mean needs a batch, its standard "
                         "error two)")
    sizes = _args.items("batch_sizes", batch_sizes, "a non-empty sequence of batch sizes (ints)")
    if not sizes:
        raise ValueError("batch_sizes is empty; pass at least one batch size, e.g. [1, 2, 4]")
    for i, B in enumerate(sizes):  # all checked before any is drawn; a non-integer batch size is never truncated
        check_batch_size(B, n, scheme, name=f"batch_sizes[{i}]")
    means, ses = [], []
    Kd = K.double()
    for B in sizes:
        B = check_batch_size(B, n, scheme)
        W = batch_weights(sample_batches(n, B, num_batches, scheme, generator), n).to(K.device)
        q = _centred_quadratic_forms(Kd, W)
        means.append(q.mean())
        ses.append(q.std() / num_batches**0.5 if num_batches > 1 else torch.tensor(float("nan")))
    return torch.stack(means).cpu(), torch.stack(ses).cpu()


def estimator_trace_draws(K: Tensor, B: int, m: int, scheme: str, reps: int, generator: torch.Generator) -> Tensor:
    """``reps`` independent draws of ``tr Σ̂`` (the §1.8.5 estimator from ``m`` batches), via ``K``.

    Batches are independent for ``"with_replacement"``/``"without_replacement"``; for
    ``"reshuffling"`` the ``m`` batches are consecutive batches of one epoch (``m ≤ ⌊n/B⌋``).
    """
    from .sampling import batches_per_epoch, sample_batches

    n = _check_K(K)
    check_batch_size(B, n, scheme)
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise ValueError(f"the estimator needs m >= 2 batches (an int); got m={m!r}")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise ValueError(f"reps={reps!r} must be an int >= 1")
    if scheme == "reshuffling":
        per = batches_per_epoch(n, B)
        if m > per:
            raise ValueError(f"m={m} batches of B={B} do not fit in one epoch of n={n}; valid 2 <= m <= {per}")
        batches = sample_batches(n, B, per * reps, scheme, generator).view(reps, per, B)[:, :m].reshape(-1, B)
    else:
        batches = sample_batches(n, B, m * reps, scheme, generator)
    W = batch_weights(batches, n).to(K.device).view(reps, m, n)
    Wc = (W - W.mean(dim=1, keepdim=True)).reshape(reps * m, n)
    q = ((Wc @ K.double()) * Wc).sum(dim=1).view(reps, m).sum(dim=1)
    return (B * q / (m - 1)).cpu()


def _check_loglog(x: Tensor, y: Tensor) -> None:
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be 1-d of the same length; got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() < 3:
        raise ValueError(f"need at least 3 points to fit a slope with an error bar; got {x.numel()}")
    for name, v in (("x", x), ("y", y)):
        if not (torch.isfinite(v).all() and (v > 0).all()):
            raise ValueError(f"all {name} must be finite and positive for a log-log fit; got {v.tolist()}")
    if bool((x == x[0]).all()):
        raise ValueError(f"all x are equal ({float(x[0])!r}); a slope needs at least two distinct x values")


def _check_K(K: Tensor) -> int:
    if not isinstance(K, Tensor) or K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < 1:
        shape = tuple(K.shape) if isinstance(K, Tensor) else type(K).__name__
        raise ValueError(f"K must be a square (n, n) Gram matrix with n >= 1; got {shape}")
    if not K.dtype.is_floating_point:
        raise TypeError(f"K has dtype {K.dtype}; a Gram matrix is real: pass a float32 or float64 tensor")
    if not bool(torch.isfinite(K).all()):
        raise ValueError(f"K has {int((~torch.isfinite(K)).sum())} non-finite entries (NaN or ±inf); a Gram matrix "
                         "must be finite (check the gradients it was built from)")
    return K.shape[0]


def _floats(name: str, v, what: str = "a 1-d sequence of positive numbers"):
    """``v`` as a float64 numpy array (a tensor, array, list or pandas Series), or an error naming it."""
    import numpy as np

    if isinstance(v, Tensor):
        return v.detach().to("cpu", torch.float64).numpy()
    try:
        bad = v is None or isinstance(v, (str, bytes, dict))
        a = None if bad else np.array(v, dtype=np.float64)  # a copy: a writable array with positive strides
    except (TypeError, ValueError):
        a = None
    if a is None:
        raise ArgumentTypeError(f"{name}={show(v)} must be {what}")
    return a


def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares slope of ``log y`` on ``log x`` and its standard error."""
    xs, ys = torch.tensor(_floats("x", x)), torch.tensor(_floats("y", y))
    _check_loglog(xs, ys)
    lx, ly = torch.log(xs), torch.log(ys)
    A = torch.stack([lx, torch.ones_like(lx)], dim=1)
    coef = torch.linalg.lstsq(A, ly[:, None]).solution[:, 0]
    resid = ly - A @ coef
    s2 = float((resid**2).sum()) / (lx.numel() - 2)
    cov = s2 * torch.linalg.inv(A.T @ A)
    return float(coef[0]), float(cov[0, 0]) ** 0.5


def loglog_slope_ci(x, y, yerr, *, level: float = 0.95, draws: int = 2000, generator: torch.Generator | None = None):
    """Slope of ``log y`` on ``log x`` with a confidence interval from Monte-Carlo errors ``yerr``.

    Parametric bootstrap: redraw each ``y_j`` from ``N(y_j, yerr_j²)`` (kept positive), refit, and take
    the central ``level`` quantiles of the slopes. Returns ``(slope, low, high)``.
    """
    import numpy as np

    x, y = _floats("x", x), _floats("y", y)
    e = _floats("yerr", yerr, "one finite, non-negative error or one per point")
    _check_loglog(torch.tensor(x), torch.tensor(y))
    if e.ndim == 0:
        e = np.full_like(y, float(e))  # one error for every point
    if e.shape != y.shape or not np.isfinite(e).all() or (e < 0).any():
        raise ValueError(f"yerr must be one finite, non-negative error or {len(y)} of them; got {show(yerr)}")
    level = _args.real("level", level, valid="a number in (0, 1)", as_given=True)
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must lie in (0, 1)")
    if isinstance(draws, bool) or not isinstance(draws, numbers.Integral) or draws < 2:
        raise ValueError(f"draws={draws!r} must be an int >= 2")
    lx = np.log(x)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    z = torch.randn((draws, len(y)), generator=gen, dtype=torch.float64).numpy()
    ys = np.maximum(y + z * e, y * 1e-3)
    A = np.stack([lx, np.ones_like(lx)], axis=1)
    slopes = np.linalg.lstsq(A, np.log(ys).T, rcond=None)[0][0]
    lo, hi = np.quantile(slopes, [(1 - level) / 2, (1 + level) / 2])
    return loglog_slope(x, y)[0], float(lo), float(hi)
