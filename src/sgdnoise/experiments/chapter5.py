"""Chapter 5's two long experiments as full-scale experiments (see :mod:`sgdnoise.experiments.fullscale`).

* ``ch5_dln_sdes``: a depth-2 deep linear network trained by SGD, and its Gaussian and α-stable SDEs,
  over several learning-rate settings and seeds; the escape times of the three modes and the final
  mode strengths, with the KS distance of each model's distribution to SGD's.
* ``ch5_tms_noise``: the superposition noise sweep, the geometry reached by each seed in every
  (sparsity, optimiser setting) cell.
"""

from __future__ import annotations

import sys

import numpy as np

from . import deep_linear as dln, fullscale, superposition as tms

__all__ = ["dln_sde_comparison", "tms_noise_sweep", "represented_by_cell", "dln_ks_by_model", "holm",
           "noise_phase_tests", "PHASE_TARGETS", "EXPERIMENTS"]


def _finite_or_none(values):
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]


def dln_sde_comparison(*, settings, seeds, data_seed: int, alpha: float, measured_alpha_lr: float | None,
                       device: str = "cpu") -> dict:
    """For each ``(η, B, steps)`` in ``settings`` and each chain seed in ``seeds`` (all on the data set
    ``data_seed``): SGD, the Gaussian SDE and the α-stable SDE at index ``alpha`` (and, at
    ``η = measured_alpha_lr``, at the index measured on SGD's noise). Returns ``rows`` (one per model and
    run: escape-time means and SEs per mode, retired chains, fraction in order) and ``dists`` (KS distance
    to SGD per quantity and mode). A mode with no finite escape time is stored as ``None``."""
    base = dln.DEFAULT.replace(device=device)
    rows, dists = [], []
    for eta, B, steps in settings:
        for seed in seeds:
            cfg = base.replace(seed=int(seed), data_seed=int(data_seed), lr=float(eta), B=int(B), steps=int(steps))
            sgd = dln.run_dln(cfg.replace(optimizer="sgd"), progress=False)
            alpha_meas = float(np.nanmean(np.asarray(sgd["tail_alpha"])[1:]))  # steps after the start
            models = {"SGD": sgd, "Gaussian SDE": dln.run_dln(cfg.replace(optimizer="sde_gaussian"), progress=False),
                      f"α-stable SDE, α = {alpha:g}": dln.run_dln(cfg.replace(optimizer="sde_stable", alpha=alpha,
                                                                             divergence="drop"), progress=False)}
            if measured_alpha_lr is not None and eta == measured_alpha_lr:
                models["α-stable SDE, measured α"] = dln.run_dln(
                    cfg.replace(optimizer="sde_stable", alpha=min(alpha_meas, 2.0), divergence="drop"), progress=False)
            for name, r in models.items():
                summ = dln.summarize(r["escape_times"])
                rows.append({"eta": float(eta), "B": int(B), "seed": int(seed), "model": name,
                             "alpha": alpha_meas if "measured" in name else None,
                             "retired": int(np.sum(r["diverged"])), "in_order": float(np.mean(r["in_order"])),
                             "escape_mean": _finite_or_none(summ["mean"]), "escape_se": _finite_or_none(summ["se"])})
                if name != "SGD":
                    for quantity, key in (("escape time", "escape_times"), ("final strength", "final_mode_strengths")):
                        ks = dln.compare_to_sgd(np.asarray(sgd[key]), np.asarray(r[key]))["ks"]
                        for i, v in enumerate(ks):
                            dists.append({"eta": float(eta), "seed": int(seed), "quantity": quantity, "model": name,
                                          "mode": i + 1, "ks": float(v) if np.isfinite(v) else None})
    return {"rows": rows, "dists": dists}


def tms_noise_sweep(*, sparsities, seeds, settings=None, device: str = "cpu") -> dict:
    """:func:`superposition.phase_diagram` of the default noise sweep (``settings``: the names to keep, all
    by default) at ``sparsities`` and ``seeds``; per-run labels, features represented and final losses
    (``None`` where a run diverged) in ``runs``."""
    all_settings = tms.noise_settings(tms.NOISE_BASE.replace(device=device), **tms.NOISE_SWEEP)
    chosen = {k: v for k, v in all_settings.items() if settings is None or k in settings}
    if settings is not None and len(chosen) != len(settings):
        raise ValueError(f"settings={settings!r}: the sweep's settings are {list(all_settings)}")
    d = tms.phase_diagram(tms.NOISE_BASE.replace(device=device), chosen, sparsities, seeds, progress=False,
                          threads=None)
    runs = {name: {"labels": [str(x) for x in r["labels"]],
                   "n_represented": [int(x) for x in np.asarray(r["n_represented"]).ravel()],
                   "final_loss": _finite_or_none(np.asarray(r["loss"])[:, -1])}
            for name, r in d["runs"].items()}
    cells = [{**c, "final_loss": c["final_loss"] if np.isfinite(c["final_loss"]) else None} for c in d["cells"]]
    return {"sparsities": d["sparsities"], "settings": d["settings"], "seeds": d["seeds"], "n_seeds": d["n_seeds"],
            "cells": cells, "runs": runs}


