"""The audit's sketch route on a model with about 10⁷ parameters that is not all-Linear (embedding, layer norm,
tied output weights): time, peak memory, and what the per-sample gradient matrix would have needed.

The sketch route (``sgdnoise.audit(..., route="sketch")``, :mod:`sgdnoise.sketch`) never forms the ``m × d``
matrix ``G``: Lanczos on the centred Gram operator gives Σ's top eigenvalues (each product one backward and one
forward-mode pass) and a random projection the rest of the Gram matrix, with a stated standard error. Its
agreement with the exact route, where that still fits, is checked in ``tests/test_audit_sketch.py``
(top-20 eigenvalues to 1e-8 relative, tr Σ within four of the sketch's stated SEs). Here: a token model of
vocabulary 2000, width 512 and four MLP blocks with layer norm (d printed), ``m`` sequences of 8 tokens,
float32, two threads. Prints the wall
time, the peak resident memory, the memory ``G`` would need in float64 (the gradient route keeps three copies),
and the sketch's relative SE on tr Σ. Results also go to ``benchmarks/results/audit_sketch.json``.
"""

from __future__ import annotations

import argparse
import datetime
import resource
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report_load, write_results  # noqa: E402

import sgdnoise  # noqa: E402

THREADS = 2
VOCAB = 2000
SEQ = 8


class Block(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim)

    def forward(self, h):  # a causal running mean stands in for attention
        return h + self.down(torch.tanh(self.up(self.norm(h)))).cumsum(1) / torch.arange(1, h.shape[1] + 1)[:, None]


class TokenModel(nn.Module):
    def __init__(self, vocab=VOCAB, dim=512, hidden=2048, blocks=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.blocks = nn.Sequential(*[Block(dim, hidden) for _ in range(blocks)])
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight  # tied, as in GPT-2

    def forward(self, tokens):
        return self.out(self.norm(self.blocks(self.emb(tokens))))


def token_loss(out, tgt):
    return nn.functional.cross_entropy(out.transpose(1, 2), tgt, reduction="none").mean(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    report_load(THREADS)
    torch.manual_seed(0)
    model = TokenModel()
    d = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    X = torch.randint(VOCAB, (args.samples, SEQ), generator=g)
    y = torch.roll(X, -1, 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    rep = sgdnoise.audit(model, token_loss, (X, y), lr=0.1, batch_size=32, route="sketch", sketch_rank=20,
                         sketch_columns=64, noise_draws=1000, null_reps=250, spectrum_folds=5, sharpness_folds=0,
                         alignment=False, memory_bytes=4 * 2**30)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    need_G = 3 * args.samples * d * 8 / 2**30
    sk = rep["sketch"]
    print(f"token model: d = {d:,} (embedding, layer norm, tied output), m = {args.samples} sequences of {SEQ} tokens")
    print(f"sketch route: {wall:.1f} s, peak RSS {peak:.2f} GiB (before the audit {before:.2f} GiB); "
          f"G in float64 (three copies) would need {need_G:.1f} GiB")
    print(f"tr Σ = {rep['trace_sigma'].text()}; the sketch's relative SE {sk['trace_relative_se']:.2%} "
          f"(bound {sk['trace_relative_se_bound']:.2%}); the top {sk['lanczos_rank']} eigenvalues exact (Lanczos), "
          f"tail fraction {sk['tail_fraction']:.2f}")
    for note in rep.notes:
        print("note:", note)
    write_results(Path(__file__).resolve().parent / "results" / "audit_sketch.json",
                  {"date": datetime.date.today().isoformat(), "d": d, "m": args.samples, "wall_s": wall,
                   "peak_rss_gib": peak, "G_float64_three_copies_gib": need_G, "sketch": sk, "threads": THREADS,
                   "torch": torch.__version__})


if __name__ == "__main__":
    main()
