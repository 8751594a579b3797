"""Stationary Fokker–Planck equations in 1D and 2D by finite volumes (``scipy.sparse``).

For the Itô SDE ``dX = a(X) dt + σ(X) dW`` with diffusion matrix ``D = σσᵀ``, the density obeys

    ∂p/∂t = -∇·J,      J = a p - ½ ∇·(D p),    (∇·(D p))_i = Σ_j ∂_j (D_ij p),

and a stationary density has ``∇·J = 0`` (not necessarily ``J = 0``: that is detailed balance).
The domain is a box with no flux through its walls; ``p`` lives at cell centres and ``J`` on cell
faces. Along each axis the flux is Scharfetter and Gummel's exponentially fitted one: with
``u = D_aa p`` and ``v = 2a/D_aa`` at the face, ``J = (B(-vh) u_L - B(vh) u_R) / (2h)`` with the
Bernoulli function ``B(z) = z/(eᶻ - 1)``. It is exact for constant ``a`` and ``D`` across a cell, equals
the central scheme up to ``O(h²)`` on a resolved grid (so the convergence stays second order), and its
coefficients are positive at every grid Péclet number ``|a|h/D``, so in 1D and without cross-diffusion
the density is never negative (central differences give negative densities once ``|a|h/D > 1``). The
cross-diffusion term ``-½ ∂_other(D_xy p)`` is central, and no linear scheme for it keeps ``p ≥ 0``
under strong anisotropy: it can leave an ``O(h²)`` undershoot where the density is tiny (about
``-2·10⁻⁴`` of the peak for chapter 3's rotated noise on its grid). An undershoot below ``10⁻³`` of
the peak is returned as part of the discretisation error; a larger one means the grid does not
resolve the density, and the solver refuses it (naming the grid) instead of returning it.
The stationary ``p`` is the null vector of the sparse generator, normalised to integrate to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sps
import scipy.sparse.linalg as spla

from . import _args

__all__ = ["Stationary1D", "Stationary2D", "stationary_1d", "stationary_2d"]


def _check_grid(lo: float, hi: float, m: int, name: str, names=("lo", "hi")) -> tuple[float, float]:
    """``(lo, hi)`` as floats, checked with the cell count ``m``; ``names`` name them in the caller."""
    lo, hi = (_args.real(f"{name}: {k}", v, as_given=True) for k, v in zip(names, (lo, hi)))
    if not hi > lo:
        raise ValueError(f"{name}: need a finite interval {names[0]} < {names[1]}; got [{lo}, {hi}]")
    if not isinstance(m, (int, np.integer)) or m < 8:
        raise ValueError(f"{name}: need an int number of cells >= 8; got {m!r}")
    return lo, hi


def _field(values, name: str, shape: tuple, where: str) -> np.ndarray:
    """``values`` as a float array broadcast to ``shape`` (as the solvers use it), checked finite."""
    try:
        v = np.asarray(values, dtype=float) * np.ones(shape)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {name} must be a number or an array of shape {shape}; "
                         f"got {_describe(values)} ({e})") from None
    if v.shape != shape:
        raise ValueError(f"{where}: {name} must be a number or an array of shape {shape}; got {_describe(values)}")
    bad = int((~np.isfinite(v)).sum())
    if bad:
        raise ValueError(f"{where}: {name} has {bad} non-finite value(s) (NaN or ±inf) on the grid; it must be finite")
    return v


def _describe(values) -> str:
    if isinstance(values, np.ndarray):
        return f"an array of shape {values.shape}"
    if isinstance(values, (list, tuple)):
        return f"a {type(values).__name__} of {len(values)} item(s)"
    return repr(values)[:80]


def _components(out, count: int, name: str, signature: str, where: str):
    """The ``count`` components returned by the user's ``drift``/``diffusion``, or a clear error."""
    try:
        k = len(out)
    except TypeError:
        k = None
    if k != count:
        raise ValueError(f"{where}: {name}{signature} must return {count} components; got {_describe(out)}")
    return out


