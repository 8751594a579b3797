"""The noise scale of data-parallel training, from the all-reduce DDP already does (McCandlish et al. 2018, app. A).

With ``R`` workers each computing the gradient ``g_r`` of its own batch of ``b`` samples, DDP averages them into
the gradient of the global batch, ``g_B`` with ``B = R b``. Before the average each worker knows ``‖g_r‖²``; after
it, ``‖g_B‖²``. For batches drawn independently (with replacement),

    ``E mean_r ‖g_r‖² = ‖g‖² + tr Σ / b``  and  ``E ‖g_B‖² = ‖g‖² + tr Σ / B``,

so ``S = (mean_r ‖g_r‖² - ‖g_B‖²) / (1/b - 1/B)`` is unbiased for ``tr Σ`` and
``Q = (B ‖g_B‖² - b mean_r ‖g_r‖²) / (B - b)`` for ``‖g‖²``, at every step. The comm hook below computes both from
the buckets DDP all-reduces anyway: the local squared norm rides along in the same all-reduce (one extra
number per bucket; a separate float64 all-reduce for half-precision buckets), and the averaged bucket's squared
norm is read after it. Nothing is home-made about the
distribution: the hook is registered with ``DistributedDataParallel.register_comm_hook`` and communicates with
``torch.distributed.all_reduce`` on DDP's process group.

``noise_scale()`` returns the ratio of the means of ``S`` and ``Q`` over the last ``window`` steps with a
delta-method SE (steps treated as independent; the parameters move, so read it as a running value), which the
single-number estimators in common use do not give.
"""


import math
import threading

import torch
import torch.distributed as dist

from .. import _args
from ._stats import ratio_of_means


class DDPNoiseScale:
    """State and comm hook for ``DistributedDataParallel``::

        ddp = DDP(model)
        gns = DDPNoiseScale(local_batch_size=b)
        ddp.register_comm_hook(gns, DDPNoiseScale.hook)
        ...  # train as usual; every synchronising backward pass records one step
        gns.noise_scale()  # (B_simple, SE) on every rank
        gns.history        # per-step tr Σ and ‖g‖² estimates (identical on every rank)

    The hook replaces DDP's default all-reduce (the average of the buckets) and keeps its result. It all-reduces
    on ``process_group`` (default: the world group): pass the group DDP was built with. A step is recorded when
    every bucket launched in it has come back (their callbacks may finish in any order, on several threads).
    With gradient accumulation under ``no_sync`` the hook runs only on the synchronising backward pass, whose
    buckets hold the ``k`` accumulated micro-batches: pass ``local_batch_size = k · b`` (and average the loss over
    them). Steps whose norms are not finite (an overflow that a ``GradScaler`` skips) are counted in ``skipped``
    and not recorded.
    """

    def __init__(self, local_batch_size: int, *, window: int = 50, process_group=None):
        self.local_batch_size = _args.integer("local_batch_size", local_batch_size, minimum=1)
        self.window = _args.integer("window", window, minimum=2)
        self.process_group = process_group
        self.history = {"trace_sigma": [], "grad_norm_sq": [], "local_sq": [], "global_sq": []}
        self.last_step_buckets = 0  # buckets all-reduced in the last recorded step
        self.skipped = 0  # steps whose norms were not finite (e.g. an overflow a GradScaler then skips)
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._local = 0.0
        self._global = 0.0
        self._launched = 0
        self._finished = 0
        self._closed = False

    @staticmethod
    def hook(state: "DDPNoiseScale", bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:  # noqa: D102
        # (the annotation is checked by DDP, hence no `from __future__ import annotations` in this module)
        group = state.process_group if state.process_group is not None else dist.group.WORLD
        world = dist.get_world_size(group)
        buf = bucket.buffer()
        local_sq = (buf.double() ** 2).sum().reshape(1)
        with state._lock:
            state._launched += 1
            if bucket.is_last():  # the last bucket launched: the step's count is now known
                state._closed = True
        if buf.dtype in (torch.float32, torch.float64):
            # the local squared norm rides in the same all-reduce (its range and precision suffice in these dtypes)
            packed = torch.cat([buf, local_sq.to(buf.dtype)]).div_(world)
            fut = dist.all_reduce(packed, group=group, async_op=True).get_future()

            def unpack(f):
                out = f.value()[0]
                return out[:-1], out[-1]
        else:
            # half precision: a squared norm can overflow float16 or lose digits in bfloat16, so it travels in a
            # separate float64 all-reduce
            avg_buf = buf.div(world)
            sq = local_sq.div(world)
            fut = torch.futures.collect_all([dist.all_reduce(avg_buf, group=group, async_op=True).get_future(),
                                             dist.all_reduce(sq, group=group, async_op=True).get_future()])

            def unpack(f):
                a, b = f.value()
                return a.value()[0], b.value()[0][0]

        def finish(f):
            avg, loc = unpack(f)
            glob = (avg.double() ** 2).sum()
            with state._lock:  # callbacks of one step may run on several threads and in any order
                state._local += float(loc)
                state._global += float(glob)
                state._finished += 1
                if state._closed and state._finished == state._launched:
                    state._record(world)
            buf.copy_(avg)
            return buf

        return fut.then(finish)

    def _record(self, world: int) -> None:
        b = self.local_batch_size
        B = world * b
        s, q = self._local, self._global
        self.last_step_buckets = self._launched
        self._reset()
        if world < 2:
            return  # one worker: one batch size, nothing to separate
        if not (math.isfinite(s) and math.isfinite(q)):
            self.skipped += 1
            return
        S = (s - q) / (1 / b - 1 / B)
        Q = (B * q - b * s) / (B - b)
        h = self.history
        h["trace_sigma"].append(S)
        h["grad_norm_sq"].append(Q)
        h["local_sq"].append(s)
        h["global_sq"].append(q)

    def noise_scale(self, window=None):
        """``(B_simple, SE)`` from the last ``window`` steps (``nan`` before two steps, or when the mean of the
        ``‖g‖²`` estimates is not positive)."""
        w = self.window if window is None else _args.integer("window", window, minimum=2)
        return ratio_of_means(self.history["trace_sigma"][-w:], self.history["grad_norm_sq"][-w:])
