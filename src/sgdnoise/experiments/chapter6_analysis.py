"""The statistics of chapter 6's second edition, applied to the records of
:func:`sgdnoise.experiments.chapter6.grokking_record` (one dict per run).

* :func:`runs_frame`: the runs as a table, one row per run, with ``log_gen`` (``log10`` steps to
  generalise; NaN for a run that did not) and ``event``/``time`` for censored-data methods (a run that
  diverged, or stopped without generalising, is censored at its last step).
* :func:`paired_test`: the paired t-test on ``log_gen`` between two variants over the seeds they share,
  with the mean difference and its 95% interval. Refuses censored runs: those go to :func:`km_test`.
* :func:`km_test`: Kaplan–Meier curves of the time to generalise, compared by their largest distance
  against the permutation null (:func:`sgdnoise.survival.km_permutation_test`).
* :func:`holm_adjust`: Holm's step-down adjusted p-values; :func:`verdict`: the decision rule.
* :func:`within_group_spearman`: the mean over groups of Spearman's ρ between a quantity and ``log_gen``,
  against the null that shuffles the quantity *within* each group (so the groups' differences in both, the
  optimiser's effect, cannot create an association).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..survival import km_permutation_test

__all__ = ["interpolated_crossing", "runs_frame", "paired_test", "km_test", "holm_adjust", "verdict", "comparison_table",
           "within_group_spearman", "sign_test", "reproduction_mismatches"]

_SCALARS = ("optimiser", "activation", "seed", "weight_decay", "diverged_at", "fit", "generalise", "last_step",
            "sharpness", "norm_at_sharpness_step", "norm_at_generalise", "circuit")


def interpolated_crossing(steps, values, threshold: float) -> float:
    """``log10`` of the step at which ``values`` first reach ``threshold``, interpolated linearly in
    ``log10`` step between the last evaluation below it and the first at or above it (the evaluation grid
    is logarithmic, so the first-crossing step alone is quantised to the grid). NaN if never reached."""
    st, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    hit = np.flatnonzero(v >= threshold)
    if hit.size == 0:
        return float("nan")
    k = int(hit[0])
    if k == 0 or st[k - 1] <= 0:
        return math.log10(max(st[k], 1.0))
    x0, x1 = math.log10(st[k - 1]), math.log10(st[k])
    return x0 + (threshold - v[k - 1]) / (v[k] - v[k - 1]) * (x1 - x0)


def runs_frame(runs: Sequence[dict], threshold: float = 0.95) -> pd.DataFrame:
    """One row per run with the scalar fields of the records, ``activation`` (``"quadratic"`` when absent),
    ``log_gen``, ``log_gen_interp`` (:func:`interpolated_crossing` of the test accuracy at ``threshold``),
    ``log_circuit`` (``log10`` of the circuit step; NaN if none), ``log_lead`` (``log_gen - log_circuit``), ``event`` (generalised) and ``time`` (steps to generalise, or the step at which the run was
    censored)."""
    if not len(runs):
        raise ValueError("no runs")
    rows = []
    for r in runs:
        row = {k: r.get(k) for k in _SCALARS}
        row["activation"] = row["activation"] or "quadratic"
        gen = r.get("generalise")
        row["event"] = gen is not None
        row["time"] = float(gen if gen is not None else max(int(r.get("last_step") or 0), 1))
        row["log_gen"] = math.log10(gen) if gen is not None else float("nan")
        row["log_circuit"] = math.log10(row["circuit"]) if row["circuit"] else float("nan")
        row["log_lead"] = row["log_gen"] - row["log_circuit"]
        row["log_gen_interp"] = (interpolated_crossing(r["steps"], r["test_acc"], threshold)
                                 if gen is not None and len(r.get("steps", [])) else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def _select(df: pd.DataFrame, optimiser: str, weight_decay: float | None, activation: str | None) -> pd.DataFrame:
    sel = df[df.optimiser == optimiser]
    if weight_decay is not None:
        sel = sel[np.isclose(sel.weight_decay.astype(float), weight_decay)]
    if activation is not None:
        sel = sel[sel.activation == activation]
    if sel.empty:
        raise ValueError(f"no runs of {optimiser!r} (weight_decay={weight_decay}, activation={activation}); "
                         f"optimisers present: {sorted(df.optimiser.unique())}")
    return sel


def paired_test(df: pd.DataFrame, a: str, b: str, *, weight_decay: float | None = None,
                weight_decay_b: float | None = None, activation: str | None = None, value: str = "log_gen") -> dict:
    """Paired t-test of ``value(a) - value(b)`` (``log_gen`` by default; ``log_circuit`` for the circuit step)
    over the seeds both ran (``b`` at ``weight_decay_b`` when given, else at ``weight_decay``). Returns ``n``, ``mean`` (decades; negative: ``a`` generalises
    sooner), ``lo``/``hi`` (95% t interval), ``t``, ``p`` (two-sided) and ``ratio`` (``10**mean``)."""
    A = _select(df, a, weight_decay, activation).set_index("seed")
    B = _select(df, b, weight_decay if weight_decay_b is None else weight_decay_b, activation).set_index("seed")
    seeds = A.index.intersection(B.index)
    if len(seeds) < 2:
        raise ValueError(f"{a!r} and {b!r} share {len(seeds)} seeds; a paired test needs at least 2")
    cens = [s for s in seeds if not (A.loc[s, "event"] and B.loc[s, "event"])]
    if cens:
        raise ValueError(f"seeds {cens} have a run of {a!r} or {b!r} that did not generalise (censored); "
                         "compare censored runs with km_test")
    if value not in ("log_gen", "log_circuit", "log_gen_interp", "log_lead"):
        raise ValueError(f"value={value!r} must be 'log_gen', 'log_gen_interp', 'log_circuit' or 'log_lead'")
    d = (A.loc[seeds, value] - B.loc[seeds, value]).to_numpy(float)
    if not np.isfinite(d).all():
        raise ValueError(f"{value} is missing for some of the seeds {list(seeds)}")
    n, mean, sd = d.size, float(d.mean()), float(d.std(ddof=1))
    if sd == 0:
        t, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
        half = 0.0
    else:
        se = sd / math.sqrt(n)
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
        half = float(stats.t.ppf(0.975, n - 1) * se)
    return {"n": n, "mean": mean, "lo": mean - half, "hi": mean + half, "t": float(t), "p": float(p),
            "ratio": 10 ** mean, "sd": sd}


def km_test(df: pd.DataFrame, a: str, b: str, *, weight_decay: float | None = None, activation: str | None = None,
            horizon: float, reps: int = 9999, seed: int = 0) -> dict:
    """Kaplan–Meier comparison of the time to generalise of ``a`` and ``b``, diverged or unfinished runs
    censored at their last step: :func:`sgdnoise.survival.km_permutation_test` with ``reps`` relabellings.
    Adds ``diverged_a``/``diverged_b`` (counts), ``generalised_a``/``generalised_b`` and ``n_a``/``n_b``."""
    A, B = _select(df, a, weight_decay, activation), _select(df, b, weight_decay, activation)
    out = km_permutation_test(A.time.to_numpy(float), A.event.to_numpy(bool), B.time.to_numpy(float),
                              B.event.to_numpy(bool), horizon, reps=reps, rng=np.random.default_rng(seed))
    out = {k: v for k, v in out.items() if k != "null"}
    out.update(n_a=len(A), n_b=len(B), diverged_a=int(A.diverged_at.notna().sum()),
               diverged_b=int(B.diverged_at.notna().sum()), generalised_a=int(A.event.sum()),
               generalised_b=int(B.event.sum()))
    return out


def holm_adjust(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's adjusted p-values: reject hypothesis ``i`` at family-wise level ``α`` iff ``adjusted[i] ≤ α``."""
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"pvalues must be a non-empty list of numbers in [0, 1]; got {pvalues!r}")
    order = np.argsort(p)
    m = p.size
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


