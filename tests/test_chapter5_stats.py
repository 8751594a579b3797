"""Chapter 5's statistics, shared by its text and its ledger rows (issue 15: a verdict from one source)."""

import numpy as np
import pytest

from sgdnoise.experiments import chapter5


def test_holm_steps_down_and_stops_at_the_first_acceptance():
    assert chapter5.holm([0.001, 0.02, 0.04]) == [True, True, True]  # 0.001 ≤ .05/3, 0.02 ≤ .05/2, 0.04 ≤ .05
    assert chapter5.holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.03 > .05/2 stops the procedure
    assert chapter5.holm([0.04, 0.04]) == [False, False]  # Bonferroni's first step fails
    assert chapter5.holm([]) == []


@pytest.mark.parametrize("bad", [[1.5], [-0.1], [float("nan")], [[0.1]]])
def test_holm_refuses_what_is_not_a_p_value(bad):
    with pytest.raises(ValueError, match="pvalues"):
        chapter5.holm(bad)


def _diagram(gd_labels, noisy_labels):
    """A one-sparsity phase diagram with the two settings' labels per seed."""
    K = len(gd_labels)
    cells = [{"sparsity": 0.0, "setting": name,
              "fractions": {lab: sum(x == lab for x in labels) / K for lab in set(labels)}}
             for name, labels in (("gd", gd_labels), ("noisy", noisy_labels))]
    return {"settings": ["gd", "noisy"], "sparsities": [0.0], "n_seeds": K, "cells": cells,
            "runs": {"gd": {"labels": gd_labels}, "noisy": {"labels": noisy_labels}}}


def test_noise_phase_tests_pairs_by_seed_and_corrects():
    """Eight seeds that all leave the target under noise: p = 2/2^8 is resolved; a noisy setting that
    matches gradient descent is not (the failing variant)."""
    target = ((0.0, "a"),)
    moved = chapter5.noise_phase_tests(_diagram(["a"] * 8, ["b"] * 8), noisy=("noisy",), targets=target)
    assert moved[0]["a_only"] == 8 and moved[0]["p"] == pytest.approx(2 / 2**8) and moved[0]["resolved"]
    same = chapter5.noise_phase_tests(_diagram(["a"] * 8, ["a"] * 8), noisy=("noisy",), targets=target)
    assert same[0]["p"] == 1.0 and not same[0]["resolved"]


def _dln_sweep(shift_b1: float, seed: int = 0, chains: int = 64):
    """A synthetic ``ch5_dln_sweep`` result: gradient descent escapes at 2, 4, 6; SGD's chains at B = 1 escape
    ``shift_b1`` later with spread 0.1 and at B = 2 at gradient descent's times with the same spread; one SGD chain
    at B = 2 diverges at t = 1 (before any escape) and one never reaches mode 3 (censored at the horizon)."""
    rng = np.random.default_rng(seed)
    gd = [2.0, 4.0, 6.0]
    runs = [{"data_seed": 0, "depth": 2, "B": None, "model": "GD", "escape": [gd], "censor": [15.0]}]
    for B, shift in ((1, shift_b1), (2, 0.0)):
        esc = [[t + shift + 0.1 * rng.standard_normal() for t in gd] for _ in range(chains)]
        censor = [15.0] * chains
        if B == 2:
            esc[0], censor[0] = [None, None, None], 1.0
            esc[1][2] = None
        runs.append({"data_seed": 0, "depth": 2, "B": B, "model": "SGD", "escape": esc, "censor": censor})
    return {"runs": runs, "horizon": 15.0, "singular_values": [4.0, 2.0, 1.0]}


def test_dln_events_censor_the_diverged_and_the_unfinished():
    run = {"escape": [[1.0, None], [None, None], [2.0, 20.0]], "censor": [15.0, 3.0, 15.0]}
    t, o = chapter5.dln_events(run, 0, 15.0)
    assert t.tolist() == [1.0, 3.0, 2.0] and o.tolist() == [True, False, True]
    t, o = chapter5.dln_events(run, 1, 15.0)  # an escape after the horizon is censored at it
    assert t.tolist() == [15.0, 3.0, 15.0] and o.tolist() == [False, False, False]


def test_dln_shift_table_resolves_a_shift_and_not_its_absence():
    rows = chapter5.dln_shift_table(_dln_sweep(0.5))
    b1 = [r for r in rows if r["B"] == 1]
    b2 = [r for r in rows if r["B"] == 2]
    assert all(r["resolved"] and abs(r["shift"] - 0.5) < 4 * r["se"] for r in b1)
    assert not any(r["resolved"] for r in b2) and all(r["diverged"] == 1 for r in b2)
    assert all(r["ci_low"] < 0 < r["ci_high"] for r in b2)  # seed 0: the true shift, 0, is inside
    # the failing variant: no shift at B = 1 either, and nothing is resolved
    assert not any(r["resolved"] for r in chapter5.dln_shift_table(_dln_sweep(0.0)))


