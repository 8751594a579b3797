"""Time-to-event statistics for runs that can stop early: a chain that diverges before an event (an escape
from a saddle, say) is *right-censored* there, not dropped, and a chain still waiting at the end of the run is
censored at the horizon.

* :func:`kaplan_meier`: the product-limit estimate of the survival function ``S(t) = P(τ > t)``.
* :func:`rmst`: the restricted mean ``E min(τ, T) = ∫_0^T S(t) dt`` with its standard error (the
  Greenwood-type formula of Klein & Moeschberger, *Survival Analysis*, 2nd ed., 2003, section 4.5); without
  censoring it is the sample mean of ``min(τ, T)`` and its plug-in standard error.
* :func:`km_distance`: ``sup_{t ≤ T} |S_1(t) - S_2(t)|``, the Kolmogorov–Smirnov distance between two
  Kaplan–Meier curves, and :func:`km_permutation_test`: its null distribution by relabelling the pooled
  chains. The relabelling is exact when the two groups share one law of event *and* censoring times; when
  their censoring differs (one group diverges far more often) the null is only approximate. The log-rank
  test, ``scipy.stats.logrank``, is the standard complement. All of them, like the Kaplan–Meier estimate,
  assume that censoring is independent of the event time.
"""

from __future__ import annotations

import math

import numpy as np

from . import _args

__all__ = ["kaplan_meier", "rmst", "km_distance", "km_permutation_test"]


def _check(times, observed, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(times, dtype=float).ravel()
    o = np.asarray(observed).ravel()
    if t.size == 0:
        raise ValueError(f"times{name} is empty; need at least one chain")
    if o.shape != t.shape:
        raise ValueError(f"observed{name} has {o.size} entries for {t.size} times; need one flag per time")
    if o.dtype != bool:
        if not np.isin(o, (0, 1)).all():
            raise ValueError(f"observed{name} must be booleans (True: the event happened at that time; False: "
                             "censored there)")
        o = o.astype(bool)
    if not np.isfinite(t).all() or (t < 0).any():
        bad = t[~np.isfinite(t) | (t < 0)][0]
        raise ValueError(f"times{name} must be finite and >= 0 (censor a chain at the time it stopped); got {bad}")
    return t, o


def kaplan_meier(times, observed) -> tuple[np.ndarray, np.ndarray]:
    """The product-limit estimate: the distinct event times ``u`` (sorted) and ``S(u)``, the survival just
    after each; ``S = 1`` before the first. ``observed[i]`` is False where chain ``i`` was censored at
    ``times[i]`` (a censored time tied with an event counts as still at risk at that event)."""
    t, o = _check(times, observed)
    u, events = np.unique(t[o], return_counts=True)
    at_risk = t.size - np.searchsorted(np.sort(t), u, side="left")  # chains with t >= u
    return u, np.cumprod(1 - events / at_risk)


def _step(u: np.ndarray, S: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The right-continuous step function with jumps at ``u`` to the values ``S``, evaluated at ``x``."""
    i = np.searchsorted(u, x, side="right")
    return np.concatenate([[1.0], S])[i]


def rmst(times, observed, horizon: float) -> tuple[float, float]:
    """Restricted mean ``∫_0^T S(t) dt`` of the Kaplan–Meier curve up to ``T = horizon`` and its standard error
    ``sqrt(Σ_{u_j ≤ T} A_j² d_j / (r_j (r_j - d_j)))``, ``A_j = ∫_{u_j}^T S``, ``r_j`` at risk and ``d_j``
    events at ``u_j`` (a term with ``r_j = d_j``, the last chain's event, adds nothing: ``A_j`` is then 0
    when it is the last time)."""
    t, o = _check(times, observed)
    T = _args.real("horizon", horizon, gt=0)
    u, S = kaplan_meier(t, o)
    keep = u <= T
    u, S = u[keep], S[keep]
    grid = np.concatenate([[0.0], u, [T]])
    vals = np.concatenate([[1.0], S])
    areas = vals * np.diff(grid)  # S is constant on [grid_j, grid_{j+1})
    total = float(areas.sum())
    _, d = np.unique(t[o & (t <= T)], return_counts=True)
    r = (t.size - np.searchsorted(np.sort(t), u, side="left")).astype(float)
    A = np.cumsum(areas[::-1])[::-1][1:]  # ∫ from u_j to T
    ok = r > d
    var = float(np.sum(A[ok] ** 2 * d[ok] / (r[ok] * (r[ok] - d[ok]))))
    return total, math.sqrt(var)


def km_distance(t1, o1, t2, o2, horizon: float) -> float:
    """``sup_{0 ≤ t ≤ T} |S_1(t) - S_2(t)|`` between the two Kaplan–Meier curves (evaluated at every jump)."""
    t1, o1 = _check(t1, o1, " (first sample)")
    t2, o2 = _check(t2, o2, " (second sample)")
    T = _args.real("horizon", horizon, gt=0)
    u1, S1 = kaplan_meier(t1, o1)
    u2, S2 = kaplan_meier(t2, o2)
    x = np.unique(np.concatenate([u1, u2, [0.0]]))
    x = x[x <= T]
    return float(np.max(np.abs(_step(u1, S1, x) - _step(u2, S2, x))))


def km_permutation_test(t1, o1, t2, o2, horizon: float, *, reps: int = 999,
                        rng: np.random.Generator) -> dict:
    """:func:`km_distance` and its permutation null: the pooled (time, flag) pairs are split at random into
    samples of the original sizes ``reps`` times. Returns ``distance``, ``null`` (the ``reps`` null
    distances), ``null_95`` (their 95% point) and ``p = (1 + #{null ≥ distance}) / (1 + reps)``."""
    t1, o1 = _check(t1, o1, " (first sample)")
    t2, o2 = _check(t2, o2, " (second sample)")
    reps = _args.integer("reps", reps, minimum=1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng(seed)); got {type(rng).__name__}")
    d = km_distance(t1, o1, t2, o2, horizon)
    t, o, n1 = np.concatenate([t1, t2]), np.concatenate([o1, o2]), t1.size
    null = np.empty(reps)
    for k in range(reps):
        p = rng.permutation(t.size)
        a, b = p[:n1], p[n1:]
        null[k] = km_distance(t[a], o[a], t[b], o[b], horizon)
    return {"distance": d, "null": null, "null_95": float(np.quantile(null, 0.95)),
            "p": float((1 + np.sum(null >= d - 1e-12)) / (1 + reps))}
