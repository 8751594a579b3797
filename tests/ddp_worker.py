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
    model = DDP(problem.model)
    gns = DDPNoiseScale(local_batch_size=b, window=steps)
    model.register_comm_hook(gns, DDPNoiseScale.hook)
    gen = torch.Generator().manual_seed(100 + rank)
    max_err = 0.0
    for step in range(steps):
        idx = torch.randint(problem.n, (b,), generator=gen)
        model.zero_grad()
        problem.loss_fn(model(problem.X[idx]), problem.y[idx]).mean().backward()
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
            json.dump({"history": gns.history, "noise_scale": ns, "max_rel_err": max_err, "world": world}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