def _bernoulli(z: np.ndarray) -> np.ndarray:
    """``B(z) = z / (eᶻ - 1)``, with ``B(0) = 1``; positive for every real ``z``."""
    z = np.asarray(z, dtype=float)
    small = np.abs(z) < 1e-6
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        out = np.where(small, 1.0 - z / 2, z / np.expm1(np.where(small, 1.0, z)))
    return np.where(z > 700, 0.0, out)  # expm1 overflows: B(z) = z e^{-z} underflows to 0


NEGATIVE_TOLERANCE = 1e-3  # the largest undershoot, relative to the peak, that is returned (module docstring)


def _check_nonnegative(p: np.ndarray, where: str, peclet: float, cells) -> None:
    low = float(p.min())
    if low < -NEGATIVE_TOLERANCE * float(np.abs(p).max()):
        raise FloatingPointError(
            f"{where}: the density computed on this grid ({cells} cells) is negative (min p = {low:.3g}, max p = "
            f"{float(p.max()):.3g}): the central cross-diffusion term is not resolved (largest grid Péclet number "
            f"|a|h/D = {peclet:.3g}); undershoots below {NEGATIVE_TOLERANCE:g} of the peak are accepted. Refine the grid (e.g. twice as many cells on each axis) or shrink the box."
        )


