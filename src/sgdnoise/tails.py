"""Tail-index estimators for heavy-tailed gradient noise, and their validation on known laws.

**Hill (1975).** Sort ``|x|`` in decreasing order, ``X_(0) ≥ X_(1) ≥ … ≥ X_(n-1)`` (so ``X_(k)`` is the
``(k+1)``-th largest value), and put

    α̂_k = [ (1/k) Σ_{i=0}^{k-1} log X_(i) − log X_(k) ]^{-1},     k = 1, …, n-1.

It is the maximum-likelihood estimate of ``α`` for the ``k`` exceedances of the threshold ``u = X_(k)``
under an exact Pareto tail ``P(|X| > x | |X| > u) = (x/u)^{-α}``; it is consistent for
``P(|X| > x) = x^{-α} L(x)`` (``L`` slowly varying) when ``k → ∞`` and ``k/n → 0``. On exact Pareto data
the ``k`` log-spacings are i.i.d. ``Exp(α)`` (Rényi), so ``α̂_k = k/Γ`` with ``Γ ~ Gamma(k, rate α)``:
``E α̂_k = α k/(k-1)`` and ``sd α̂_k ≈ α/√k``. One sort and one cumulative sum give every ``k`` at once.

**Choice of k** (:func:`hill_auto`): the method of Clauset, Shalizi & Newman (2009, *Power-law
distributions in empirical data*, SIAM Review): take the ``k`` minimising the Kolmogorov–Smirnov distance
between the empirical law of the ``k`` largest ``|x|`` and the fitted Pareto tail ``(x/X_(k))^{-α̂_k}``.

**Stable index** (:func:`stable_alpha`), the estimator of Mohammadi, Mohammadpour & Ogata (2015) used by
Şimşekli, Sagun & Gürbüzbalaban (ICML 2019): split ``K = K1·K2`` centred symmetric samples into ``K2``
blocks of ``K1``, ``Y_i = Σ_{j=1}^{K1} X_{j+(i-1)K1}``, and

    1/α̂ = (1/log K1) · ( (1/K2) Σ_i log|Y_i| − (1/K) Σ_i log|X_i| ).

For a strictly α-stable law ``Y_i =_d K1^{1/α} X_1``, so the bracket has mean exactly ``log(K1)/α``. For a
law in the domain of attraction of an α-stable law (``α = 2`` for *any* finite variance) it converges
to that ``α``, but with an error that decays only like ``1/log K1``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from . import _args
from ._args import ArgumentTypeError, as_real, is_one_of, show
from .sampling import check_generator
from .sde import symmetric_stable

__all__ = ["hill", "HillFit", "hill_auto", "stable_alpha", "LAWS", "DEFAULT_LAWS", "sample_law",
           "target_index", "validation_table"]

LAWS = ("stable", "student_t", "pareto", "gaussian")
ESTIMATORS = ("hill", "hill_auto", "stable_alpha")
DEFAULT_LAWS = (("stable", 1.2), ("stable", 1.5), ("stable", 1.8), ("stable", 2.0),
                ("student_t", 1.5), ("student_t", 3.0), ("pareto", 2.5), ("gaussian", None))


# The arithmetic runs in numpy: single-threaded, so the many small calls of a Monte-Carlo loop do not
# stall on torch's thread pool when the CPUs are shared. Tensors in, tensors out.
def _as_f64(x, ndims=(1,), name="x") -> np.ndarray:
    try:
        bad = x is None or isinstance(x, (str, bytes, dict))
        a = None if bad else (x.detach().to("cpu", torch.float64).numpy() if isinstance(x, Tensor)
                              else np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError):
        a = None
    if a is None:
        raise ArgumentTypeError(f"{name}={show(x)} must be the data: a tensor, array or list of numbers")
    if a.ndim not in ndims:
        raise ValueError(f"{name} must have {' or '.join(f'{d}' for d in ndims)} dimension(s); got shape {a.shape}")
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) (NaN or ±inf); tail estimators need finite data")
    return a


def _sorted_logs(x) -> np.ndarray:
    """``log X_(i)``, ``i = 0..n-1``, in decreasing order (``-inf`` for exact zeros)."""
    a = _as_f64(x)
    if a.size < 2:
        raise ValueError(f"too few samples: n={a.size}; the Hill estimator needs n >= 2")
    with np.errstate(divide="ignore"):
        L = np.log(np.sort(np.abs(a))[::-1])
    if not np.isfinite(L[1]):  # sorted decreasing: fewer than 2 nonzero values
        raise ValueError(f"x has only {int(np.isfinite(L[0]))} nonzero value(s) among n={a.size}; "
                         "the Hill estimator needs at least 2 nonzero values of |x|")
    return L


def _check_ks(k, L: np.ndarray) -> np.ndarray:
    n = L.size
    ks = np.asarray(k)
    if ks.ndim > 1 or ks.dtype == bool or not np.issubdtype(ks.dtype, np.integer):
        raise ValueError(f"k={k!r} must be an int or a 1-D array of ints in 1..n-1 = 1..{n - 1}")
    ks = ks.astype(np.int64).reshape(-1)
    bad = ks[(ks < 1) | (ks > n - 1)]
    if bad.size:
        shown = int(bad[0]) if np.ndim(k) == 0 else bad.tolist()[:5]
        raise ValueError(f"k={shown} must lie in 1..n-1 = 1..{n - 1}")
    nonzero = int(np.isfinite(L).sum())
    if (ks > nonzero - 1).any():
        raise ValueError(f"k={int(ks.max())} reaches the exact zeros of |x|: only {nonzero} values are nonzero, "
                         f"so valid k is 1..{nonzero - 1}")
    return ks


def _hill_from_logs(L: np.ndarray, ks: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):  # a fully tied tail: α̂ = inf
        return 1.0 / (np.cumsum(L)[ks - 1] / ks - L[ks])


def hill(x, k):
    """Hill estimate of the tail index of ``|x|`` from its ``k`` largest values (convention above).

    ``k`` an int gives a float; a 1-D array of ints gives a float64 tensor of estimates, one per ``k``
    (the Hill plot), at the cost of one sort. ``α̂ = inf`` if the ``k+1`` largest values are tied.
    """
    L = _sorted_logs(x)
    a = _hill_from_logs(L, _check_ks(k, L))
    return float(a[0]) if np.ndim(k) == 0 else torch.from_numpy(a)


@dataclass(frozen=True)
class HillFit:
    """Hill estimate ``alpha`` at the chosen ``k``, its KS distance to the fitted Pareto tail, and ``n``."""

    alpha: float
    k: int
    ks_distance: float
    n: int


@functools.lru_cache(maxsize=4)  # one entry is ~20 MB at n = 1e5
def _ks_layout(ks: tuple[int, ...]):
    """Flat index of all pairs ``(k, i)``, ``i < k``, for the grid ``ks``: segment ids, ``i``, offsets."""
    kt = np.array(ks, dtype=np.int64)
    seg = np.repeat(np.arange(kt.size), kt)
    offsets = np.cumsum(kt) - kt
    return seg, np.arange(int(kt.sum())) - offsets[seg], offsets


def _k_grid(k_min: int, k_max: int, num_k: int) -> tuple[int, ...]:
    if k_max - k_min + 1 <= num_k:
        return tuple(range(k_min, k_max + 1))
    return tuple(int(v) for v in np.unique(np.rint(np.geomspace(k_min, k_max, num_k)).astype(np.int64)))


def hill_auto(x, k_min: int = 10, k_max: int | None = None, num_k: int = 200) -> HillFit:
    """Hill estimator with ``k`` chosen by Clauset, Shalizi & Newman's (2009) minimum-KS rule.

    For each candidate ``k`` the ``k`` largest ``|x|`` are compared with the Pareto law
    ``S(y) = (y/X_(k))^{-α̂_k}``, ``y ≥ X_(k)``; the KS distance is, exactly (for distinct values),
    ``D_k = 1/(2k) + max_{i<k} |S(X_(i)) - (i + 1/2)/k|`` (the empirical survival function jumps from
    ``(i+1)/k`` to ``i/k`` at ``X_(i)``). Candidates: every integer in ``k_min..k_max`` when there are at
    most ``num_k`` of them, else ``num_k`` geometrically spaced ones (consecutive integers at small ``k``,
    steps of ~4% of ``k`` at large ``k``); cost ``O(n log n + Σ_grid k)``, ~30 ms at ``n = 10^5``.
    Default ``k_max = n//2`` (capped below the number of nonzero values). Tails that are Pareto only
    asymptotically bias ``α̂`` at the chosen ``k`` through their second-order term: upward for stable
    ``1 < α < 2`` (``S(x) = c₁x^{-α} + c₂x^{-2α} + …``, ``c₂ > 0``; about +0.15 for α = 1.5 at ``n = 10^5``),
    downward for Student-t.
    """
    L = _sorted_logs(x)
    n = L.size
    if (isinstance(k_min, bool) or not isinstance(k_min, (int, np.integer)) or k_min < 2
            or isinstance(num_k, bool) or not isinstance(num_k, (int, np.integer)) or num_k < 2):
        raise ValueError(f"k_min={k_min!r} and num_k={num_k!r} must be ints >= 2")
    if n < 2 * k_min:
        raise ValueError(f"too few samples: n={n}; hill_auto needs n >= 2*k_min = {2 * k_min}")
    if k_max is None:
        k_max = min(n // 2, int(np.isfinite(L).sum()) - 1)
    if isinstance(k_max, bool) or not isinstance(k_max, (int, np.integer)) or not k_min <= k_max <= n - 1:
        raise ValueError(f"k_max={k_max!r} must be an int in k_min..n-1 = {k_min}..{n - 1}")
    grid = _k_grid(int(k_min), int(k_max), int(num_k))
    ks = _check_ks(np.array(grid), L)
    alpha = _hill_from_logs(L, ks)
    seg, i, offsets = _ks_layout(grid)
    with np.errstate(invalid="ignore"):  # inf·0 = nan for a fully tied tail (α̂ = inf): D = 1 there
        S = np.exp(-alpha[seg] * (L[i] - L[ks][seg]))
    dev = np.nan_to_num(np.abs(S - (i + 0.5) / ks[seg]), nan=1.0)
    D = np.maximum.reduceat(dev, offsets) + 0.5 / ks
    j = int(np.argmin(D))
    return HillFit(float(alpha[j]), int(ks[j]), float(D[j]), n)


def stable_alpha(x, K1: int | None = None, *, center: str | None = "median"):
    """Stability index by the block-sum estimator of Mohammadi et al. (2015) (module docstring).

    ``x``: ``K`` centred samples (1-D, returns a float) or ``(m, K)`` rows (returns ``m`` estimates, one
    per row). Default ``K1 = round(√K)``, a compromise between the noise (``sd ∝ 1/(√K2 log K1)``) and
    the ``1/log K1`` convergence outside the exactly stable case; ``K2 = K // K1`` and the last
    ``K - K1·K2 < K1`` samples are dropped. Not clipped to ``(0, 2]``: for any finite-variance law the
    target is 2 (the Gaussian domain of attraction), so values above 2 are estimation error: sampling
    noise, plus, for non-Gaussian laws, that slow bias (about +0.2 for the symmetric Pareto with index
    2.5 at ``K = 10^5``). Exact zeros (``log 0``), in ``x`` or in a block sum ``Y``, are rejected.

    The estimator assumes a law symmetric about 0: on uncentred data it reports heavy tails that are
    not there (``N(3, 1)`` reads about 1). So by default each row is first centred at its median,
    which locates the centre of every symmetric law, including ``α ≤ 1`` where the mean does not
    exist (the median of the ``K1·K2`` samples used, or of all but the last if that count is odd);
    ``center=None`` skips this for data centred by construction.
    """
    if not is_one_of(center, ("median", None)):
        raise ValueError(f"center={show(center)}; valid values are 'median' (centre each row at its median) and None")
    X = _as_f64(x, ndims=(1, 2))
    K = X.shape[-1]
    if K < 4:
        raise ValueError(f"too few samples: K={K}; stable_alpha needs K >= 4 (K1 >= 2 blocks of K2 >= 2)")
    if K1 is None:
        K1 = round(math.sqrt(K))  # in 2..K//2 for every K >= 4
    if isinstance(K1, bool) or not isinstance(K1, (int, np.integer)) or not 2 <= K1 <= K // 2:
        raise ValueError(f"K1={K1!r} must be an int in 2..K//2 = 2..{K // 2} (K={K})")
    K2 = K // K1
    Xr = X[..., : K1 * K2]
    if center == "median":
        # The median of the samples used, over an even count so that no sample becomes an exact zero.
        Xr = Xr - np.median(Xr[..., : 2 * (Xr.shape[-1] // 2)], axis=-1, keepdims=True)
    zeros = int((Xr == 0).sum())
    if zeros:
        centred = " after centring at the median (values equal to the median; pass center=None for data centred " \
                  "by construction)" if center == "median" else ""
        raise ValueError(f"x has {zeros} exact zero(s){centred}; log|x| would be -inf (drop them or add jitter)")
    Y = Xr.reshape(*Xr.shape[:-1], K2, K1).sum(-1)
    zeros = int((Y == 0).sum())
    if zeros:
        raise ValueError(f"{zeros} of the block sums Y (K1={K1} samples each) are exactly zero; log|Y| would be "
                         "-inf: the data have atoms (e.g. values ±1); add jitter or pick another K1")
    with np.errstate(divide="ignore"):
        a = math.log(K1) / (np.log(np.abs(Y)).mean(-1) - np.log(np.abs(Xr)).mean(-1))
    return float(a) if X.ndim == 1 else torch.from_numpy(a)


def _check_law(name: str, param) -> float:
    if not is_one_of(name, LAWS):
        raise ValueError(f"law name={show(name)} is unknown; valid laws are {LAWS}")
    if name == "gaussian":
        return math.nan
    p = as_real(param)
    p = math.nan if p is None else p
    if name == "stable" and not 0 < p <= 2:
        raise ValueError(f"stable param={param!r} (alpha) must lie in (0, 2]")
    if name != "stable" and not (math.isfinite(p) and p > 0):
        raise ValueError(f"{name} param={param!r} (tail index) must be a finite number > 0")
    return p


def sample_law(name: str, param, size, generator: torch.Generator) -> Tensor:
    """Draws (float64, shape ``size``) from a validation law, using ``generator`` only.

    ``"stable"``: symmetric α-stable, ``param = α``, :func:`sgdnoise.sde.symmetric_stable` (α = 2 is
    ``N(0, 1)``); ``"student_t"``: ``param = ν``, by Bailey's (1994) polar method without rejection,
    ``T = cos(2πU) √(ν (W^{-2/ν} − 1))`` with ``U, W`` uniform; ``"pareto"``: a random sign times
    ``W^{-1/param}`` (``x_min = 1``); ``"gaussian"``: ``N(0, 1)``, ``param`` ignored.
    """
    p = _check_law(name, param)
    check_generator(generator)
    shape = _args.shape("size", size)
    rand = functools.partial(torch.rand, shape, generator=generator, dtype=torch.float64)
    if name == "stable":
        return symmetric_stable(shape, p, generator)
    if name == "gaussian":
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    W = 1.0 - rand().numpy()  # uniform on (0, 1]
    if name == "student_t":
        return torch.from_numpy(np.cos(2 * math.pi * rand().numpy()) * np.sqrt(p * np.expm1(-2.0 / p * np.log(W))))
    return torch.from_numpy(np.where(rand().numpy() < 0.5, -1.0, 1.0) * W ** (-1.0 / p))


def target_index(estimator: str, name: str, param) -> float:
    """Limit of ``estimator`` on law ``(name, param)``.

    ``"hill"``/``"hill_auto"``: the tail index of ``|X|`` (α for stable α < 2, ν, the Pareto index;
    ``inf`` for the Gaussian and stable α = 2). ``"stable_alpha"``: the index of the stable domain of
    attraction, ``min(tail index, 2)``.
    """
    if not is_one_of(estimator, ESTIMATORS):
        raise ValueError(f"estimator={show(estimator)} is unknown; valid estimators are {ESTIMATORS}")
    p = _check_law(name, param)
    tail = math.inf if name == "gaussian" or (name == "stable" and p == 2) else p
    return min(tail, 2.0) if estimator == "stable_alpha" else tail


def validation_table(sizes, reps: int, generator: torch.Generator, laws=DEFAULT_LAWS) -> pd.DataFrame:
    """Monte-Carlo mean, bias, sd, rmse and standard error ``se = sd/√reps`` of ``hill_auto`` and
    ``stable_alpha`` over ``reps`` samples of each size and law. ``bias`` and ``rmse`` are NaN where the
    target is ``inf``. One ``(reps, n)`` draw per law and size; ``stable_alpha`` runs row-wise on it."""
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 2:
        raise ValueError(f"reps={reps!r} must be an int >= 2 (the sd needs two replicates)")
    what = "a non-empty sequence of sample sizes (ints >= 2), e.g. [1000, 10000]"
    sizes = [_args.integer(f"sizes[{i}]", n, minimum=2) for i, n in enumerate(_args.items("sizes", sizes, what))]
    if not sizes:
        raise ValueError(f"sizes is empty; it must be {what}")
    what = "a non-empty sequence of (name, param) pairs, e.g. [('stable', 1.5), ('gaussian', None)]"
    laws = _args.items("laws", laws, what)
    if not laws:
        raise ValueError(f"laws is empty; it must be {what}")
    for i, law in enumerate(laws):
        if not (isinstance(law, (tuple, list)) and len(law) == 2):
            raise ArgumentTypeError(f"laws[{i}]={show(law)} must be a (name, param) pair, e.g. ('stable', 1.5)")
        _check_law(*law)
    check_generator(generator)
    rows = []
    for name, param in laws:
        p = _check_law(name, param)
        for n in sizes:
            X = sample_law(name, param, (reps, int(n)), generator)
            est = {"hill_auto": torch.tensor([hill_auto(r).alpha for r in X.numpy()], dtype=torch.float64),
                   "stable_alpha": stable_alpha(X, center=None)}
            for e, a in est.items():
                t, m, sd = target_index(e, name, param), float(a.mean()), float(a.std())
                ok = math.isfinite(t)
                rows.append(dict(law=name, param=p, n=int(n), estimator=e, target=t, mean=m, bias=m - t if ok else math.nan,
                                 sd=sd, rmse=float(((a - t) ** 2).mean().sqrt()) if ok else math.nan, se=sd / math.sqrt(reps)))
    return pd.DataFrame(rows)
