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
from functools import lru_cache

import sympy as sp

from .sampling import check_batch_size

__all__ = [
    "gradient_symbols",
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
    return sp.Matrix(n, d, lambda i, a: sp.Symbol(f"{name}_{i}{a}", real=True))


@lru_cache(maxsize=None)
def batch_distribution(n: int, B: int, scheme: str) -> tuple[tuple[tuple[int, ...], sp.Rational], ...]:
    """All ordered index tuples ``(I_1, …, I_B)`` of one batch and their exact probabilities.

    A single reshuffled batch has the law of a without-replacement batch.
    """
    check_batch_size(B, n, scheme)
    if scheme == "with_replacement":
        p = sp.Rational(1, n**B)
        return tuple((t, p) for t in itertools.product(range(n), repeat=B))
    p = sp.Rational(1, math.perm(n, B))
    return tuple((t, p) for t in itertools.permutations(range(n), B))


@lru_cache(maxsize=None)
def epoch_distribution(n: int, B: int, m: int) -> tuple[tuple[tuple[tuple[int, ...], ...], sp.Rational], ...]:
    """The first ``m`` batches of a random-reshuffling epoch (``m ≤ ⌊n/B⌋``), with probabilities."""
    check_batch_size(B, n, "reshuffling")
    if not 1 <= m <= n // B:
        raise ValueError(f"m={m} batches of B={B} do not fit in one epoch of n={n}; valid 1 <= m <= {n // B}")
    p = sp.Rational(1, math.perm(n, m * B))
    return tuple(
        (tuple(t[j * B : (j + 1) * B] for j in range(m)), p) for t in itertools.permutations(range(n), m * B)
    )


def independent_batches(n: int, B: int, m: int, scheme: str):
    """``m`` independent batches of ``scheme`` (the product law), as ``(batches, probability)``."""
    single = batch_distribution(n, B, scheme)
    for combo in itertools.product(single, repeat=m):
        yield tuple(b for b, _ in combo), sp.Mul(*[p for _, p in combo])


def expect(f, distribution) -> sp.Matrix:
    """``E[f(outcome)] = Σ p · f(outcome)`` over an enumerated distribution (exact)."""
    total = None
    for outcome, p in distribution:
        term = p * f(outcome)
        total = term if total is None else total + term
    return sp.expand(total)


def batch_mean(G: sp.Matrix, idx) -> sp.Matrix:
    """``g_B = (1/B) Σ_j g_{I_j}`` as a column vector."""
    return sum((G[i, :].T for i in idx), sp.zeros(G.shape[1], 1)) / len(idx)


def full_mean(G: sp.Matrix) -> sp.Matrix:
    return batch_mean(G, range(G.shape[0]))


def sigma_emp(G: sp.Matrix) -> sp.Matrix:
    """``Σ_emp = (1/n) Σ_i (g_i - g_n)(g_i - g_n)ᵀ`` (the notes' normalisation)."""
    n = G.shape[0]
    gn = full_mean(G)
    return sp.expand(sum(((G[i, :].T - gn) * (G[i, :].T - gn).T for i in range(n)), sp.zeros(G.shape[1])) / n)


def covariance(f, distribution) -> sp.Matrix:
    """``E[f fᵀ] - E[f] E[f]ᵀ`` for a vector-valued ``f`` over an enumerated distribution."""
    distribution = tuple(distribution)
    mean = expect(f, distribution)
    second = expect(lambda o: f(o) * f(o).T, distribution)
    return sp.expand(second - mean * mean.T)


def is_zero(M) -> bool:
    """True when every entry expands to exactly zero (entries are polynomials with rational coefficients)."""
    items = list(M) if hasattr(M, "shape") else [M]
    return all(sp.expand(x) == 0 for x in items)


# ----------------------------------------------------------------------------- population moments
def population_model(n: int, d: int):
    """Symbols for ``g_i = μ + z_i``: returns ``(G, mu, S, z)`` with ``S`` symmetric."""
    mu = sp.Matrix(d, 1, lambda a, _: sp.Symbol(f"mu_{a}", real=True))
    S = sp.Matrix(d, d, lambda a, b: sp.Symbol(f"S_{min(a, b)}{max(a, b)}", real=True))
    z = sp.Matrix(n, d, lambda i, a: sp.Symbol(f"z_{i}{a}", real=True))
    G = sp.Matrix(n, d, lambda i, a: mu[a] + z[i, a])
    return G, mu, S, z


def population_expect(expr, z: sp.Matrix, S: sp.Matrix, rho=0):
    """Expectation over data sets of a polynomial of degree ≤ 2 in the ``z`` symbols.

    Rules: ``E[z_{ia}] = 0``, ``E[z_{ia} z_{jb}] = S_ab`` if ``i = j`` else ``rho · S_ab``.
    """
    zsyms = list(z)
    n, d = z.shape
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
