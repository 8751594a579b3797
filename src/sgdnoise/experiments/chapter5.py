"""Chapter 5's two long experiments as full-scale experiments (see :mod:`sgdnoise.experiments.fullscale`).

* ``ch5_dln_sweep``: the pre-registered saddle-to-saddle sweep: deep linear networks of depth 2 and 3 with
  label noise, trained by gradient descent, SGD, the Gaussian SDE and bulk-matched α-stable SDEs at five noise
  levels on two data sets; escape times with diverging chains censored, and where the runs end.
* ``ch5_tms_noise``: the superposition noise sweep, the geometry reached by each seed in every
  (sparsity, optimiser setting) cell (the first, exploratory edition: two noise levels, no quench).
* ``ch5_tms_threshold``: the pre-registered threshold sweep: eight levels of η/B for SGD, Gaussian noise of
  SGD's covariance and bulk-matched sub-Gaussian α-stable noise, four sparsities, 32 seeds, each run
  quenched before its geometry is labelled.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from . import deep_linear as dln, fullscale, superposition as tms

__all__ = ["dln_sweep", "dln_sweep_models", "dln_sweep_base", "dln_events", "dln_runs", "dln_shift_table",
           "dln_model_tests", "dln_closer_tests", "DLN_SWEEP", "DLN_BALANCE", "dln_balance_problem",
           "dln_matrix_balance", "dln_balance_rates", "dln_balance_limit", "tms_noise_sweep", "represented_by_cell", "represented_agreement", "holm",
           "noise_phase_tests", "PHASE_TARGETS", "TMS_THRESHOLD", "threshold_settings", "tms_threshold_sweep",
           "TMS_CAPPED", "tms_capped_sweep", "cell_outcomes", "censored_sign_test", "sign_test_power", "threshold_tests", "level_tests", "threshold_onsets", "kind_tests", "EXPERIMENTS"]


def _finite_or_none(values):
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=float).ravel()]


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


def represented_agreement(full: dict, live: dict, *, alpha: float = 0.01) -> "fullscale.Agreement":
    """A committed sweep against its live reduced rerun: for every (sparsity, setting) cell of ``live``, the
    rank test of :func:`~sgdnoise.experiments.fullscale.sample_agreement` on the features represented per seed
    (:func:`represented_by_cell`), Bonferroni over the cells at family-wise ``alpha``."""
    full_rep, live_rep = represented_by_cell(full), represented_by_cell(live)
    return fullscale.sample_agreement([full_rep[k] for k in live_rep], list(live_rep.values()),
                                      labels=[f"S = {S}, {name}" for S, name in live_rep], alpha=alpha)


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


# ----------------------------------------------------------------------------- the superposition threshold sweep
#: The pre-registered sweep of chapter 5 (issue 18): batch sizes from weak to strong noise at η = 0.3 (η/B from
#: 0.0047 to 0.3, denser where an eight-seed pilot on seeds 1000-1007 showed the geometry changing), three
#: kinds of noise, four sparsities, 32 seeds, every run quenched by 1000 gradient-descent steps before labelling.
TMS_THRESHOLD = {"sparsities": [0.0, 0.8, 0.9, 0.95], "seeds": list(range(32)), "batch_sizes": [64, 16, 8, 6, 4, 3, 2, 1],
                 "kinds": ["sgd", "gaussian", "stable"], "alpha": 1.5, "eta": 0.3, "horizon": 900.0,
                 "quench_steps": 1000}
_KIND_OPTIMIZER = {"sgd": "sgd", "gaussian": "gd_gaussian", "stable": "gd_stable"}


def threshold_settings(*, batch_sizes, kinds, alpha: float, eta: float, horizon: float) -> dict:
    """The settings of the threshold sweep: ``"gd"`` and ``"<kind> B=<B>"`` for every kind and batch size, as
    changes of a :class:`~sgdnoise.experiments.superposition.TMSConfig` (``alpha`` only for the stable kind)."""
    unknown = [k for k in kinds if k not in _KIND_OPTIMIZER]
    if unknown or not kinds:
        raise ValueError(f"kinds={list(kinds)!r}; valid kinds are {list(_KIND_OPTIMIZER)}")
    steps = int(round(horizon / eta))
    out = {"gd": {"optimizer": "gd", "lr": eta, "steps": steps}}
    for kind in kinds:
        for B in batch_sizes:
            out[f"{kind} B={int(B)}"] = {"optimizer": _KIND_OPTIMIZER[kind], "lr": eta, "steps": steps, "B": int(B),
                                         **({"alpha": alpha} if kind == "stable" else {})}
    return out


def tms_threshold_sweep(*, sparsities, seeds, batch_sizes, kinds, alpha: float, eta: float, horizon: float,
                        quench_steps: int, device: str = "cpu") -> dict:
    """The superposition threshold sweep: every setting of :func:`threshold_settings` at every sparsity and
    seed (a seed fixes the data and the initialisation in every setting), each run quenched by
    ``quench_steps`` gradient-descent steps. Per setting in ``runs``: ``labels`` and ``labels_before_quench``,
    ``n_represented`` (after the quench), ``censored`` (the run diverged: its outcome is unknown),
    ``dimensionality`` (``D_i`` per feature, zeros where censored), ``W`` (the final ``(m, n)`` weights, five
    decimals; zeros where censored) and ``final_loss`` (``None`` where censored);
    runs are sparsity-major, as in :func:`~sgdnoise.experiments.superposition.phase_diagram`."""
    base = tms.NOISE_BASE.replace(device=device, quench_steps=quench_steps)
    settings = threshold_settings(batch_sizes=batch_sizes, kinds=kinds, alpha=alpha, eta=eta, horizon=horizon)
    d = tms.phase_diagram(base, settings, sparsities, seeds, progress=False, threads=None)
    return {**_sweep_record(d), "batch_sizes": [int(B) for B in batch_sizes], "kinds": list(kinds), "eta": float(eta),
            "alpha": float(alpha)}


def _sweep_record(d: dict) -> dict:
    """A :func:`~sgdnoise.experiments.superposition.phase_diagram` as plain data: per setting the labels (after
    and before the quench), features represented, censoring flags, ``D_i``, final weights and losses."""
    runs = {}
    for name, r in d["runs"].items():
        cens = [int(x) >= 0 for x in r["diverged_at"]]
        dims = np.where(np.asarray(cens)[:, None], 0.0, np.nan_to_num(np.asarray(r["dimensionality"], dtype=float)))
        runs[name] = {"labels": [str(x) for x in r["labels"]],
                      "labels_before_quench": [str(x) for x in r["labels_before_quench"]],
                      "n_represented": [int(x) for x in np.asarray(r["n_represented"]).ravel()],
                      "censored": cens, "dimensionality": np.round(dims, 6).tolist(),
                      "W": np.round(np.asarray(r["W"], dtype=float), 5).tolist(),
                      "final_loss": _finite_or_none(np.asarray(r["final_loss"]))}
    cells = [{**c, "final_loss": c["final_loss"] if np.isfinite(c["final_loss"]) else None} for c in d["cells"]]
    return {"sparsities": d["sparsities"], "seeds": d["seeds"], "n_seeds": d["n_seeds"], "settings": d["settings"],
            "cells": cells, "runs": runs}


#: Chapter 5's exploratory control, designed after the threshold sweep was seen: the α-stable noise with its
#: radial factor √A capped at its 0.9- or 0.99-quantile (the rare large kicks cut, the rest unchanged), at three
#: levels and the three sparse settings, on the threshold sweep's seeds. A run draws exactly the randomness of
#: the uncapped run of the same seed, so the two are paired kick by kick.
TMS_CAPPED = {"sparsities": [0.8, 0.9, 0.95], "seeds": list(range(32)), "batch_sizes": [64, 16, 4], "caps": [0.9, 0.99],
              "alpha": 1.5, "eta": 0.3, "horizon": 900.0, "quench_steps": 1000}


def tms_capped_sweep(*, sparsities, seeds, batch_sizes, caps, alpha: float, eta: float, horizon: float,
                     quench_steps: int, device: str = "cpu") -> dict:
    """The capped α-stable control: ``"stable cap=<q> B=<B>"`` settings (``gd_stable`` with ``stable_cap = q``)
    at every sparsity and seed, recorded as :func:`tms_threshold_sweep` records its runs."""
    base = tms.NOISE_BASE.replace(device=device, quench_steps=quench_steps)
    steps = int(round(horizon / eta))
    settings = {f"stable cap={q:g} B={int(B)}": {"optimizer": "gd_stable", "lr": eta, "steps": steps, "B": int(B),
                                                 "alpha": alpha, "stable_cap": float(q)}
                for q in caps for B in batch_sizes}
    d = tms.phase_diagram(base, settings, sparsities, seeds, progress=False, threads=None)
    return {**_sweep_record(d), "batch_sizes": [int(B) for B in batch_sizes], "caps": [float(q) for q in caps],
            "eta": float(eta), "alpha": float(alpha)}


def cell_outcomes(result: dict, name: str, S: float) -> tuple[np.ndarray, np.ndarray]:
    """Features represented and the censoring flags of setting ``name`` at sparsity ``S``, one per seed."""
    sparsities = [float(x) for x in result["sparsities"]]
    if name not in result["runs"]:
        raise ValueError(f"setting {name!r} is not in the sweep; its settings are {list(result['runs'])}")
    if float(S) not in sparsities:
        raise ValueError(f"sparsity={S!r} is not in the sweep; its sparsities are {sparsities}")
    j, K = sparsities.index(float(S)), int(result["n_seeds"])
    r = result["runs"][name]
    return (np.asarray(r["n_represented"], dtype=float)[j * K:(j + 1) * K],
            np.asarray(r["censored"], dtype=bool)[j * K:(j + 1) * K])


def censored_sign_test(k_ref, cens_ref, k_other, cens_other) -> dict:
    """Exact two-sided sign test of paired counts (``k_other − k_ref`` per seed), conservative under censoring.

    Pairs where neither run is censored give ``fewer`` / ``more`` / ``ties``. A pair with a censored run has an
    unknown sign: the p-value is the *largest* over every way of counting the ``censored`` pairs as fewer,
    tied or more, so a difference is resolved only if it holds whatever the diverged runs would have done.
    Returns ``fewer``, ``more``, ``ties``, ``censored`` and ``p``."""
    from scipy import stats

    k_ref, k_other = np.asarray(k_ref, dtype=float), np.asarray(k_other, dtype=float)
    c_ref, c_other = np.asarray(cens_ref, dtype=bool), np.asarray(cens_other, dtype=bool)
    if not (k_ref.shape == k_other.shape == c_ref.shape == c_other.shape) or k_ref.ndim != 1:
        raise ValueError(f"censored_sign_test needs four 1-D arrays of one length; got {k_ref.shape}, "
                         f"{np.shape(cens_ref)}, {k_other.shape}, {np.shape(cens_other)}")
    c = c_ref | c_other
    d = (k_other - k_ref)[~c]
    fewer, more, ties, n_c = int((d < 0).sum()), int((d > 0).sum()), int((d == 0).sum()), int(c.sum())

    def p(f, m):
        return float(stats.binomtest(f, f + m, 0.5).pvalue) if f + m else 1.0

    worst = max(p(fewer + a, more + b) for a in range(n_c + 1) for b in range(n_c + 1 - a))
    return {"fewer": fewer, "more": more, "ties": ties, "censored": n_c, "p": worst}


def sign_test_power(n: int, fewer: float, more: float, alpha: float) -> float:
    """Power of the exact two-sided sign test at level ``alpha`` over ``n`` seeds when, independently per seed,
    the noisy run represents fewer features than gradient descent with probability ``fewer``, more with
    probability ``more``, and the same number otherwise: the sum over every outcome ``(f, m)`` of its
    multinomial probability where the test rejects (exact, no simulation)."""
    from math import comb

    from scipy import stats

    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n={n!r} must be an int >= 1 (seeds)")
    if not (0 <= fewer and 0 <= more and fewer + more <= 1):
        raise ValueError(f"fewer={fewer!r} and more={more!r} must be probabilities with fewer + more <= 1")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    tie = 1.0 - fewer - more
    power = 0.0
    for f in range(n + 1):
        for m in range(n + 1 - f):
            if f + m and stats.binomtest(f, f + m, 0.5).pvalue <= alpha:
                power += comb(n, f) * comb(n - f, m) * fewer**f * more**m * tie ** (n - f - m)
    return float(power)


def threshold_tests(result: dict, *, level: float = 0.05) -> list[dict]:
    """The pre-registered threshold analysis of :func:`tms_threshold_sweep`.

    One family per (sparsity, kind of noise). Within a family the noise levels are tested against gradient
    descent from the strongest down (:func:`censored_sign_test` on the features represented, paired by seed),
    each at ``level / F`` (``F`` families: Bonferroni across them), stopping at the first level that is not
    resolved (a fixed-sequence procedure: no further correction inside a family). The *onset* of a family is
    the weakest noise level resolved. One dict per test run: ``S``, ``kind``, ``B``, ``eta_over_B``, the counts
    and ``p`` of the test, ``alpha`` (the level it was held to) and ``resolved``."""
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}; expected a number in (0, 1)")
    Bs = sorted(int(B) for B in result["batch_sizes"])  # strongest noise (smallest B) first
    fams = [(float(S), kind) for S in result["sparsities"] for kind in result["kinds"]]
    a = level / len(fams)
    rows = []
    for S, kind in fams:
        k0, c0 = cell_outcomes(result, "gd", S)
        for B in Bs:
            k1, c1 = cell_outcomes(result, f"{kind} B={B}", S)
            t = censored_sign_test(k0, c0, k1, c1)
            ok = t["p"] <= a
            rows.append({"S": S, "kind": kind, "B": int(B), "eta_over_B": result["eta"] / B, **t, "alpha": a,
                         "resolved": ok})
            if not ok:
                break
    return rows


def level_tests(result: dict, *, level: float = 0.05) -> list[dict]:
    """Every noise level of every (sparsity, kind) against gradient descent (:func:`censored_sign_test`), with
    Holm's correction over all of them at family-wise ``level``: the analysis chapter 5 added *after* seeing
    that divergences at the strongest noise stop the fixed sequence of :func:`threshold_tests` (exploratory).
    Rows as in :func:`threshold_tests`, without ``alpha``."""
    rows = []
    for S in result["sparsities"]:
        for kind in result["kinds"]:
            k0, c0 = cell_outcomes(result, "gd", S)
            for B in sorted(int(B) for B in result["batch_sizes"]):
                k1, c1 = cell_outcomes(result, f"{kind} B={B}", S)
                rows.append({"S": float(S), "kind": kind, "B": B, "eta_over_B": result["eta"] / B,
                             **censored_sign_test(k0, c0, k1, c1)})
    for row, ok in zip(rows, holm([r["p"] for r in rows], level)):
        row["resolved"] = ok
    return rows


def threshold_onsets(rows: list[dict]) -> dict:
    """``{(S, kind): the weakest η/B resolved (None if none)}`` from :func:`threshold_tests`."""
    out: dict = {}
    for r in rows:
        key = (r["S"], r["kind"])
        out.setdefault(key, None)
        if r["resolved"]:
            out[key] = r["eta_over_B"]
    return out


def kind_tests(result: dict, *, reference: str = "sgd", others=None, level: float = 0.05) -> list[dict]:
    """The ``reference`` kind of noise (SGD's by default) against each of ``others`` (every other kind by default)
    at the same (sparsity, η/B): :func:`censored_sign_test` on the features represented, paired by seed
    (``fewer``: the other kind keeps fewer), with Holm's correction over all of them at family-wise ``level``."""
    others = [k for k in result["kinds"] if k != reference] if others is None else list(others)
    if reference not in result["kinds"] or not others or any(k not in result["kinds"] or k == reference for k in others):
        raise ValueError(f"reference={reference!r} and others={others!r} must be distinct kinds of {result['kinds']}")
    rows = []
    for S in result["sparsities"]:
        for B in sorted(int(B) for B in result["batch_sizes"]):
            k0, c0 = cell_outcomes(result, f"{reference} B={B}", S)
            for kind in others:
                k1, c1 = cell_outcomes(result, f"{kind} B={B}", S)
                rows.append({"S": float(S), "kind": kind, "B": int(B), "eta_over_B": result["eta"] / B,
                             **censored_sign_test(k0, c0, k1, c1)})
    for row, ok in zip(rows, holm([r["p"] for r in rows], level)):
        row["resolved"] = ok
    return rows


#: The saddle-to-saddle sweep (registered before it ran): depth 2 from scale 1e-3 and depth 3 from 0.1, label noise 0.5,
#: η = 0.05 and five batch sizes (η/B from 0.05 to 0.003), two data sets (each with its own shared start), 64 chains;
#: SGD, the Gaussian SDE and sub-Gaussian α-stable SDEs matched in bulk (α = 1.5, 1.8, 1.95), all SDEs at dt = η/20.
DLN_SWEEP = {"depths": [2, 3], "batch_sizes": [1, 2, 4, 8, 16], "data_seeds": [0, 1], "alphas": [1.5, 1.8, 1.95],
             "chains": 64, "lr": 0.05, "label_noise": 0.5, "substeps": 20, "steps": 300, "models": None}
DLN_INIT_SCALE = {2: 1e-3, 3: 0.1}  # depth 3 from 0.1: its plateaus grow like a0^(-1/3)


def dln_sweep_models(alphas, lr: float) -> dict:
    """The noisy models of the sweep: name -> the :class:`~sgdnoise.experiments.deep_linear.DLNConfig` fields."""
    out = {"SGD": {"optimizer": "sgd"}, "Gaussian SDE": {"optimizer": "sde_gaussian"}}
    for a in alphas:
        out[f"α-stable SDE, α = {a:g}"] = {"optimizer": "sde_stable", "alpha": float(a), "stable_driver": "sub_gaussian",
                                         "noise_scale": dln.bulk_matched_scale(float(a), lr)}
    return out


def dln_sweep_base(depth: int, data_seed: int, *, chains: int, lr: float, label_noise: float, substeps: int, steps: int,
                   device: str = "cpu") -> "dln.DLNConfig":
    """One (depth, data set) of the sweep: every model shares this start (``seed = data_seed``)."""
    return dln.DEFAULT.replace(depth=int(depth), init_scale=DLN_INIT_SCALE[int(depth)], label_noise=float(label_noise),
                               lr=float(lr), steps=int(steps), chains=int(chains), seed=int(data_seed),
                               data_seed=int(data_seed), sde_substeps=int(substeps), tail_steps=(), device=device)


def _dln_record(r: dict, **keys) -> dict:
    geom_end = {k: np.asarray(r[k])[-1] for k in ("hessian_trace", "imbalance", "layer_norms")}
    return {**keys, "escape": [_finite_or_none(row) for row in np.asarray(r["escape_times"])],
            "censor": [float(x) for x in r["censor_times"]], "in_order": [bool(x) for x in r["in_order"]],
            "hessian_trace": _finite_or_none(geom_end["hessian_trace"]),
            "imbalance": [_finite_or_none(row) for row in geom_end["imbalance"]],
            "layer_norms": [_finite_or_none(row) for row in geom_end["layer_norms"]], "wall_s": float(r["wall_time_s"])}


def dln_sweep(*, depths, batch_sizes, data_seeds, alphas, chains: int, lr: float, label_noise: float, substeps: int,
              steps: int, models=None, device: str = "cpu") -> dict:
    """Gradient descent (one chain: every chain starts at the same point) and each noisy model of
    :func:`dln_sweep_models` (``models``: the names to run, all by default) at every batch size, depth and data set.
    Diverging chains are censored (``divergence="censor"``). One record per run: per chain the escape times
    (``None``: not reached), the censoring time (the divergence, or the horizon), whether the modes were learned in
    order, and the final Hessian trace, imbalances and layer norms (``None`` for a diverged chain)."""
    names = dln_sweep_models(alphas, lr)
    if models is not None:
        unknown = [m for m in models if m not in names]
        if unknown:
            raise ValueError(f"models={models!r}: unknown {unknown}; the sweep's models are {list(names)}")
        names = {k: v for k, v in names.items() if k in models}
    kw = dict(chains=chains, lr=lr, label_noise=label_noise, substeps=substeps, steps=steps, device=device)
    runs, first = [], None
    for ds in data_seeds:
        for depth in depths:
            base = dln_sweep_base(depth, ds, **kw)
            first = first or base
            gd = dln.run_dln(base.replace(optimizer="gd", chains=1), progress=False)
            runs.append(_dln_record(gd, data_seed=int(ds), depth=int(depth), B=None, model="GD"))
            for B in batch_sizes:
                for name, fields in names.items():
                    r = dln.run_dln(base.replace(B=int(B), divergence="censor", **fields), progress=False)
                    runs.append(_dln_record(r, data_seed=int(ds), depth=int(depth), B=int(B), model=name))
    return {"runs": runs, "horizon": float(steps * lr), "singular_values": list(first.singular_values),
            "models": ["GD", *names]}


def dln_events(run: dict, mode: int, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """One run's escapes of ``mode`` (0-based) as censored data: ``(times, observed)``; a chain that never escaped is
    censored at the time it diverged or at the horizon."""
    esc = np.array([np.nan if row[mode] is None else row[mode] for row in run["escape"]], dtype=float)
    observed = np.isfinite(esc) & (esc <= horizon)
    return np.where(observed, esc, np.minimum(np.asarray(run["censor"], dtype=float), horizon)), observed


def dln_runs(result: dict) -> dict:
    """``{(data_seed, depth, B, model): run}`` (gradient descent's key has ``B = None``)."""
    return {(r["data_seed"], r["depth"], r["B"], r["model"]): r for r in result["runs"]}


def dln_shift_table(result: dict, *, level: float = 0.05) -> list[dict]:
    """Each noisy run's escape-time shift against gradient descent, per mode: the restricted mean escape time up to
    the horizon (:func:`sgdnoise.survival.rmst`, censored chains included) minus gradient descent's (deterministic:
    one shared start), with its SE, 95% interval and z. ``resolved`` (SGD only: the pre-registered family) is
    Bonferroni over SGD's shifts at family-wise ``level``."""
    from scipy import stats

    from ..survival import rmst

    T, runs, rows = result["horizon"], dln_runs(result), []
    for (ds, depth, B, model), run in runs.items():
        if model == "GD":
            continue
        gd = runs[(ds, depth, None, "GD")]
        for mode in range(len(result["singular_values"])):
            t, o = dln_events(run, mode, T)
            est, se = rmst(t, o, T)
            t_gd = gd["escape"][0][mode]
            ref = T if t_gd is None else min(t_gd, T)
            shift = est - ref
            rows.append({"data_seed": ds, "depth": depth, "B": B, "model": model, "mode": mode + 1, "gd": ref,
                         "rmst": est, "shift": shift, "se": se, "ci_low": shift - 1.96 * se, "ci_high": shift + 1.96 * se,
                         "z": shift / se if se > 0 else (0.0 if shift == 0 else math.copysign(math.inf, shift)),
                         "diverged": int(np.sum(np.asarray(run["censor"]) < T)), "chains": len(run["censor"])})
    sgd = [r for r in rows if r["model"] == "SGD"]
    z_crit = float(stats.norm.isf(level / (2 * max(len(sgd), 1))))
    for r in rows:
        r["resolved"] = bool(abs(r["z"]) > z_crit) if r["model"] == "SGD" else None
    return rows


def dln_model_tests(result: dict, *, reps: int = 199, seed: int = 0, level: float = 0.05,
                    tests: bool = True) -> list[dict]:
    """Each SDE against SGD, per (data set, depth, B, mode): the log-rank test of the two escape-time samples
    (censored chains included; ``scipy.stats.logrank``) and the Kaplan–Meier distance with its permutation null
    (:func:`sgdnoise.survival.km_permutation_test`, ``reps`` relabellings from ``seed``). ``different`` is the log-rank
    test under Holm's correction over all rows at family-wise ``level``. With ``tests=False`` only the distances
    (what :func:`dln_closer_tests` reads), without the tests and nulls."""
    from scipy import stats

    from ..survival import km_distance, km_permutation_test

    T, runs, rows = result["horizon"], dln_runs(result), []
    rng = np.random.default_rng(seed)
    for (ds, depth, B, model), run in runs.items():
        if model in ("GD", "SGD"):
            continue
        sgd = runs[(ds, depth, B, "SGD")]
        for mode in range(len(result["singular_values"])):
            t1, o1 = dln_events(sgd, mode, T)
            t2, o2 = dln_events(run, mode, T)
            if not tests:
                rows.append({"data_seed": ds, "depth": depth, "B": B, "model": model, "mode": mode + 1,
                             "km_distance": km_distance(t1, o1, t2, o2, T)})
                continue
            if o1.any() or o2.any():
                lr_p = float(stats.logrank(stats.CensoredData(uncensored=t1[o1], right=t1[~o1]),
                                           stats.CensoredData(uncensored=t2[o2], right=t2[~o2])).pvalue)
            else:
                lr_p = 1.0  # no escapes on either side: nothing to tell apart
            perm = km_permutation_test(t1, o1, t2, o2, T, reps=reps, rng=rng)
            rows.append({"data_seed": ds, "depth": depth, "B": B, "model": model, "mode": mode + 1,
                         "logrank_p": lr_p, "km_distance": perm["distance"], "null_95": perm["null_95"],
                         "perm_p": perm["p"]})
    if tests:
        for r, ok in zip(rows, holm([r["logrank_p"] for r in rows], level)):
            r["different"] = ok
    return rows


def dln_closer_tests(model_rows: list[dict], alphas, *, reference: str = "Gaussian SDE", level: float = 0.05) -> list[dict]:
    """The pre-registered test of H1: per (data set, depth, B) the mode-averaged Kaplan–Meier distance to SGD of
    the Gaussian SDE and of each α-stable SDE; the exact two-sided sign test of "α-stable closer" against
    "Gaussian closer" over these units, Bonferroni over the ``alphas`` at family-wise ``level``."""
    from scipy import stats

    units: dict = {}
    for r in model_rows:
        units.setdefault((r["data_seed"], r["depth"], r["B"]), {}).setdefault(r["model"], []).append(r["km_distance"])
    out = []
    for a in alphas:
        name = f"α-stable SDE, α = {a:g}"
        diff = [np.mean(m[name]) - np.mean(m[reference]) for m in units.values() if name in m and reference in m]
        closer, farther = int(np.sum(np.asarray(diff) < 0)), int(np.sum(np.asarray(diff) > 0))
        p = float(stats.binomtest(closer, closer + farther, 0.5).pvalue) if closer + farther else 1.0
        out.append({"model": name, "units": len(diff), "stable closer": closer, "Gaussian closer": farther,
                    "p": p, "resolved": p < level / len(alphas),
                    "median difference": float(np.median(diff)) if diff else math.nan})
    return out


#: Matrix balancing (registered before it ran): a depth-2 network at a minimum far from balance on the Walsh design
#: (balance.walsh_regression: there the Gaussian SDE's Itô term is exactly -(ηV/B) D on the set of minima), full-rank
#: teacher, η = 0.05, three noise levels, each run for the time 1/(ηV/B); SGD, the Gaussian SDE and the bulk-matched
#: sub-Gaussian α-stable SDEs, both SDEs at dt = η/5.
DLN_BALANCE = {"batch_sizes": [2, 4, 8], "alphas": [1.5, 1.8, 1.95], "chains": 32, "lr": 0.05, "label_noise": 0.5,
               "singular_values": [4.0, 2.0, 1.0, 1.0, 1.0, 1.0], "substeps": 5, "records": 41, "seed": 1, "models": None}


def dln_balance_problem(singular_values, label_noise: float, seed: int):
    """The matrix-balancing problem: ``(cfg, problem, theta0, V, M)``. The teacher ``M`` (``k = 6``) from ``seed``,
    the Walsh data (``balance.walsh_regression``, ``n = 64``), and a minimum far from balance: ``W_1 = 2Q`` for a
    random rotation ``Q`` and ``W_2 = M Qᵀ/2`` (so ``W_2 W_1 = M``); ``V = k σ²`` is every sample's squared residual."""
    from .. import balance as bal

    cfg = dln.DEFAULT.replace(singular_values=tuple(float(s) for s in singular_values), label_noise=float(label_noise),
                              n=64, seed=int(seed), data_seed=int(seed), tail_steps=())
    U, s, V = dln.teacher(cfg)
    M = U @ torch.diag(s) @ V.T
    X, Y = bal.walsh_regression(M, label_noise=label_noise)
    problem = dln.make_problem(cfg, dln.DLNData(U=U, s=s, V=V, X=X, Y=Y))
    Q = dln._orthogonal(cfg.k, cfg.k, torch.Generator().manual_seed(int(seed) + 7))
    theta0 = torch.cat([(2.0 * Q).reshape(-1), (M @ Q.T / 2.0).reshape(-1)])
    return cfg, problem, theta0, cfg.k * float(label_noise) ** 2, M


def dln_matrix_balance(*, batch_sizes, alphas, chains: int, lr: float, label_noise: float, singular_values,
                       substeps: int, records: int, seed: int, models=None, device: str = "cpu") -> dict:
    """From the minimum of :func:`dln_balance_problem`, each model at each batch size for the time ``1/(ηV/B)`` in
    which the Gaussian SDE's imbalance should shrink by ``e``: SGD (:func:`~sgdnoise.sgd.run_chains`), the Gaussian
    SDE and the bulk-matched sub-Gaussian α-stable SDEs (:func:`~sgdnoise.sde.sgd_sde` at ``dt = η/substeps``),
    diverging chains censored. Per run: the times, ``log ‖W_2ᵀW_2 − W_1W_1ᵀ‖_F`` per record and chain (``None`` after
    a divergence), the Hessian's trace and ``‖W_2W_1 − M‖_F²`` at the end."""
    from ..sde import sgd_sde
    from ..sgd import run_chains

    if device != "cpu":
        raise ValueError(f"device={device!r}: dln_matrix_balance runs on the CPU (its problem is tiny)")
    cfg, problem, theta0, V, M = dln_balance_problem(singular_values, label_noise, seed)
    names = dln_sweep_models(alphas, lr)
    if models is not None:
        names = {k: v for k, v in names.items() if k in models}
    out = []
    for B in batch_sizes:
        steps = round(B / (lr * lr * V))  # η · steps = 1 / (ηV/B)
        rec = sorted({int(x) for x in np.linspace(0, steps, records).round()})
        th = theta0.repeat(int(chains), 1)
        for j, (name, fields) in enumerate(names.items()):
            g = torch.Generator().manual_seed(int(seed) * 1000 + 10 * int(B) + j)
            if name == "SGD":
                run = run_chains(problem, th, eta=lr, B=int(B), steps=steps, generator=g, record_steps=rec,
                                 on_divergence="censor")
                thetas, diverged = run.thetas, run.diverged
            else:
                stable = fields["optimizer"] == "sde_stable"
                paths = sgd_sde(problem, th, eta=lr, B=int(B), dt=lr / substeps, steps=steps * substeps, generator=g,
                                record_steps=[r * substeps for r in rec], on_divergence="censor",
                                driver="sub_gaussian_stable" if stable else "gaussian",
                                alpha=fields.get("alpha", 2.0), noise_scale=fields.get("noise_scale", 1.0))
                thetas, diverged = paths.thetas, paths.diverged
            geom = dln.layer_geometry(thetas, cfg)
            W1, W2 = dln.layer_matrices(thetas[-1], cfg)
            out.append({"B": int(B), "model": name, "times": [r * lr for r in rec],
                        "log_imbalance": [_finite_or_none(row) for row in torch.log(geom["imbalance"][..., 0]).numpy()],
                        "diverged": [int(x) for x in diverged], "hessian_trace_end": _finite_or_none(geom["hessian_trace"][-1]),
                        "excess_end": _finite_or_none((W2 @ W1 - M).pow(2).sum((1, 2)))})
    return {"runs": out, "V": V, "lr": float(lr)}


def dln_balance_rates(result: dict) -> list[dict]:
    """Per run: each chain's balancing rate (minus the least-squares slope of its log-imbalance against time, over
    its records before any divergence; at least five), their mean and SE, the number of chains used, and the ratio to
    the leading-order rate ``ηV/B`` with its SE."""
    rows = []
    for run in result["runs"]:
        t = np.asarray(run["times"], dtype=float)
        L = np.array([[np.nan if v is None else v for v in row] for row in run["log_imbalance"]], dtype=float)
        slopes = []
        for c in range(L.shape[1]):
            ok = np.isfinite(L[:, c])
            if ok.sum() >= 5:
                slopes.append(-np.polyfit(t[ok], L[ok, c], 1)[0])
        slopes = np.asarray(slopes)
        pred = result["lr"] * result["V"] / run["B"]
        mean = float(slopes.mean()) if slopes.size else math.nan
        se = float(slopes.std(ddof=1) / math.sqrt(slopes.size)) if slopes.size > 1 else math.nan
        rows.append({"B": run["B"], "η/B": result["lr"] / run["B"], "model": run["model"], "rate": mean, "SE": se,
                     "chains used": int(slopes.size), "diverged": int(np.sum(np.asarray(run["diverged"]) >= 0)),
                     "predicted": pred, "ratio": mean / pred, "ratio SE": se / pred})
    return rows


def dln_balance_limit(rows: list[dict], model: str) -> dict:
    """The pre-registered extrapolation: weighted least squares of ``ratio = c_0 + c_1 η/B`` over the levels of
    ``model``; ``intercept``, its ``SE`` and ``z = (intercept − 1)/SE`` (the leading-order law says ``c_0 = 1``)."""
    sub = [r for r in rows if r["model"] == model and np.isfinite(r["ratio"]) and r["ratio SE"] > 0]
    if len(sub) < 3:
        raise ValueError(f"dln_balance_limit needs three levels with a finite rate for {model!r}; got {len(sub)}")
    x = np.array([r["η/B"] for r in sub])
    y = np.array([r["ratio"] for r in sub])
    w = 1 / np.array([r["ratio SE"] for r in sub]) ** 2
    A = np.stack([np.ones_like(x), x], axis=1)
    cov = np.linalg.inv(A.T @ (w[:, None] * A))
    c = cov @ A.T @ (w * y)
    return {"model": model, "intercept": float(c[0]), "SE": float(math.sqrt(cov[0, 0])), "slope": float(c[1]),
            "z": float((c[0] - 1) / math.sqrt(cov[0, 0]))}


_MODULES = (sys.modules[__name__], dln, tms)
EXPERIMENTS = (
    fullscale.Experiment(
        name="ch5_dln_sweep", compute=dln_sweep, full=dict(DLN_SWEEP),
        # the same data set and start as the committed runs (a start moves the escape times by more than the
        # chains' noise), at one depth and level: a reproduction check of the file
        reduced={**DLN_SWEEP, "depths": [2], "batch_sizes": [4], "data_seeds": [0], "models": ["SGD", "Gaussian SDE"]},
        description="chapter 5: deep linear networks with label noise, escape times under SGD and its SDEs at five "
                    "noise levels and two depths, diverging chains censored",
        modules=_MODULES),
    fullscale.Experiment(
        name="ch5_dln_balance", compute=dln_matrix_balance, full=dict(DLN_BALANCE),
        # the strongest level, SGD and the Gaussian SDE, same seeds: a reproduction check of the file
        reduced={**DLN_BALANCE, "batch_sizes": [2], "models": ["SGD", "Gaussian SDE"]},
        description="chapter 5: a depth-2 matrix network with label noise balancing on its set of minima, SGD and "
                    "its SDEs at three noise levels",
        modules=_MODULES),
    fullscale.Experiment(
        name="ch5_tms_noise", compute=tms_noise_sweep,
        full={"sparsities": list(tms.DEFAULT_SPARSITIES), "seeds": list(tms.NOISE_SEEDS), "settings": None},
        reduced={"sparsities": [0.0, 0.95], "seeds": list(range(100, 108)), "settings": ["gd", "sgd B=4"]},
        description="chapter 5: superposition noise sweep, geometry per (sparsity, setting, seed)",
        modules=_MODULES),
    fullscale.Experiment(
        name="ch5_tms_threshold", compute=tms_threshold_sweep, full=dict(TMS_THRESHOLD),
        # other seeds, one sparsity, the two ends of the noise range: the live check of the committed sweep
        reduced={**TMS_THRESHOLD, "sparsities": [0.9], "seeds": list(range(200, 208)), "batch_sizes": [64, 1],
                 "kinds": ["sgd", "gaussian"]},
        description="chapter 5: superposition threshold sweep, eight noise levels of three kinds, quenched",
        modules=_MODULES),
    fullscale.Experiment(
        name="ch5_tms_capped", compute=tms_capped_sweep, full=dict(TMS_CAPPED),
        reduced={**TMS_CAPPED, "sparsities": [0.9], "seeds": list(range(200, 208)), "batch_sizes": [64], "caps": [0.99]},
        description="chapter 5 (exploratory): the threshold sweep's α-stable noise with its large kicks capped",
        modules=_MODULES),
)
