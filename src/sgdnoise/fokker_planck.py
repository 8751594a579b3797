"""Stationary Fokker–Planck equations in 1D and 2D by finite volumes (``scipy.sparse``).

For the Itô SDE ``dX = a(X) dt + σ(X) dW`` with diffusion matrix ``D = σσᵀ``, the density obeys

    ∂p/∂t = -∇·J,      J = a p - ½ ∇·(D p),    (∇·(D p))_i = Σ_j ∂_j (D_ij p),

and a stationary density has ``∇·J = 0`` (not necessarily ``J = 0``: that is detailed balance).
The domain is a box with no flux through its walls; ``p`` lives at cell centres and ``J`` on cell
faces, with central differences (second order for smooth coefficients and a resolved density).
The stationary ``p`` is the null vector of the sparse generator, normalised to integrate to one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.sparse as sps
import scipy.sparse.linalg as spla

__all__ = ["Stationary1D", "Stationary2D", "stationary_1d", "stationary_2d"]


def _check_grid(lo: float, hi: float, m: int, name: str) -> None:
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"{name}: need a finite interval lo < hi; got [{lo}, {hi}]")
    if not isinstance(m, (int, np.integer)) or m < 8:
        raise ValueError(f"{name}: need an int number of cells >= 8; got {m!r}")


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
    _check_grid(lo, hi, m, "stationary_1d")
    h = (hi - lo) / m
    x = lo + h * (np.arange(m) + 0.5)
    xf = lo + h * np.arange(1, m)  # interior faces
    a = np.asarray(drift(xf), dtype=float)
    Dc = np.asarray(diffusion(x), dtype=float)
    if (Dc <= 0).any():
        raise ValueError("diffusion must be positive on the grid")
    # J_{i+1/2} = a_f (p_i + p_{i+1}) / 2 - (D_{i+1} p_{i+1} - D_i p_i) / (2h)
    rows, cols, vals = [], [], []
    for f in range(m - 1):
        i, j = f, f + 1
        cj_i = a[f] / 2 + Dc[i] / (2 * h)
        cj_j = a[f] / 2 - Dc[j] / (2 * h)
        # dp_i/dt -= J/h ; dp_j/dt += J/h
        rows += [i, i, j, j]
        cols += [i, j, i, j]
        vals += [-cj_i / h, -cj_j / h, cj_i / h, cj_j / h]
    L = sps.csr_matrix((vals, (rows, cols)), shape=(m, m))
    p = _null_vector(L, np.full(m, h))
    J = a * (p[:-1] + p[1:]) / 2 - (Dc[1:] * p[1:] - Dc[:-1] * p[:-1]) / (2 * h)
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
    of points; ``box = ((x_lo, x_hi), (y_lo, y_hi))``, ``cells = (mx, my)``. No flux through the walls.
    """
    (x0, x1), (y0, y1) = box
    mx, my = cells
    _check_grid(x0, x1, mx, "stationary_2d (x)")
    _check_grid(y0, y1, my, "stationary_2d (y)")
    hx, hy = (x1 - x0) / mx, (y1 - y0) / my
    x = x0 + hx * (np.arange(mx) + 0.5)
    y = y0 + hy * (np.arange(my) + 0.5)
    X, Y = np.meshgrid(x, y, indexing="ij")
    Dxx, Dxy, Dyy = (np.asarray(v, dtype=float) * np.ones_like(X) for v in diffusion(X, Y))
    idx = np.arange(mx * my).reshape(mx, my)
    N = mx * my

    # Each face flux is a linear functional of p: J_face = Σ_k c_k p_k. Build the operator F_x that maps
    # p to the x-fluxes on interior x-faces (and F_y likewise), then div = (shift differences) / h.
    def face_x():
        rows, cols, vals = [], [], []
        xf = x0 + hx * np.arange(1, mx)
        XF, YF = np.meshgrid(xf, y, indexing="ij")
        ax, _ = drift(XF, YF)
        ax = np.asarray(ax, dtype=float) * np.ones_like(XF)
        r = 0
        for i in range(mx - 1):
            for j in range(my):
                L_, R_ = idx[i, j], idx[i + 1, j]
                # a p at the face
                rows += [r, r]; cols += [L_, R_]; vals += [ax[i, j] / 2, ax[i, j] / 2]
                # -½ ∂x(Dxx p)
                rows += [r, r]; cols += [R_, L_]; vals += [-Dxx[i + 1, j] / (2 * hx), Dxx[i, j] / (2 * hx)]
                # -½ ∂y(Dxy p) at the face: average of the centred y-differences in the two cells
                for ii in (i, i + 1):
                    jm, jp = max(j - 1, 0), min(j + 1, my - 1)
                    span = (jp - jm) * hy
                    rows += [r, r]; cols += [idx[ii, jp], idx[ii, jm]]
                    vals += [-0.5 * 0.5 * Dxy[ii, jp] / span, 0.5 * 0.5 * Dxy[ii, jm] / span]
                r += 1
        return sps.csr_matrix((vals, (rows, cols)), shape=(r, N))

    def face_y():
        rows, cols, vals = [], [], []
        yf = y0 + hy * np.arange(1, my)
        XF, YF = np.meshgrid(x, yf, indexing="ij")
        _, ay = drift(XF, YF)
        ay = np.asarray(ay, dtype=float) * np.ones_like(XF)
        r = 0
        for i in range(mx):
            for j in range(my - 1):
                D_, U_ = idx[i, j], idx[i, j + 1]
                rows += [r, r]; cols += [D_, U_]; vals += [ay[i, j] / 2, ay[i, j] / 2]
                rows += [r, r]; cols += [U_, D_]; vals += [-Dyy[i, j + 1] / (2 * hy), Dyy[i, j] / (2 * hy)]
                for jj in (j, j + 1):
                    im, ip = max(i - 1, 0), min(i + 1, mx - 1)
                    span = (ip - im) * hx
                    rows += [r, r]; cols += [idx[ip, jj], idx[im, jj]]
                    vals += [-0.5 * 0.5 * Dxy[ip, jj] / span, 0.5 * 0.5 * Dxy[im, jj] / span]
                r += 1
        return sps.csr_matrix((vals, (rows, cols)), shape=(r, N))

    Fx, Fy = face_x(), face_y()
    # divergence: cell (i, j) loses J at its right/top faces and gains at its left/bottom faces
    def div_matrix(nfaces_along, n_other, h, along_x):
        rows, cols, vals = [], [], []
        for f_along in range(nfaces_along):
            for o in range(n_other):
                face = f_along * n_other + o if along_x else o * nfaces_along + f_along
                left = idx[f_along, o] if along_x else idx[o, f_along]
                right = idx[f_along + 1, o] if along_x else idx[o, f_along + 1]
                rows += [left, right]; cols += [face, face]; vals += [-1.0 / h, 1.0 / h]
        return sps.csr_matrix((vals, (rows, cols)), shape=(N, nfaces_along * n_other))

    Dvx = div_matrix(mx - 1, my, hx, True)
    Dvy = div_matrix(my - 1, mx, hy, False)
    L = Dvx @ Fx + Dvy @ Fy  # dp/dt = L p
    p = _null_vector(L, np.full(N, hx * hy))
    jx_faces = (Fx @ p).reshape(mx - 1, my)
    jy_faces = (Fy @ p).reshape(mx, my - 1)
    Jx = np.zeros((mx, my))
    Jy = np.zeros((mx, my))
    Jx[:-1] += jx_faces / 2
    Jx[1:] += jx_faces / 2
    Jy[:, :-1] += jy_faces / 2
    Jy[:, 1:] += jy_faces / 2
    return Stationary2D(x, y, p.reshape(mx, my), Jx, Jy)
