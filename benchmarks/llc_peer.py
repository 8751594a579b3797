"""The local learning coefficient of a deep linear network: sgdnoise's estimator (``sgdnoise.slt.estimate_llc``,
full-batch Langevin on sufficient statistics) against devinterp's (``estimate_learning_coeff_with_summary`` with
its SGLD sampler, minibatches), on the same data, the same trained point and the same sampler settings, and both
against Aoyagi's exact value.

The network: widths 7–6–7, a rank-2 teacher (chapter 10's 2-layer example, λ = 20). n = 20,000 samples,
nβ = n/log n, localisation γ = 50, step ε = 0.2/(nβ), 4 chains of 2,500 steps (500 burn-in): a stronger
localisation and a larger step than chapter 10's, so that devinterp's chains, at about 15 ms a step here, finish
in minutes; the comparison between the two implementations holds the settings equal, and both estimates carry
the bias these settings give against λ. devinterp draws minibatches of 2,000 (its usual way of running), so its
estimate carries minibatch noise that ours does not.

The two need not agree: devinterp's minibatch gradients add noise to every Langevin step, of order
(ε nβ/2)² × (per-sample gradient variance)/2,000, which here is comparable to the injected noise ε and raises the
sampling temperature, and so the estimate. This script does not separate that from an implementation difference
(a full-batch devinterp run, which would, costs about ten times as long).

Printed from this one run: Aoyagi's λ; each estimate with its standard error over chains and its ratio to λ;
whether the two estimates differ by more than 3 combined standard errors; the wall-clock time of each. devinterp
1.3.2 is a benchmark-only install (``make bench``: ``--no-deps``; its runtime needs, einops and cloudpickle, are
pinned). devinterp 2.x is not used: its estimator imports HuggingFace ``datasets``, ``xarray`` and ``zarr``.
Results also go to ``benchmarks/results/llc_peer.json``.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import report_load, write_results
from sgdnoise import slt

HERE = Path(__file__).resolve().parent
WIDTHS, RANK, N, GAMMA, CHAINS, STEPS, BURN = (7, 6, 7), 2, 20_000, 50.0, 4, 2_500, 500


def main() -> None:
    torch.set_num_threads(1)
    load = report_load(1)
    factors, W_star = slt.singular_factors(WIDTHS, RANK, singular_values=np.linspace(1, 2, RANK), seed=13)
    gen = np.random.default_rng(23)
    X = gen.standard_normal((N, WIDTHS[0]))
    Y = X @ W_star.T + gen.standard_normal((N, WIDTHS[-1]))
    problem = slt.DLNRegression(W_star, X.T @ X / N, X.T @ Y / N, float(np.sum(Y * Y) / N), N)
    w_star, grad_norm = slt.descend(problem, factors, lr=0.2, steps=500)
    n_beta = N / math.log(N)
    step = 0.2 / n_beta
    lam = float(slt.dln_learning_coefficient(WIDTHS, RANK))

    start = time.perf_counter()
    ours = slt.estimate_llc(problem, w_star, step=step, steps=STEPS, burn_in=BURN, gamma=GAMMA, n_beta=n_beta,
                            chains=CHAINS, seed=31)
    t_ours = time.perf_counter() - start

    from devinterp.optim.sgld import SGLD
    from devinterp.slt.sampler import estimate_learning_coeff_with_summary

    model = torch.nn.Sequential(*[torch.nn.Linear(a, b, bias=False) for a, b in zip(WIDTHS, WIDTHS[1:])]).double()
    with torch.no_grad():
        for layer, W in zip(model, w_star):
            layer.weight.copy_(torch.as_tensor(W[0]))
    data = torch.utils.data.TensorDataset(torch.as_tensor(X), torch.as_tensor(Y))
    loader = torch.utils.data.DataLoader(data, batch_size=2_000, shuffle=True,
                                         generator=torch.Generator().manual_seed(5))

    def evaluate(net, batch):
        x, y = batch
        return 0.5 * ((net(x) - y) ** 2).sum(1).mean(), {}

    init_loss = float(problem.loss(slt.product(w_star))[0])  # L_n(θ*): the same loss, constants included
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # devinterp's SGLD announces its own deprecation
        summary = estimate_learning_coeff_with_summary(
            model, loader, evaluate=evaluate, sampling_method=SGLD,
            optimizer_kwargs=dict(lr=step, localization=GAMMA, nbeta=n_beta), num_chains=CHAINS,
            num_draws=STEPS - BURN, num_burnin_steps=BURN, num_steps_bw_draws=1, init_loss=init_loss, seed=41,
            device="cpu", verbose=False)
    t_peer = time.perf_counter() - start
    chain_keys = sorted(k for k in summary if k.startswith("llc-chain/"))
    if "llc/means" in summary:
        per_chain = np.asarray(summary["llc/means"], dtype=float)
    elif chain_keys:
        per_chain = np.array([float(np.mean(summary[k])) for k in chain_keys])
    else:
        raise KeyError(f"devinterp's summary has no per-chain estimates: keys {sorted(summary)}")
    peer, peer_se = float(per_chain.mean()), float(per_chain.std(ddof=1) / math.sqrt(len(per_chain)))
    z = (ours.value - peer) / math.hypot(ours.se, peer_se)

    print(f"deep linear network {'–'.join(map(str, WIDTHS))}, rank {RANK}, n = {N}: Aoyagi's λ = {lam:g}; "
          f"gradient norm at θ* {grad_norm:.1e}")
    print(f"sgdnoise (full batch): λ̂ = {ours.value:.2f} ± {ours.se:.2f} (λ̂/λ = {ours.value / lam:.3f}), {t_ours:.1f} s")
    print(f"devinterp 1.3.2 (minibatches of 2,000): λ̂ = {peer:.2f} ± {peer_se:.2f} (λ̂/λ = {peer / lam:.3f}), "
          f"{t_peer:.1f} s")
    print(f"difference {ours.value - peer:+.2f} (z = {z:.2f}): "
          + ("no difference detected" if abs(z) < 3 else "the two estimates differ") + f"; time ratio {t_peer / t_ours:.1f}")
    write_results(HERE / "results" / "llc_peer.json", {
        "lambda": lam, "ours": ours.value, "ours_se": ours.se, "devinterp": peer, "devinterp_se": peer_se, "z": z,
        "seconds_ours": t_ours, "seconds_devinterp": t_peer, "load": load,
        "settings": {"widths": WIDTHS, "rank": RANK, "n": N, "gamma": GAMMA, "chains": CHAINS, "steps": STEPS,
                     "burn_in": BURN, "step": step, "n_beta": n_beta}})


if __name__ == "__main__":
    main()
