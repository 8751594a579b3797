"""Chapter 2's weak error on the digits network: SGD against gradient flow and against its SDE.

At each learning rate ``η`` the driver runs ``chains`` SGD chains and ``chains`` SVAG chains (the SDE's
stand-in, Li, Malladi & Arora 2021) to time ``t`` from one initialisation, gradient descent with step
``η/l`` in place of gradient flow, and at the ``em_etas`` the SDE itself by Euler–Maruyama with
``dt = η/4`` over ``em_paths`` paths. It returns the mean full-data loss of each at time ``t`` with its
standard error. Registered as the full-scale experiment ``ch2_weak_mlp``.
"""

from __future__ import annotations

import sys

import torch
from torch.func import vmap

from .. import problems as _problems, sde as _sde, sgd as _sgd
from ..problems import digits_mlp
from ..sde import sgd_sde
from ..sgd import flat_loss_fn, run_chains
from . import fullscale

__all__ = ["mlp_weak_error"]


def mlp_weak_error(*, etas, chains: int, t: float, B: int, svag_l: int, seed_sgd: int, seed_svag: int,
                   em_etas, em_paths: int, seed_em: int, model_seed: int = 0, device: str = "cpu") -> dict:
    """Expected loss at time ``t`` of SGD, SVAG (l = ``svag_l``) and the Euler–Maruyama SDE, with SEs,
    and gradient descent's loss at step ``η/svag_l``; one entry per learning rate, in ``etas`` order."""
    mlp = digits_mlp(seed=model_seed, device=device)
    theta0 = mlp.theta()
    f = flat_loss_fn(mlp)
    w_full = torch.full((mlp.n,), 1.0 / mlp.n, device=theta0.device)
    loss_of = vmap(f, in_dims=(0, None, None, None))

    def gen(seed):
        return torch.Generator(device=theta0.device).manual_seed(seed)

    def mean_se(L):
        L = L.double()
        return float(L.mean()), float(L.std()) / L.numel() ** 0.5

    out = {"eta": [], "sgd_mean": [], "sgd_se": [], "svag_mean": [], "svag_se": [], "gd_loss": [],
           "em_eta": [], "em_mean": [], "em_se": []}
    for eta in etas:
        k = round(t / eta)
        sgd = loss_of(run_chains(mlp, theta0.repeat(chains, 1), eta=eta, B=B, steps=k,
                                 generator=gen(seed_sgd)).thetas[-1], mlp.X, mlp.y, w_full)
        svag = loss_of(run_chains(mlp, theta0.repeat(chains, 1), eta=eta, B=B, steps=k, svag_l=svag_l,
                                  generator=gen(seed_svag)).thetas[-1], mlp.X, mlp.y, w_full)
        gd = loss_of(run_chains(mlp, theta0[None], eta=eta / svag_l, B=mlp.n, steps=svag_l * k,
                                scheme="without_replacement", generator=gen(seed_sgd)).thetas[-1],
                     mlp.X, mlp.y, w_full)
        out["eta"].append(float(eta))
        for key, L in (("sgd", sgd), ("svag", svag)):
            m, s = mean_se(L)
            out[f"{key}_mean"].append(m)
            out[f"{key}_se"].append(s)
        out["gd_loss"].append(float(gd[0]))
    for eta in em_etas:
        paths = sgd_sde(mlp, theta0.repeat(em_paths, 1), eta=eta, B=B, dt=eta / 4, steps=round(4 * t / eta),
                        generator=gen(seed_em))
        m, s = mean_se(loss_of(paths.thetas[-1], mlp.X, mlp.y, w_full))
        out["em_eta"].append(float(eta))
        out["em_mean"].append(m)
        out["em_se"].append(s)
    return out


EXPERIMENTS = (fullscale.Experiment(
    name="ch2_weak_mlp",
    compute=mlp_weak_error,
    full={"etas": [0.4, 0.2, 0.1, 0.05], "chains": 256, "t": 2.0, "B": 8, "svag_l": 8, "seed_sgd": 6,
          "seed_svag": 7, "em_etas": [0.2, 0.1], "em_paths": 64, "seed_em": 11},
    reduced={"etas": [0.4, 0.2], "chains": 64, "t": 2.0, "B": 8, "svag_l": 8, "seed_sgd": 106,
             "seed_svag": 107, "em_etas": [0.2], "em_paths": 32, "seed_em": 111},
    description="chapter 2: weak error of the expected loss at t = 2 on the digits MLP (SGD, SVAG, GD, EM)",
    modules=(sys.modules[__name__], _sgd, _sde, _problems),
),)
