"""Time Euler–Maruyama on an Ornstein–Uhlenbeck SDE: ``sgdnoise.sde.euler_maruyama`` against torchsde.

Measured, in float64 with two torch threads (``--threads``), on the same SDE

    dX = -A X dt + L dW,    X(0) = 0,    d = 20,

with ``A = Q diag(λ) Qᵀ`` symmetric positive definite (``λ`` in [0.5, 2], ``Q`` a seeded random
orthogonal matrix) and a dense noise matrix ``L`` (the lower-triangular Cholesky factor of a seeded
SPD matrix), 2000 paths, 1000 steps of ``dt = 0.01`` (t = 10, five relaxation times of the slowest
mode): the wall-clock time (best of ``--repeats`` interleaved rounds after one warm-up of each,
``time.perf_counter``) of

* ``sgdnoise``: ``sgdnoise.sde.euler_maruyama(drift, diffusion, x0, ..., record_steps=[steps])``,
* ``torchsde``: ``torchsde.sdeint(sde, y0, ts=[0, T], method="euler", dt=dt)`` with an SDE of
  ``noise_type="general"``, ``sde_type="ito"``; ``ts`` holds only the two ends, so torchsde also
  stores only the endpoint. Its Brownian motion is the ``BrownianInterval`` that ``sdeint`` builds by
  default, built inside the timed call, with a seed and with the step-size hint ``dt`` that
  torchsde documents for fixed-step solvers. Without the hint, the interval tree is refined from the
  step sizes observed during the solve, which on this SDE took minutes or did not end (see
  ``make_torchsde``).

Correctness, before any time counts: the empirical covariance of each route's 2000 endpoints is
compared entry by entry with the exact stationary covariance of the Euler–Maruyama chain
(``solve_discrete_lyapunov(I - dt A, dt L Lᵀ)``) and with the continuous-time one
(``solve_continuous_lyapunov(A, L Lᵀ)``, which differs from it by O(dt)); the largest
``|difference| / SE`` over the 210 distinct entries is reported, with ``SE`` the Monte-Carlo standard
error of the entry (the standard deviation of the sample of products ``(x_i - x̄_i)(x_j - x̄_j)``
over √N). A route passes if that maximum is below 4 against the discrete-time value.

To explain the ratio, the script also counts the Gaussian blocks of shape (paths, d) that torchsde's
Brownian interval tree draws (sgdnoise draws one per step) and times the float64 ``torch.randn``
calls alone that sgdnoise needs: on the CPU these draws, not the arithmetic, dominate both routes.
It also times the same number of float64 normals from the fastest sampler at hand, numpy's
ziggurat (``Generator(PCG64).standard_normal``, one independent stream per thread, in blocks of 100
steps): ``torchsde time / that time`` is the ratio a route that did nothing but draw its normals
would reach, so it bounds what any Euler–Maruyama integrator can reach against torchsde here
(the ceiling).

The script prints the ratio (torchsde time / sgdnoise time) measured in this one run, on this
machine: it is a benchmark to read, not a timed test, and it asserts nothing about speed. Results
also go to ``benchmarks/results/sde_ou.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from scipy.linalg import solve_continuous_lyapunov, solve_discrete_lyapunov

from _common import best_times, report_load, write_results  # noqa: E402 (sibling module)
from sgdnoise.sde import euler_maruyama

THREADS = 2
DTYPE = torch.float64
RESULTS = Path(__file__).resolve().parent / "results" / "sde_ou.json"
TARGET = 20.0  # sgdnoise should be at least this many times faster than torchsde
Z_MAX = 4.0  # allowed max |C_emp - C_exact| / SE over the entries




def ou_problem(d: int, seed: int):
    """``A = Q diag(λ) Qᵀ`` with ``λ`` evenly spread over [0.5, 2], and ``L`` lower-triangular."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=DTYPE))
    lam = torch.linspace(0.5, 2.0, d, dtype=DTYPE)
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    W = torch.randn(d, d, generator=gen, dtype=DTYPE)
    S = W @ W.T / d + 0.5 * torch.eye(d, dtype=DTYPE)
    L = torch.linalg.cholesky(S)  # dense lower-triangular noise matrix
    return A, L, lam