def represented_by_cell(sweep: dict) -> dict:
    """``{(sparsity, setting): array}`` of the number of features represented by each seed's run (a diverged
    run counts as 0: it represents none)."""
    K, out = int(sweep["n_seeds"]), {}
    for name in sweep["settings"]:
        n = np.asarray(sweep["runs"][name]["n_represented"], dtype=float)
        for j, S in enumerate(sweep["sparsities"]):
            out[(float(S), name)] = n[j * K:(j + 1) * K]
    return out


def dln_ks_by_model(result: dict, *, models=None) -> dict:
    """Mean KS distance to SGD per model, over every (setting, seed, quantity, mode) of a ``ch5_dln_sdes``
    result: the number chapter 5's text and its ledger row both state (issue 15: one source)."""
    dists = result["dists"]
    names = models if models is not None else list(dict.fromkeys(d["model"] for d in dists))
    out = {}
    for name in names:
        ks = [float(d["ks"]) for d in dists if d["model"] == name]
        if not ks:
            raise ValueError(f"model {name!r} is not in the result; its models are "
                             f"{sorted({d['model'] for d in dists})}")
        out[name] = float(np.mean(ks))
    return out


def holm(pvalues, level: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which of the hypotheses are rejected at family-wise level ``level``."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or not np.all(np.isfinite(p)):
        raise ValueError(f"pvalues={pvalues!r}; expected a 1-D sequence of numbers in [0, 1]")
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; expected a number in (0, 1)")
    reject = [False] * len(p)
    for rank, k in enumerate(np.argsort(p, kind="stable")):
        if p[k] > level / (len(p) - rank):
            break
        reject[int(k)] = True
    return reject


# The geometries gradient descent reaches at the two ends of the sparsity range and just before its end,
# where chapter 5 asks whether strong noise ends runs elsewhere.
PHASE_TARGETS = ((0.0, "2 orthogonal"), (0.9, "pentagon"), (0.95, "pentagon"))


def noise_phase_tests(diagram: dict, *, noisy: tuple = ("sgd B=4", "gd_gaussian B=4"), reference: str = "gd",
                      targets=PHASE_TARGETS, level: float = 0.05) -> list[dict]:
    """Chapter 5's comparison of strong noise with gradient descent: for each noisy setting and each
    (sparsity, geometry) target, an exact paired sign test over the seeds
    (:func:`superposition.paired_sign_test`), read with Holm's correction over all of them at family-wise
    ``level``. One dict per test: ``noise``, ``S``, ``geometry``, the two fractions of seeds reaching it,
    ``a_only``/``b_only``/``p`` and ``resolved``."""
    frac = {(c["sparsity"], c["setting"]): c["fractions"] for c in diagram["cells"]}
    rows = [{"noise": other, "S": float(S), "geometry": geom,
             "fraction, GD": frac[(S, reference)].get(geom, 0.0), "fraction, with noise": frac[(S, other)].get(geom, 0.0),
             **tms.paired_sign_test(diagram, reference, other, S, geom)}
            for other in noisy for S, geom in targets]
    for row, ok in zip(rows, holm([r["p"] for r in rows], level)):
        row["resolved"] = ok
    return rows


_MODULES = (sys.modules[__name__], dln, tms)
EXPERIMENTS = (
    fullscale.Experiment(
        name="ch5_dln_sdes", compute=dln_sde_comparison,
        full={"settings": [[0.05, 2, 300], [0.1, 4, 150]], "seeds": [0, 1, 2], "data_seed": 0, "alpha": 1.8,
              "measured_alpha_lr": 0.05},
        # seed 0 of the first setting again: a seed fixes the shared initialisation, which moves the escape times
        # by more than the chains' noise, so only the same seed can be compared through the chains' SEs
        reduced={"settings": [[0.05, 2, 300]], "seeds": [0], "data_seed": 0, "alpha": 1.8,
                 "measured_alpha_lr": None},
        description="chapter 5: depth-2 linear network, SGD against its Gaussian and α-stable SDEs (escape times)",
        modules=_MODULES),
    fullscale.Experiment(
        name="ch5_tms_noise", compute=tms_noise_sweep,
        full={"sparsities": list(tms.DEFAULT_SPARSITIES), "seeds": list(tms.NOISE_SEEDS), "settings": None},
        reduced={"sparsities": [0.0, 0.95], "seeds": list(range(100, 108)), "settings": ["gd", "sgd B=4"]},
        description="chapter 5: superposition noise sweep, geometry per (sparsity, setting, seed)",
        modules=_MODULES),
)
