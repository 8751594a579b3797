"""The stationary Fokker–Planck solver against closed forms, with its grid-convergence order."""

import numpy as np
import pytest
import scipy.linalg

from sgdnoise.fokker_planck import stationary_1d, stationary_2d


def l1(p, q, w):
    return float(np.abs(p - q).sum() * w)


def order(errors):
    return float(np.log2(errors[0] / errors[1])), float(np.log2(errors[1] / errors[2]))


def test_1d_ou():
    """Linear drift, constant D: the exponentially fitted flux is exact at the cell centres (the ratio
    of neighbouring densities is exp(-2 x_f h / D), the exact one), so the error is round-off."""
    for m in (10, 40, 160):
        s = stationary_1d(lambda x: -x, lambda x: 0.5 * np.ones_like(x), -4.0, 4.0, m)
        exact = np.exp(-(s.x**2) / 0.5)
        exact /= exact.sum() * (8.0 / m)
        assert l1(s.p, exact, 8.0 / m) < 1e-12
        assert np.abs(s.J).max() < 1e-10  # one dimension, reflecting walls: no current


@pytest.mark.parametrize("m", [10, 20, 40])
def test_densities_are_never_negative_without_cross_diffusion(m):
    """Issue 23's cases: drift -20θ on coarse grids (grid Péclet number up to 51), where central
    differences gave p.min() = -42.3 in 2D. Both solvers now return p >= 0 up to the sparse solve's
    round-off (entries of 1e-130 where the exact discrete density is 1e-250), still normalised."""
    s1 = stationary_1d(lambda x: -20 * x, lambda x: np.ones_like(x), -4.0, 4.0, m)
    assert s1.p.min() >= -1e-14 * s1.p.max() and abs(s1.p.sum() * 8.0 / m - 1) < 1e-12
    s2 = stationary_2d(lambda X, Y: (-20 * X, -20 * Y), lambda X, Y: (1.0, 0.0, 1.0), ((-4, 4), (-4, 4)), (m, m))
    assert s2.p.min() >= -1e-14 * s2.p.max() and abs(s2.p.sum() * (8.0 / m) ** 2 - 1) < 1e-12


def test_central_flux_would_go_negative():
    """The failing variant: the central flux's coefficient on the downwind cell changes sign at |a|h/D = 1
    (its generator stops being a Metzler matrix); the fitted one's never does."""
    from sgdnoise.fokker_planck import _sg_coefficients

    a, D, h = np.array([-20.0, 20.0]), np.ones(2), 0.8
    central_left, central_right = a / 2 + D / (2 * h), a / 2 - D / (2 * h)
    assert (central_left < 0).any() or (central_right > 0).any()
    c_l, c_r = _sg_coefficients(a, D, D, h)
    assert (c_l > 0).all() and (c_r < 0).all()


def test_unresolved_cross_diffusion_is_refused():
    """Anisotropic, rotated noise on a 24² grid undershoots by 0.6% of the peak: refused, with the grid."""
    with pytest.raises(FloatingPointError, match=r"\(24, 24\) cells\) is negative .* Refine the grid"):
        ou2([[1.0, 0.3], [0.3, 2.0]], [[0.8, 0.3], [0.3, 0.5]], 24)


def test_1d_state_dependent_diffusion():
    """dX = -X dt + sqrt(1 + X²) dW has p ∝ (1 + x²)⁻² (Itô): the 1/D prefactor matters."""
    errs = []
    for m in (100, 200, 400):
        s = stationary_1d(lambda x: -x, lambda x: 1 + x**2, -10.0, 10.0, m)
        exact = (1 + s.x**2) ** -2.0
        exact /= exact.sum() * (20.0 / m)
        errs.append(l1(s.p, exact, 20.0 / m))
    assert all(o > 1.8 for o in order(errs)), (errs, order(errs))
    wrong = np.exp(-np.log1p(s.x**2))  # dropping the 1/D prefactor: p ∝ (1 + x²)⁻¹
    wrong /= wrong.sum() * (20.0 / 400)
    assert l1(s.p, wrong, 20.0 / 400) > 100 * errs[-1]


def ou2(A, D, m):
    A, D = np.asarray(A, float), np.asarray(D, float)
    s = stationary_2d(lambda X, Y: (-(A[0, 0] * X + A[0, 1] * Y), -(A[1, 0] * X + A[1, 1] * Y)),
                      lambda X, Y: (D[0, 0], D[0, 1], D[1, 1]), ((-4, 4), (-4, 4)), (m, m))
    C = scipy.linalg.solve_continuous_lyapunov(A, D)
    Ci = np.linalg.inv(C)
    X, Y = np.meshgrid(s.x, s.y, indexing="ij")
    P = np.exp(-0.5 * (Ci[0, 0] * X**2 + 2 * Ci[0, 1] * X * Y + Ci[1, 1] * Y**2))
    h2 = (8 / m) ** 2
    P /= P.sum() * h2
    # J = (-A x + ½ D C⁻¹ x) p
    M = -A + 0.5 * D @ Ci
    Jx = (M[0, 0] * X + M[0, 1] * Y) * P
    Jy = (M[1, 0] * X + M[1, 1] * Y) * P
    return s, P, Jx, Jy, h2