def _sg_coefficients(a: np.ndarray, D_l: np.ndarray, D_r: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Face flux ``J = c_l p_L + c_r p_R`` of ``J = a p - ½ d(D p)/dx`` (Scharfetter–Gummel), ``c_l > 0 > c_r``."""
    D_f = (D_l + D_r) / 2
    z = 2 * a * h / D_f
    return _bernoulli(-z) * D_l / (2 * h), -_bernoulli(z) * D_r / (2 * h)


def _null_vector(L: sps.spmatrix, weights: np.ndarray) -> np.ndarray:
    """Solve ``L p = 0`` with ``Σ weights · p = 1`` (one equation replaced by the normalisation)."""
    L = L.tolil()
    k = L.shape[0] // 2
    L[k, :] = weights
    rhs = np.zeros(L.shape[0])
    rhs[k] = 1.0
    return spla.spsolve(L.tocsc(), rhs)


@dataclass
class Stationary1D:
    x: np.ndarray  # cell centres
    p: np.ndarray  # stationary density at the centres
    J: np.ndarray  # probability current at the interior faces (length m - 1)
    x_faces: np.ndarray


def stationary_1d(drift: Callable, diffusion: Callable, lo: float, hi: float, m: int) -> Stationary1D:
    """Stationary density of ``dX = a(X) dt + sqrt(D(X)) dW`` on ``[lo, hi]`` with reflecting walls.

    ``drift`` and ``diffusion`` map an array of points to arrays ``a(x)`` and ``D(x) > 0``.
    """
    _args.function("drift", drift, "drift(x) -> an array of x's shape")
    _args.function("diffusion", diffusion, "diffusion(x) -> an array of x's shape, positive")
    lo, hi = _check_grid(lo, hi, m, "stationary_1d")
    h = (hi - lo) / m
    x = lo + h * (np.arange(m) + 0.5)
    xf = lo + h * np.arange(1, m)  # interior faces
    a = np.asarray(drift(xf), dtype=float)
    Dc = np.asarray(diffusion(x), dtype=float)
    if a.shape != xf.shape:
        raise ValueError(f"stationary_1d: drift(x) must return an array of the shape of x, {xf.shape}; "
                         f"got shape {a.shape}")
    if Dc.shape != x.shape:
        raise ValueError(f"stationary_1d: diffusion(x) must return an array of the shape of x, {x.shape} "
                         f"(e.g. 0.5 * np.ones_like(x)); got shape {Dc.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"stationary_1d: drift has {int((~np.isfinite(a)).sum())} non-finite value(s) on the grid; "
                         "it must be finite")
    if not (Dc > 0).all():  # also catches NaN
        i = int(np.argmin(Dc > 0))
        raise ValueError(f"stationary_1d: diffusion must be finite and positive on the grid; "
                         f"got D={Dc[i]} at x={x[i]:.4g}")
    if not np.isfinite(Dc).all():
        raise ValueError("stationary_1d: diffusion has non-finite values (±inf) on the grid; "
                         "it must be finite and positive")
    # J_{i+1/2} = c_l p_i + c_r p_{i+1} (Scharfetter–Gummel; module docstring)
    c_l, c_r = _sg_coefficients(a, Dc[:-1], Dc[1:], h)
    f = np.arange(m - 1)
    # dp_i/dt -= J/h ; dp_{i+1}/dt += J/h
    rows = np.r_[f, f, f + 1, f + 1]
    cols = np.r_[f, f + 1, f, f + 1]
    vals = np.r_[-c_l, -c_r, c_l, c_r] / h
    L = sps.csr_matrix((vals, (rows, cols)), shape=(m, m))
    p = _null_vector(L, np.full(m, h))
    _check_nonnegative(p, "stationary_1d", float(np.max(np.abs(a) * h / ((Dc[:-1] + Dc[1:]) / 2))), m)
    J = c_l * p[:-1] + c_r * p[1:]
    return Stationary1D(x, p, J, xf)


@dataclass
class Stationary2D:
    x: np.ndarray  # (mx,) cell centres
    y: np.ndarray  # (my,)
    p: np.ndarray  # (mx, my) density
    Jx: np.ndarray  # (mx, my) current at the centres (average of the two adjacent faces)
    Jy: np.ndarray


def stationary_2d(drift: Callable, diffusion: Callable, box, cells) -> Stationary2D:
    """Stationary density and current of a 2D Itô SDE with a state-dependent diffusion matrix.

    ``drift(X, Y)`` returns ``(a_x, a_y)`` and ``diffusion(X, Y)`` returns ``(D_xx, D_xy, D_yy)`` on arrays
    of points (numbers or arrays of the points' shape, finite, with ``D`` positive definite on the grid);
    ``box = ((x_lo, x_hi), (y_lo, y_hi))``, ``cells = (mx, my)``. No flux through the walls.
    """
    _args.function("drift", drift, "drift(X, Y) -> (a_x, a_y)")
    _args.function("diffusion", diffusion, "diffusion(X, Y) -> (D_xx, D_xy, D_yy)")
    try:
        (x0, x1), (y0, y1) = box
    except (TypeError, ValueError):
        raise ValueError(f"stationary_2d: box={box!r} must be ((x_lo, x_hi), (y_lo, y_hi))") from None
    try:
        mx, my = cells
    except (TypeError, ValueError):
        raise ValueError(f"stationary_2d: cells={cells!r} must be a pair (mx, my) of ints >= 8") from None
    x0, x1 = _check_grid(x0, x1, mx, "stationary_2d (x)", ("box[0][0]", "box[0][1]"))
    y0, y1 = _check_grid(y0, y1, my, "stationary_2d (y)", ("box[1][0]", "box[1][1]"))
    hx, hy = (x1 - x0) / mx, (y1 - y0) / my
    x = x0 + hx * (np.arange(mx) + 0.5)
    y = y0 + hy * (np.arange(my) + 0.5)
    X, Y = np.meshgrid(x, y, indexing="ij")
    where = "stationary_2d"
    Dxx, Dxy, Dyy = (_field(v, n, X.shape, where) for v, n in
                     zip(_components(diffusion(X, Y), 3, "diffusion", "(X, Y)", where), ("D_xx", "D_xy", "D_yy")))
    posdef = (Dxx > 0) & (Dyy > 0) & (Dxx * Dyy - Dxy**2 > 0)
    if not posdef.all():
        i, j = np.unravel_index(int(np.argmin(posdef)), posdef.shape)
        raise ValueError(f"{where}: the diffusion matrix must be positive definite on the grid (D_xx > 0, D_yy > 0, "
                         f"D_xx·D_yy > D_xy²); at (x, y) = ({x[i]:.4g}, {y[j]:.4g}) got D_xx={Dxx[i, j]:.4g}, "
                         f"D_xy={Dxy[i, j]:.4g}, D_yy={Dyy[i, j]:.4g}")
    idx = np.arange(mx * my).reshape(mx, my)
    N = mx * my
    Dd = {0: Dxx, 1: Dyy}
    peclet = [0.0, 0.0]

    def faces(axis: int):
        """Flux operator ``F`` (faces × cells) and divergence ``V`` (cells × faces) for the faces normal to ``axis``.

        The flux through the face between cells ``L`` and ``R`` (``R`` one step along ``axis``) is the
        Scharfetter–Gummel flux of ``a p - ½ ∂_axis(D_aa p)`` plus ``- ½ ∂_other(D_xy p)``, the last term the
        average of the centred differences across the face in the two cells (one-sided at the walls).
        """
        h, h_other = (hx, hy) if axis == 0 else (hy, hx)
        shape = (mx - 1, my) if axis == 0 else (mx, my - 1)
        left = idx[: shape[0], : shape[1]]
        right = idx[1:, :] if axis == 0 else idx[:, 1:]
        fx = x0 + hx * np.arange(1, mx) if axis == 0 else x
        fy = y if axis == 0 else y0 + hy * np.arange(1, my)
        XF, YF = np.meshgrid(fx, fy, indexing="ij")
        a = _field(_components(drift(XF, YF), 2, "drift", "(X, Y)", where)[axis], "a_x" if axis == 0 else "a_y",
                   XF.shape, where)
        Daa = Dd[axis]
        c_left, c_right = _sg_coefficients(a.ravel(), Daa.ravel()[left.ravel()], Daa.ravel()[right.ravel()], h)
        peclet[axis] = float(np.max(np.abs(a.ravel()) * h / ((Daa.ravel()[left.ravel()] + Daa.ravel()[right.ravel()]) / 2)))
        rows, cols, vals = [], [], []
        for r, (L_, R_, cl, cr) in enumerate(zip(left.ravel(), right.ravel(), c_left, c_right)):
            (li, lj), (ri, rj) = divmod(L_, my), divmod(R_, my)
            rows += [r, r]
            cols += [L_, R_]
            vals += [cl, cr]
            for ci, cj in ((li, lj), (ri, rj)):
                if axis == 0:
                    lo, hi = (ci, max(cj - 1, 0)), (ci, min(cj + 1, my - 1))
                    span = (hi[1] - lo[1]) * h_other
                else:
                    lo, hi = (max(ci - 1, 0), cj), (min(ci + 1, mx - 1), cj)
                    span = (hi[0] - lo[0]) * h_other
                rows += [r, r]
                cols += [idx[hi], idx[lo]]
                vals += [-0.25 * Dxy[hi] / span, 0.25 * Dxy[lo] / span]
        nf = left.size
        F = sps.csr_matrix((vals, (rows, cols)), shape=(nf, N))
        V = sps.csr_matrix((np.r_[np.full(nf, -1.0 / h), np.full(nf, 1.0 / h)],
                            (np.r_[left.ravel(), right.ravel()], np.r_[np.arange(nf), np.arange(nf)])), shape=(N, nf))
        return F, V

    Fx, Vx = faces(0)
    Fy, Vy = faces(1)
    L = Vx @ Fx + Vy @ Fy  # dp/dt = L p
    p = _null_vector(L, np.full(N, hx * hy))
    _check_nonnegative(p, "stationary_2d", max(peclet), (mx, my))
    jx_faces = (Fx @ p).reshape(mx - 1, my)
    jy_faces = (Fy @ p).reshape(mx, my - 1)
    Jx = np.zeros((mx, my))
    Jy = np.zeros((mx, my))
    Jx[:-1] += jx_faces / 2
    Jx[1:] += jx_faces / 2
    Jy[:, :-1] += jy_faces / 2
    Jy[:, 1:] += jy_faces / 2
    return Stationary2D(x, y, p.reshape(mx, my), Jx, Jy)
