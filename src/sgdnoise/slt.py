"""Singular learning theory on deep linear networks: exact learning coefficients, the local learning coefficient
estimator, and SGD's spread at a degenerate minimum.

A deep linear network with widths ``H_1, …, H_{L+1}`` (input first, output last) computes ``x ↦ W_L ⋯ W_1 x``
with ``W_l`` of shape ``(H_{l+1}, H_l)``. Its parameters are the factors; its function is their product. Every
function is represented by a whole *fiber* of factors, so the loss has no isolated minima: the model is
singular, and Laplace's approximation (``d/2 log n`` in the free energy) is replaced by ``λ log n`` with the
*real log canonical threshold* (learning coefficient) ``λ ≤ d/2``.

* :func:`dln_learning_coefficient` — Aoyagi's (2024) exact ``λ`` for a deep linear network whose true product
  has rank ``r``, in exact arithmetic (``fractions.Fraction``). :func:`rrr_learning_coefficient` is Aoyagi and
  Watanabe's (2005) earlier formula for one hidden layer (reduced-rank regression), an independent result the
  first must reproduce for ``L = 2``.
* :func:`hessian_rank` — the rank of the loss's Hessian at the most singular points of the true fiber (every
  factor of rank ``r``): ``r (H_1 + H_{L+1} − r)``. Half of it is the first term of Aoyagi's formula, and a lower
  bound on ``λ``: what the Hessian's (and, at a realizable minimum, the noise covariance's) spectrum can see.
* :class:`DLNRegression`, :func:`singular_factors` — a regression problem ``y = W₀x + ε`` with a rank-``r``
  ``W₀`` and the factors of ``W₀`` at a most singular point, in batches of independent chains (numpy, float64).
* :func:`estimate_llc` — the local learning coefficient estimator of Lau, Furman, Wang, Murfet and Wei
  (AISTATS 2025): Langevin sampling of the localised tempered posterior
  ``∝ exp(−nβ L_n(w) − (γ/2)|w − w*|²)`` with ``β = 1/log n``, and ``λ̂ = nβ (E L_n(w) − L_n(w*))``.
* :func:`sgd_spread` — label-noise SGD started at a minimum: its stationary excess loss, and the prediction of
  the linearised dynamics, ``Σ_i η σ² h_i / (2B(2 − η h_i))`` over the Hessian's eigenvalues ``h_i``, which
  tends to ``(ησ²/4B) tr H``: SGD's noise is shaped like the Hessian and has no component in its null space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from . import _args

__all__ = ["rrr_learning_coefficient", "dln_learning_coefficient", "hessian_rank", "DLNRegression",
           "singular_factors", "product", "descend", "estimate_llc", "LLCEstimate", "hessian_eigenvalues", "sgd_spread",
           "SGDSpread"]


def _widths(widths, rank) -> tuple[tuple[int, ...], int]:
    ws = _args.items("widths", widths, "a sequence of at least two positive integers (input width first)")
    if len(ws) < 2:
        raise ValueError(f"widths={_args.show(widths)} must have at least two entries (input and output width)")
    ws = tuple(_args.integer(f"widths[{i}]", w, minimum=1) for i, w in enumerate(ws))
    r = _args.integer("rank", rank, minimum=0, maximum=min(ws))
    return ws, r


def rrr_learning_coefficient(inputs: int, hidden: int, outputs: int, rank: int) -> Fraction:
    """Learning coefficient of reduced-rank regression ``y = B A x`` (``A``: ``hidden × inputs``, ``B``:
    ``outputs × hidden``) at a true product of rank ``rank`` (Aoyagi and Watanabe 2005, their main theorem).

    With ``M, H, N, r`` = inputs, hidden, outputs, rank: if ``N + r ≤ M + H``, ``M + r ≤ N + H`` and
    ``H + r ≤ M + N``, ``λ = (2(H + r)(M + N) − (M − N)² − (H + r)² + ε)/8`` with ``ε = 0`` when ``M + H + N + r`` is
    even and ``1`` when odd; if ``M + H < N + r``, ``λ = (HM − Hr + Nr)/2``; if ``N + H < M + r``,
    ``λ = (HN − Hr + Mr)/2``; if ``M + N < H + r``, ``λ = MN/2``.
    """
    (M, H, N), r = _widths((inputs, hidden, outputs), rank)
    if M + H < N + r:
        return Fraction(H * M - H * r + N * r, 2)
    if N + H < M + r:
        return Fraction(H * N - H * r + M * r, 2)
    if M + N < H + r:
        return Fraction(M * N, 2)
    parity = (M + H + N + r) % 2
    return Fraction(2 * (H + r) * (M + N) - (M - N) ** 2 - (H + r) ** 2 + parity, 8)


def _bottleneck(deficits: list[int]) -> list[int]:
    """The indices ``S`` (``|S| = ℓ + 1``) of Aoyagi's theorem: ``max_S Δ < min_{not S} Δ``, ``Σ_S Δ ≥ ℓ max_S Δ``
    and ``Σ_S Δ < ℓ min_{not S} Δ``. The first condition makes ``S`` a set of smallest deficits, so only the
    prefixes of the sorted order are candidates."""
    order = sorted(range(len(deficits)), key=deficits.__getitem__)
    for size in range(1, len(order) + 1):
        inside = [deficits[i] for i in order[:size]]
        ell, total, top = size - 1, sum(inside), max(inside)
        if size < len(order):
            low_out = deficits[order[size]]
            if not (top < low_out and total < ell * low_out):
                continue
        if total >= ell * top:
            return order[:size]
    raise AssertionError(f"no admissible set for deficits {deficits}")  # the theorem says one exists


def dln_learning_coefficient(widths, rank: int) -> Fraction:
    """Aoyagi's (2024) learning coefficient of a deep linear network with ``widths`` ``(H_1, …, H_{L+1})``
    (input first) whose true product has rank ``rank``.

    With deficits ``Δ_i = H_i − r``, let ``S`` be the set of indices (``|S| = ℓ + 1``) described in ``_bottleneck``,
    ``Δ_S = Σ_{i∈S} Δ_i`` and ``a = Δ_S − (⌈Δ_S/ℓ⌉ − 1) ℓ``. Then

    ``λ = (−r² + r(H_1 + H_{L+1}))/2 + a(ℓ − a)/(4ℓ) − ℓ(ℓ − 1)/4 · (Δ_S/ℓ)² + ½ Σ_{i<j ∈ S} Δ_i Δ_j``.

    A single layer (``len(widths) == 2``) is a regular model, ``λ = H_1 H_2/2`` whatever the rank.
    """
    ws, r = _widths(widths, rank)
    if len(ws) == 2:
        return Fraction(ws[0] * ws[1], 2)
    deficits = [w - r for w in ws]
    S = _bottleneck(deficits)
    ell = len(S) - 1
    lam = Fraction(-r * r + r * (ws[0] + ws[-1]), 2)
    if ell == 0:  # never selected for L >= 2 (it would need Δ < 0); kept for clarity
        return lam
    dS = sum(deficits[i] for i in S)
    a = dS - (-(-dS // ell) - 1) * ell
    lam += Fraction(a * (ell - a), 4 * ell) - Fraction(ell * (ell - 1), 4) * Fraction(dS, ell) ** 2
    lam += Fraction(sum(deficits[i] * deficits[j] for k, i in enumerate(S) for j in S[k + 1:]), 2)
    return lam


def hessian_rank(widths, rank: int) -> int:
    """Rank of the Hessian of ``½‖W_L ⋯ W_1 − W₀‖²`` at a point of the fiber where every factor has rank ``r``
    (the most singular points): ``r (H_1 + H_{L+1} − r)``, the dimension of the tangent space of the rank-``r``
    matrices. Checked numerically by :func:`hessian_eigenvalues`."""
    ws, r = _widths(widths, rank)
    return r * (ws[0] + ws[-1] - r)


def product(factors: list[np.ndarray]) -> np.ndarray:
    """``W_L ⋯ W_1`` for factors of shape ``(chains, H_{l+1}, H_l)`` (first layer first)."""
    out = factors[0]
    for W in factors[1:]:
        out = W @ out
    return out


def singular_factors(widths, rank: int, *, singular_values=None, scale: float = 1.0, seed: int = 0):
    """Factors of a rank-``r`` product ``W₀`` at a most singular point of its fiber: ``W_l = U_{l+1} D_l U_lᵀ``
    with orthonormal ``U_l`` (``H_l × r``) and diagonal ``D_l``, so every factor has rank ``r``. The singular
    values ``s`` of ``W₀`` (default: ``r`` ones) are split evenly, ``D_l = s^{1/L}``, then the first
    factor is multiplied by ``scale`` and the last divided by it (the same product; a rescaled, unbalanced
    point of the same fiber). Returns ``(factors, W₀)``, each factor of shape ``(1, H_{l+1}, H_l)``."""
    ws, r = _widths(widths, rank)
    scale = _args.real("scale", scale, gt=0)
    L = len(ws) - 1
    s = np.ones(r) if singular_values is None else np.asarray(singular_values, dtype=float)
    if s.shape != (r,) or not np.all(s > 0):
        raise ValueError(f"singular_values={_args.show(singular_values)} must be {r} positive numbers (rank={r})")
    gen = np.random.default_rng(seed)
    U = [np.linalg.qr(gen.standard_normal((w, max(r, 1))))[0][:, :r] for w in ws]
    d = s ** (1.0 / L)
    factors = [(U[l + 1] * d) @ U[l].T for l in range(L)]
    factors[0] = factors[0] * scale
    factors[-1] = factors[-1] / scale
    factors = [W[None] for W in factors]
    return factors, product(factors)[0]


@dataclass(frozen=True)
class DLNRegression:
    """``y = W₀ x + σ ε`` with ``x, ε ~ N(0, I)`` and ``n`` samples, kept as sufficient statistics: the empirical
    loss ``L_n(W) = (1/n) Σ ½|y_i − W x_i|²`` (the negative log-likelihood per sample, up to a constant, for
    ``σ = 1``) is ``½ tr(W S_xx Wᵀ) − tr(W S_xy) + ½ tr S_yy``. ``n=None`` is the population (``S_xx = I``)."""

    W0: np.ndarray
    Sxx: np.ndarray
    Sxy: np.ndarray
    syy: float
    n: int | None

    @classmethod
    def sample(cls, W0, n: int | None, *, noise: float = 1.0, seed: int = 0) -> "DLNRegression":
        W0 = np.asarray(W0, dtype=float)
        if W0.ndim != 2:
            raise ValueError(f"W0 of shape {W0.shape} must be a matrix (outputs × inputs)")
        noise = _args.real("noise", noise, ge=0)
        dout, din = W0.shape
        if n is None:
            return cls(W0, np.eye(din), W0.T.copy(), float(np.sum(W0**2) + dout * noise**2), None)
        n = _args.integer("n", n, minimum=2)
        gen = np.random.default_rng(seed)
        X = gen.standard_normal((n, din))
        Y = X @ W0.T + noise * gen.standard_normal((n, dout))
        return cls(W0, X.T @ X / n, X.T @ Y / n, float(np.sum(Y * Y) / n), n)

    def loss(self, P: np.ndarray) -> np.ndarray:
        """``L_n`` at products ``P`` of shape ``(chains, outputs, inputs)``."""
        quad = np.einsum("cij,jk,cik->c", P, self.Sxx, P)
        lin = np.einsum("cij,ji->c", P, self.Sxy)
        return 0.5 * quad - lin + 0.5 * self.syy

    def grad(self, P: np.ndarray) -> np.ndarray:
        """``∂L_n/∂P`` at products ``P``."""
        return P @ self.Sxx - self.Sxy.T[None]


def _factor_grads(factors: list[np.ndarray], G: np.ndarray) -> list[np.ndarray]:
    """Gradients with respect to each factor, given ``G = ∂L/∂(product)``: ``(W_L⋯W_{l+1})ᵀ G (W_{l−1}⋯W_1)ᵀ``."""
    L = len(factors)
    left = [None] * L  # W_{l-1} ⋯ W_1 (None for l = 0: the identity)
    acc = None
    for l in range(L):
        left[l] = acc
        acc = factors[l] if acc is None else factors[l] @ acc
    grads = [None] * L
    right = G  # (W_L ⋯ W_{l+1})ᵀ G, built from the top
    for l in range(L - 1, -1, -1):
        grads[l] = right if left[l] is None else right @ np.swapaxes(left[l], 1, 2)
        right = np.swapaxes(factors[l], 1, 2) @ right
    return grads


def descend(problem: DLNRegression, factors: list[np.ndarray], *, lr: float, steps: int):
    """Full-batch gradient descent on ``L_n`` from ``factors`` (``(chains, H_{l+1}, H_l)`` each, not modified):
    the trained point ``w*`` at which the estimator is applied. Returns ``(factors, gradient norm at the end)``."""
    lr = _args.real("lr", lr, gt=0)
    steps = _args.integer("steps", steps, minimum=0)
    w = [W.copy() for W in factors]
    for _ in range(steps):
        for W, g in zip(w, _factor_grads(w, problem.grad(product(w)))):
            W -= lr * g
    g = _factor_grads(w, problem.grad(product(w)))
    return w, float(math.sqrt(sum(float((x**2).sum()) for x in g)))


@dataclass(frozen=True)
class LLCEstimate:
    """The local learning coefficient estimate: ``value`` (the mean over chains), its standard error ``se`` (over
    chains: the sampler's noise only, not the data set's), the per-chain estimates ``chains``, ``trace``
    (``nβ (L_n(w_t) − L_n(w*))`` averaged over chains, one entry per recorded step), ``chain_trace`` (the same per
    chain, recorded steps × chains) and the settings."""

    value: float
    se: float
    chains: np.ndarray
    trace: np.ndarray
    chain_trace: np.ndarray
    n_beta: float
    step: float
    gamma: float


def estimate_llc(problem: DLNRegression, w_star: list[np.ndarray], *, step: float, steps: int, burn_in: int,
                 gamma: float = 100.0, n_beta: float | None = None, chains: int = 8, seed: int = 0,
                 record_every: int = 10) -> LLCEstimate:
    """Lau et al.'s estimator of the local learning coefficient at ``w_star`` (factors of shape
    ``(1, H_{l+1}, H_l)``), with full-batch Langevin steps

    ``w ← w − (ε/2)(nβ ∇L_n(w) + γ(w − w*)) + √ε ξ``,  ``λ̂ = nβ (mean_t L_n(w_t) − L_n(w*))``

    over the steps after ``burn_in``, with ``nβ = n/log n`` by default (``β = 1/log n``, the inverse temperature
    at which the posterior mean of ``n L_n`` has the free energy's ``λ log n`` term). Each chain is an
    independent estimate; the standard error is over chains."""
    step = _args.real("step", step, gt=0)
    steps = _args.integer("steps", steps, minimum=1)
    burn_in = _args.integer("burn_in", burn_in, minimum=0, maximum=steps - 1)
    gamma = _args.real("gamma", gamma, ge=0)
    chains = _args.integer("chains", chains, minimum=2)
    record_every = _args.integer("record_every", record_every, minimum=1)
    if n_beta is None:
        if problem.n is None:
            raise ValueError("n_beta=None needs a problem with a sample size n (the population has none): "
                             "pass n_beta explicitly")
        n_beta = problem.n / math.log(problem.n)
    n_beta = _args.real("n_beta", n_beta, gt=0)
    gen = np.random.default_rng(seed)
    star = [np.repeat(W, chains, axis=0) for W in w_star]
    w = [W.copy() for W in star]
    L_star = problem.loss(product(w_star))[0]
    total = np.zeros(chains)
    count = 0
    trace = []
    root = math.sqrt(step)
    t = 0
    try:
        with np.errstate(over="raise", invalid="raise"):
            for t in range(steps):
                P = product(w)
                if t >= burn_in or t % record_every == 0:
                    excess = n_beta * (problem.loss(P) - L_star)
                    if t >= burn_in:
                        total += excess
                        count += 1
                    if t % record_every == 0:
                        trace.append(excess.copy())
                grads = _factor_grads(w, problem.grad(P))
                for W, g, W0 in zip(w, grads, star):
                    W -= 0.5 * step * (n_beta * g + gamma * (W - W0))
                    W += root * gen.standard_normal(W.shape)
                if not all(np.isfinite(W).all() for W in w):
                    raise FloatingPointError("non-finite")
    except FloatingPointError:
        raise FloatingPointError(f"Langevin chains became non-finite at step {t}: step={step} is too large for "
                                 f"nβ={n_beta:.4g} (take step < 1/(nβ · largest curvature))") from None
    per_chain = total / count
    chain_trace = np.asarray(trace)
    return LLCEstimate(float(per_chain.mean()), float(per_chain.std(ddof=1) / math.sqrt(chains)), per_chain,
                       chain_trace.mean(axis=1), chain_trace, n_beta, step, gamma)


def hessian_eigenvalues(factors: list[np.ndarray], Sxx: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalues (ascending) of the Gauss–Newton matrix ``Jᵀ (S_xx ⊗ I) J`` of the map from the factors
    (``(1, H_{l+1}, H_l)`` each) to the product: at a realizable minimum (zero residual) it is the Hessian of
    the population loss ``½ E|y − W x|²``, and label noise of variance ``σ²`` gives per-sample gradients of
    covariance ``σ²`` times it."""
    P = product(factors)[0]
    dout, din = P.shape
    Sxx = np.eye(din) if Sxx is None else np.asarray(Sxx, dtype=float)
    cols = []
    for l, W in enumerate(factors):
        for idx in np.ndindex(W.shape[1:]):
            E = [F.copy() for F in factors]
            E[l] = np.zeros_like(W)
            E[l][(0,) + idx] = 1.0
            # d(product) along one coordinate of factor l: the product with factor l replaced by the unit matrix
            cols.append(product(E)[0].ravel())
    J = np.stack(cols, axis=1)  # (dout·din) × d, row-major vec of the product
    metric = np.kron(np.eye(dout), Sxx)
    return np.linalg.eigvalsh(J.T @ metric @ J)


@dataclass(frozen=True)
class SGDSpread:
    """Label-noise SGD at a minimum: the measured stationary excess population loss ``excess`` (mean over
    chains and steps after the burn-in) with its standard error ``se`` (over chains); the linearised
    prediction at the starting point (``predicted_start``) and at the chains' final points (``predicted_end``,
    the chain mean), the small-step limit ``(ησ²/4B) tr H`` at the final points (``trace_limit_end``), and
    ``tr H`` at the start and at the end of the run (chain means); ``trace``: ``tr H`` (chain mean) every
    ``record_every`` steps; ``predicted_window``: the final points' prediction rescaled by the ratio of the mean
    ``tr H`` over the recorded steps after the burn-in to ``tr H`` at the end (the chains still move along the
    fiber while the excess is averaged)."""

    excess: float
    se: float
    predicted_start: float
    predicted_end: float
    trace_limit_end: float
    trace_start: float
    trace_end: float
    trace: np.ndarray
    predicted_window: float


def sgd_spread(factors: list[np.ndarray], *, lr: float, batch: int, noise: float, steps: int, burn_in: int,
               chains: int = 16, seed: int = 0, record_every: int = 100) -> SGDSpread:
    """Online SGD with fresh Gaussian inputs and label noise ``noise``, started at ``factors`` (a point of the
    true fiber, ``(1, H_{l+1}, H_l)`` each) on ``½ E|y − W x|²``, ``y = W₀ x + noise · ε``: the excess population
    loss ``½‖W − W₀‖²_F`` averaged after ``burn_in``, against the linearised dynamics' stationary value
    ``Σ_i η σ² h_i / (2B(2 − η h_i))`` (``h_i`` the Hessian's eigenvalues at the start)."""
    lr = _args.real("lr", lr, gt=0)
    batch = _args.integer("batch", batch, minimum=1)
    noise = _args.real("noise", noise, gt=0)
    steps = _args.integer("steps", steps, minimum=1)
    burn_in = _args.integer("burn_in", burn_in, minimum=0, maximum=steps - 1)
    chains = _args.integer("chains", chains, minimum=2)
    record_every = _args.integer("record_every", record_every, minimum=1)

    def prediction(fs):
        h = hessian_eigenvalues(fs)
        return float(np.sum(lr * noise**2 * h / (2 * batch * (2 - lr * h)))), float(h.sum()), float(h.max())

    predicted_start, _, top = prediction(factors)
    if lr * top >= 2:
        raise ValueError(f"lr={lr} is unstable at this minimum (largest curvature {top:.4g}: need lr < "
                         f"{2 / top:.4g})")
    W0 = product(factors)[0]
    dout, din = W0.shape
    gen = np.random.default_rng(seed)
    w = [np.repeat(W, chains, axis=0) for W in factors]

    def trace_h(ws):
        # tr(JᵀJ) = Σ_l ‖W_L⋯W_{l+1}‖²_F ‖W_{l-1}⋯W_1‖²_F (identity factors count as √width)
        total = np.zeros(chains)
        for l in range(len(ws)):
            right = product(ws[l + 1:]) if l + 1 < len(ws) else None
            left = product(ws[:l]) if l > 0 else None
            rn = (right**2).sum((1, 2)) if right is not None else dout
            ln = (left**2).sum((1, 2)) if left is not None else din
            total += rn * ln
        return total

    start = trace_h(w).mean()
    total = np.zeros(chains)
    count = 0
    trace = []
    t = 0
    try:
        with np.errstate(over="raise", invalid="raise"):
            for t in range(steps):
                P = product(w)
                if t % record_every == 0:
                    trace.append(trace_h(w).mean())
                if t >= burn_in:
                    total += 0.5 * ((P - W0[None]) ** 2).sum((1, 2))
                    count += 1
                X = gen.standard_normal((chains, batch, din))
                resid = X @ np.swapaxes(P - W0[None], 1, 2) - noise * gen.standard_normal((chains, batch, dout))
                G = np.swapaxes(resid, 1, 2) @ X / batch  # ∂/∂P of the batch's mean ½|y − P x|²
                for W, g in zip(w, _factor_grads(w, G)):
                    W -= lr * g
                if not all(np.isfinite(W).all() for W in w):
                    raise FloatingPointError("non-finite")
    except FloatingPointError:
        raise FloatingPointError(f"SGD diverged at step {t} (lr={lr})") from None
    per_chain = total / count
    window = [tr for k, tr in enumerate(trace) if k * record_every >= burn_in]
    ends = [prediction([W[c:c + 1] for W in w]) for c in range(chains)]
    predicted_end = float(np.mean([e[0] for e in ends]))
    trace_end = float(np.mean([e[1] for e in ends]))
    return SGDSpread(float(per_chain.mean()), float(per_chain.std(ddof=1) / math.sqrt(chains)), predicted_start,
                     predicted_end, lr * noise**2 * trace_end / (4 * batch), float(start), trace_end,
                     np.asarray(trace), predicted_end * float(np.mean(window)) / trace_end if window else float("nan"))
