"""The audit's measurements on a matrix of per-sample gradients, each with its uncertainty.

Notation of :mod:`sgdnoise.noise`. The user's data set has ``N`` samples; the audit takes the per-sample
gradients of ``m <= N`` of them, drawn without replacement (``m = N`` when the data set is small enough),
as the rows of ``G``. The quantities of interest are those of the **data set**: ``Σ = Σ_emp`` with the
``1/N`` normalisation, and the full-batch gradient ``g_N``. From a subsample they are estimated without
bias, and their sampling error carries the finite-population correction ``1 - m/N`` (zero when
``m = N``: the numbers are then exact, up to rounding).

* ``tr Σ``: ``(N-1)/N · V`` with ``V = Σ_i ‖g_i - ḡ‖² / (m-1)``, unbiased for the finite population's
  variance ``S² = N/(N-1) · tr Σ`` under sampling without replacement.
* ``‖g_N‖²``: ``‖ḡ‖² - (1 - m/N) V / m``, since ``E‖ḡ‖² = ‖g_N‖² + (1 - m/N) S² / m``.
* ``B_simple = tr Σ / ‖g_N‖²`` (McCandlish et al. 2018), the ratio of the two.

Standard errors are the delete-one jackknife's, times ``√(1 - m/N)``; for these three the leave-one-out
values have closed forms in ``‖g_i‖²`` and ``g_i·ḡ`` (one pass over ``G``). Spectral quantities (top
eigenvalues, effective rank, the power-law exponent of the spectrum) get delete-a-fold jackknife SEs,
computed on the ``m × m`` Gram matrix; they describe the subsample's ``Σ``, whose top eigenvalues are
biased upward as estimates of the data set's when eigenvalues crowd (stated in the report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scipy.stats import t as scipy_t

from ..noise import batch_weights, effective_rank
from ..tails import hill_auto, stable_alpha

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A number, its standard error (``None`` where none is defined) and a 95% interval ``(low, high)``."""

    value: float
    se: float | None = None
    low: float | None = None
    high: float | None = None
    method: str = ""

    @classmethod
    def normal(cls, value: float, se: float, method: str, df: int | None = None) -> "Estimate":
        """``value ± q·se`` with ``q`` the normal 97.5% quantile, or Student's t with ``df`` degrees of freedom
        (a delete-a-fold jackknife over ``F`` folds has ``F - 1``)."""
        q = Z95 if df is None else float(scipy_t.ppf(0.975, df))
        return cls(float(value), float(se), float(value - q * se), float(value + q * se), method)

    @property
    def exact(self) -> bool:
        return self.se == 0.0

    def to_dict(self) -> dict:
        return {"value": self.value, "se": self.se, "ci95": [self.low, self.high], "method": self.method}

    def text(self, fmt: str = ".3g") -> str:
        if self.exact:
            return f"{self.value:{fmt}} (exact)"
        if self.low is None:
            return f"{self.value:{fmt}}"
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"


def ratio_of_means(S, Q) -> tuple[float, float]:
    """``(mean S / mean Q, SE)`` for paired per-step estimates (delta method, their covariance included, the
    steps treated as independent); ``(nan, nan)`` for fewer than two steps or a mean of ``Q`` that is not positive."""
    S = torch.as_tensor(S, dtype=torch.float64)
    Q = torch.as_tensor(Q, dtype=torch.float64)
    if S.numel() < 2 or float(Q.mean()) <= 0:
        return math.nan, math.nan
    r = float(S.mean() / Q.mean())
    cov = float(torch.cov(torch.stack([S, Q]))[0, 1])
    rel = (float(S.var()) / float(S.mean()) ** 2 + float(Q.var()) / float(Q.mean()) ** 2
           - 2 * cov / (float(S.mean()) * float(Q.mean()))) / S.numel()
    return r, abs(r) * math.sqrt(max(rel, 0.0))


def _jackknife_se(loo: Tensor, fpc: float) -> float:
    m = loo.numel()
    finite = loo[torch.isfinite(loo)]
    if finite.numel() < m:
        return math.inf
    return math.sqrt((m - 1) / m * float(((loo - loo.mean()) ** 2).sum()) * fpc)


