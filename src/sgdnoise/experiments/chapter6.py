"""Chapter 6's optimiser comparison as a full-scale experiment (see :mod:`sgdnoise.experiments.fullscale`).

``ch6_optimisers``: modular addition at the default size, each optimiser variant over several seeds,
stopped at generalisation; for each run the steps to fit and to generalise, the sharpness at step 1000,
and the step at which it diverged (a diverged run is censored there, never dropped).
"""

from __future__ import annotations

import re
import sys

import torch

from .. import curvature as _curvature
from ..curvature import hessian_top_eigs
from ..sgd import DivergenceError
from . import fullscale, grokking as gk

__all__ = ["VARIANTS", "optimiser_runs", "EXPERIMENTS"]

#: The optimiser variants compared (name → changes of :data:`grokking.DEFAULT`).
VARIANTS = {"GD": dict(optimizer="gd"), "SGD, B = 32": dict(optimizer="sgd", B=32),
            "SGD, B = 128": dict(optimizer="sgd", B=128), "GD + Gaussian (B = 32)": dict(optimizer="gd_gaussian", B=32),
            "GD + α-stable 1.8 (B = 32)": dict(optimizer="gd_stable", B=32, alpha=1.8),
            "GD + α-stable 1.5 (B = 32)": dict(optimizer="gd_stable", B=32, alpha=1.5)}


def _sharpness_at_1000(step, model, data):
    if step != 1000:
        return None
    lam, _ = hessian_top_eigs(data.problem(model), k=1, iters=60, tol=1e-3, generator=torch.Generator().manual_seed(0))
    return {"sharpness": float(lam[0])}


def optimiser_runs(*, variants, seeds, device: str = "cpu") -> dict:
    """One record per (variant, seed): ``fit`` and ``generalise`` (steps; ``None`` if not reached),
    ``sharpness`` at step 1000 (``None`` if the run stopped before), ``diverged_at`` (``None`` unless it
    diverged)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"variants {unknown} are not among {list(VARIANTS)}")
    runs = []
    for name in variants:
        for seed in seeds:
            c = gk.DEFAULT.replace(seed=int(seed), stop_at_generalisation=True, evals_per_decade=40, device=device,
                                   **VARIANTS[name])
            try:
                r = gk.run_grokking(c, progress=False, callback=_sharpness_at_1000)
                rec = {x["step"]: x for x in r["records"]}
                runs.append({"optimiser": name, "seed": int(seed), "diverged_at": None, "fit": r["time_to_fit"],
                             "generalise": r["time_to_generalise"],
                             "sharpness": rec.get(1000, {}).get("sharpness")})
            except DivergenceError as err:
                step = re.search(r"step (\d+)", str(err))
                runs.append({"optimiser": name, "seed": int(seed), "diverged_at": int(step.group(1)) if step else -1,
                             "fit": None, "generalise": None, "sharpness": None})
    return {"runs": runs}


EXPERIMENTS = (
    fullscale.Experiment(
        name="ch6_optimisers", compute=optimiser_runs,
        full={"variants": list(VARIANTS), "seeds": [0, 1, 2, 3, 4]},
        reduced={"variants": ["GD", "SGD, B = 32"], "seeds": [5, 6]},
        description="chapter 6: grokking at p = 31, time to generalise and sharpness for six optimiser variants",
        modules=(sys.modules[__name__], gk, _curvature)),
)
