"""Chapter 6, second edition: the matched α-stable noise, the gathered forward pass, the Fourier progress
measure and the statistics of the comparisons. Each check has a variant that must fail."""

import math

import numpy as np
import pytest
import torch

from sgdnoise.experiments import chapter6_analysis as A
from sgdnoise.experiments.grokking import (ModAddConfig, ModAddMLP, fourier_measures, fourier_power, gradient_estimate,
                                           make_data, make_model, restrict_to_frequencies, run_grokking)
from sgdnoise.experiments.superposition import stable_bulk_factor

TINY = ModAddConfig(p=7, train_frac=0.6, width=12, lr=0.3, weight_decay=1e-3, B=4, steps=30, evals_per_decade=4)


def test_gathered_forward_is_the_dense_forward_bit_for_bit():
    for act in ("quadratic", "relu"):
        cfg = ModAddConfig(p=13, train_frac=0.5, width=32, activation=act, seed=2)
        data, model = make_data(cfg), make_model(cfg)
        with torch.no_grad():
            assert torch.equal(model(data.X_train), model.forward_indices(data.ab_train))
            assert torch.equal(model(data.X_test), model.forward_indices(data.ab_test))
        # failing variant: the columns swapped between a and b are another input
        with torch.no_grad():
            assert not torch.equal(model(data.X_train), model.forward_indices(data.ab_train.flip(1) - torch.tensor([13, -13])))


