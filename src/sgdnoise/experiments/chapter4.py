"""Chapter 4's alignment measurements as a full-scale experiment (see :mod:`sgdnoise.experiments.fullscale`).

``ch4_alignment``: the digits MLP trained by SGD (η = 0.1, B = 32, 1500 steps); at each snapshot the
noise scale (exact, and McCandlish et al.'s two-batch estimate with a delta-method SE), the effective
rank of Σ, the overlap of the top-5 eigenspaces of Σ and H, tr(HΣ) against its isotropic value
(Hutchinson, with SEs) and the relative change of Σ since the previous snapshot; at the last snapshot
also tr(HΣ) against its von Neumann ceiling (a lower bound from the top 10 of H) and the commutator
of H and Σ on Σ's top-5 eigenvectors against permuted coordinates.
"""

from __future__ import annotations

import functools
import math
import sys

import torch

from .. import curvature as _curvature, diagnostics as dg, gradients as _gradients, heavy as _heavy, noise as _noise
from .. import tails as _tails
from ..curvature import hessian_top_eigs
from ..gradients import per_sample_grads
from ..noise import effective_rank, noise_spectrum
from ..problems import digits_mlp
from ..sgd import train_sgd
from . import fullscale

__all__ = ["alignment_study", "network_sde_paths", "iterate_tails_by_dimension", "EXPERIMENTS"]


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


@functools.lru_cache(maxsize=2)
def _trained_width32(device: str) -> torch.Tensor:
    """θ* of the width-32 digits MLP after 1500 SGD steps (η = 0.1, B = 32, seed 1), computed once per process: both
    experiments below start from it, and a chapter that loads both trains it once."""
    net = digits_mlp(seed=0, hidden=32, device=device)
    train_sgd(net, eta=0.1, B=32, steps=1500, generator=torch.Generator().manual_seed(1))
    return net.theta().detach().clone()


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
    net.set_theta(_trained_width32(str(device)).to(net.theta()))
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
    fullscale.Experiment(
        name="ch4_network_paths_b1", compute=network_sde_paths,
        # B = 1: the index along fixed directions is about 1 here, so only the median-matched α-stable model
        full={"paths": 256, "B": 1, "eta": 0.1, "steps": 200, "seed_sgd": 24, "seed_gauss": 25, "seed_stable": 26,
              "models": ["SGD", "Gaussian SDE", "α-stable SDE, median-matched"]},
        # the live rerun: SGD only (the Gaussian SDE's paths are rerun live at B = 8)
        reduced={"paths": 16, "B": 1, "eta": 0.1, "steps": 200, "seed_sgd": 124, "seed_gauss": 125, "seed_stable": 126,
                 "models": ["SGD"]},
        description="chapter 4: as ch4_network_paths, at B = 1",
        modules=(sys.modules[__name__], dg, _curvature, _gradients, _noise)),
)