def noise_scale_stats(s: Tensor, t: Tensor, g2: float, N: int) -> dict[str, Estimate]:
    """``tr Σ``, ``‖g_N‖²`` and ``B_simple`` from ``s_i = ‖g_i‖²``, ``t_i = g_i·ḡ`` and ``g2 = ‖ḡ‖²`` (float64)."""
    m = s.numel()
    if m < 3:
        raise ValueError(f"need at least 3 audited samples for the noise statistics; got {m}")
    fpc = 1.0 - m / N

    def stats(S, gsq, mm):
        V = (S - mm * gsq) / (mm - 1)
        return (N - 1) / N * V, gsq - (1.0 - mm / N) * V / mm

    S = float(s.sum())
    tr, gn = stats(S, g2, m)
    mm = m - 1
    gsq_loo = (m * m * g2 - 2 * m * t + s) / mm**2
    tr_loo, gn_loo = stats(S - s, gsq_loo, mm)
    tr_se, gn_se = _jackknife_se(tr_loo, fpc), _jackknife_se(gn_loo, fpc)
    out = {"trace_sigma": Estimate.normal(tr, tr_se, "unbiased; jackknife SE with finite-population correction"),
           "grad_norm_sq": Estimate.normal(gn, gn_se, "unbiased; jackknife SE with finite-population correction")}
    if fpc == 0.0:
        ratio = tr / gn if gn > 0 else math.inf  # all samples: ‖g_N‖² = 0 exactly means B_simple = ∞
        out["noise_scale"] = Estimate(ratio, 0.0, ratio, ratio, "exact (all samples)")
        return out
    ratio = tr / gn if gn > 0 else math.nan  # an estimate of ‖g_N‖² at or below 0 leaves the ratio undefined
    r_se = _jackknife_se(tr_loo / gn_loo, fpc) if gn > 0 else math.nan
    if gn - Z95 * gn_se <= 0:
        # ‖g_N‖² is not distinguishable from 0: B_simple is bounded below only (its interval from the two ends).
        low = (tr - Z95 * tr_se) / (gn + Z95 * gn_se) if gn + Z95 * gn_se > 0 else 0.0
        out["noise_scale"] = Estimate(ratio, r_se, max(low, 0.0), math.inf,
                                      "ratio; ‖g_N‖² not distinguishable from 0, so no upper bound"
                                      + ("" if gn > 0 else " (its estimate is ≤ 0: no point value)"))
    else:
        out["noise_scale"] = Estimate.normal(ratio, r_se, "ratio of unbiased estimates; jackknife SE")
    return out