def verdict(adjusted_p: float, effect: float, predicted_sign: int, level: float = 0.05) -> str:
    """``"supported"`` when the test rejects (``adjusted_p ≤ level``) with the effect of the predicted sign,
    ``"contradicted"`` when it rejects with the other sign, ``"no difference detected"`` otherwise. With
    ``predicted_sign = 0`` (no direction predicted) a rejection reads ``"differs (lower)"`` or
    ``"differs (higher)"``."""
    if predicted_sign not in (-1, 0, 1):
        raise ValueError(f"predicted_sign={predicted_sign!r} must be -1, 0 or +1")
    if adjusted_p > level:
        return "no difference detected"
    if predicted_sign == 0:
        return "differs (lower)" if effect < 0 else "differs (higher)"
    return "supported" if np.sign(effect) == predicted_sign else "contradicted"


def comparison_table(df: pd.DataFrame, specs: Sequence[dict], *, horizon: float, reps: int = 9999,
                     level: float = 0.05) -> pd.DataFrame:
    """The tests of one family, with Holm's correction over them. Each spec has ``label``, ``kind``
    (``"paired"``: :func:`paired_test`; ``"km"``: :func:`km_test`), ``a``, ``b``, ``sign`` (the predicted sign
    of ``a``'s effect relative to ``b``: -1 sooner, +1 later, 0 none) and optionally ``weight_decay``,
    ``weight_decay_b``, ``activation``. The effect is the mean paired difference of ``log10`` steps to
    generalise (with its 95% interval) for ``"paired"``, and for ``"km"`` the difference of the restricted
    mean times to generalise in ``log10`` steps (the Kaplan–Meier areas, divergence censored; interval from
    their standard errors), tested by the Kaplan–Meier distance against its permutation null. The curves
    are compared only up to ``τ``, the earlier of ``horizon`` and the last time a run of either group is
    followed: beyond it a curve only repeats its last value. When no run of either group generalises
    before ``τ``, the test is ``"not testable"`` and is left out of the correction."""
    from ..survival import rmst

    rows = []
    for i, sp in enumerate(specs):
        wd, act = sp.get("weight_decay"), sp.get("activation")
        if sp["kind"] == "paired":
            r = paired_test(df, sp["a"], sp["b"], weight_decay=wd, weight_decay_b=sp.get("weight_decay_b"), activation=act)
            rows.append({"test": sp["label"], "n": r["n"], "effect": r["mean"], "lo": r["lo"], "hi": r["hi"], "p": r["p"],
                         "sign": sp["sign"], "detail": ""})
        elif sp["kind"] == "km":
            A, B = _select(df, sp["a"], wd, act), _select(df, sp["b"], wd, act)
            # Kaplan–Meier curves say nothing beyond the last time a run of either group is followed: cut there
            tau = min(float(horizon), float(A.time.max()), float(B.time.max()))
            events = int((A.event & (A.time <= tau)).sum() + (B.event & (B.time <= tau)).sum())
            detail = (f"{int(A.diverged_at.notna().sum())} of {len(A)} diverged, {int(A.event.sum())} generalised; "
                      f"{int(B.diverged_at.notna().sum())} of {len(B)} diverged in the reference")
            if events == 0:
                rows.append({"test": sp["label"], "n": len(A), "effect": float("nan"), "lo": float("nan"),
                             "hi": float("nan"), "p": float("nan"), "sign": sp["sign"],
                             "detail": detail + f"; no run generalised before step {tau:.0f}, where the curves end"})
                continue
            r = km_test(df, sp["a"], sp["b"], weight_decay=wd, activation=act, horizon=tau, reps=reps, seed=i)
            logt = lambda g: np.log10(g.time.to_numpy(float))  # noqa: E731
            ma, sa = rmst(logt(A), A.event.to_numpy(bool), math.log10(tau))
            mb, sb = rmst(logt(B), B.event.to_numpy(bool), math.log10(tau))
            half = 1.96 * math.hypot(sa, sb)
            rows.append({"test": sp["label"], "n": r["n_a"], "effect": ma - mb, "lo": ma - mb - half, "hi": ma - mb + half,
                         "p": r["p"], "sign": sp["sign"], "detail": detail + f"; curves compared up to step {tau:.0f}"})
        else:
            raise ValueError(f"spec {sp.get('label')!r}: kind={sp['kind']!r} must be 'paired' or 'km'")
    out = pd.DataFrame(rows)
    testable = out.p.notna()
    out["p (Holm)"] = np.nan
    out.loc[testable, "p (Holm)"] = holm_adjust(out.p[testable].to_numpy())
    out["verdict"] = [verdict(q, e, s, level) if ok else "not testable"
                      for q, e, s, ok in zip(out["p (Holm)"], out.effect, out.sign, testable)]
    return out.drop(columns="sign")


