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

__all__ = ["VARIANTS", "optimiser_runs", "STANDARD", "STANDARD_VARIANTS", "WEIGHT_DECAYS", "SHARPNESS_STEP",
           "SMALL_VARIANTS", "REGISTERED_WEIGHT_DECAY", "grokking_record", "standard_runs", "weight_decay_runs", "small_runs",
           "paired_power", "EXPERIMENTS"]

#: The optimiser variants compared (name → changes of :data:`grokking.DEFAULT`).
VARIANTS = {"GD": dict(optimizer="gd"), "SGD, B = 32": dict(optimizer="sgd", B=32),
            "SGD, B = 128": dict(optimizer="sgd", B=128), "GD + Gaussian (B = 32)": dict(optimizer="gd_gaussian", B=32),
            "GD + α-stable 1.8 (B = 32)": dict(optimizer="gd_stable", B=32, alpha=1.8),
            "GD + α-stable 1.5 (B = 32)": dict(optimizer="gd_stable", B=32, alpha=1.5)}


def _diverged_step(err: DivergenceError) -> int:
    """The step that :func:`grokking.run_grokking`'s divergence message names (-1 if it names none)."""
    step = re.search(r"step (\d+)", str(err))
    return int(step.group(1)) if step else -1


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
                runs.append({"optimiser": name, "seed": int(seed), "diverged_at": _diverged_step(err),
                             "fit": None, "generalise": None, "sharpness": None})
    return {"runs": runs}


# ----------------------------------------------------------------------------- second edition
#: Grokking at the literature's scale: p = 97 (Power et al. 2022; Gromov 2023), 30% of the 9409 pairs for
#: training, width 512, the mean-field learning rate η = 200 (η ∝ N), weight decay λ = 3·10⁻⁶.
STANDARD = gk.ModAddConfig(p=97, train_frac=0.3, width=512, lr=200.0, weight_decay=3e-6, steps=40_000,
                           evals_per_decade=40, stop_at_generalisation=True)
#: The optimiser variants at the standard scale (changes of :data:`STANDARD`). The α-stable noise is the
#: sub-Gaussian one matched in bulk to the Gaussian (``"gd_stable_matched"``).
STANDARD_VARIANTS = {"GD": dict(optimizer="gd"), "SGD": dict(optimizer="sgd", B=32),
                     "GD + Gaussian": dict(optimizer="gd_gaussian", B=32),
                     "GD + α-stable 1.9": dict(optimizer="gd_stable_matched", B=32, alpha=1.9),
                     "GD + α-stable 1.7": dict(optimizer="gd_stable_matched", B=32, alpha=1.7),
                     "GD + α-stable 1.5": dict(optimizer="gd_stable_matched", B=32, alpha=1.5)}
#: The weight-decay sweep: λ of :data:`STANDARD` and a value three times smaller, for GD, SGD and the
#: Gaussian imitation (the α-stable variants run at the first only). The registered design had 10⁻⁵ as
#: the second value; at 10⁻⁵ the weight norm collapses and the network stops learning (the pilot of
#: :func:`weight_decay_runs` records it), so the sweep was amended to 10⁻⁶ before its runs were made.
WEIGHT_DECAYS = (3e-6, 1e-6)
#: The weight decay registered first for the sweep, kept as the amendment's evidence.
REGISTERED_WEIGHT_DECAY = 1e-5
#: The step at which sharpness and weight norm are recorded, before any run generalises.
SHARPNESS_STEP = 1000
#: The live-sized comparison, both activations: changes of :data:`grokking.DEFAULT` (quadratic) and
#: :data:`grokking.DEFAULT_RELU`.
SMALL_VARIANTS = {"GD": dict(optimizer="gd"), "SGD": dict(optimizer="sgd", B=32),
                  "GD + Gaussian": dict(optimizer="gd_gaussian", B=32),
                  "GD + α-stable 1.9": dict(optimizer="gd_stable_matched", B=32, alpha=1.9),
                  "GD + α-stable 1.7": dict(optimizer="gd_stable_matched", B=32, alpha=1.7),
                  "GD + α-stable 1.5": dict(optimizer="gd_stable_matched", B=32, alpha=1.5)}


def _measures(step, model, data):
    """The per-evaluation record of the second edition: the Fourier progress measure at every evaluation
    step, and the sharpness at :data:`SHARPNESS_STEP`."""
    out = gk.fourier_measures(model, data)
    if step == SHARPNESS_STEP:
        lam, _ = hessian_top_eigs(data.problem(model), k=1, iters=60, tol=1e-3,
                                  generator=torch.Generator().manual_seed(0))
        out["sharpness"] = float(lam[0])
    return out