def spectrum_stats(Kc_fn, m: int, N: int, k: int, fit: int, folds: int, gen: torch.Generator, *,
                   spectrum: Tensor | None = None, exact_top: int | None = None) -> dict:
    """Top-``k`` eigenvalues of the subsample's ``Σ``, its effective rank and the power-law exponent ``s`` of
    ``λ_i ∝ i^{-s}`` over ranks ``1..fit``, with delete-a-fold jackknife SEs (``folds`` random folds, times
    ``√(1 - m/N)``; exact when ``m = N``) and Student-t 95% intervals with ``folds - 1`` degrees of freedom.
    ``k`` is capped at the rank, and below the rank every fold's complement can reach.

    ``Kc_fn(idx)`` returns the centred Gram matrix ``G̃ G̃ᵀ`` of the rows ``idx`` (float64, ``len(idx)``
    square); its eigenvalues over the number of rows are those of ``Σ``. (A bootstrap over rows is not used:
    its duplicated rows change the spectrum itself, and on the digits network it put the power-law
    exponent's whole percentile interval on one side of the estimate.)

    The sketch route passes the full sample's eigenvalues of ``G̃ G̃ᵀ`` as ``spectrum`` (its exact top
    ``exact_top`` first, then the sketched rest): ``k`` is capped at ``exact_top``, and the effective rank and the
    exponent, which read the sketched part (whose eigenvalues are biased), get no interval.
    """

    def measure(idx, lam=None):
        lam = (torch.linalg.eigvalsh(Kc_fn(idx)).flip(0) if lam is None else lam).clamp_min(0.0) / idx.numel()
        ranks = torch.arange(1, fit + 1, dtype=torch.float64)
        top = lam[:fit]
        ok = top > lam[0] * 1e-10  # numerical zeros (beyond the rank) are not part of the spectrum
        slope = math.nan
        if int(ok.sum()) >= 3:
            A = torch.stack([torch.log(ranks[ok]), torch.ones(int(ok.sum()), dtype=torch.float64)], 1)
            slope = -float(torch.linalg.lstsq(A, torch.log(top[ok])[:, None]).solution[0, 0])
        return lam, effective_rank(lam), slope

    lam, er, slope = measure(torch.arange(m), spectrum)
    rank = int((lam > lam[0] * 1e-10).sum()) if lam[0] > 0 else 0
    fpc = 1.0 - m / N
    df = None
    if fpc > 0:
        # every fold's complement must still reach rank k: at most m - ⌈m/folds⌉ - 1 eigenvalues are estimable
        k = min(k, rank, m - math.ceil(m / folds) - 1)
    else:
        k = min(k, rank)
    if exact_top is not None:
        k = min(k, exact_top)
    k = max(k, 1)

    def est(v, se, what):
        return Estimate.normal(v, se, what, df) if math.isfinite(se) else Estimate(v, None, None, None, what)

    if fpc == 0.0:
        ses = [0.0] * (k + 2)
        method = "exact (all samples)"
    else:
        parts = torch.randperm(m, generator=gen).chunk(folds)
        loo = []
        for i in range(len(parts)):
            keep = torch.cat([p for j, p in enumerate(parts) if j != i]).sort().values
            lam_i, er_i, s_i = measure(keep)
            loo.append(torch.cat([lam_i[:k], torch.tensor([er_i, s_i], dtype=torch.float64)]))
        loo = torch.stack(loo)
        F = loo.shape[0]
        ses = (((F - 1) / F * ((loo - loo.mean(0)) ** 2).sum(0) * fpc).sqrt()).tolist()
        df = F - 1
        method = f"delete-a-fold jackknife ({F} folds, t interval with {df} df) with finite-population correction"
    if exact_top is not None and fpc > 0:
        method += "; the folds' Gram matrices are blocks of the sketched one"
    eig = [est(float(lam[i]), ses[i], method) for i in range(k)]
    if exact_top is not None:  # read off the sketched spectrum, whose eigenvalues are biased: no interval
        ses[k] = ses[k + 1] = math.nan
        method = "the spectrum beyond the exact top eigenvalues is sketched (its eigenvalues are biased): no interval"
    return {"eigenvalues": eig, "all_eigenvalues": lam, "effective_rank": est(er, ses[k], method),
            "power_law_exponent": est(slope, ses[k + 1], method + f"; least squares over ranks 1..{fit}"),
            "numerical_rank": rank}


# ----------------------------------------------------------------------------- Gaussianity
def _numpy_rng(gen: torch.Generator) -> np.random.Generator:
    return np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))


def tail_null(size: int, reps: int, gen: torch.Generator, scales: Tensor | None = None) -> np.ndarray:
    """The block-sum index of ``reps`` Gaussian samples of ``size`` draws: the null distribution of the tail test.

    ``scales`` (``size`` of them) multiplies draw ``k`` by ``scales[k]``: the null for batch noises whose
    conditional variances differ from batch to batch (see :func:`gaussianity`)."""
    z = torch.randn((reps, size), generator=gen, dtype=torch.float64)
    if scales is not None:
        z = z * scales.double()
    return np.asarray(stable_alpha(z.numpy(), center=None), dtype=float)


def tail_pvalue(sample: np.ndarray, null: np.ndarray) -> tuple[float, float]:
    """``(index, p)``: the block-sum index of ``sample`` and the Monte-Carlo p-value of "heavier than Gaussian"
    (the fraction of Gaussian null samples reading as low or lower, ``(1 + count)/(1 + reps)``)."""
    a = float(stable_alpha(sample, center=None))
    return a, (1 + int((null <= a).sum())) / (1 + null.size)


def mc_pvalue(observed: float, null: np.ndarray) -> float:
    """One-sided Monte-Carlo p-value of a value as low as ``observed`` (``(1 + count)/(1 + reps)``)."""
    return (1 + int((null <= observed).sum())) / (1 + null.size)


