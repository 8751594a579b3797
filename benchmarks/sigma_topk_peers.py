"""Top-k eigenvalues of the gradient second moment on the digits MLP: sgdnoise's Gram route against
curvlinops' empirical-Fisher operator with Lanczos (scipy's eigsh).

curvlinops (like pytorch-hessian-eigenthings) offers the *uncentred* second moment, the empirical Fisher
``M = (1/n) Σ_i g_i g_iᵀ``, as a linear operator whose products cost one pass over the data; Lanczos on it
(``scipy.sparse.linalg.eigsh``) gives its top eigenvalues. sgdnoise (``noise.sigma_top_eigenvalues``) computes the ``n × n`` Gram
matrix ``G Gᵀ`` from the layers' inputs and output gradients without forming ``G`` and runs Lanczos on it: the
same nonzero eigenvalues, ``/ n``. We compare on their quantity (``M``, top ``k = 10``), checking that both routes agree to
``1e-6`` relative before timing counts, and also time sgdnoise on its own quantity, the centred covariance
``Σ = M - g gᵀ`` (the noise covariance, which curvlinops does not offer). Digits MLP (64-128-128-10 tanh,
n = 1797, float64, two threads), best of ``--repeats`` interleaved rounds after a warm-up. Prints the ratio
peer time / sgdnoise time from this one run; asserts nothing about speed. ``make bench`` installs curvlinops
(benchmark-only, ``--no-deps``). Results also go to ``benchmarks/results/sigma_topk_peers.json``.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _common import best_times, report_load, write_results  # noqa: E402 (sibling module)
from sgdnoise.noise import sigma_top_eigenvalues
from sgdnoise.problems import digits_mlp

THREADS = 2
K = 10
RESULTS = Path(__file__).resolve().parent / "results" / "sigma_topk_peers.json"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    load = report_load(THREADS)
    p = digits_mlp(seed=0)
    model = p.model.double()
    X, y = p.X.double(), p.y
    n = X.shape[0]

    def ours_uncentred():
        return sigma_top_eigenvalues(model, p.loss_fn, X, y, K, centered=False)

    def ours_centred():
        return sigma_top_eigenvalues(model, p.loss_fn, X, y, K)

    fns = {"sgdnoise Gram route, M": ours_uncentred, "sgdnoise Gram route, Σ": ours_centred}
    try:
        from curvlinops import EFLinearOperator
        from scipy.sparse.linalg import eigsh
    except ImportError as err:
        print(f"curvlinops not installed ({err}); run `make bench`")
        peer = None
    else:
        params = [q for q in model.parameters() if q.requires_grad]
        # the mean cross-entropy over all n samples in one batch: curvlinops then scales M by 1/n
        op = EFLinearOperator(model, nn.CrossEntropyLoss(reduction="mean"), params, [(X, y)],
                              check_deterministic=False)

        def peer():
            vals = eigsh(op.to_scipy(), k=K, which="LA", tol=1e-8, return_eigenvectors=False)
            return torch.from_numpy(np.sort(vals)[::-1].copy())

        fns["curvlinops EF + eigsh, M"] = peer
    ref = ours_uncentred()
    if peer is not None:
        got = peer()
        rel = float(((got - ref).abs() / ref).max())
        print(f"top-{K} eigenvalues of M: curvlinops and sgdnoise agree to {rel:.1e} (relative)")
        if rel > 1e-6:
            raise SystemExit(f"the routes disagree ({rel:.2e} > 1e-6): no timing")
    t = best_times(fns, args.repeats)
    base = t["sgdnoise Gram route, M"]
    rows = []
    for name, sec in t.items():
        print(f"{name:<28} {sec:8.3f} s   ratio to sgdnoise (M): {sec / base:6.2f}")
        rows.append({"route": name, "seconds": sec, "ratio_to_sgdnoise_M": sec / base})
    write_results(RESULTS, {"date": datetime.date.today().isoformat(), "threads": THREADS, "load": load, "k": K,
                            "n": n, "rows": rows})


if __name__ == "__main__":
    main()
