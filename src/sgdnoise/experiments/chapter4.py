"""Chapter 4's alignment measurements as a full-scale experiment (see :mod:`sgdnoise.experiments.fullscale`).

``ch4_alignment``: the digits MLP trained by SGD (η = 0.1, B = 32, 1500 steps); at each snapshot the
noise scale (exact, and McCandlish et al.'s two-batch estimate with a delta-method SE), the effective
rank of Σ, the overlap of the top-5 eigenspaces of Σ and H, tr(HΣ) against its isotropic value
(Hutchinson, with SEs) and the relative change of Σ since the previous snapshot; at the last snapshot
also tr(HΣ) against its von Neumann ceiling (a lower bound from the top 10 of H) and the commutator
of H and Σ on Σ's top-5 eigenvectors against permuted coordinates.
"""

from __future__ import annotations

import math
import sys

import torch

from .. import curvature as _curvature, diagnostics as dg, gradients as _gradients, noise as _noise
from ..curvature import hessian_top_eigs
from ..gradients import per_sample_grads
from ..noise import effective_rank, noise_spectrum
from ..problems import digits_mlp
from ..sgd import train_sgd
from . import fullscale

__all__ = ["alignment_study", "network_sde_paths", "EXPERIMENTS"]


def alignment_study(*, steps: int, eta: float, B: int, train_seed: int, snapshots, seed: int, pairs: int,
                    ths_rows: int, probes: int, final_extras: bool, exact_stats: bool = True, device: str = "cpu") -> dict:
    """The measurements listed in the module docstring; ``seed`` offsets every estimator's random stream
    (the chapter's own seeds are offset 0), ``final_extras`` adds the last snapshot's ceiling and
    commutator. Without ``exact_stats`` only the two estimates with sampling error (two-batch noise scale,
    tr(HΣ) ratio) are computed, the rest (exact noise scale, spectrum, overlap, change of Σ) stored as
    ``None``: what a live rerun compares."""
    if final_extras and not exact_stats:
        raise ValueError("final_extras=True needs exact_stats=True (the ceiling uses Σ's spectrum)")
    problem = digits_mlp(seed=0, device=device)
    run = train_sgd(problem, eta=eta, B=B, steps=steps, scheme="with_replacement",
                    generator=torch.Generator().manual_seed(train_seed), snapshot_at=list(snapshots))
    rows, prev, out = [], None, {}
    for k, theta in zip(run.snapshot_steps, run.snapshots):
        problem.set_theta(theta)
        G = per_sample_grads(problem.model, problem.loss_fn, problem.X, problem.y)
        Gd = G.double()
        Gc = Gd - Gd.mean(0)
        Kc = Gc @ Gc.T if exact_stats else None
        spec = noise_spectrum(Kc, centered=True) if exact_stats else None
        two = dg.noise_scale_two_batch(Gd, 32, 512, pairs, torch.Generator().manual_seed(9 + seed))
        overlap = None
        if exact_stats:
            lam_s, V_s = dg.noise_top_eigs(Gd, 5, K=Gd @ Gd.T)
            lam_h, V_h = hessian_top_eigs(problem, theta, k=5, iters=80, tol=1e-3,
                                          generator=torch.Generator().manual_seed(10 + seed))
            overlap = dg.subspace_overlap(V_s, V_h)
        ths = dg.trace_h_sigma(problem, theta, Gd, m=ths_rows, generator=torch.Generator().manual_seed(11 + seed),
                               probes=probes)
        change = None
        if prev is not None and exact_stats:
            cross = (Gc @ prev.T).pow(2).sum()
            a2, b2 = Kc.pow(2).sum(), (prev @ prev.T).pow(2).sum()
            change = float((a2 - 2 * cross + b2).clamp_min(0).sqrt() / b2.sqrt())
        prev = Gc
        rows.append({"step": int(k), "B_simple": dg.noise_scale(Gd) if exact_stats else None,
                     "B_simple_two": two.b_simple,
                     "B_simple_two_se": two.b_simple_se, "effective_rank": effective_rank(spec) if exact_stats else None,
                     "top5_overlap": overlap, "random_overlap": dg.random_subspace_overlap(G.shape[1], 5),
                     "ths_ratio": ths.ratio, "ths_ratio_se": ths.ratio_se, "sigma_change": change})
    out["rows"] = rows
    if final_extras:
        lam_h10, _ = hessian_top_eigs(problem, theta, k=10, which="LA", iters=80, tol=1e-3,
                                      generator=torch.Generator().manual_seed(10 + seed))
        spec_s = spec.double()
        vn_bound = float((lam_h10 * spec_s[:10]).sum()) + float(lam_h10[-1]) * float(spec_s[10:].sum())
        comm = dg.commutator_in_top_subspace(problem, theta, Gd, 5, permutations=5,
                                             generator=torch.Generator().manual_seed(12 + seed))
        out.update({"trace_h_sigma": ths.trace_h_sigma, "trace_h_sigma_se": ths.trace_h_sigma_se,
                    "vn_bound": vn_bound, "align_fraction": ths.trace_h_sigma / vn_bound,
                    "comm_relative": comm.relative, "comm_null_relative": list(comm.null_relative),
                    "comm_leakage": comm.leakage})
    return out