def holm(pvalues, level: float) -> list[bool]:
    """Holm's step-down rejections at family-wise ``level``, in the input order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    reject = np.zeros(p.size, dtype=bool)
    for rank, i in enumerate(order):
        if p[i] > level / (p.size - rank):
            break
        reject[i] = True
    return reject.tolist()


def check_resolution(null_reps: int, tests: int, level: float) -> None:
    """A Monte-Carlo p-value is at least ``1/(1 + null_reps)``; Holm's first threshold is ``level/tests``."""
    if 1 / (1 + null_reps) > level / tests:
        need = math.ceil(tests / level) - 1
        raise ValueError(f"null_reps={null_reps} is too few: with {tests} tests at family-wise level {level:g} no test "
                         f"could ever reject (the smallest Monte-Carlo p-value is 1/(1 + null_reps)); need "
                         f"null_reps >= {need}")


def excess_kurtosis(x: Tensor) -> float:
    x = x.double() - x.double().mean()
    v = float((x**2).mean())
    return float((x**4).mean()) / v**2 - 3.0 if v > 0 else math.nan


def _weighted_chi2_norms(lam: Tensor, scales: Tensor, reps: int, gen: torch.Generator, exact: int = 64) -> np.ndarray:
    """``reps`` samples of ``(s_k ‖ζ_k‖)_k`` with ``ζ_k ~ N(0, diag lam)``: the top ``exact`` eigenvalues exactly,
    the sum of the others' ``λ_j z_j²`` by the Gamma law with its mean and variance (a sum of many small terms
    that moves the norm's tail by a negligible amount); shape ``(reps, len(scales))``."""
    lam = lam.double()
    top, rest = lam[:exact], lam[exact:]
    draws = scales.numel()
    out = np.empty((reps, draws))
    rng = _numpy_rng(gen)
    mu, var = float(rest.sum()), 2 * float((rest**2).sum())
    for i in range(reps):
        sq = (torch.randn((draws, top.numel()), generator=gen, dtype=torch.float64) ** 2) @ top
        if var > 0:
            sq = sq + torch.from_numpy(rng.gamma(mu**2 / var, var / mu, size=draws))
        out[i] = (scales.double() * sq.sqrt()).numpy()
    return out


def gaussianity(P: Tensor, labels: list[str], lam: Tensor, Kc: Tensor, B: int, draws: int, null_reps: int,
                level: float, gen: torch.Generator) -> dict:
    """Is the minibatch noise at batch size ``B`` Gaussian, along the directions whose centred per-sample
    projections are the columns of ``P`` (``m × r``), and as a vector?

    ``draws`` batches of ``B`` are drawn with replacement from the ``m`` audited samples; batch ``k`` has
    centred weights ``c_k = w_k - 1/m`` and noise ``ξ_k = Σ_j c_kj g_j`` (the sample mean cancels, ``Σ_j c_kj = 0``).
    The null hypothesis is that the per-sample gradients are Gaussian. Along each direction the null is exact: the
    same batches applied to ``m`` fresh Gaussian per-sample values, ``null_reps`` times (the draws reuse the ``m``
    values, as the observed ones do); the block-sum tail index of the observed draws is compared with its
    distribution there, a one-sided Monte-Carlo test of "heavier-tailed than Gaussian". For the vector, Hill's
    index of ``‖ξ‖`` is compared with its distribution when each ``ξ_k`` is, independently, Gaussian with covariance
    ``‖c_k‖² Σ`` (eigenvalues ``lam``; that is ``ξ_k``'s law given its batch, the reuse of samples across draws left
    out: an approximation that holds when a batch is a small part of the ``m`` samples). Holm's correction over
    all directions and the vector keeps the family-wise false "heavy-tailed" rate at ``level`` when the per-sample
    gradients are Gaussian. Also the
    excess kurtosis of the per-sample projections, ``κ₁``, and that of the batch noise, ``κ₁/B`` (exact for a
    mean of ``B`` independent draws).
    """
    m, r = P.shape
    check_resolution(null_reps, r + 1, level)
    batches = torch.randint(m, (draws, B), generator=gen)
    W = batch_weights(batches, m) - 1.0 / m
    scales = W.norm(dim=1)
    Xi = W @ P.double()  # (draws, r)
    # the exact null of the directions: the same batches of m fresh Gaussian per-sample values, reps at once
    null = np.asarray(stable_alpha((W @ torch.randn((m, null_reps), generator=gen, dtype=torch.float64)).T.numpy(),
                                   center=None), dtype=float)
    rows = []
    for j in range(r):
        a, p = tail_pvalue(Xi[:, j].numpy(), null)
        k1 = excess_kurtosis(P[:, j])
        rows.append({"direction": labels[j], "tail_index": a, "p_value": p, "kurtosis_per_sample": k1,
                     "kurtosis_batch": k1 / B})
    sq = ((W @ Kc) * W).sum(1).clamp_min(0.0)  # ‖ξ_k‖² = c_kᵀ K_c c_k
    obs = hill_auto(sq.sqrt().numpy()).alpha
    lam_pos = lam[lam > lam[0] * 1e-12] if lam[0] > 0 else lam[:1]
    null_v = np.array([hill_auto(row).alpha for row in _weighted_chi2_norms(lam_pos, scales, null_reps, gen)])
    rows.append({"direction": "vector ‖ξ‖ (Hill)", "tail_index": obs, "p_value": mc_pvalue(obs, null_v),
                 "kurtosis_per_sample": math.nan, "kurtosis_batch": math.nan})
    reject = holm([row["p_value"] for row in rows], level)
    for row, rej in zip(rows, reject):
        row["heavy_tailed"] = bool(rej)
    return {"rows": rows, "null_median": float(np.median(null)), "null_q05": float(np.quantile(null, 0.05)),
            "vector_null_median": float(np.median(null_v)), "draws": draws, "null_reps": null_reps, "level": level}