def iterate_tails_by_dimension(*, dims, chains, fractions, B: int, steps_per_efold: float, max_steps: int, groups: int,
                               k_frac: float, seed: int, theory: bool = True, eta_stars=None, device: str = "cpu") -> dict:
    """Heavy-tailed iterates of streaming least squares in ``d`` dimensions (isotropic Gaussian data), the
    setting of Gürbüzbalaban, Şimşekli and Zhu (2021): for each ``d`` in ``dims`` (with ``chains[i]`` chains),
    at learning rates ``η = f·η*`` for ``f`` in ``fractions`` (``η*``: where ``E log‖M e₁‖ = 0``), the
    Kesten-type index (the root of ``E‖M e₁‖^α = 1``), the SDE's index, and Hill estimates of the iterates'
    tail from simulated chains. The chains run ``steps_per_efold / |E log‖M e₁‖|`` steps (at most
    ``max_steps``); the coordinates of the final iterates, pooled, are split into ``groups`` groups of chains
    and Hill's estimate at ``k = k_frac`` of each group's values gives a mean and a standard error across
    groups. The same estimate halfway through the run shows whether the tail had settled.

    ``theory=False`` skips the two indices and the run-length rule's quadrature (a live rerun compares
    only the simulation): it then needs ``eta_stars`` (one per ``d``) and uses ``max_steps`` steps."""
    import numpy as np

    from .. import heavy
    from ..tails import hill

    if len(chains) != len(dims):
        raise ValueError(f"chains={chains!r} needs one entry per dimension in dims={dims!r}")
    rows = []
    for d, C in zip(dims, chains):
        if C % groups:
            raise ValueError(f"chains={C} for d={d} must be a multiple of groups={groups}")
        if not theory and eta_stars is None:
            raise ValueError("theory=False needs eta_stars, one divergence learning rate per dimension")
        eta_star = heavy.divergence_lr_isotropic(B, d) if theory else float(eta_stars[dims.index(d)])
        for j, f in enumerate(fractions):
            eta = f * eta_star
            rho = kesten = sde = None
            if theory:
                rho = heavy.log_multiplier_mean_isotropic(eta, B, d)
                try:
                    kesten = heavy.kesten_index_isotropic(eta, B, d)
                except ValueError:  # the root lies above alpha_max: tails too light to matter
                    kesten = None
                try:
                    sde = heavy.sde_tail_index_isotropic(eta, B, d)
                except ValueError:
                    sde = None
            steps = int(min(max_steps, math.ceil(steps_per_efold / abs(rho)))) if theory else int(max_steps)
            gen = torch.Generator().manual_seed(seed + 1000 * d + j)
            half = heavy.streaming_lr(eta, B, d, chains=C, steps=steps // 2, generator=gen)
            final = _continue_streaming(half, eta, B, steps - steps // 2, gen)

            def grouped(u):
                est = [hill(part.abs().flatten(), max(2, int(k_frac * part.numel())))
                       for part in u.view(groups, C // groups, d)]
                return float(np.mean(est)), float(np.std(est, ddof=1) / math.sqrt(groups))

            h_half, h_final = grouped(half), grouped(final)
            rows.append({"d": d, "eta_star": eta_star, "fraction": f, "eta": eta, "log_mean": rho, "kesten": kesten,
                         "sde": sde, "steps": steps, "chains": C, "hill": h_final[0], "hill_se": h_final[1],
                         "hill_half": h_half[0], "hill_half_se": h_half[1]})
    return {"rows": rows, "B": B, "groups": groups, "k_frac": k_frac}


def _continue_streaming(u, eta, B, steps, gen):
    """``steps`` more steps of :func:`sgdnoise.heavy.streaming_lr` from the errors ``u``."""
    C, d = u.shape
    for k in range(steps):
        a = torch.randn(C, B, d, generator=gen, dtype=torch.float64)
        eps = torch.randn(C, B, generator=gen, dtype=torch.float64)
        u = u - (eta / B) * (a * ((a @ u[:, :, None])[..., 0] - eps)[..., None]).sum(1)
    if not torch.isfinite(u).all():
        raise FloatingPointError(f"streaming SGD diverged with eta={eta}, B={B}, d={d}")
    return u


EXPERIMENTS = EXPERIMENTS + (
    fullscale.Experiment(
        name="ch4_iterates_dims", compute=iterate_tails_by_dimension,
        full={"dims": [10, 100], "chains": [20000, 4000], "fractions": [0.6, 0.8, 0.9, 0.95], "B": 1,
              "steps_per_efold": 8.0, "max_steps": 9000, "groups": 5, "k_frac": 0.01, "seed": 21},
        # the live rerun: one point, the simulation only, as many steps as the full run took there (551)
        reduced={"dims": [10], "chains": [4000], "fractions": [0.9], "B": 1, "steps_per_efold": 8.0,
                 "max_steps": 551, "groups": 5, "k_frac": 0.01, "seed": 121, "theory": False,
                 "eta_stars": [0.1798885694236108]},
        description="chapter 4: tail index of SGD's iterates on streaming least squares in d = 10 and 100 "
                    "(Kesten-type index, the SDE's, Hill estimates from chains)",
        modules=(sys.modules[__name__], _heavy, _tails)),
)
