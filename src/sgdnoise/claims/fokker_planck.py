"""Ledger rows for chapter 3: Fokker–Planck, stationary laws, detailed balance, the current (notes §2.2,
end of §2.3, §5.1). Exact checks with sympy and exact Lyapunov algebra; the solver only where a
closed form is not available.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import sympy as sp

from .. import symbolic as sy
from ..ledger import Evidence, register

CH = "chapters/03_fokker_planck"


def _1d():
    x = sp.Symbol("theta", real=True)
    c = sp.Symbol("c", positive=True)  # c = η/B
    p, S, L = sp.Function("p")(x), sp.Function("Sigma")(x), sp.Function("L")(x)
    return x, c, p, S, L


@register(
    key="ch3:eq24",
    location="(24)–(25)",
    section="2.2",
    chapter=CH,
    claim="SGD's SDE has the Fokker–Planck equation ∂p/∂t = ∇·(∇L p + ½(η/B) Σ ∇p), current j = ∇L p + ½(η/B) Σ ∇p.",
    verdict="holds only if",
    statement="∇·Σ = 0, (∇·Σ)_i = Σ_j ∂_j Σ_ij (in one dimension: Σ constant). For the Itô SDE (23) the current is "
    "-(∇L p + ½(η/B) ∇·(Σ p)), which adds ½(η/B)(∇·Σ) p; (24) is the Fokker–Planck equation of the Itô SDE with the "
    "extra drift +½(η/B) ∇·Σ, and in one dimension of the anti-Itô (Hänggi–Klimontovich) reading of (23). The sign of "
    "j in (25) is also reversed with respect to ∂p/∂t = -∇·j",
    mutant={"holds_for_varying_sigma": True},
)
def _eq24(holds_for_varying_sigma: bool = False):
    x, c, p, S, L = _1d()
    ito = sy.fokker_planck_rhs(p, [-sp.diff(L, x)], sp.Matrix([[c * S]]), [x])
    notes = sp.diff(sp.diff(L, x) * p + c / 2 * S * sp.diff(p, x), x)
    diff = sp.simplify(ito - notes)
    missing = sp.simplify(diff - c / 2 * sp.diff(sp.diff(S, x) * p, x))
    const = sp.simplify(diff.subs(S, sp.Symbol("s", positive=True)).doit())
    # Two dimensions, generic symmetric Σ(θ): Itô minus (24) is exactly ½c ∇·((∇·Σ) p).
    X = sp.symbols("x1:3", real=True)
    p2, L2 = sp.Function("p")(*X), sp.Function("L")(*X)
    S2 = sp.Matrix(2, 2, lambda i, j: sp.Function(f"S{min(i, j)}{max(i, j)}")(*X))
    ito2 = sy.fokker_planck_rhs(p2, [-sp.diff(L2, xi) for xi in X], c * S2, list(X))
    notes2 = sum(sp.diff(sp.diff(L2, X[i]) * p2 + c / 2 * sum(S2[i, j] * sp.diff(p2, X[j]) for j in range(2)), X[i])
                 for i in range(2))
    div_S = [sum(sp.diff(S2[i, j], X[j]) for j in range(2)) for i in range(2)]
    missing2 = sp.simplify(sp.expand(ito2 - notes2 - c / 2 * sum(sp.diff(div_S[i] * p2, X[i]) for i in range(2))))
    ok = missing == 0 and missing2 == 0 and const == 0 and ((diff == 0) == holds_for_varying_sigma)
    return Evidence(ok, f"Itô minus (24) = {sp.simplify(diff)} (exact, 1D, generic L, Σ, p); zero for constant Σ: "
                    f"{const == 0}; in 2D with a generic symmetric Σ(θ) it is ½c ∇·((∇·Σ) p): {missing2 == 0}")


@register(
    key="ch3:eq26",
    location="(26)",
    section="2.2",
    chapter=CH,
    claim="Stationarity means the probability current is divergence free.",
    verdict="holds",
    mutant={"sign": -1},
)
def _eq26(sign: int = 1):
    X = sp.symbols("x1:3", real=True)
    p = sp.Function("p")(*X)
    a = [sp.Function(f"a{i}")(*X) for i in (1, 2)]
    D = sp.Matrix(2, 2, lambda i, j: sp.Function(f"D{min(i, j)}{max(i, j)}")(*X))
    J = sy.probability_current(p, a, D, X)
    rhs = sy.fokker_planck_rhs(p, a, D, X)
    ok = sp.simplify(rhs + sign * (sp.diff(J[0], X[0]) + sp.diff(J[1], X[1]))) == 0
    return Evidence(ok, "∂p/∂t = -∇·J exactly (2D, generic drift and diffusion matrix): ∂p/∂t = 0 ⇔ ∇·J = 0")


def _gaussian_current(H, Sig, c):
    """Zero-mean OU near a minimum: stationary C (Lyapunov) and the current matrix M with J = M θ p."""
    C = scipy.linalg.solve_continuous_lyapunov(H, c * Sig)
    M = -H + 0.5 * c * Sig @ np.linalg.inv(C)
    return C, M


@register(
    key="ch3:eq28",
    location="(27)–(28)",
    section="2.2",
    chapter=CH,
    claim="With constant Σ and detailed balance, p ∝ exp(-β Σ⁻¹ L_N) with inverse temperature β = B/(2η).",
    verdict="wrong",
    statement="Σ⁻¹L is a matrix, not a number. A zero current with constant Σ needs Σ⁻¹∇L to be a gradient ∇φ "
    "(for a quadratic loss: Σ and the Hessian commute), and then p ∝ exp(-(2B/η) φ); for Σ = σ²I this is "
    "p ∝ exp(-β L) with β = 2B/(ησ²), not B/(2η)",
    mutant={"beta": lambda B, eta, s2: B / (2 * eta)},
)
def _eq28(beta=lambda B, eta, s2: 2 * B / (eta * s2)):
    t1, t2 = sp.symbols("t1 t2", real=True)
    eta, B, s2, h1, h2 = sp.symbols("eta B sigma2 h1 h2", positive=True)
    Lq = (h1 * t1**2 + h2 * t2**2) / 2
    c = eta / B
    a = [-sp.diff(Lq, t1), -sp.diff(Lq, t2)]
    p = sp.exp(-beta(B, eta, s2) * Lq)
    J = sy.probability_current(p, a, c * s2 * sp.eye(2), [t1, t2])
    zero = all(sp.simplify(j) == 0 for j in J)
    # and the commutation condition, numerically exact: aligned anisotropic noise has no current, rotated does
    H = np.diag([1.0, 3.0])
    R = np.array([[np.cos(0.6), -np.sin(0.6)], [np.sin(0.6), np.cos(0.6)]])
    _, M_al = _gaussian_current(H, np.diag([0.5, 2.0]), 0.1)
    _, M_rot = _gaussian_current(H, R @ np.diag([0.5, 2.0]) @ R.T, 0.1)
    ok = zero and np.abs(M_al).max() < 1e-12 and np.abs(M_rot).max() > 1e-3
    return Evidence(ok, f"isotropic Σ = σ²I: p ∝ exp(-β L) has zero current iff β = 2B/(ησ²) (sympy): {zero}; quadratic loss, "
                    f"constant Σ: current matrix max |M| = {np.abs(M_al).max():.1e} when Σ commutes with H, "
                    f"{np.abs(M_rot).max():.3f} when rotated")


@register(
    key="ch3:eq29",
    location="(29)",
    section="2.2",
    chapter=CH,
    claim="For a non-constant positive definite Σ(θ), p_∞ ∝ |Σ(θ)|^{-1/2} exp(-(2B/η) L_N(θ)).",
    verdict="wrong",
    statement="in 1D the zero-current stationary density is p ∝ Σ⁻¹ exp(-(2B/η)∫L'/Σ) for the Itô SDE (23) "
    "(Σ^{-1/2} for Stratonovich, Σ⁰ for the anti-Itô form (24)); the exponent involves L'/Σ, not L. "
    "In more dimensions a zero current needs Σ⁻¹∇L to be a gradient",
    mutant={"corrected": lambda L, S, x, c: S ** sp.Rational(-1, 2) * sp.exp(-2 / c * L)},
)
def _eq29(corrected=lambda L, S, x, c: sy.stationary_density_1d(-sp.diff(L, x), c * S, x, "ito")):
    x = sp.Symbol("theta", real=True)
    c = sp.Symbol("c", positive=True)
    L, S = x**2 / 2, 1 + x**2
    a, D = -sp.diff(L, x), sp.Matrix([[c * S]])
    notes = S ** sp.Rational(-1, 2) * sp.exp(-2 / c * L)
    res_notes = sp.simplify(sy.fokker_planck_rhs(notes, [a], D, [x]))
    res_anti = sp.simplify(sp.diff(sp.diff(L, x) * notes + c / 2 * S * sp.diff(notes, x), x))
    res_corr = sp.simplify(sy.fokker_planck_rhs(corrected(L, S, x, c), [a], D, [x]))
    ok = res_notes != 0 and res_anti != 0 and res_corr == 0
    return Evidence(ok, "L = θ²/2, Σ = 1 + θ²: (29) is stationary for the Itô equation: "
                    f"{res_notes == 0}, for (24): {res_anti == 0}; the Itô density Σ⁻¹exp(-(2/c)∫L'/Σ) is: {res_corr == 0}")


@register(
    key="ch3:anisotropy",
    location="§2.3 (last assumption), §2.4",
    section="2.3, 2.4",
    chapter=CH,
    claim="If the noise is anisotropic, the current is not curl-free and detailed balance fails.",
    verdict="holds only if",
    statement="the noise is not aligned with the loss: near a quadratic minimum with constant Σ the current vanishes "
    "iff Σ commutes with the Hessian H; anisotropic noise with the Hessian's eigenvectors keeps detailed balance",
    mutant={"aligned_circulates": True},
)
def _anisotropy(aligned_circulates: bool = False):
    H = np.array([[2.0, 0.0], [0.0, 0.5]])
    out = {}
    for name, Sig in {"isotropic": np.eye(2), "aligned": np.diag([3.0, 0.2]),
                      "rotated": np.array([[1.6, 1.4], [1.4, 1.6]])}.items():
        _, M = _gaussian_current(H, Sig, 0.1)
        out[name] = float(np.abs(M).max())
    ok = out["isotropic"] < 1e-12 and (out["aligned"] > 1e-6) == aligned_circulates and out["rotated"] > 1e-3
    return Evidence(ok, "max |current matrix| (exact Lyapunov): " + ", ".join(f"{k} {v:.1e}" for k, v in out.items()))


@register(
    key="ch3:state-dependence",
    location="§2.3 (last assumption)",
    section="2.3",
    chapter=CH,
    claim="When Σ depends on θ, the stationary state is out of equilibrium with a non-zero solenoidal current.",
    verdict="wrong",
    statement="a θ-dependent Σ is neither necessary nor sufficient: in 1D every stationary current with reflecting or "
    "decaying boundaries is zero whatever Σ(θ); in 2D Σ(θ) = s(θ)I with a radial loss keeps j = 0, and constant "
    "Σ not commuting with H already gives j ≠ 0",
    mutant={"expect_current_1d": True},
)
def _state_dependence(expect_current_1d: bool = False):
    from ..fokker_planck import stationary_1d, stationary_2d

    s1 = stationary_1d(lambda t: -t, lambda t: 0.2 * (1 + t**2), -6.0, 6.0, 200)
    j1 = float(np.abs(s1.J).max() / s1.p.max())
    j2 = []
    for m in (30, 60):  # in 2D the exact current is zero; the scheme's error must vanish under refinement
        s2 = stationary_2d(lambda X, Y: (-X, -Y), lambda X, Y: (0.2 * (1 + X**2 + Y**2), 0.0, 0.2 * (1 + X**2 + Y**2)),
                           ((-3, 3), (-3, 3)), (m, m))
        j2.append(float(np.hypot(s2.Jx, s2.Jy).max() / s2.p.max()))
    ok = (j1 > 1e-8) == expect_current_1d and j2[1] < j2[0] / 3
    return Evidence(ok, f"solver, max |J| / max p: 1D with Σ = 0.2(1 + θ²): {j1:.1e}; 2D with Σ = 0.2(1 + |θ|²) I and "
                    f"L = |θ|²/2: {j2[0]:.1e} on a 30² grid, {j2[1]:.1e} on 60² (→ 0, second order)")


@register(
    key="ch3:curl",
    location="(55)–(60)",
    section="5.1",
    chapter=CH,
    claim="∇×j = ∇p × ∇L_N + (η/2B)(∇Σ) × ∇p, the term ε_klm Σ_mj ∂_l∂_j p vanishing by symmetry.",
    verdict="wrong",
    statement="ε_klm is antisymmetric in (l, m) but ∂_l∂_j p is symmetric in (l, j): the term does not vanish for a "
    "general Σ, only for Σ ∝ I. Correct: (∇×j)_k = (∇p × ∇L)_k + (η/2B)[ε_klm ∂_lΣ_mj ∂_jp + ε_klm Σ_mj ∂_l∂_j p] "
    "(for the notes' current (56))",
    mutant={"dropped_term_vanishes": True},
)
def _curl(dropped_term_vanishes: bool = False):
    X = sp.symbols("x1:4", real=True)
    p, L = sp.Function("p")(*X), sp.Function("L")(*X)
    c = sp.Symbol("c", positive=True)
    S = sp.Matrix(3, 3, lambda i, j: sp.Function(f"S{min(i, j)}{max(i, j)}")(*X))
    j = sp.Matrix([p * sp.diff(L, X[i]) + c / 2 * sum(S[i, k] * sp.diff(p, X[k]) for k in range(3)) for i in range(3)])
    curl = sy.curl_3d(j, X)
    gp, gL = sp.Matrix([sp.diff(p, v) for v in X]), sp.Matrix([sp.diff(L, v) for v in X])
    eps = sp.LeviCivita
    gradS_x = sp.Matrix([sum(eps(k, l, m) * sp.diff(S[m, q], X[l]) * sp.diff(p, X[q])
                             for l in range(3) for m in range(3) for q in range(3)) for k in range(3)])
    dropped = sp.Matrix([sum(eps(k, l, m) * S[m, q] * sp.diff(p, X[l], X[q])
                             for l in range(3) for m in range(3) for q in range(3)) for k in range(3)])
    notes60 = gp.cross(gL) + c / 2 * gradS_x
    full_ok = sp.simplify(curl - notes60 - c / 2 * dropped) == sp.zeros(3, 1)
    vanishes = sp.simplify(dropped) == sp.zeros(3, 1)
    iso = dropped.subs({S[i, k]: (sp.Symbol("s") if i == k else 0) for i in range(3) for k in range(3)}).doit()
    ok = full_ok and vanishes == dropped_term_vanishes and sp.simplify(iso) == sp.zeros(3, 1)
    return Evidence(ok, f"sympy, generic symmetric Σ(θ) in 3D: (60) plus the dropped term equals ∇×j: {full_ok}; "
                    f"the dropped term vanishes: {vanishes}; for Σ = sI it does: {sp.simplify(iso) == sp.zeros(3, 1)}")
