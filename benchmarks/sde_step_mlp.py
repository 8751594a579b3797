"""Time one step of ``sgdnoise.sgd_sde`` (state-dependent noise) against one per-sample-gradient matrix.

Measured, on the 64-128-128-10 tanh MLP over all n = 1797 digits in float32 with two torch threads
(``--threads``), the wall-clock time (best of ``--repeats`` interleaved rounds after one warm-up of each,
``time.perf_counter``) of

* ``per_sample_grads``: one call of ``sgdnoise.per_sample_grads(model, loss_fn, X, y)`` (the n × d
  matrix ``G`` at the current parameters), and a loop of 8 such calls;
* ``sgd_sde`` with ``covariance="state"``, ``eta=0.1``, ``B=32``, ``dt=0.1``, started at
  ``problem.theta()``, for ``P = 1`` path and for ``P = 8`` paths (the same start repeated):
  a call with ``steps=1`` (everything one call costs: validation, building the ``vmap(grad(...))``
  function, the step itself) and a call with ``steps=20``, whose time / 20 is the steady-state
  cost of one step with the per-call overhead spread over 20 steps;
* for reference, one plain autograd forward and backward pass of the full-batch weighted loss
  ``Σ_i w_i ℓ_i(θ)`` on the model (no ``vmap``): the work one SDE step of one path has to do.

One SDE step of one path is one weighted full-batch backward pass (notes, eq. (23) and the
docstring of ``sgdnoise.sde``), so it should cost about what ``per_sample_grads`` costs, or less.
Before any time counts, the one-step result for ``P = 1`` is compared with that reference step
(the same Gaussian draws, reproduced from the same seed). The target "one SDE step at most 2x one
per-sample-gradient evaluation" is judged on the steady-state per-step figure (the 20-step call).
The ratios are those measured in this one run, on this machine: it is a benchmark to read, not a
timed test, and it asserts nothing about speed. Results also go to
``benchmarks/results/sde_step_mlp.json``.
"""

from __future__ import annotations

import argparse
import datetime
import math
from pathlib import Path

import torch

import sgdnoise
from _common import best_times, report_load, write_results  # noqa: E402 (sibling module)
from sgdnoise.noise import noise_covariance_factor
from sgdnoise.problems import digits_mlp
from sgdnoise.sde import sgd_sde

THREADS = 2
RESULTS = Path(__file__).resolve().parent / "results" / "sde_step_mlp.json"
TARGET = 2.0  # one SDE step should cost at most this many per-sample-gradient evaluations
ETA, B, DT, SEED = 0.1, 32, 0.1, 0
LONG = 20  # steps of the call that shows the steady-state per-step cost




def run_sde(prob, theta0: torch.Tensor, steps: int) -> torch.Tensor:
    paths = sgd_sde(prob, theta0, eta=ETA, B=B, dt=DT, steps=steps,
                    generator=torch.Generator().manual_seed(SEED), record_steps=[steps])
    return paths.thetas[-1]


def reference_weights(n: int, dtype) -> torch.Tensor:
    """The weights ``w_i = dt/n - s (v_i - v̄)`` of sgd_sde's first step for one path, drawn the way
    it draws them (``v = √dt · z`` from a generator seeded with ``SEED``)."""
    gen = torch.Generator().manual_seed(SEED)
    v = torch.randn((1, n), generator=gen, dtype=dtype) * math.sqrt(DT)
    v = v - v.mean(dim=1, keepdim=True)
    s = math.sqrt(ETA * noise_covariance_factor(n, B, "with_replacement") / n)
    return (DT / n - s * v)[0]