EXPERIMENTS = (
    fullscale.Experiment(
        name="ch4_alignment", compute=alignment_study,
        full={"steps": 1500, "eta": 0.1, "B": 32, "train_seed": 1, "snapshots": [0, 300, 1500], "seed": 0,
              "pairs": 200, "ths_rows": 200, "probes": 50, "final_extras": True},
        reduced={"steps": 1500, "eta": 0.1, "B": 32, "train_seed": 1, "snapshots": [1500], "seed": 100,
                 "pairs": 100, "ths_rows": 100, "probes": 25, "final_extras": False, "exact_stats": False},
        description="chapter 4: noise scale, effective rank and alignment of Σ with H along an SGD run on the digits MLP",
        modules=(sys.modules[__name__], dg, _curvature, _gradients, _noise)),
)


def network_sde_paths(*, paths: int, B: int, eta: float, steps: int, seed_sgd: int, seed_gauss: int, seed_stable: int,
                      models, device: str = "cpu") -> dict:
    """SGD chains and SDE paths from a trained width-32 digits MLP (section "The same question on the network"):
    the noise's stable index along 32 fixed directions at ``B``, the median-matching factor ``kappa`` of the
    α-stable driver, and for each model in ``models`` the distance from θ* and the training loss at the end."""
    from torch.func import vmap

    from ..sde import sgd_sde, symmetric_stable
    from ..sgd import flat_loss_fn, run_chains
    from ..tails import stable_alpha

    known = ("SGD", "Gaussian SDE", "α-stable SDE, chapter 2's scale", "α-stable SDE, median-matched")
    unknown = [m for m in models if m not in known]
    if unknown:
        raise ValueError(f"models {unknown} are not among {list(known)}")
    net = digits_mlp(seed=0, hidden=32, device=device)
    train_sgd(net, eta=0.1, B=32, steps=1500, generator=torch.Generator().manual_seed(1))
    theta_star = net.theta().detach().clone()
    G = per_sample_grads(net.model, net.loss_fn, net.X, net.y).double()
    Gc = G - G.mean(0)
    g_ = torch.Generator().manual_seed(13)
    dirs = torch.randn(Gc.shape[1], 32, generator=g_, dtype=torch.float64)
    dirs /= dirs.norm(dim=0)
    idx = torch.randint(net.n, (8192, B), generator=g_)
    alpha = float(stable_alpha(((Gc @ dirs)[idx].mean(1)).T, center=None).median())
    proj = Gc @ dirs
    sgd_kick = eta * proj[idx].mean(1).abs().median()
    V = symmetric_stable((2048, net.n), alpha, torch.Generator().manual_seed(17))
    stab_kick = eta ** (0.5 + 1 / alpha) / math.sqrt(net.n * B) * ((V - V.mean(1, keepdim=True)) @ proj).abs().median()
    kappa = float(sgd_kick / stab_kick)
    start = theta_star.expand(paths, -1)
    kw = dict(B=B, dt=eta, steps=steps, record_steps=[steps])
    make = {"SGD": lambda: run_chains(net, start, eta=eta, B=B, steps=steps, generator=torch.Generator().manual_seed(seed_sgd),
                                      record_steps=[steps]).thetas[-1],
            "Gaussian SDE": lambda: sgd_sde(net, start, eta=eta, generator=torch.Generator().manual_seed(seed_gauss),
                                            **kw).thetas[-1],
            "α-stable SDE, chapter 2's scale": lambda: sgd_sde(net, start, eta=eta, driver="alpha_stable", alpha=alpha,
                                                               generator=torch.Generator().manual_seed(seed_stable),
                                                               **kw).thetas[-1],
            "α-stable SDE, median-matched": lambda: sgd_sde(net, start, eta=eta * kappa**2, driver="alpha_stable",
                                                            alpha=alpha, generator=torch.Generator().manual_seed(seed_stable),
                                                            **kw).thetas[-1]}
    loss_of = vmap(flat_loss_fn(net), in_dims=(0, None, None, None))
    w_full = torch.full((net.n,), 1.0 / net.n, dtype=theta_star.dtype)
    out = {"alpha": alpha, "kappa": kappa, "n": net.n, "d": int(theta_star.numel()), "models": {}}
    for m in models:
        th = make[m]()
        out["models"][m] = {"distance": (th - theta_star).norm(dim=1).double().cpu().numpy(),
                            "loss": loss_of(th, net.X, net.y, w_full).detach().double().cpu().numpy()}
    return out


EXPERIMENTS = EXPERIMENTS + (
    fullscale.Experiment(
        name="ch4_network_paths", compute=network_sde_paths,
        full={"paths": 256, "B": 8, "eta": 0.1, "steps": 200, "seed_sgd": 14, "seed_gauss": 15, "seed_stable": 16,
              "models": ["SGD", "Gaussian SDE", "α-stable SDE, chapter 2's scale", "α-stable SDE, median-matched"]},
        reduced={"paths": 16, "B": 8, "eta": 0.1, "steps": 200, "seed_sgd": 114, "seed_gauss": 115, "seed_stable": 116,
                 "models": ["SGD", "Gaussian SDE"]},
        description="chapter 4: SGD chains and Gaussian / α-stable SDE paths from a trained digits MLP (width 32)",
        modules=(sys.modules[__name__], dg, _curvature, _gradients, _noise)),
)
