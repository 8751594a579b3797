"""Current estimators on Ornstein–Uhlenbeck trajectories, against closed forms (tolerances in standard errors)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from sgdnoise.current import antisymmetric_lag_covariance, binned_current
from sgdnoise.sde import euler_maruyama

Z = 4.0


def ou_paths(A, D, dt=0.02, chains=64, steps=6000, burn=500, seed=0):
    A_t, L_t = torch.tensor(A, dtype=torch.float64), torch.linalg.cholesky(torch.tensor(D, dtype=torch.float64))
    x0 = torch.zeros(chains, 2, dtype=torch.float64)
    out = euler_maruyama(lambda x: -x @ A_t.T, lambda x, dW: dW @ L_t.T, x0, dt=dt, steps=burn + steps,
                         noise_dim=2, generator=torch.Generator().manual_seed(seed),
                         record_steps=list(range(burn, burn + steps)))
    return out.thetas.permute(1, 0, 2).numpy()  # (chains, steps, d)


CASES = {
    "isotropic": ([[1.0, 0.0], [0.0, 2.0]], [[0.6, 0.0], [0.0, 0.6]]),
    "rotated": ([[1.0, 0.5], [-0.5, 1.5]], [[0.6, 0.2], [0.2, 0.3]]),
}


@pytest.mark.parametrize("name", CASES)
def test_antisymmetric_lag_covariance_matches_ou(name):
    A, D = (np.array(m) for m in CASES[name])
    dt = 0.02
    X = ou_paths(A, D, dt=dt)
    Om, se = antisymmetric_lag_covariance(X, dt)
    # exact for the Euler–Maruyama chain: C_d solves the discrete Lyapunov equation, C(dt) = (I - dt A) C_d
    Cd = scipy.linalg.solve_discrete_lyapunov(np.eye(2) - dt * A, dt * D)
    exact = -(A @ Cd - Cd @ A.T) / 2
    assert abs(Om[0, 1] - exact[0, 1]) < Z * se[0, 1]
    assert np.allclose(Om, -Om.T)
    if name == "isotropic":
        assert abs(exact[0, 1]) < 1e-12
    else:
        assert abs(Om[0, 1]) > 10 * se[0, 1]  # the circulation is resolved


@pytest.mark.parametrize("name", CASES)
def test_binned_current_matches_ou(name):
    A, D = (np.array(m) for m in CASES[name])
    dt = 0.02
    X = ou_paths(A, D, dt=dt, seed=1)
    C = scipy.linalg.solve_continuous_lyapunov(A, D)
    sx, sy = np.sqrt(np.diag(C))
    xe, ye = np.linspace(-2 * sx, 2 * sx, 7), np.linspace(-2 * sy, 2 * sy, 7)
    est = binned_current(X, dt, xe, ye)
    # the exact current averaged over each bin (a fine sub-grid), so that binning adds no bias
    Ci = np.linalg.inv(C)
    M = -A + 0.5 * D @ Ci
    sub = (np.arange(20) + 0.5) / 20

    def bin_mean(f):
        out = np.empty((6, 6))
        for i in range(6):
            for j in range(6):
                gx = xe[i] + (xe[i + 1] - xe[i]) * sub
                gy = ye[j] + (ye[j + 1] - ye[j]) * sub
                Xg, Yg = np.meshgrid(gx, gy, indexing="ij")
                out[i, j] = f(Xg, Yg).mean()
        return out

    def density(Xg, Yg):
        q = Ci[0, 0] * Xg**2 + 2 * Ci[0, 1] * Xg * Yg + Ci[1, 1] * Yg**2
        return np.exp(-0.5 * q) / (2 * np.pi * np.sqrt(np.linalg.det(C)))

    Jx = bin_mean(lambda Xg, Yg: (M[0, 0] * Xg + M[0, 1] * Yg) * density(Xg, Yg))
    Jy = bin_mean(lambda Xg, Yg: (M[1, 0] * Xg + M[1, 1] * Yg) * density(Xg, Yg))
    z2 = np.concatenate([((est.Jx - Jx) / est.Jx_se).ravel() ** 2, ((est.Jy - Jy) / est.Jy_se).ravel() ** 2])
    k = z2.size
    assert z2.mean() < 1 + Z * np.sqrt(2 / k), z2.mean()  # mean squared z-score of the bins (chi-square / k)
    if name == "rotated":
        signal = np.concatenate([(Jx / est.Jx_se).ravel() ** 2, (Jy / est.Jy_se).ravel() ** 2]).mean()
        assert signal > 10


def test_bad_paths():
    with pytest.raises(ValueError, match="shape \\(chains, steps, d\\)"):
        antisymmetric_lag_covariance(np.zeros((5, 3)), 0.1)
    with pytest.raises(ValueError, match="at least 2 independent chains"):
        antisymmetric_lag_covariance(np.zeros((1, 10, 2)), 0.1)
    with pytest.raises(ValueError, match="d = 2"):
        binned_current(np.zeros((3, 10, 3)), 0.1, [0, 1], [0, 1])
    with pytest.raises(ValueError, match="dt=0"):
        antisymmetric_lag_covariance(np.zeros((3, 10, 2)), 0.0)
    with pytest.raises(ValueError, match="lag=20"):
        antisymmetric_lag_covariance(np.zeros((3, 10, 2)), 0.1, lag=20)