def within_group_spearman(df: pd.DataFrame, value: str, groups: Sequence[str], *, reps: int = 9999,
                          seed: int = 0) -> dict:
    """Mean over the groups (rows sharing the columns ``groups``) of Spearman's ρ between ``value`` and
    ``log_gen``, over the runs that generalised and have ``value``; the null shuffles ``value`` within each
    group ``reps`` times. Returns ``rho`` (the mean), ``per_group`` (dict), ``n`` (runs), ``p`` (two-sided:
    ``|null| ≥ |rho|``) and ``null_95`` (the 95% point of ``|null|``)."""
    ok = df[df.event & df[value].notna()]
    parts = [(k, g[value].to_numpy(float), g.log_gen.to_numpy(float)) for k, g in ok.groupby(list(groups))
             if len(g) >= 3]
    if not parts:
        raise ValueError(f"no group with at least three runs that generalised and have {value!r}")

    def centred_ranks(v):
        r = stats.rankdata(v)
        return r - r.mean()

    per, null = {}, np.zeros(reps)
    rng = np.random.default_rng(seed)
    for k, x, y in parts:
        xr, yr = centred_ranks(x), centred_ranks(y)
        scale = float(np.linalg.norm(xr) * np.linalg.norm(yr))
        if scale == 0:
            raise ValueError(f"group {k}: {value!r} or log_gen is constant, so Spearman's rho is undefined")
        per[" · ".join(map(str, k)) if isinstance(k, tuple) else str(k)] = float(xr @ yr / scale)  # Pearson's r of the ranks: Spearman's rho
        null += rng.permuted(np.tile(xr, (reps, 1)), axis=1) @ yr / scale
    null /= len(parts)
    obs = float(np.mean(list(per.values())))
    p = float((1 + np.sum(np.abs(null) >= abs(obs) - 1e-12)) / (1 + reps))
    return {"rho": obs, "per_group": per, "n": int(sum(len(x) for _, x, _ in parts)), "p": p,
            "null_95": float(np.quantile(np.abs(null), 0.95))}