def run_sgdnoise(A, L, x0, dt, steps, seed=0):
    AT, LT = A.T.contiguous(), L.T.contiguous()
    paths = euler_maruyama(
        lambda x: -x @ AT,
        lambda x, dW: dW @ LT,
        x0,
        dt=dt,
        steps=steps,
        noise_dim=x0.shape[1],
        generator=torch.Generator().manual_seed(seed),
        record_steps=[steps],
    )
    return paths.thetas[-1]


class OU(nn.Module):
    """The same OU SDE in torchsde's interface; ``calls`` counts drift evaluations (= steps)."""

    noise_type = "general"
    sde_type = "ito"

    def __init__(self, A, L):
        super().__init__()
        self.AT = A.T.contiguous()
        self.L = L
        self.calls = 0

    def f(self, t, y):
        self.calls += 1
        return -y @ self.AT

    def g(self, t, y):
        return self.L.expand(y.shape[0], *self.L.shape)  # (batch, d, d), a view: no copy


def make_torchsde(A, L):
    import torchsde

    sde = OU(A, L)

    def run(x0, dt, steps, seed=0):
        T = dt * steps
        ts = torch.tensor([0.0, T], dtype=DTYPE)
        # dt: the documented hint for fixed-step solvers; it builds the interval tree once, down to
        # pieces of ~36 dt. Without it (sdeint's default bm) the tree is refined from the observed step
        # sizes, and the last, tiny step that float round-off leaves before T (t accumulates as
        # 0.01 + 0.01 + ...) can make it refine towards that size: minutes, or no end, for this SDE
        # (torchsde issues #36 and #109).
        bm = torchsde.BrownianInterval(
            t0=0.0, t1=T, size=(x0.shape[0], x0.shape[1]), dtype=DTYPE, device=x0.device, entropy=seed, dt=dt
        )
        with torch.no_grad():
            ys = torchsde.sdeint(sde, x0, ts, bm=bm, method="euler", dt=dt)
        return ys[-1]

    return sde, run


@contextlib.contextmanager
def count_torchsde_draws():
    """Count the Gaussian blocks torchsde's Brownian interval draws (each is one ``torch.randn``)."""
    from torchsde._brownian import brownian_interval as bi

    count, original = [0], bi._randn

    def counted(*a, **k):
        count[0] += 1
        return original(*a, **k)

    bi._randn = counted
    try:
        yield count
    finally:
        bi._randn = original


def numpy_normals(P: int, d: int, steps: int, threads: int, chunk: int = 100) -> None:
    """Draw ``steps`` blocks of ``(P, d)`` float64 normals with numpy's ziggurat, split over ``threads``."""
    from concurrent.futures import ThreadPoolExecutor

    gens = [np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(0).spawn(threads)]
    rows = [len(r) for r in np.array_split(np.arange(chunk), threads)]
    bufs = [np.empty((k, P, d)) for k in rows]
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(0, steps, chunk):  # numpy releases the GIL while it fills a buffer
            list(pool.map(lambda i: gens[i].standard_normal(out=bufs[i]), range(threads)))