def grokking_record(cfg: gk.ModAddConfig, **labels) -> dict:
    """One run of ``cfg`` reduced to what the chapter reads, with ``labels`` added: ``fit`` and ``generalise``
    (steps; ``None`` if not reached), ``diverged_at`` (``None`` unless it diverged: then the run is censored
    there), ``last_step``, ``sharpness`` and ``norm_at_sharpness_step`` at :data:`SHARPNESS_STEP` (``None`` if
    the run stopped before), ``norm_at_generalise``, ``circuit`` (the first evaluation step with the
    Fourier-restricted test accuracy ≥ the generalisation threshold), and the curves ``steps``,
    ``test_acc``, ``train_acc``, ``weight_norm``, ``fourier_concentration``, ``restricted_test_acc``."""
    base = {**labels, "seed": int(cfg.seed), "weight_decay": float(cfg.weight_decay)}
    try:
        r = gk.run_grokking(cfg, progress=False, callback=_measures)
    except DivergenceError as err:
        step = _diverged_step(err)
        return {**base, "diverged_at": step, "fit": None, "generalise": None,
                "last_step": step, "sharpness": None, "norm_at_sharpness_step": None,
                "norm_at_generalise": None, "circuit": None, "steps": [], "test_acc": [], "train_acc": [],
                "weight_norm": [], "fourier_concentration": [], "restricted_test_acc": []}
    rec = {x["step"]: x for x in r["records"]}
    steps = [int(k) for k in r["steps"]]
    norm = dict(zip(steps, map(float, r["weight_norm"])))
    conc = [float(rec[k]["fourier_concentration"]) for k in steps]
    racc = [float(rec[k]["restricted_test_acc"]) for k in steps]
    circuit = next((k for k, a in zip(steps, racc) if a >= cfg.threshold), None)
    gen = r["time_to_generalise"]
    return {**base, "diverged_at": None, "fit": r["time_to_fit"], "generalise": gen, "last_step": r["last_step"],
            "sharpness": rec.get(SHARPNESS_STEP, {}).get("sharpness"),
            "norm_at_sharpness_step": norm.get(SHARPNESS_STEP), "norm_at_generalise": norm.get(gen) if gen else None,
            "circuit": circuit, "steps": steps, "test_acc": [float(x) for x in r["test_acc"]],
            "train_acc": [float(x) for x in r["train_acc"]], "weight_norm": [float(x) for x in r["weight_norm"]],
            "fourier_concentration": conc, "restricted_test_acc": racc}


def standard_runs(*, variants, seeds, weight_decays, device: str = "cpu") -> dict:
    """Every (variant, weight decay, seed) of :data:`STANDARD` as a :func:`grokking_record`; the α-stable
    variants only at the first weight decay. Seeds are paired: a seed fixes the split, the initialisation and
    the noise generators, so the variants of one seed start from the same network on the same data."""
    unknown = [v for v in variants if v not in STANDARD_VARIANTS]
    if unknown:
        raise ValueError(f"variants {unknown} are not among {list(STANDARD_VARIANTS)}")
    runs = []
    for i, wd in enumerate(weight_decays):
        for name in variants:
            if i > 0 and "stable" in name:
                continue
            for seed in seeds:
                cfg = STANDARD.replace(seed=int(seed), weight_decay=float(wd), device=device, **STANDARD_VARIANTS[name])
                runs.append(grokking_record(cfg, optimiser=name))
    return {"runs": runs}


def weight_decay_runs(*, variants, seeds, weight_decay, pilot_weight_decays, device: str = "cpu") -> dict:
    """The weight-decay arm: :func:`standard_runs` at ``weight_decay`` (``"runs"``), and the pilot that
    chose it (``"pilot"``): SGD, seed 0, at each of ``pilot_weight_decays``."""
    pilot = [grokking_record(STANDARD.replace(seed=0, weight_decay=float(wd), device=device, **STANDARD_VARIANTS["SGD"]),
                             optimiser="SGD") for wd in pilot_weight_decays]
    out = standard_runs(variants=variants, seeds=seeds, weight_decays=[weight_decay], device=device)
    return {"runs": out["runs"], "pilot": pilot}