@pytest.mark.parametrize("A, D, circulates", [
    ([[1.0, 0.0], [0.0, 2.0]], [[0.8, 0.0], [0.0, 0.8]], False),  # isotropic noise: detailed balance
    ([[1.0, 0.3], [0.3, 2.0]], [[0.8, 0.3], [0.3, 0.5]], True),   # noise not aligned with the Hessian
])
def test_2d_ou_density_and_current(A, D, circulates):
    derr, jerr = [], []
    for m in (40, 80, 160):
        s, P, Jx, Jy, h2 = ou2(A, D, m)
        derr.append(l1(s.p, P, h2))
        jerr.append(float((np.abs(s.Jx - Jx) + np.abs(s.Jy - Jy)).sum() * h2))
    if circulates:
        assert all(o > 1.7 for o in order(derr)), (derr, order(derr))
    else:  # diagonal A, D ∝ I: the density is a product of 1D ones, which the fitted flux gets exactly
        assert max(derr) < 1e-12
    if circulates:
        assert all(o > 1.7 for o in order(jerr)), (jerr, order(jerr))
    else:  # with D ∝ I and symmetric A the discrete scheme keeps detailed balance exactly
        assert max(jerr) < 1e-10
    size = float((np.abs(Jx) + np.abs(Jy)).sum() * h2)
    assert (size > 0.05) == circulates


def test_bad_grid():
    with pytest.raises(ValueError, match="lo < hi"):
        stationary_1d(lambda x: -x, lambda x: x * 0 + 1, 1.0, -1.0, 20)
    with pytest.raises(ValueError, match="cells >= 8"):
        stationary_1d(lambda x: -x, lambda x: x * 0 + 1, -1.0, 1.0, 4)
    with pytest.raises(ValueError, match="positive"):
        stationary_1d(lambda x: -x, lambda x: x, -1.0, 1.0, 20)


BOX = ((-2.0, 2.0), (-2.0, 2.0))


def ou_drift(X, Y):
    return (-X, -Y)


@pytest.mark.parametrize("D, match", [
    ((1.0, 5.0, 1.0), r"positive definite.*D_xx=1, D_xy=5, D_yy=1"),
    ((-1.0, 0.0, 1.0), r"positive definite.*D_xx=-1"),
    ((1.0, 0.0, 0.0), r"positive definite.*D_yy=0"),
    ((float("nan"), 0.0, 1.0), r"D_xx has 256 non-finite value"),
    ((1.0, float("inf"), 1.0), r"D_xy has 256 non-finite value"),
    ((1.0, 0.0), r"diffusion\(X, Y\) must return 3 components; got a tuple of 2"),
    ((1.0, np.ones(3), 1.0), r"D_xy must be a number or an array of shape \(16, 16\)"),
])
def test_2d_rejects_bad_diffusion(D, match):
    with pytest.raises(ValueError, match=match):
        stationary_2d(ou_drift, lambda X, Y: D, BOX, (16, 16))


@pytest.mark.parametrize("drift, match", [
    (lambda X, Y: 0.0, r"drift\(X, Y\) must return 2 components; got 0\.0"),
    (lambda X, Y: (-X,), r"drift\(X, Y\) must return 2 components; got a tuple of 1"),
    (lambda X, Y: (-X * np.nan, -Y), r"a_x has \d+ non-finite value"),
    (lambda X, Y: (-X, -Y[:, :1] * np.inf), r"a_y has \d+ non-finite value"),
])
def test_2d_rejects_bad_drift(drift, match):
    with pytest.raises(ValueError, match=match):
        stationary_2d(drift, lambda X, Y: (1.0, 0.0, 1.0), BOX, (16, 16))


def test_2d_rejects_bad_box_and_cells():
    with pytest.raises(ValueError, match=r"cells=\(8,\) must be a pair \(mx, my\)"):
        stationary_2d(ou_drift, lambda X, Y: (1.0, 0.0, 1.0), BOX, (8,))
    with pytest.raises(ValueError, match=r"cells=16 must be a pair"):
        stationary_2d(ou_drift, lambda X, Y: (1.0, 0.0, 1.0), BOX, 16)
    with pytest.raises(ValueError, match=r"box=\(-2\.0, 2\.0\) must be \(\(x_lo, x_hi\), \(y_lo, y_hi\)\)"):
        stationary_2d(ou_drift, lambda X, Y: (1.0, 0.0, 1.0), (-2.0, 2.0), (16, 16))


def test_1d_rejects_non_finite_and_misshapen_coefficients():
    with pytest.raises(ValueError, match=r"diffusion must be finite and positive on the grid; got D=nan"):
        stationary_1d(lambda x: -x, lambda x: x * np.nan, -1.0, 1.0, 20)
    with pytest.raises(ValueError, match=r"diffusion has non-finite"):
        stationary_1d(lambda x: -x, lambda x: x * 0 + np.inf, -1.0, 1.0, 20)
    with pytest.raises(ValueError, match=r"drift has 19 non-finite"):
        stationary_1d(lambda x: x * np.nan, lambda x: x * 0 + 1, -1.0, 1.0, 20)
    with pytest.raises(ValueError, match=r"drift\(x\) must return an array of the shape of x, \(19,\); got shape \(\)"):
        stationary_1d(lambda x: 0.0, lambda x: x * 0 + 1, -1.0, 1.0, 20)
    with pytest.raises(ValueError, match=r"diffusion\(x\) must return an array of the shape of x, \(20,\)"):
        stationary_1d(lambda x: -x, lambda x: 0.5, -1.0, 1.0, 20)
