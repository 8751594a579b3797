"""The NoiseTracker's overhead on a training step (issue: at most 5% for the cheap statistics).

A training step is ``zero_grad``, forward, backward, ``SGD.step`` on a batch; the tracked step replaces the
backward by ``NoiseTracker.backward`` (per-step unbiased tr Σ and ‖g‖² estimates). Measured per model, with
two torch threads, as the best of ``--repeats`` interleaved rounds of ``--steps`` steps after a warm-up:

* the digits MLP (64-128-128-10 tanh, float32, B = 32 and 256): only nn.Linear layers, the ghost-norm route;
* a GPT-2 from Hugging Face transformers with a small configuration (2 layers, width 64, 32 tokens,
  B = 16), when transformers is installed (``make pytest`` installs it): its Conv1D layers are not
  nn.Linear, so the tracker uses two half batches.

Also a 64-1024-1024-10 MLP (B = 256), where a step's arithmetic is larger; and, for the ghost-norm route, the
floor: the same hooks recording inputs and output gradients and computing nothing, the part of the
overhead no statistic can avoid in eager PyTorch. Prints, from this one run, each variant's overhead over
the plain step: recording every step, every 10th step (``every=10``), and the floor; asserts nothing about speed. Results also go to
``benchmarks/results/audit_tracker.json``.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch
from torch import nn

from _common import best_times, report_load, write_results  # noqa: E402 (sibling module)
from sgdnoise.audit import NoiseTracker
from sgdnoise.problems import cross_entropy, digits_mlp

THREADS = 2
RESULTS = Path(__file__).resolve().parent / "results" / "audit_tracker.json"


def steps_fn(model, loss_fn, batches, tracker=None):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run():
        for xb, yb in batches:
            opt.zero_grad()
            if tracker is None:
                loss_fn(model(xb), yb).mean().backward()
            else:
                tracker.backward(xb, yb)
            opt.step()
    return run


def hooks_only_fn(model, loss_fn, batches):
    """The floor of the ghost-norm route: the same forward and tensor hooks, recording only (no statistic)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def run():
        recs = []

        def fwd(module, inputs, output):
            rec = [inputs[0], None]
            recs.append(rec)
            output.register_hook(lambda g, rec=rec: rec.__setitem__(1, g))

        for xb, yb in batches:
            handles = [m.register_forward_hook(fwd) for m in layers]
            opt.zero_grad()
            loss_fn(model(xb), yb).mean().backward()
            for h in handles:
                h.remove()
            recs.clear()
            opt.step()
    return run


def case(name, model, loss_fn, X, y, B, steps, repeats):
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(X.shape[0], (steps, B), generator=g)
    batches = [(X[i], y[i]) for i in idx]
    every1 = NoiseTracker(model, loss_fn, lr=1e-3, batch_size=B)
    every10 = NoiseTracker(model, loss_fn, lr=1e-3, batch_size=B, every=10)
    fns = {"plain": steps_fn(model, loss_fn, batches), "every step": steps_fn(model, loss_fn, batches, every1),
           "every 10th step": steps_fn(model, loss_fn, batches, every10)}
    if every1.route == "ghost norms":
        fns["hooks only (floor)"] = hooks_only_fn(model, loss_fn, batches)
    t = best_times(fns, repeats)
    row = {"model": name, "route": every1.route, "batch_size": B, "plain_ms_per_step": 1e3 * t["plain"] / steps}
    text = []
    for key in fns:
        if key == "plain":
            continue
        row[f"overhead, {key}"] = t[key] / t["plain"] - 1
        text.append(f"{key} {100 * (t[key] / t['plain'] - 1):+.1f}%")
    print(f"{name:<36} {every1.route:<13} plain {row['plain_ms_per_step']:7.3f} ms/step; overhead: " + ", ".join(text))
    return row


def wide_mlp(width):
    torch.manual_seed(0)
    p = digits_mlp(seed=0)
    model = nn.Sequential(nn.Linear(64, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10))
    return model, p.X, p.y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    load = report_load(THREADS)
    rows = []
    p = digits_mlp(seed=0)
    for B in (32, 256):
        rows.append(case(f"digits MLP, B = {B}", p.model, p.loss_fn, p.X, p.y, B, args.steps, args.repeats))
    model, X, y = wide_mlp(1024)
    rows.append(case("digits, MLP of width 1024, B = 256", model, cross_entropy, X, y, 256, args.steps // 4, args.repeats))
    try:
        import transformers
    except ImportError as err:
        print(f"GPT-2 skipped: {err}")
    else:
        torch.manual_seed(0)
        cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=2, n_head=4, resid_pdrop=0.0,
                                      embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
        gpt = transformers.GPT2LMHeadModel(cfg)

        class LM(nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, t):
                return self.m(input_ids=t).logits

        def token_loss(out, tgt):
            return nn.functional.cross_entropy(out.transpose(1, 2), tgt, reduction="none").mean(1)

        X = torch.randint(256, (512, 32), generator=torch.Generator().manual_seed(1))
        rows.append(case("GPT-2 (2 layers, width 64), B = 16", LM(gpt), token_loss, X, torch.roll(X, -1, 1), 16,
                         args.steps // 4, args.repeats))
    write_results(RESULTS, {"date": datetime.date.today().isoformat(), "threads": THREADS, "load": load,
                            "rows": rows})


if __name__ == "__main__":
    main()