def small_runs(*, variants, seeds, activations, device: str = "cpu") -> dict:
    """Every (activation, variant, seed) at the live size (:data:`grokking.DEFAULT`, or
    :data:`grokking.DEFAULT_RELU` for ``"relu"``), stopped at generalisation, as :func:`grokking_record`s."""
    unknown = [v for v in variants if v not in SMALL_VARIANTS]
    if unknown:
        raise ValueError(f"variants {unknown} are not among {list(SMALL_VARIANTS)}")
    bases = {"quadratic": gk.DEFAULT, "relu": gk.DEFAULT_RELU}
    runs = []
    for act in activations:
        if act not in bases:
            raise ValueError(f"activation {act!r}; valid: {list(bases)}")
        for name in variants:
            for seed in seeds:
                cfg = bases[act].replace(seed=int(seed), stop_at_generalisation=True, evals_per_decade=40,
                                         device=device, **SMALL_VARIANTS[name])
                runs.append(grokking_record(cfg, optimiser=name, activation=act))
    return {"runs": runs}


def paired_power(n: int, sd: float, delta: float, alpha: float) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs, for a true mean difference
    ``delta`` when the differences have standard deviation ``sd`` (noncentral t)."""
    from scipy import stats

    if not (isinstance(n, int) and n >= 2):
        raise ValueError(f"n={n!r} must be an int >= 2 (pairs)")
    if not (sd > 0 and 0 < alpha < 1):
        raise ValueError(f"need sd > 0 and 0 < alpha < 1; got sd={sd}, alpha={alpha}")
    df, nc = n - 1, delta / (sd / n ** 0.5)
    t = stats.t.ppf(1 - alpha / 2, df)
    return float(1 - stats.nct.cdf(t, df, nc) + stats.nct.cdf(-t, df, nc))


EXPERIMENTS = (
    fullscale.Experiment(
        name="ch6_optimisers", compute=optimiser_runs,
        full={"variants": list(VARIANTS), "seeds": [0, 1, 2, 3, 4]},
        reduced={"variants": ["SGD, B = 32"], "seeds": [5, 6]},
        description="chapter 6: grokking at p = 31, time to generalise and sharpness for six optimiser variants",
        modules=(sys.modules[__name__], gk, _curvature)),
    fullscale.Experiment(
        name="ch6_standard", compute=standard_runs,
        full={"variants": ["GD", "SGD", "GD + Gaussian"], "seeds": list(range(8)), "weight_decays": [3e-6]},
        reduced={"variants": ["SGD"], "seeds": [0], "weight_decays": [3e-6]},
        description="chapter 6: grokking at p = 97 (30% for training), GD, SGD and its Gaussian imitation over eight paired seeds",
        modules=(sys.modules[__name__], gk, _curvature)),
    fullscale.Experiment(
        name="ch6_standard_stable", compute=standard_runs,
        full={"variants": ["GD + α-stable 1.9", "GD + α-stable 1.7", "GD + α-stable 1.5"], "seeds": list(range(8)),
              "weight_decays": [3e-6]},
        reduced={"variants": ["GD + α-stable 1.5"], "seeds": [0], "weight_decays": [3e-6]},
        description="chapter 6: grokking at p = 97, GD with α-stable noise matched in bulk to SGD's (α = 1.9, 1.7, 1.5), eight paired seeds",
        modules=(sys.modules[__name__], gk, _curvature)),
    fullscale.Experiment(
        name="ch6_weight_decay", compute=weight_decay_runs,
        full={"variants": ["GD", "SGD", "GD + Gaussian"], "seeds": list(range(8)), "weight_decay": 1e-6,
              "pilot_weight_decays": [1e-5]},
        reduced={"variants": ["SGD"], "seeds": [0], "weight_decay": 1e-6, "pilot_weight_decays": []},
        description="chapter 6: grokking at p = 97 with weight decay 1e-6, GD, SGD and its Gaussian imitation over eight paired seeds (and the pilot at the registered 1e-5)",
        modules=(sys.modules[__name__], gk, _curvature)),
    fullscale.Experiment(
        name="ch6_small", compute=small_runs,
        full={"variants": list(SMALL_VARIANTS), "seeds": list(range(8)), "activations": ["quadratic", "relu"]},
        reduced={"variants": ["SGD"], "seeds": [0], "activations": ["quadratic"]},
        description="chapter 6: grokking at p = 31, both activations, six optimiser variants over eight paired seeds",
        modules=(sys.modules[__name__], gk, _curvature)),
)