def test_dln_closer_tests_count_units_and_correct_for_the_alphas():
    def rows(stable_better: int, units: int = 20):
        out = []
        for u in range(units):
            g, s = (0.3, 0.1) if u < stable_better else (0.1, 0.3)
            out += [{"data_seed": 0, "depth": 2, "B": u, "model": "Gaussian SDE", "km_distance": g},
                    {"data_seed": 0, "depth": 2, "B": u, "model": "α-stable SDE, α = 1.5", "km_distance": s}]
        return out

    (all_stable,) = chapter5.dln_closer_tests(rows(20), [1.5])
    assert all_stable["stable closer"] == 20 and all_stable["p"] == pytest.approx(2 / 2**20) and all_stable["resolved"]
    (split,) = chapter5.dln_closer_tests(rows(15), [1.5])  # 15 of 20: p = 0.041 < 0.05, resolved for one α
    assert split["p"] == pytest.approx(0.0414, abs=1e-3) and split["resolved"]
    three = chapter5.dln_closer_tests(rows(15), [1.5, 1.8, 1.95])  # the same at 0.05/3: not resolved
    assert not three[0]["resolved"] and three[1]["units"] == 0 and not three[1]["resolved"]


# ----------------------------------------------------------------------------- the threshold sweep's analysis
def test_censored_sign_test_without_censoring_is_the_exact_sign_test():
    from scipy import stats

    t = chapter5.censored_sign_test([5] * 12, [False] * 12, [2] * 9 + [5, 5, 6], [False] * 12)
    assert (t["fewer"], t["more"], t["ties"], t["censored"]) == (9, 1, 2, 0)
    assert t["p"] == pytest.approx(stats.binomtest(9, 10, 0.5).pvalue)
    assert chapter5.censored_sign_test([5, 5], [False, False], [5, 5], [False, False])["p"] == 1.0


def test_censored_sign_test_is_conservative_and_dropping_censored_runs_is_not():
    from scipy import stats

    k_gd, k_noisy = [5] * 13, [2] * 10 + [0] * 3
    cens = [False] * 10 + [True] * 3  # three noisy runs diverged
    t = chapter5.censored_sign_test(k_gd, [False] * 13, k_noisy, cens)
    assert t["censored"] == 3 and t["fewer"] == 10
    # the worst case counts the three diverged runs as having kept more features than gradient descent
    assert t["p"] == pytest.approx(stats.binomtest(10, 13, 0.5).pvalue) and t["p"] > 0.05
    # the failing variant: dropping the diverged runs would resolve the difference at 1%
    assert stats.binomtest(10, 10, 0.5).pvalue < 0.01
    with pytest.raises(ValueError, match="1-D arrays"):
        chapter5.censored_sign_test([1, 2], [False], [1, 2], [False, False])


def _sweep(k_by_setting, cens_by_setting=None, *, kinds=("sgd",), batch_sizes=(8, 2, 1)):
    K = len(next(iter(k_by_setting.values())))
    cens_by_setting = cens_by_setting or {}
    return {"sparsities": [0.9], "n_seeds": K, "kinds": list(kinds), "batch_sizes": list(batch_sizes), "eta": 0.3,
            "runs": {name: {"n_represented": k, "censored": cens_by_setting.get(name, [False] * K)}
                     for name, k in k_by_setting.items()}}


def test_threshold_tests_go_from_strong_noise_down_and_stop_at_the_first_unresolved_level():
    K = 12
    sweep = _sweep({"gd": [5] * K, "sgd B=1": [2] * K, "sgd B=2": [2] * K, "sgd B=8": [5] * K})
    rows = chapter5.threshold_tests(sweep)
    assert [(r["B"], r["resolved"]) for r in rows] == [(1, True), (2, True), (8, False)]
    assert rows[0]["alpha"] == pytest.approx(0.05)  # one family: no Bonferroni factor
    assert chapter5.threshold_onsets(rows) == {(0.9, "sgd"): pytest.approx(0.15)}
    # a weaker level that would be resolved is not tested once a stronger one fails (fixed sequence)
    gap = _sweep({"gd": [5] * K, "sgd B=1": [2] * K, "sgd B=2": [5] * K, "sgd B=8": [2] * K})
    rows = chapter5.threshold_tests(gap)
    assert [(r["B"], r["resolved"]) for r in rows] == [(1, True), (2, False)]
    # two kinds: two families, each held to 0.025
    two = _sweep({"gd": [5] * K, **{f"{k} B={B}": [2] * K for k in ("sgd", "gaussian") for B in (1, 2, 8)}},
                 kinds=("sgd", "gaussian"))
    assert all(r["alpha"] == pytest.approx(0.025) for r in chapter5.threshold_tests(two))
    rows = chapter5.kind_tests(two)
    assert len(rows) == 3 and not any(r["resolved"] for r in rows) and all(r["ties"] == K for r in rows)
    with pytest.raises(ValueError, match="not in the sweep"):
        chapter5.threshold_tests(_sweep({"gd": [5] * K, "sgd B=1": [2] * K}))