def max_z(X: torch.Tensor, C: np.ndarray) -> tuple[float, float]:
    """Largest ``|C_emp - C| / SE`` over the distinct entries, and the largest relative deviation."""
    Xn = X.numpy()
    N = Xn.shape[0]
    Xc = Xn - Xn.mean(axis=0)
    prods = Xc[:, :, None] * Xc[:, None, :]  # (N, d, d): the sample of products per entry
    C_emp = prods.sum(axis=0) / (N - 1)
    se = prods.std(axis=0, ddof=1) / math.sqrt(N)
    iu = np.triu_indices(C.shape[0])
    z = np.abs(C_emp - C)[iu] / se[iu]
    rel = np.abs(C_emp - C).max() / np.abs(C).max()
    return float(z.max()), float(rel)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per route (best is kept)")
    parser.add_argument("--paths", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--dt", type=float, default=0.01)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of A and L")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="torch threads (2, the house setting; 1 on a machine other work keeps busy, where "
                             "two threads wait on each other at every parallel operation)")
    args = parser.parse_args(argv)

    threads = args.threads
    torch.set_num_threads(threads)
    d, P, steps, dt = args.d, args.paths, args.steps, args.dt
    T = dt * steps
    A, L, lam = ou_problem(d, args.seed)
    x0 = torch.zeros(P, d, dtype=DTYPE)

    # Exact covariances. With X(0) = 0 the covariance at step k is Σ_d - M^k Σ_d M^kᵀ (M = I - dt A);
    # the transient decays like e^{-2 λ_min t} = e^{-10} ≈ 4.5e-5 at t = 10 with λ_min = 0.5 (relative, on
    # the slowest mode; the exact size is printed), far below the Monte-Carlo error of 2000 paths (a
    # few per cent): it is neglected.
    An, Ln = A.numpy(), L.numpy()
    M = np.eye(d) - dt * An
    C_disc = solve_discrete_lyapunov(M, dt * Ln @ Ln.T)
    C_cont = solve_continuous_lyapunov(An, Ln @ Ln.T)
    Mk = np.linalg.matrix_power(M, steps)
    transient = float(np.abs(Mk @ C_disc @ Mk.T).max() / np.abs(C_disc).max())
    disc_vs_cont = float(np.abs(C_disc - C_cont).max() / np.abs(C_cont).max())

    sde, run_torchsde = make_torchsde(A, L)
    routes = {
        "sgdnoise": lambda s=steps: run_sgdnoise(A, L, x0, dt, s),
        "torchsde": lambda s=steps: run_torchsde(x0, dt, s),
    }

    # Correctness first (this call is also each route's warm-up for the full step count).
    ends, checks = {}, {}
    sde.calls = 0
    ends["sgdnoise"] = routes["sgdnoise"]()
    with count_torchsde_draws() as draws:
        ends["torchsde"] = routes["torchsde"]()
    torchsde_steps, torchsde_draws = sde.calls, draws[0]
    for name, X in ends.items():
        z_d, rel_d = max_z(X, C_disc)
        z_c, rel_c = max_z(X, C_cont)
        checks[name] = {
            "max_z_vs_discrete_lyapunov": z_d,
            "max_z_vs_continuous_lyapunov": z_c,
            "max_rel_diff_vs_discrete": rel_d,
            "max_rel_diff_vs_continuous": rel_c,
            "within_4_se_of_discrete": z_d < Z_MAX,
            "within_4_se_of_continuous": z_c < Z_MAX,
        }

    warm_steps = max(1, steps // 10)
    # The floor under both routes: sgdnoise draws one (P, d) Gaussian block per step, and on the CPU a
    # float64 torch.randn has no vectorised kernel (float32 has one), so it dominates a step here.
    gen = torch.Generator().manual_seed(1)
    draw = lambda k: [torch.randn((P, d), generator=gen, dtype=DTYPE) for _ in range(k)]  # noqa: E731
    rng = best_times({"draws": lambda: draw(steps)}, args.repeats, {"draws": lambda: draw(warm_steps)})["draws"]
    times = best_times(routes, args.repeats, {name: (lambda fn=fn: fn(warm_steps)) for name, fn in routes.items()})
    ratio = times["torchsde"] / times["sgdnoise"]
    met = ratio >= TARGET
    fastest = best_times({"numpy": lambda: numpy_normals(P, d, steps, threads)}, args.repeats)["numpy"]
    ceiling = times["torchsde"] / fastest

    print(f"\nOrnstein-Uhlenbeck dX = -A X dt + L dW, d = {d}, dense L, {P} paths, {steps} steps of dt = {dt} "
          f"(t = {T:g}), float64, torch {torch.__version__}, {threads} thread{'s' if threads != 1 else ''}, best of {args.repeats} "
          "interleaved rounds after a warm-up")
    loadavg = report_load(threads)
    print(f"{'route':<10} {'seconds':>9} {'ratio':>7} {'max z (discrete)':>17} {'max z (continuous)':>19}")
    for name in routes:
        c = checks[name]
        print(f"{name:<10} {times[name]:>9.3f} {times[name] / times['sgdnoise']:>7.2f} "
              f"{c['max_z_vs_discrete_lyapunov']:>17.2f} {c['max_z_vs_continuous_lyapunov']:>19.2f}")
    print("ratio = route time / sgdnoise time, measured in this one run; max z = largest |C_emp - C| / SE "
          f"over the {d * (d + 1) // 2} distinct covariance entries")
    print(f"torchsde took {torchsde_steps} Euler steps for ts = [0, {T:g}] (sgdnoise: {steps}) and drew "
          f"{torchsde_draws} Gaussian blocks of shape ({P}, {d}) in its Brownian interval tree "
          f"({torchsde_draws / torchsde_steps:.1f} per step; sgdnoise: 1 per step)")
    print(f"{steps} float64 torch.randn(({P}, {d})) calls alone, the draws sgdnoise needs: {rng:.3f} s "
          f"({rng / times['sgdnoise']:.0%} of the sgdnoise route)")
    print(f"the same {steps * P * d:.1e} float64 normals from numpy's ziggurat on {threads} thread"
          f"{'s' if threads != 1 else ''}: {fastest:.3f} s, so no route that draws them can beat torchsde by "
          f"more than {ceiling:.1f}x on this machine (the ceiling)")
    print(f"discrete vs continuous Lyapunov: max rel. diff {disc_vs_cont:.2e} (O(dt)); "
          f"transient left at t = {T:g}: {transient:.1e} relative (neglected)")
    for name in routes:
        c = checks[name]
        print(f"{name}: endpoint covariance within {Z_MAX:g} SE of the discrete-time stationary covariance: "
              f"{'yes' if c['within_4_se_of_discrete'] else 'NO'} (max z {c['max_z_vs_discrete_lyapunov']:.2f}); "
              f"of the continuous-time one: {'yes' if c['within_4_se_of_continuous'] else 'no'} "
              f"(max z {c['max_z_vs_continuous_lyapunov']:.2f})")
    print(f"target: sgdnoise at least {TARGET:g}x faster than torchsde: {'met' if met else 'NOT met'} "
          f"(ratio {ratio:.1f} in this run, ceiling {ceiling:.1f})")

    result = {
        "benchmark": "Euler-Maruyama on a 20-d Ornstein-Uhlenbeck SDE with dense noise: sgdnoise vs torchsde",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "torchsde": __import__("torchsde").__version__,
        "threads": threads,
        "d": d,
        "paths": P,
        "steps": steps,
        "torchsde_steps": torchsde_steps,
        "torchsde_gaussian_blocks_drawn": torchsde_draws,
        "seconds_float64_randn_only": rng,
        "seconds_float64_numpy_ziggurat_only": fastest,
        "ceiling_ratio_torchsde_to_fastest_draws": ceiling,
        "dt": dt,
        "t_end": T,
        "dtype": "float64",
        "eigenvalues_of_A": [float(lam.min()), float(lam.max())],
        "repeats": args.repeats,
        "load_average_1min": loadavg,
        "seconds": times,
        "ratio_torchsde_to_sgdnoise": ratio,
        "target_ratio": TARGET,
        "target_met": met,
        "covariance_checks": checks,
        "discrete_vs_continuous_lyapunov_max_rel_diff": disc_vs_cont,
        "transient_relative_at_t_end": transient,
    }
    write_results(RESULTS, result)
    return result


if __name__ == "__main__":
    main()
