"""A worker of the two-process DDP test (tests/test_audit_ddp.py), started by torchrun: not a test module.

Every rank holds the digits network at its initial parameters and, at each of ``steps`` steps, draws its own
batch of ``b`` samples with replacement, runs forward and backward through DDP with ``DDPNoiseScale``'s comm
hook, and never steps the optimiser (the parameters stay fixed, so the per-step estimates share one target).
Rank 0 writes the hook's history and a check that the hook left DDP's averaged gradient unchanged.
"""

import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from sgdnoise.audit.ddp import DDPNoiseScale
from sgdnoise.problems import digits_mlp


def main(out_path: str, steps: int, b: int) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    problem = digits_mlp(seed=0)
    model = DDP(problem.model, bucket_cap_mb=0.02)  # ~100 KB of float32 gradients: several buckets
    gns = DDPNoiseScale(local_batch_size=b, window=steps)
    model.register_comm_hook(gns, DDPNoiseScale.hook)
    gen = torch.Generator().manual_seed(100 + rank)
    max_err = 0.0
    step_err = 0.0  # each recorded step against its own directly computed norms
    params = list(problem.model.parameters())
    for step in range(steps):
        idx = torch.randint(problem.n, (b,), generator=gen)
        model.zero_grad()
        problem.loss_fn(model(problem.X[idx]), problem.y[idx]).mean().backward()
        local = torch.autograd.grad(problem.loss_fn(problem.model(problem.X[idx]), problem.y[idx]).mean(), params)
        sq = torch.tensor([sum(float((g.double() ** 2).sum()) for g in local)], dtype=torch.float64)
        dist.all_reduce(sq)
        glob = sum(float((p.grad.double() ** 2).sum()) for p in params)
        assert len(gns.history["local_sq"]) == step + 1, (step, len(gns.history["local_sq"]))
        step_err = max(step_err, abs(gns.history["local_sq"][-1] - float(sq[0]) / world) / (float(sq[0]) / world),
                       abs(gns.history["global_sq"][-1] - glob) / glob)
        if step == 0:  # the hook's average against a plain all-reduce of the local gradients
            params = list(problem.model.parameters())
            local = torch.autograd.grad(problem.loss_fn(problem.model(problem.X[idx]), problem.y[idx]).mean(), params)
            flat = torch.cat([g.reshape(-1) for g in local])
            dist.all_reduce(flat)
            flat /= world
            got = torch.cat([p.grad.reshape(-1) for p in params])
            max_err = float((got - flat).abs().max() / flat.abs().max())
    ns = gns.noise_scale()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump({"history": gns.history, "noise_scale": ns, "max_rel_err": max_err, "world": world,
                       "step_rel_err": step_err, "buckets": gns.last_step_buckets}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