def reference_step(prob, w: torch.Tensor) -> torch.Tensor:
    """``θ - ∇_θ Σ_i w_i ℓ_i(θ)`` by one plain autograd forward and backward pass."""
    params = [p for p in prob.model.parameters() if p.requires_grad]
    loss = (prob.loss_fn(prob.model(prob.X), prob.y) * w).sum()
    grads = torch.autograd.grad(loss, params)
    return prob.theta() - torch.cat([g.reshape(-1) for g in grads])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (best is kept)")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch threads (2, the house setting; 1 on a machine other work keeps busy, where "
                             "two threads wait on each other at every parallel operation)")
    args = parser.parse_args(argv)

    threads = args.threads
    torch.set_num_threads(threads)
    prob = digits_mlp(dtype=torch.float32)
    model, loss_fn, X, y = prob.model, prob.loss_fn, prob.X, prob.y
    n, d = prob.n, prob.d
    theta = prob.theta()
    starts = {1: theta[None].clone(), 8: theta[None].repeat(8, 1)}

    # Check: sgd_sde's first step for one path is the weighted-loss step it claims to be.
    w = reference_weights(n, theta.dtype)
    ref = reference_step(prob, w)
    got = run_sde(prob, starts[1], 1)[0]
    step_size = float((ref - theta).abs().max())
    step_diff = float((got - ref).abs().max()) / step_size
    step_agrees = step_diff < 1e-3

    psg = lambda: sgdnoise.per_sample_grads(model, loss_fn, X, y)  # noqa: E731
    fns = {
        "per_sample_grads x1": psg,
        "per_sample_grads x8": lambda: [psg() for _ in range(8)],
        "plain forward+backward, weighted loss": lambda: reference_step(prob, w),
    }
    for P in (1, 8):
        fns[f"sgd_sde P={P}, steps=1"] = lambda P=P: run_sde(prob, starts[P], 1)
        fns[f"sgd_sde P={P}, steps={LONG}"] = lambda P=P: run_sde(prob, starts[P], LONG)
    times = best_times(fns, args.repeats)
    per_step = {}
    for P in (1, 8):
        one, long = times[f"sgd_sde P={P}, steps=1"], times[f"sgd_sde P={P}, steps={LONG}"]
        per_step[P] = {"one_step_call": one, "steady_state": long / LONG, "per_call_overhead_estimate": one - long / LONG}

    psg_time = {1: times["per_sample_grads x1"], 8: times["per_sample_grads x8"]}
    ratios = {
        P: {
            "one_step_call": per_step[P]["one_step_call"] / psg_time[P],
            "steady_state": per_step[P]["steady_state"] / psg_time[P],
        }
        for P in (1, 8)
    }
    met = {P: ratios[P]["steady_state"] <= TARGET for P in (1, 8)}

    print(f"\none step of sgd_sde (state-dependent noise, eta={ETA}, B={B}, dt={DT}) vs per_sample_grads, "
          f"digits MLP (n = {n}, d = {d}), float32, torch {torch.__version__}, {threads} thread{'s' if threads != 1 else ''}, "
          f"best of {args.repeats} interleaved rounds after a warm-up")
    loadavg = report_load(threads)
    print(f"{'measurement':<40} {'seconds':>9}")
    for name, t in times.items():
        print(f"{name:<40} {t:>9.4f}")
    print(f"\n{'paths':<6} {'SDE step, 1-step call':>22} {f'SDE step, {LONG}-step call/{LONG}':>25} "
          f"{'per-sample grads':>17} {'ratio 1-step':>13} {'ratio steady':>13}")
    for P in (1, 8):
        print(f"{P:<6} {per_step[P]['one_step_call']:>22.4f} {per_step[P]['steady_state']:>25.4f} "
              f"{psg_time[P]:>17.4f} {ratios[P]['one_step_call']:>13.2f} {ratios[P]['steady_state']:>13.2f}")
    print(f"ratio = SDE step time / time of {{1, 8}} per_sample_grads calls for P = {{1, 8}}, measured in this "
          "one run; 'steady' uses the 20-step call / 20, 'one-step' includes sgd_sde's per-call overhead")
    print(f"plain autograd weighted-loss step (the work of one SDE step for one path): "
          f"{times['plain forward+backward, weighted loss']:.4f} s, "
          f"{times['plain forward+backward, weighted loss'] / psg_time[1]:.2f} x per_sample_grads")
    print(f"sgd_sde's first step agrees with that plain step (same draws): "
          f"{'yes' if step_agrees else 'NO'} (max diff {step_diff:.1e} of the step's max entry {step_size:.2e})")
    for P in (1, 8):
        print(f"target: one SDE step at most {TARGET:g}x the per-sample-gradient evaluation, P = {P}, judged on "
              f"the steady-state per-step figure: {'met' if met[P] else 'NOT met'} "
              f"(ratio {ratios[P]['steady_state']:.2f}; with the per-call overhead of a 1-step call: "
              f"{ratios[P]['one_step_call']:.2f})")

    result = {
        "benchmark": "one step of sgd_sde (state-dependent noise) vs per_sample_grads on the digits MLP",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "threads": threads,
        "n": n,
        "d": d,
        "dtype": "float32",
        "eta": ETA,
        "B": B,
        "dt": DT,
        "long_call_steps": LONG,
        "repeats": args.repeats,
        "load_average_1min": loadavg,
        "seconds": times,
        "sde_seconds_per_step": {str(P): v for P, v in per_step.items()},
        "ratio_sde_step_to_per_sample_grads": {str(P): v for P, v in ratios.items()},
        "target_ratio": TARGET,
        "target_judged_on": "steady_state",
        "target_met": {str(P): v for P, v in met.items()},
        "first_step_rel_diff_vs_plain_autograd": step_diff,
        "first_step_agrees": step_agrees,
    }
    write_results(RESULTS, result)
    return result


if __name__ == "__main__":
    main()
