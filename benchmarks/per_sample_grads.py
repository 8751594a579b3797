"""Time the full per-sample gradient matrix ``G`` (n × d) on the digits MLP, sgdnoise against peers.

Measured, on the 64-128-128-10 tanh MLP over all n = 1797 digits in float32 with two torch threads:
the wall-clock time (best of ``--repeats`` after one warm-up, ``time.perf_counter``) to produce ``G``,
flattened in ``model.parameters()`` order, by

* ``sgdnoise.per_sample_grads`` (the reference),
* a loop of batch-size-1 backward passes (timed on a subset and scaled linearly to n),
* ``torch.func.vmap(torch.func.grad(...))`` with ``functional_call``,
* BackPACK's ``BatchGrad`` extension,
* Opacus' ``GradSampleModule``.

Each peer's ``G`` is checked against sgdnoise's before its time counts; a peer that cannot be imported
is skipped with the reason. The script prints the ratios (peer time / sgdnoise time) measured in this
one run, on this machine: it is a benchmark to read, not a timed test, and it asserts nothing about
speed. Results also go to ``benchmarks/results/per_sample_grads.json``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import warnings
from pathlib import Path

import torch
from torch import nn

import sgdnoise
from _common import best_time, report_load, write_results  # noqa: E402 (sibling module)
from sgdnoise.problems import digits_mlp

THREADS = 2
RESULTS = Path(__file__).resolve().parent / "results" / "per_sample_grads.json"




def flatten(grads: list[torch.Tensor], n: int) -> torch.Tensor:
    return torch.cat([g.reshape(n, -1) for g in grads], dim=1)


def loop_grads(model, loss_fn, X, y) -> torch.Tensor:
    """One backward pass per sample."""
    params = list(model.parameters())
    rows = []
    for i in range(X.shape[0]):
        loss = loss_fn(model(X[i : i + 1]), y[i : i + 1]).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


def make_vmap(model, loss_fn):
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p, x, t):
        return loss_fn(functional_call(model, p, (x[None],)), t[None]).sum()

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))

    def run(X, y):
        g = per_sample(params, X, y)
        return flatten([g[k] for k in params], X.shape[0])

    return run


def make_backpack(model):
    from backpack import backpack, extend
    from backpack.extensions import BatchGrad

    net = extend(copy.deepcopy(model))
    loss_sum = extend(nn.CrossEntropyLoss(reduction="sum"))  # "sum": grad_batch = per-sample grads

    def run(X, y):
        net.zero_grad(set_to_none=True)
        with backpack(BatchGrad()):
            loss_sum(net(X), y).backward()
        return flatten([p.grad_batch for p in net.parameters()], X.shape[0])

    return run


def make_opacus(model):
    from opacus import GradSampleModule

    net = GradSampleModule(copy.deepcopy(model), loss_reduction="sum")
    loss_sum = nn.CrossEntropyLoss(reduction="sum")

    def run(X, y):
        net.zero_grad(set_to_none=True)  # also drops the previous grad_sample
        loss_sum(net(X), y).backward()
        return flatten([p.grad_sample for p in net.parameters()], X.shape[0])

    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per method (best is kept)")
    parser.add_argument("--loop-subset", type=int, default=200, help="samples for the batch-size-1 loop")
    parser.add_argument("--tol", type=float, default=1e-5, help="max |G_peer - G| / max |G| allowed")
    args = parser.parse_args(argv)

    torch.set_num_threads(THREADS)
    # BackPACK and Opacus hook modules whose inputs need no gradient; torch warns about it each call.
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    prob = digits_mlp(dtype=torch.float32)
    model, loss_fn, X, y = prob.model, prob.loss_fn, prob.X, prob.y
    n, d = prob.n, prob.d
    m = min(args.loop_subset, n)

    G_ref = sgdnoise.per_sample_grads(model, loss_fn, X, y)
    scale = float(G_ref.abs().max())
    times = {"sgdnoise": best_time(lambda: sgdnoise.per_sample_grads(model, loss_fn, X, y), args.repeats)}
    errors, skipped = {"sgdnoise": 0.0}, {}

    # name -> (builder returning run(X, y), samples timed)
    peers = {
        "loop of batch-size-1 backward": (lambda: lambda X_, y_: loop_grads(model, loss_fn, X_, y_), m),
        "torch.func vmap(grad)": (lambda: make_vmap(model, loss_fn), n),
        "BackPACK BatchGrad": (lambda: make_backpack(model), n),
        "Opacus GradSampleModule": (lambda: make_opacus(model), n),
    }
    for name, (build, k) in peers.items():
        Xk, yk = X[:k], y[:k]
        try:
            run = build()
        except ImportError as exc:
            skipped[name] = f"not importable: {exc}"
            print(f"skipped {name}: {skipped[name]}")
            continue
        try:
            G = run(Xk, yk)
        except Exception as exc:  # a peer that breaks on this torch is reported, not fatal
            skipped[name] = f"failed: {type(exc).__name__}: {exc}"
            print(f"skipped {name}: {skipped[name]}")
            continue
        err = float((G - G_ref[:k]).abs().max()) / scale if G.shape == (k, d) else float("inf")
        errors[name] = err
        if not err < args.tol:
            skipped[name] = f"G differs from sgdnoise's (shape {tuple(G.shape)}, relative max diff {err:.2e})"
            print(f"skipped {name}: {skipped[name]}")
            continue
        times[name] = best_time(lambda: run(Xk, yk), args.repeats) * (n / k)

    ratios = {name: t / times["sgdnoise"] for name, t in times.items()}
    print(f"\nper-sample gradients G ({n} x {d}), digits MLP, float32, torch {torch.__version__}, "
          f"{THREADS} threads, best of {args.repeats} after a warm-up")
    loadavg = report_load(THREADS)
    print(f"{'method':<32} {'seconds':>10} {'ratio':>8} {'rel. diff':>10}")
    for name, t in times.items():
        print(f"{name:<32} {t:>10.4f} {ratios[name]:>8.2f} {errors[name]:>10.1e}")
    print(f"(the loop was timed on the first {m} samples and scaled linearly to n = {n}; "
          "ratio = method time / sgdnoise time, measured in this one run)")
    peers_run = [name for name in times if name != "sgdnoise"]
    faster = all(ratios[name] > 1.0 for name in peers_run)
    print(f"sgdnoise is faster than every peer that ran ({len(peers_run)} of {len(peers)}): "
          f"{'yes' if faster else 'no'}")

    result = {
        "benchmark": "per-sample gradient matrix G on the digits MLP",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": THREADS,
        "n": n,
        "d": d,
        "dtype": "float32",
        "repeats": args.repeats,
        "load_average_1min": loadavg,
        "loop_subset": m,
        "seconds": times,
        "ratio_to_sgdnoise": ratios,
        "relative_max_diff": errors,
        "skipped": skipped,
        "sgdnoise_faster_than_every_peer_run": faster,
    }
    write_results(RESULTS, result)
    return result


if __name__ == "__main__":
    main()