def test_sign_test_power_is_exact():
    from scipy import stats

    # without "more" outcomes the test rejects exactly when f >= f*, the smallest f with 2 · 2^-f <= alpha
    n, q, alpha = 32, 0.5, 0.05 / 12
    f_star = next(f for f in range(1, n + 1) if 2 * 0.5**f <= alpha)
    exact = float(stats.binom.sf(f_star - 1, n, q))
    assert chapter5.sign_test_power(n, q, 0.0, alpha) == pytest.approx(exact, rel=1e-9)
    # against a Monte-Carlo estimate with "more" outcomes (4000 draws: SE below 0.008)
    rng = np.random.default_rng(0)
    draws = rng.multinomial(n, [0.4, 0.05, 0.55], size=4000)
    mc = np.mean([f + m > 0 and stats.binomtest(f, f + m, 0.5).pvalue <= alpha for f, m, _ in draws])
    power = chapter5.sign_test_power(n, 0.4, 0.05, alpha)
    assert abs(mc - power) < 4.5 * np.sqrt(power * (1 - power) / 4000), (mc, power)
    # and the failing variant: ignoring the "more" outcomes overstates the power
    assert chapter5.sign_test_power(n, 0.4, 0.0, alpha) - power > 4.5 * np.sqrt(power * (1 - power) / 4000)
    with pytest.raises(ValueError, match="fewer"):
        chapter5.sign_test_power(10, 0.8, 0.3, 0.05)


def test_threshold_sweep_records_every_run_as_plain_data():
    from sgdnoise.experiments import fullscale

    r = chapter5.tms_threshold_sweep(sparsities=[0.9], seeds=[0, 1], batch_sizes=[4, 1], kinds=["sgd", "stable"],
                                     alpha=1.5, eta=0.3, horizon=3.0, quench_steps=5)
    assert r["settings"] == ["gd", "sgd B=4", "sgd B=1", "stable B=4", "stable B=1"]
    for run in r["runs"].values():
        assert len(run["labels"]) == len(run["labels_before_quench"]) == len(run["censored"]) == 2
        assert np.asarray(run["W"]).shape == (2, 2, 5) and np.asarray(run["dimensionality"]).shape == (2, 5)
    fullscale._jsonable(r)  # a committed result holds no NaN or inf: censored runs are flags
    k, cens = chapter5.cell_outcomes(r, "sgd B=1", 0.9)
    assert k.shape == cens.shape == (2,)
    with pytest.raises(ValueError, match="valid kinds"):
        chapter5.threshold_settings(batch_sizes=[1], kinds=["levy"], alpha=1.5, eta=0.3, horizon=3.0)


def test_level_tests_test_every_level_with_holm():
    K = 12
    # the strongest level is blocked by divergences; the fixed sequence stops there, the exploratory analysis does not
    sweep = _sweep({"gd": [5] * K, "sgd B=1": [2] * K, "sgd B=2": [2] * K, "sgd B=8": [5] * K},
                   {"sgd B=1": [True] * 6 + [False] * 6})
    assert [(r["B"], r["resolved"]) for r in chapter5.threshold_tests(sweep)] == [(1, False)]
    rows = chapter5.level_tests(sweep)
    assert [(r["B"], r["resolved"]) for r in rows] == [(1, False), (2, True), (8, False)]


def test_represented_agreement_compares_every_live_cell_with_the_committed_one():
    def sweep(k):
        return {"settings": ["gd"], "sparsities": [0.9], "n_seeds": len(k), "runs": {"gd": {"n_represented": k}}}

    same = chapter5.represented_agreement(sweep([5, 4, 5, 5, 4, 5, 5, 5]), sweep([5, 5, 4, 5, 5, 4, 5, 5]))
    assert same.ok and same.labels == ("S = 0.9, gd",)
    moved = chapter5.represented_agreement(sweep([5] * 20 + [4] * 4), sweep([2] * 20 + [3] * 4))
    assert not moved.ok  # the failing variant: a live rerun that no longer reproduces the committed counts
