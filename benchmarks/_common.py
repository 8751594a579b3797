"""What every benchmark script shares: interleaved best-of timing, the load report, writing results."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def best_times(fns: dict, repeats: int, warmups: dict | None = None) -> dict:
    """Best wall-clock time of each ``fn()`` over ``repeats`` rounds, after one warm-up call of each.

    ``warmups[name]`` replaces the warm-up call (e.g. the same call with fewer steps). The rounds are
    interleaved (each round times every function once), so that a burst of other work on the machine
    inflates all measurements alike rather than one of them.
    """
    for name, fn in fns.items():
        (warmups or {}).get(name, fn)()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def best_time(fn, repeats: int) -> float:
    """Best wall-clock time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    return best_times({"fn": fn}, repeats)["fn"]


def report_load(threads: int) -> float:
    """Print the 1-minute load average next to this run's thread count, and return it."""
    loadavg = os.getloadavg()[0]
    print(f"load average (1 min): {loadavg:.1f} on {os.cpu_count()} cores, this run's {threads} "
          f"thread{'s' if threads != 1 else ''} included; a higher one means other work inflated the times")
    return loadavg


def write_results(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {path}")
