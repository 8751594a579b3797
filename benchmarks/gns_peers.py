"""The noise scale of data-parallel training: sgdnoise's ``DDPNoiseScale`` against Katherine Crowson's comm-hook
estimator (k-diffusion's ``DDPGradientStatsHook`` and ``GradientNoiseScale``), on the same two-process run.

Both hooks read each rank's squared gradient norm before DDP's all-reduce and the averaged gradient's after it
(McCandlish et al. 2018, appendix A). Crowson's turns the per-step unbiased estimates of ``tr Σ`` and ``‖g‖²``
into exponential moving averages and reports their ratio, a single number; ``DDPNoiseScale`` reports the ratio
of the means over a window with a delta-method standard error. Here two ranks (gloo, started by torchrun) hold
the digits network at fixed parameters (no optimiser step, so every step estimates one target) and draw their
own batches of ``b = 16`` with replacement; three DDP copies of the network see the same batches: one with
sgdnoise's hook, one with Crowson's, one with DDP's default all-reduce (the baseline for the overhead). The exact
``B_simple`` comes from all 1797 per-sample gradients.

Printed from this one run: the exact value; sgdnoise's estimate with its 95% interval; Crowson's estimate, and
whether it falls inside that interval; the time of a training step with each hook over the baseline (best of
interleaved rounds). k-diffusion is a benchmark-only install (``make bench``: ``--no-deps``; its package
``__init__`` imports torchvision, CLIP and more, so its ``gns.py``, which needs only torch, is loaded by file
path, unmodified). Results also go to ``benchmarks/results/gns_peers.json``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def load_crowson_gns():
    """k-diffusion's ``gns.py`` as a module, without running the package's ``__init__``."""
    spec = importlib.util.find_spec("k_diffusion")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("k-diffusion is not installed: run `make bench` (it installs k-diffusion==0.1.1.post1 "
                         "with --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "gns.py"
    mod_spec = importlib.util.spec_from_file_location("crowson_gns", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def worker(out_path: str, steps: int, b: int) -> None:
    import copy

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from sgdnoise.audit.ddp import DDPNoiseScale
    from sgdnoise.problems import digits_mlp

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    kd = load_crowson_gns()
    problem = digits_mlp(seed=0)
    ours_model, theirs_model, plain_model = (copy.deepcopy(problem.model) for _ in range(3))
    ours = DDP(ours_model)
    gns = DDPNoiseScale(local_batch_size=b, window=steps)
    ours.register_comm_hook(gns, DDPNoiseScale.hook)
    theirs = DDP(theirs_model)
    hook = kd.DDPGradientStatsHook(theirs)
    crowson = kd.GradientNoiseScale()  # its defaults: beta = 0.9998, eps = 1e-8
    plain = DDP(plain_model)
    gen = torch.Generator().manual_seed(100 + rank)
    times = {"sgdnoise": [], "crowson": [], "plain": []}
    crowson_values = []

    def step(model, idx):
        model.zero_grad()
        problem.loss_fn(model(problem.X[idx]), problem.y[idx]).mean().backward()

    for _ in range(steps):
        idx = torch.randint(problem.n, (b,), generator=gen)
        t0 = time.perf_counter()
        step(ours, idx)
        t1 = time.perf_counter()
        step(theirs, idx)
        small, large = hook.get_stats()
        crowson_values.append(crowson.update(small, large, b, b * world))
        t2 = time.perf_counter()
        step(plain, idx)
        t3 = time.perf_counter()
        times["sgdnoise"].append(t1 - t0)
        times["crowson"].append(t2 - t1)
        times["plain"].append(t3 - t2)
    value, se = gns.noise_scale()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"world": world, "steps": steps, "b": b, "sgdnoise": [value, se],
                       "crowson": crowson_values[-1], "crowson_stats": list(crowson.get_stats()),
                       "sgdnoise_means": [sum(gns.history["trace_sigma"]) / steps,
                                          sum(gns.history["grad_norm_sq"]) / steps],
                       "times": times}, f)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    load_crowson_gns()  # fail early, with the install hint, before starting two processes
    from sgdnoise.gradients import per_sample_grads
    from sgdnoise.problems import digits_mlp

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(Path(__file__)),
               "--worker", str(out), str(args.steps), str(args.batch)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        run = json.loads(out.read_text())
    p = digits_mlp(seed=0)
    G = per_sample_grads(p.model, p.loss_fn, p.X, p.y).double()
    g = G.mean(0)
    trace, gsq = float(((G - g) ** 2).sum(1).mean()), float(g @ g)
    exact = trace / gsq
    value, se = run["sgdnoise"]
    lo, hi = value - 1.959963984540054 * se, value + 1.959963984540054 * se
    theirs = run["crowson"]
    # the best of 10 interleaved rounds of 1/10 of the steps each, per hook (rank 0's clock)
    best = {}
    for name, ts in run["times"].items():
        chunks = [ts[i::10] for i in range(10)]
        best[name] = min(sum(c) / len(c) for c in chunks)
    print(f"digits MLP at fixed parameters, 2 gloo ranks x b = {run['b']} (B = {2 * run['b']}), {run['steps']} steps")
    print(f"exact B_simple (all 1797 per-sample gradients): {exact:.2f}")
    print(f"sgdnoise DDPNoiseScale:   {value:.2f}  95% interval [{lo:.2f}, {hi:.2f}]  (covers the exact value: "
          f"{lo <= exact <= hi})")
    print(f"Crowson (k-diffusion):    {theirs:.2f}  (no interval; inside sgdnoise's: {lo <= theirs <= hi}; "
          f"relative difference {theirs / value - 1:+.2%})")
    print(f"step time over plain DDP: sgdnoise {best['sgdnoise'] / best['plain']:.2f}x, "
          f"Crowson {best['crowson'] / best['plain']:.2f}x (the latter includes its per-step all-reduce of the stats)")
    result = {"date": datetime.date.today().isoformat(), "exact": exact, "sgdnoise": [value, se, lo, hi],
              "crowson": theirs, "crowson_inside": lo <= theirs <= hi, "exact_inside": lo <= exact <= hi,
              "step_time_ratio": {k: best[k] / best["plain"] for k in best}, "steps": run["steps"], "b": run["b"],
              "torch": torch.__version__}
    from _common import write_results  # noqa: E402 (sibling module)

    write_results(HERE / "results" / "gns_peers.json", result)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.path.insert(0, str(HERE))
        main()