def sign_test(differences: Sequence[float]) -> dict:
    """Two-sided sign test that positive and negative differences are equally likely (zeros dropped):
    ``positive``, ``negative``, ``p`` (exact binomial)."""
    d = np.asarray(differences, dtype=float)
    pos, neg = int((d > 0).sum()), int((d < 0).sum())
    if pos + neg == 0:
        raise ValueError("every difference is zero; the sign test needs at least one non-zero difference")
    return {"positive": pos, "negative": neg, "p": float(stats.binomtest(pos, pos + neg).pvalue)}


_KEYS = ("optimiser", "activation", "seed", "weight_decay")
_EXACT = ("diverged_at", "fit", "generalise", "circuit", "last_step")
_CLOSE = ("sharpness", "norm_at_sharpness_step", "norm_at_generalise")


def reproduction_mismatches(committed: Sequence[dict], live: Sequence[dict], *, rtol: float = 1e-4) -> list[str]:
    """The differences between live re-runs and the committed runs with the same optimiser, activation, seed
    and weight decay: the steps (divergence, fit, generalisation, circuit, last) must be equal, the sharpness
    and norms equal to ``rtol``. An empty list means every live run reproduced its committed one; a live run
    with no committed counterpart is a mismatch too."""
    index = {tuple(r.get(k) for k in _KEYS): r for r in committed}
    out = []
    for r in live:
        key = tuple(r.get(k) for k in _KEYS)
        c = index.get(key)
        if c is None:
            out.append(f"{key}: no committed run")
            continue
        for k in _EXACT:
            if r.get(k) != c.get(k):
                out.append(f"{key}: {k} {r.get(k)} live, {c.get(k)} committed")
        for k in _CLOSE:
            a, b = r.get(k), c.get(k)
            if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=rtol)):
                out.append(f"{key}: {k} {a} live, {b} committed")
    return out