def _projections(cfg, M, seed):
    data, model = make_data(cfg), make_model(cfg)
    gen = torch.Generator().manual_seed(seed)
    g_n = gradient_estimate(cfg.replace(optimizer="gd"), model, data, generator=gen).double()
    u = torch.randn(g_n.numel(), generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    u /= u.norm()
    return torch.stack([(gradient_estimate(cfg, model, data, generator=gen).double() - g_n) @ u for _ in range(M)])


def test_matched_stable_noise_has_the_gaussian_median_along_a_direction():
    M = 2000
    gauss = _projections(TINY.replace(optimizer="gd_gaussian"), M, 1).abs()
    for alpha in (1.5, 1.8):
        heavy = _projections(TINY.replace(optimizer="gd_stable_matched", alpha=alpha), M, 2).abs()
        # medians of |projection| agree: binomial SE of the median's quantile, in standard errors
        q = float((heavy < gauss.median()).double().mean())
        assert abs(q - 0.5) < 4 * math.sqrt(0.25 / M), (alpha, q)
        # ... and the tails differ: the 99.9% point is far beyond the Gaussian's
        assert float(heavy.quantile(0.999)) > 2 * float(gauss.quantile(0.999))
    # failing variant: the i.i.d. α-stable weights ("gd_stable") are not matched in bulk
    iid = _projections(TINY.replace(optimizer="gd_stable", alpha=1.5), M, 3).abs()
    assert abs(float((iid < gauss.median()).double().mean()) - 0.5) > 4 * math.sqrt(0.25 / M)
    assert stable_bulk_factor(1.5) < 1


def test_matched_stable_at_alpha_2_is_gd_gaussian_exactly():
    a = run_grokking(TINY.replace(optimizer="gd_stable_matched", alpha=2.0), progress=False)
    b = run_grokking(TINY.replace(optimizer="gd_gaussian"), progress=False)
    assert np.array_equal(a["theta"], b["theta"])


def _single_mode_model(p, N, freqs, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = ModAddMLP(p, N, "quadratic", generator=gen)
    a = torch.arange(p, dtype=torch.float64)
    phase = torch.rand(N, 2, generator=gen, dtype=torch.float64) * 2 * math.pi
    k = torch.as_tensor(freqs, dtype=torch.float64)[:, None]
    Ua = torch.cos(2 * math.pi * k * a / p + phase[:, :1])
    Ub = torch.cos(2 * math.pi * k * a / p + phase[:, 1:])
    with torch.no_grad():
        model.hidden.weight.copy_(torch.cat([Ua, Ub], 1).float())
    return model


def test_fourier_power_and_restriction_of_a_single_mode_network():
    p, N = 11, 8
    freqs = [1, 2, 3, 4, 5, 1, 2, 3]
    model = _single_mode_model(p, N, freqs)
    P = fourier_power(model)
    assert P.shape == (N, p // 2)
    assert torch.equal(P.argmax(1) + 1, torch.tensor(freqs))
    assert float((P.max(1).values / P.sum(1)).min()) > 1 - 1e-9  # all power in one frequency
    same = restrict_to_frequencies(model, torch.tensor(freqs))
    torch.testing.assert_close(same.hidden.weight, model.hidden.weight, atol=1e-5, rtol=0)
    # failing variant: the wrong frequencies remove everything
    other = restrict_to_frequencies(model, torch.tensor([(f % (p // 2)) + 1 for f in freqs]))
    assert float(other.hidden.weight.detach().abs().max()) < 1e-5
    with pytest.raises(ValueError, match=r"one frequency in 1\.\.5 per neuron"):
        restrict_to_frequencies(model, torch.tensor([0] * N))


def test_fourier_concentration_of_random_weights_is_its_chance_level():
    cfg = ModAddConfig(p=97, train_frac=0.3, width=512)
    data, model = make_data(cfg), make_model(cfg)
    m = fourier_measures(model, data)
    K, N = 97 // 2, 512
    # Gaussian weights: each P[j, k] is a sum of two squared DFT moduli, Gamma(2) up to scale; the null
    # law of the concentration of N neurons by simulation, and the measured value within 4 of its SDs
    draws = np.random.default_rng(0).gamma(2.0, 1.0, size=(400, N, K))
    null = draws.max(2).sum(1) / draws.sum((1, 2))
    assert abs(m["fourier_concentration"] - null.mean()) < 4 * null.std(), (m, null.mean(), null.std())
    assert null.mean() < 0.1  # a single-mode network gives 1
    assert m["restricted_test_acc"] < 0.05  # chance is 1/97
    with pytest.raises(TypeError, match="must be a ModAddMLP"):
        fourier_power(torch.nn.Linear(3, 3))


def _frame(gen_a, gen_b, name_a="A", name_b="B", **extra):
    rows = []
    for s, (ga, gb) in enumerate(zip(gen_a, gen_b)):
        for name, g in ((name_a, ga), (name_b, gb)):
            rows.append({"optimiser": name, "seed": s, "weight_decay": 1e-5, "generalise": g,
                         "last_step": g if g is not None else 500, "diverged_at": None if g is not None else 500, **extra})
    return A.runs_frame(rows)


def test_paired_test_uses_the_pairing_and_refuses_censored_runs():
    rng = np.random.default_rng(0)
    base = 10 ** rng.normal(3.5, 0.3, 8)  # seeds differ a lot; within a seed, B is 10% slower
    df = _frame(base, base * 1.10 * 10 ** rng.normal(0, 0.005, 8))
    r = A.paired_test(df, "A", "B")
    se = (r["hi"] - r["mean"]) / 2.365  # t(7) 97.5% point
    assert abs(r["mean"] - math.log10(1 / 1.10)) < 4 * se and r["p"] < 1e-6, r
    # failing variant: without the pairing (seeds shuffled) the same data show nothing
    shuffled = df.copy()
    shuffled.loc[shuffled.optimiser == "B", "seed"] = rng.permutation(8)
    assert A.paired_test(shuffled, "A", "B")["p"] > 0.01
    with pytest.raises(ValueError, match="censored"):
        A.paired_test(_frame([100, 200, None], [110, 210, 300]), "A", "B")


def test_holm_and_verdict():
    np.testing.assert_allclose(A.holm_adjust([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    assert A.verdict(0.01, -0.1, -1) == "supported"
    assert A.verdict(0.01, +0.1, -1) == "contradicted"
    assert A.verdict(0.2, -0.1, -1) == "no difference detected"
    with pytest.raises(ValueError):
        A.holm_adjust([1.5])


def test_within_group_spearman_is_calibrated_and_blind_to_group_effects():
    rng = np.random.default_rng(1)
    # groups differ in both quantities (a group effect), with no association within groups
    pvals = []
    for rep in range(200):
        rows = []
        for g, shift in enumerate((0.0, 1.0, 2.0)):
            for s in range(8):
                rows.append({"optimiser": str(g), "seed": s, "weight_decay": 0.0, "generalise": 10 ** (3 + shift + 0.1 * rng.normal()),
                             "last_step": 1, "diverged_at": None, "sharpness": shift + rng.normal()})
        df = A.runs_frame(rows)
        pvals.append(A.within_group_spearman(df, "sharpness", ["optimiser"], reps=199, seed=rep)["p"])
    # false-positive rate at 5%: within 3 binomial SEs of 0.05 (200 replicates)
    rate = np.mean(np.asarray(pvals) <= 0.05)
    assert abs(rate - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 200), rate
    # failing variant: pooling the groups (a single group) finds the spurious association
    pooled = df.assign(optimiser="all")
    assert A.within_group_spearman(pooled, "sharpness", ["optimiser"], reps=999)["p"] < 0.01
    # and a real within-group association is found
    rows = [{"optimiser": str(g), "seed": s, "weight_decay": 0.0, "generalise": 10 ** (3 + 0.1 * s), "last_step": 1,
             "diverged_at": None, "sharpness": s + 0.1 * rng.normal()} for g in range(3) for s in range(8)]
    assert A.within_group_spearman(A.runs_frame(rows), "sharpness", ["optimiser"], reps=999)["p"] < 0.01


def test_km_test_counts_divergences_as_censored():
    df = _frame([1000, 1100, 1200, 1300, 1400, 1500], [None, None, None, None, 900, 950])
    r = A.km_test(df, "A", "B", horizon=2000, reps=999)
    assert r["diverged_b"] == 4 and r["generalised_b"] == 2 and r["generalised_a"] == 6
    assert 0 < r["p"] <= 1
    assert A.sign_test([1, 2, 3, -1])["positive"] == 3
    with pytest.raises(ValueError, match="every difference is zero"):
        A.sign_test([0, 0])


def test_comparison_table_applies_holm_and_reads_directions():
    rng = np.random.default_rng(3)
    base = 10 ** rng.normal(3.5, 0.2, 8)
    rows = []
    for s in range(8):
        for name, g, div in (("GD", base[s], None), ("SGD", base[s] * 0.7 * 10 ** rng.normal(0, 0.01), None),
                             ("same", base[s] * 10 ** rng.normal(0, 0.01), None),
                             ("heavy", None if s < 6 else base[s], 5 if s < 6 else None)):
            rows.append({"optimiser": name, "seed": s, "weight_decay": 1e-5, "generalise": g,
                         "last_step": g if g is not None else 5, "diverged_at": div})
    df = A.runs_frame(rows)
    specs = [dict(label="SGD vs GD", kind="paired", a="SGD", b="GD", sign=-1),
             dict(label="same vs GD", kind="paired", a="same", b="GD", sign=-1),
             dict(label="GD vs SGD", kind="paired", a="GD", b="SGD", sign=-1),
             dict(label="heavy vs GD", kind="km", a="heavy", b="GD", sign=-1)]
    t = A.comparison_table(df, specs, horizon=40_000, reps=999).set_index("test")
    assert t.loc["SGD vs GD", "verdict"] == "supported"
    assert t.loc["GD vs SGD", "verdict"] == "contradicted"
    assert t.loc["same vs GD", "verdict"] == "no difference detected"
    assert (t["p (Holm)"] >= t["p"]).all()
    assert t.loc["heavy vs GD", "detail"].startswith("6 of 8 diverged, 2 generalised")
    with pytest.raises(ValueError, match="kind='x'"):
        A.comparison_table(df, [dict(label="?", kind="x", a="GD", b="SGD", sign=0)], horizon=10)


def test_reproduction_mismatches_finds_a_changed_step():
    run = {"optimiser": "SGD", "activation": None, "seed": 0, "weight_decay": 3e-6, "diverged_at": None, "fit": 10,
           "generalise": 100, "circuit": 50, "last_step": 100, "sharpness": 0.5, "norm_at_sharpness_step": 3.0,
           "norm_at_generalise": 2.0}
    assert A.reproduction_mismatches([run], [dict(run)]) == []
    assert A.reproduction_mismatches([run], [dict(run, sharpness=0.5 * (1 + 1e-6))]) == []
    assert A.reproduction_mismatches([run], [dict(run, generalise=112)]) == [
        "('SGD', None, 0, 3e-06): generalise 112 live, 100 committed"]
    assert "no committed run" in A.reproduction_mismatches([run], [dict(run, seed=1)])[0]
    assert len(A.reproduction_mismatches([run], [dict(run, sharpness=0.6)])) == 1


def test_paired_power_matches_simulation():
    from scipy import stats

    from sgdnoise.experiments.chapter6 import paired_power

    n, sd, delta, alpha, M = 6, 0.045, 0.06, 0.05 / 9, 4000
    d = np.random.default_rng(0).normal(delta, sd, size=(M, n))
    p = stats.ttest_1samp(d, 0.0, axis=1).pvalue
    rate = float(np.mean(p <= alpha))
    power = paired_power(n, sd, delta, alpha)
    assert abs(rate - power) < 4 * math.sqrt(power * (1 - power) / M), (rate, power)
    # failing variant: the unpaired formula's power (sd·√2) is far lower
    assert paired_power(n, sd * math.sqrt(2), delta, alpha) < power - 0.1


def test_interpolated_crossing_and_not_testable_km():
    assert A.interpolated_crossing([1, 10, 100], [0.0, 0.5, 1.0], 0.75) == pytest.approx(1.5)
    assert A.interpolated_crossing([1, 10, 100], [0.0, 0.96, 1.0], 0.95) == pytest.approx(0.95 / 0.96)
    assert math.isnan(A.interpolated_crossing([1, 10], [0.1, 0.2], 0.95))
    # every run of A diverges before any run of B generalises: the curves carry no information
    df = _frame([None] * 4, [1000, 1100, 1200, 1300])
    t = A.comparison_table(df, [dict(label="A vs B", kind="km", a="A", b="B", sign=-1),
                                dict(label="B vs B", kind="paired", a="B", b="B", sign=0)], horizon=40_000, reps=99)
    assert t.verdict[0] == "not testable" and math.isnan(t["p (Holm)"][0]) and t["p (Holm)"][1] == t.p[1]
