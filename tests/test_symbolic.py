"""Symbolic Fokker–Planck tools: the Itô operator, currents and 1D stationary solutions."""

import pytest
import sympy as sp

from sgdnoise import symbolic as sy


def test_fp_rhs_is_minus_divergence_of_current():
    x, y = sp.symbols("x y", real=True)
    p = sp.Function("p")(x, y)
    a = [sp.Function("a1")(x, y), sp.Function("a2")(x, y)]
    D = sp.Matrix([[sp.Function("D11")(x, y), sp.Function("D12")(x, y)], [sp.Function("D12")(x, y), sp.Function("D22")(x, y)]])
    J = sy.probability_current(p, a, D, [x, y])
    rhs = sy.fokker_planck_rhs(p, a, D, [x, y])
    assert sp.simplify(rhs + sp.diff(J[0], x) + sp.diff(J[1], y)) == 0


@pytest.mark.parametrize("convention, stationary_for_ito", [("ito", True), ("stratonovich", False), ("anti-ito", False)])
def test_1d_stationary_solutions(convention, stationary_for_ito):
    """Only the Itô density is stationary for the Itô operator when D depends on x."""
    x = sp.Symbol("x", real=True)
    a, D = -x, 1 + x**2
    p = sy.stationary_density_1d(a, D, x, convention)
    residual = sp.simplify(sy.fokker_planck_rhs(p, [a], sp.Matrix([[D]]), [x]))
    assert (residual == 0) == stationary_for_ito
    if convention == "ito":
        assert sp.simplify(p - (1 + x**2) ** -2) == 0


def test_conventions_agree_for_constant_diffusion():
    x = sp.Symbol("x", real=True)
    ps = [sy.stationary_density_1d(-x, sp.Integer(2), x, c) for c in ("ito", "stratonovich", "anti-ito")]
    ratios = [sp.simplify(q / ps[0]) for q in ps]
    assert all(r.free_symbols == set() for r in ratios)  # equal up to normalisation
    with pytest.raises(ValueError, match="convention='levy'"):
        sy.stationary_density_1d(-x, sp.Integer(1), x, "levy")


def test_curl_of_the_notes_current_keeps_a_sigma_term():
    """Notes (57)-(60): the term ε_klm Σ_mj ∂_l ∂_j p does not vanish for a generic symmetric Σ
    (ε is antisymmetric in (l, m), the Hessian of p symmetric in (l, j)); it does for Σ ∝ I."""
    X = sp.symbols("x1:4", real=True)
    p = sp.Function("p")(*X)
    c = sp.Symbol("c", positive=True)
    L = sp.Function("L")(*X)

    def current(S):
        return sp.Matrix([p * sp.diff(L, X[i]) + c / 2 * sum(S[i, j] * sp.diff(p, X[j]) for j in range(3)) for i in range(3)])

    def dropped(S):
        """ε_klm Σ_mj ∂_l ∂_j p, the term that (59) drops."""
        out = []
        for k in range(3):
            s = 0
            for l in range(3):
                for m in range(3):
                    e = sp.LeviCivita(k, l, m)
                    if e:
                        s += e * sum(S[m, j] * sp.diff(p, X[l], X[j]) for j in range(3))
            out.append(s)
        return sp.Matrix(out)

    S = sp.Matrix(3, 3, lambda i, j: sp.Function(f"S{min(i, j)}{max(i, j)}")(*X))
    curl = sy.curl_3d(current(S), X)
    grad_p, grad_L = sp.Matrix([sp.diff(p, v) for v in X]), sp.Matrix([sp.diff(L, v) for v in X])
    grad_S_cross = sp.Matrix([sum(sp.LeviCivita(k, l, m) * sp.diff(S[m, j], X[l]) * sp.diff(p, X[j])
                                  for l in range(3) for m in range(3) for j in range(3)) for k in range(3)])
    notes_60 = grad_p.cross(grad_L) + c / 2 * grad_S_cross
    assert sp.simplify(curl - notes_60 - c / 2 * dropped(S)) == sp.zeros(3, 1)  # the correct identity
    assert sp.simplify(dropped(S)) != sp.zeros(3, 1)  # (59)-(60) as written are wrong for generic Σ
    iso = sp.Symbol("s", positive=True) * sp.eye(3)
    assert sp.simplify(dropped(iso)) == sp.zeros(3, 1)  # ... and right for Σ ∝ I


def test_quadratic_second_moments_solve_their_recursions():
    """SGD's E θ_k² satisfies m_{k+1} = (1-ηh)² m_k + η²σ² from m_0 = x0²; the OU second moment satisfies
    m' = -2 rate m + diffusion. A formula with the noise term's η² replaced by η fails the first."""
    eta, h, s2, x0, t, rate, D = sp.symbols("eta h sigma2 x0 t rate D", positive=True)
    k = sp.Symbol("k", integer=True, nonnegative=True)
    m = sy.sgd_quadratic_second_moment(eta, h, s2, x0, k)
    residual = lambda f: sp.simplify(f.subs(k, k + 1) - ((1 - eta * h) ** 2 * f + eta**2 * s2))
    assert residual(m) == 0 and sp.simplify(m.subs(k, 0) - x0**2) == 0
    wrong = m.subs(eta**2 * s2, eta * s2)  # the noise injected at the wrong order
    assert residual(wrong) != 0
    ou = sy.ou_second_moment(rate, D, x0, t)
    assert sp.simplify(sp.diff(ou, t) - (-2 * rate * ou + D)) == 0 and sp.simplify(ou.subs(t, 0) - x0**2) == 0