def per_sample_tails(P: Tensor, labels: list[str], null_reps: int, level: float, gen: torch.Generator) -> dict:
    """Is the per-sample law along each column of ``P`` heavier-tailed than an infinite-variance boundary?

    Hill's index of ``|p_i|`` (``hill_auto``) is compared with its distribution on ``null_reps`` samples of the
    same size from Student's t with 2 degrees of freedom (tail index exactly 2, the boundary of finite variance),
    centred at their mean as ``P`` is: a one-sided Monte-Carlo test of "index below 2", Holm-corrected over the
    directions. For laws with a finite variance and a t-like tail (Hill reads them low) the test is conservative:
    the tests check a false rate at most ``level`` on Student-t with 3 degrees of freedom."""
    m, r = P.shape
    check_resolution(null_reps, r, level)
    rng = _numpy_rng(gen)
    t2 = rng.standard_t(2, size=(null_reps, m))
    t2 = t2 - t2.mean(1, keepdims=True)
    null = np.array([hill_auto(row, k_min=10).alpha for row in t2])
    rows = []
    for j in range(r):
        fit = hill_auto(P[:, j].numpy(), k_min=10)
        rows.append({"direction": labels[j], "alpha": fit.alpha, "se": fit.alpha / math.sqrt(fit.k), "k": fit.k,
                     "p_value": mc_pvalue(fit.alpha, null)})
    for row, rej in zip(rows, holm([row["p_value"] for row in rows], level)):
        row["below_two"] = bool(rej)
    return {"rows": rows, "null_median": float(np.median(null)), "null_reps": null_reps, "level": level}


def sketch_summary(deflated, total) -> dict:
    """What the sketch route's random projection did: its Lanczos rank and columns, the share of ``tr K_c`` beyond
    the exact top eigenvalues, and the sketch's own estimate of ``tr K_c`` against the exact one (known on this
    route from the per-sample norms), with the standard error it states."""
    s, t, g2 = total
    m = s.numel()
    exact = float(s.sum() - 2 * t.sum() + m * g2)  # Σ_i ‖g_i - ḡ‖² = tr K_c
    return {"lanczos_rank": int(deflated.eigenvalues.numel()), "columns": deflated.columns,
            "tail_fraction": (exact - float(deflated.eigenvalues.sum())) / exact if exact > 0 else math.nan,
            "trace_relative_error": deflated.trace / exact - 1 if exact > 0 else math.nan,
            "trace_relative_se": deflated.tail_trace_se / exact if exact > 0 else math.nan,
            "trace_relative_se_bound": deflated.tail_trace_se_bound / exact if exact > 0 else math.nan}
