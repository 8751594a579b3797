"""Exact (sympy) computations over small finite data sets, with every batch enumerated.

A data set of ``n`` per-sample gradients in ``d`` dimensions is a matrix of free symbols ``g_{i,a}``;
a sampling scheme is an explicit list of outcomes with exact rational probabilities. Expectations
are finite sums, so an identity either simplifies to zero or it does not: no tolerance, no seed.

Population expectations (over the data set) use the moment rules of i.i.d. samples
``g_i = μ + z_i`` with ``E[z_i] = 0`` and ``E[z_i z_jᵀ] = ρ_{ij} S``, where ``ρ_{ii} = 1`` and
``ρ_{ij} = rho`` for ``i ≠ j`` (``rho = 0``: independent samples).
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
import sympy as sp
from torch import Tensor

from . import _args
from ._args import ArgumentTypeError, as_int, show
from .sampling import check_batch_size

__all__ = [
    "gradient_symbols",
    "sgd_quadratic_second_moment",
    "ou_second_moment",
    "batch_distribution",
    "epoch_distribution",
    "independent_batches",
    "expect",
    "batch_mean",
    "sigma_emp",
    "covariance",
    "is_zero",
    "population_model",
    "population_expect",
    "curl",
    "divergence_of_matrix",
    "zero_current_field",
]


def gradient_symbols(n: int, d: int, name: str = "g") -> sp.Matrix:
    """``n × d`` matrix of real symbols; row ``i`` is the per-sample gradient ``g_i``."""
    n, d = _args.integer("n", n, minimum=1), _args.integer("d", d, minimum=1)
    if not isinstance(name, str):
        raise ArgumentTypeError(f"name={show(name)} must be a string, the symbols' prefix (g_00, g_01, …)")
    return sp.Matrix(n, d, lambda i, a: sp.Symbol(f"{name}_{i}{a}", real=True))


def batch_distribution(n: int, B: int, scheme: str) -> tuple[tuple[tuple[int, ...], sp.Rational], ...]:
    """All ordered index tuples ``(I_1, …, I_B)`` of one batch and their exact probabilities.

    A single reshuffled batch has the law of a without-replacement batch.
    """
    B = check_batch_size(B, n, scheme)  # checked before the cache, which needs hashable arguments
    return _batch_distribution(as_int(n), B, scheme)


@lru_cache(maxsize=None)
def _batch_distribution(n: int, B: int, scheme: str) -> tuple[tuple[tuple[int, ...], sp.Rational], ...]:
    if scheme == "with_replacement":
        p = sp.Rational(1, n**B)
        return tuple((t, p) for t in itertools.product(range(n), repeat=B))
    p = sp.Rational(1, math.perm(n, B))
    return tuple((t, p) for t in itertools.permutations(range(n), B))


def epoch_distribution(n: int, B: int, m: int) -> tuple[tuple[tuple[tuple[int, ...], ...], sp.Rational], ...]:
    """The first ``m`` batches of a random-reshuffling epoch (``m ≤ ⌊n/B⌋``), with probabilities."""
    B = check_batch_size(B, n, "reshuffling")  # checked before the cache, which needs hashable arguments
    n = as_int(n)
    m = _args.integer("m", m, valid=f"an int in 1..n//B = 1..{n // B}")
    if not 1 <= m <= n // B:
        raise ValueError(f"m={m} batches of B={B} do not fit in one epoch of n={n}; valid 1 <= m <= {n // B}")
    return _epoch_distribution(n, B, m)


@lru_cache(maxsize=None)
def _epoch_distribution(n: int, B: int, m: int) -> tuple[tuple[tuple[tuple[int, ...], ...], sp.Rational], ...]:
    p = sp.Rational(1, math.perm(n, m * B))
    return tuple(
        (tuple(t[j * B : (j + 1) * B] for j in range(m)), p) for t in itertools.permutations(range(n), m * B)
    )


def independent_batches(n: int, B: int, m: int, scheme: str):
    """``m`` independent batches of ``scheme`` (the product law), as ``(batches, probability)``, lazily.

    The arguments are checked at the call, not at the first ``next``."""
    single = batch_distribution(n, B, scheme)
    m = _args.integer("m", m, minimum=1)

    def outcomes():
        for combo in itertools.product(single, repeat=m):
            yield tuple(b for b, _ in combo), sp.Mul(*[p for _, p in combo])

    return outcomes()


def _check_distribution(distribution):
    """``distribution`` if it can be iterated over (its pairs are checked as they come); else an error."""
    bad = distribution is None or isinstance(distribution, (str, bytes, Mapping))
    bad = bad or (isinstance(distribution, (Tensor, np.ndarray)) and distribution.ndim == 0)
    try:
        if not bad:
            iter(distribution)
    except TypeError:
        bad = True
    if bad:
        raise ArgumentTypeError(f"distribution={show(distribution)} must be an iterable of (outcome, probability) "
                                "pairs, e.g. batch_distribution(n, B, scheme)")
    return distribution


def expect(f, distribution) -> sp.Matrix:
    """``E[f(outcome)] = Σ p · f(outcome)`` over an enumerated distribution (exact)."""
    _args.function("f", f, "f(outcome) -> a sympy expression or matrix")
    total = None
    for i, item in enumerate(_check_distribution(distribution)):
        try:
            outcome, p = item
        except (TypeError, ValueError):
            raise ArgumentTypeError(f"distribution must hold (outcome, probability) pairs; its item {i} is "
                                    f"{show(item)}") from None
        term = p * f(outcome)
        total = term if total is None else total + term
    if total is None:
        raise ValueError("distribution is empty; an expectation needs at least one outcome")
    return sp.expand(total)


def _check_matrix(name: str, G) -> sp.MatrixBase:
    if not isinstance(G, sp.MatrixBase):
        raise ArgumentTypeError(f"{name}={show(G)} must be a sympy Matrix, e.g. gradient_symbols(n, d)")
    return G


def batch_mean(G: sp.Matrix, idx) -> sp.Matrix:
    """``g_B = (1/B) Σ_j g_{I_j}`` as a column vector."""
    n = _check_matrix("G", G).shape[0]
    what = f"a non-empty sequence of row indices of G, ints in [0, {n - 1}]"
    rows = [as_int(i) for i in _args.items("idx", idx, what)]
    if not rows or any(i is None or not 0 <= i < n for i in rows):
        raise ValueError(f"idx={show(idx)} must be {what}")
    return sum((G[i, :].T for i in rows), sp.zeros(G.shape[1], 1)) / len(rows)


def full_mean(G: sp.Matrix) -> sp.Matrix:
    return batch_mean(G, range(G.shape[0]))


def sigma_emp(G: sp.Matrix) -> sp.Matrix:
    """``Σ_emp = (1/n) Σ_i (g_i - g_n)(g_i - g_n)ᵀ`` (the notes' normalisation)."""
    n = _check_matrix("G", G).shape[0]
    gn = full_mean(G)
    return sp.expand(sum(((G[i, :].T - gn) * (G[i, :].T - gn).T for i in range(n)), sp.zeros(G.shape[1])) / n)


def covariance(f, distribution) -> sp.Matrix:
    """``E[f fᵀ] - E[f] E[f]ᵀ`` for a vector-valued ``f`` over an enumerated distribution."""
    _args.function("f", f, "f(outcome) -> a sympy column vector")
    distribution = tuple(_check_distribution(distribution))
    mean = expect(f, distribution)
    second = expect(lambda o: f(o) * f(o).T, distribution)
    return sp.expand(second - mean * mean.T)


def is_zero(M) -> bool:
    """True when every entry expands to exactly zero (entries are polynomials with rational coefficients)."""
    if not _is_symbolic(M) and not isinstance(M, np.ndarray):
        raise ArgumentTypeError(f"M={show(M)} must be a sympy expression or matrix (or a number)")
    items = list(M) if hasattr(M, "shape") else [M]
    return all(sp.expand(x) == 0 for x in items)


# ----------------------------------------------------------------------------- population moments
def population_model(n: int, d: int):
    """Symbols for ``g_i = μ + z_i``: returns ``(G, mu, S, z)`` with ``S`` symmetric."""
    n, d = _args.integer("n", n, minimum=1), _args.integer("d", d, minimum=1)
    mu = sp.Matrix(d, 1, lambda a, _: sp.Symbol(f"mu_{a}", real=True))
    S = sp.Matrix(d, d, lambda a, b: sp.Symbol(f"S_{min(a, b)}{max(a, b)}", real=True))
    z = sp.Matrix(n, d, lambda i, a: sp.Symbol(f"z_{i}{a}", real=True))
    G = sp.Matrix(n, d, lambda i, a: mu[a] + z[i, a])
    return G, mu, S, z


def population_expect(expr, z: sp.Matrix, S: sp.Matrix, rho=0):
    """Expectation over data sets of a polynomial of degree ≤ 2 in the ``z`` symbols.

    Rules: ``E[z_{ia}] = 0``, ``E[z_{ia} z_{jb}] = S_ab`` if ``i = j`` else ``rho · S_ab``.
    """
    if not _is_symbolic(expr):
        raise ArgumentTypeError(f"expr={show(expr)} must be a sympy expression or matrix (or a number)")
    n, d = _check_matrix("z", z).shape
    if _check_matrix("S", S).shape != (d, d):
        raise ValueError(f"S has shape {S.shape}; need ({d}, {d}), the covariance symbols of population_model")
    if isinstance(rho, Tensor):
        rho = _args.real("rho", rho, valid="a number or a sympy expression")
    elif not _is_symbolic(rho) or isinstance(rho, (sp.MatrixBase, sp.NDimArray)):
        raise ArgumentTypeError(f"rho={show(rho)} must be a number or a sympy expression (the correlation)")
    zsyms = list(z)
    index = {z[i, a]: (i, a) for i in range(n) for a in range(d)}

    def one(e):
        poly = sp.Poly(sp.expand(e), *zsyms)
        out = 0
        for monom, coeff in poly.terms():
            deg = sum(monom)
            if deg == 0:
                out += coeff
            elif deg == 1:
                continue
            elif deg == 2:
                pos = [k for k, e_ in enumerate(monom) for _ in range(e_)]
                (i, a), (j, b) = index[zsyms[pos[0]]], index[zsyms[pos[1]]]
                out += coeff * S[a, b] * (1 if i == j else rho)
            else:
                raise ValueError("population_expect handles polynomials of degree <= 2 in z")
        return sp.expand(out)

    if hasattr(expr, "shape"):
        return expr.applyfunc(one)
    return one(expr)


def _is_symbolic(v) -> bool:
    """A sympy expression or matrix, or a plain number (not a bool): what the exact computations take."""
    return (isinstance(v, (sp.Basic, sp.MatrixBase, sp.NDimArray))
            or (isinstance(v, numbers.Number) and not isinstance(v, bool)))


# ----------------------------------------------------------------------------- Fokker–Planck, symbolically
def fokker_planck_rhs(p, drift, diffusion, coords):
    """``∂p/∂t`` for the Itô SDE ``dθ = a dt + σ dW`` with ``D = σσᵀ``:
    ``-Σ_i ∂_i(a_i p) + ½ Σ_ij ∂_i ∂_j (D_ij p)``.

    ``p`` is a sympy expression in ``coords``; ``drift`` a list of expressions, ``diffusion`` a square
    ``sp.Matrix`` (symmetric).
    """
    n = len(coords)
    out = -sum(sp.diff(drift[i] * p, coords[i]) for i in range(n))
    out += sp.Rational(1, 2) * sum(sp.diff(diffusion[i, j] * p, coords[i], coords[j]) for i in range(n) for j in range(n))
    return out


def probability_current(p, drift, diffusion, coords):
    """Itô current ``J_i = a_i p - ½ Σ_j ∂_j(D_ij p)``, so that ``∂p/∂t = -∇·J``."""
    n = len(coords)
    return sp.Matrix([drift[i] * p - sp.Rational(1, 2) * sum(sp.diff(diffusion[i, j] * p, coords[j]) for j in range(n))
                      for i in range(n)])


def sgd_quadratic_second_moment(eta, h, s2, x0, k):
    """``E θ_k²`` for SGD on ``L = hθ²/2`` with additive noise of variance ``s2``: ``θ_{k+1} = (1 - ηh) θ_k - η ξ_k``
    from ``θ_0 = x0``. The mean decays by ``(1 - ηh)^k``; the noise accumulates a geometric sum. Exact for any
    symbolic or numeric arguments (``k`` may be symbolic, e.g. ``T/η``)."""
    a = 1 - eta * h
    return a ** (2 * k) * x0**2 + eta**2 * s2 * (1 - a ** (2 * k)) / (1 - a**2)


def ou_second_moment(rate, diffusion, x0, t):
    """``E X_t²`` for the Ornstein–Uhlenbeck process ``dX = -rate X dt + √diffusion dW`` from ``X_0 = x0``."""
    return sp.exp(-2 * rate * t) * x0**2 + diffusion * (1 - sp.exp(-2 * rate * t)) / (2 * rate)


def stationary_density_1d(drift, diffusion, x, convention: str = "ito"):
    """Unnormalised zero-current stationary density of a 1D SDE, by convention.

    With ``Φ(x) = ∫ 2a/D dx``: Itô ``exp(Φ)/D``; Stratonovich ``exp(Φ)/√D``; anti-Itô (Hänggi–Klimontovich,
    the form of the notes' eq. (24)) ``exp(Φ)``.
    """
    phi = sp.integrate(sp.simplify(2 * drift / diffusion), x)
    prefactor = {"ito": 1 / diffusion, "stratonovich": 1 / sp.sqrt(diffusion), "anti-ito": sp.Integer(1)}
    if convention not in prefactor:
        raise ValueError(f"convention={convention!r}; valid: {sorted(prefactor)}")
    return sp.simplify(prefactor[convention] * sp.exp(phi))


def curl_3d(v, coords):
    """``(∇ × v)_k = ε_klm ∂_l v_m`` for a 3-vector of expressions."""
    x, y, z = coords
    return sp.Matrix([sp.diff(v[2], y) - sp.diff(v[1], z), sp.diff(v[0], z) - sp.diff(v[2], x), sp.diff(v[1], x) - sp.diff(v[0], y)])


def curl(v, coords) -> sp.Matrix:
    """The curl of a vector field in any dimension: the antisymmetric matrix ``∂_i v_j - ∂_j v_i``.

    In three dimensions its entries are those of ``curl_3d`` (``(∇ × v)_k = ε_kij (∂_i v_j)``); in
    two dimensions its one independent entry is the scalar curl ``∂_1 v_2 - ∂_2 v_1``. A field is a
    gradient on a simply connected domain exactly when this matrix vanishes.
    """
    n = len(coords)
    if len(v) != n:
        raise ValueError(f"curl: the field has {len(v)} components for {n} coordinates; they must match")
    return sp.Matrix(n, n, lambda i, j: sp.diff(v[j], coords[i]) - sp.diff(v[i], coords[j]))


def divergence_of_matrix(S, coords) -> sp.Matrix:
    """``(∇·Σ)_i = Σ_j ∂_j Σ_ij`` for a square ``sp.Matrix`` of expressions."""
    n = len(coords)
    if S.shape != (n, n):
        raise ValueError(f"divergence_of_matrix: Σ has shape {S.shape} for {n} coordinates; need ({n}, {n})")
    return sp.Matrix([sum(sp.diff(S[i, j], coords[j]) for j in range(n)) for i in range(n)])


def zero_current_field(grad_L, S, coords, c) -> sp.Matrix:
    """The field ``F = Σ⁻¹(∇L + ½c ∇·Σ)`` of the Itô SDE ``dθ = -∇L dt + √(cΣ) dW``.

    Its current ``J = -∇L p - ½c ∇·(Σ p)`` vanishes for ``p > 0`` exactly when ``∇ log p = -(2/c) F``. So a
    zero-current (detailed-balance) stationary law exists only if ``F`` is a gradient, ``F = ∇φ``
    (:func:`curl` of ``F`` zero), and then ``p ∝ exp(-(2/c) φ)`` where that is normalisable.
    """
    grad_L = sp.Matrix(grad_L)
    return S.inv() * (grad_L + c / 2 * divergence_of_matrix(S, coords))
