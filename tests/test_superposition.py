import math

import numpy as np
import pytest
import torch

from sgdnoise.experiments import superposition as tms
from sgdnoise.experiments.cache import ResultCache
from sgdnoise.experiments.superposition import (
    DEFAULT,
    LARGE,
    NOISE_BASE,
    NOISE_SWEEP,
    TMSConfig,
    classify_geometry,
    eval_steps,
    format_phase_table,
    gradient_estimate,
    importances,
    init_params,
    make_data,
    noise_factor,
    noise_settings,
    per_sample_loss,
    phase_diagram,
    run_tms,
    run_tms_batch,
    run_tms_seeds,
)
from sgdnoise.sgd import DivergenceError

TINY = TMSConfig(n_samples=64, B=8, steps=40, lr=0.01, evals_per_decade=2)


@pytest.mark.parametrize("changes, match", [
    ({"n": 0}, "n=0"), ({"m": 6}, "m=6"), ({"importance": 0.0}, "importance"), ({"sparsity": 1.0}, "sparsity"),
    ({"sparsity": -0.1}, "sparsity"), ({"n_samples": 1}, "n_samples"), ({"optimizer": "adam"}, "valid optimizers"),
    ({"lr": 0.0}, "learning rate"), ({"lr": float("nan")}, "learning rate"), ({"B": 65}, "batch size"),
    ({"B": 0}, "batch size"), ({"scheme": "bogus"}, "scheme"), ({"steps": -1}, "steps"), ({"seed": -1}, "seed"),
    ({"data_seed": 1.5}, "data_seed"), ({"threshold": 0}, "threshold"), ({"angle_tol": 50}, "angle_tol"),
    ({"device": "tpu"}, "device"), ({"online": True, "optimizer": "gd"}, "online"), ({"weight_decay": -1}, "weight_decay"),
    ({"online": 1}, "online"),
])
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        TINY.replace(**changes)


def test_config_canonical_types_and_noise_level():
    c = TINY.replace(lr=1, sparsity=np.float64(0.5), steps=np.int64(7))
    assert type(c.lr) is float and type(c.sparsity) is float and type(c.steps) is int
    assert c == TINY.replace(lr=1.0, sparsity=0.5, steps=7)
    assert TINY.replace(optimizer="sgd", lr=0.4, B=8).noise_level == 0.05 and TINY.replace(optimizer="gd").noise_level == 0
    assert TINY.replace(online=True, B=1000).B == 1000  # online batches may exceed the evaluation set
    assert DEFAULT.n == 5 and DEFAULT.m == 2 and DEFAULT.optimizer == "adamw" and LARGE.n_samples > DEFAULT.n_samples
    assert all(set(ch) <= set(TMSConfig.__dataclass_fields__) for ch in noise_settings(NOISE_BASE, **NOISE_SWEEP).values())


def test_data_sparsity_and_values():
    for S in (0.0, 0.3, 0.9):
        cfg = TMSConfig(n_samples=4000, sparsity=S, seed=3)
        X = make_data(cfg)
        assert X.shape == (4000, 5) and X.dtype == torch.float32 and torch.equal(X, make_data(cfg))
        zero = (X == 0).double().mean().item()
        se = math.sqrt(S * (1 - S) / X.numel()) if 0 < S else 0.0
        assert abs(zero - S) <= 4 * se + 1e-12, (zero, S)
        nz = X[X > 0]
        assert nz.max() < 1 and abs(nz.mean().item() - 0.5) < 4 * math.sqrt(1 / 12 / nz.numel())
    assert not torch.equal(make_data(cfg), make_data(cfg.replace(seed=4)))
    assert torch.equal(make_data(cfg.replace(seed=4, data_seed=3)), make_data(cfg))
    torch.testing.assert_close(importances(TMSConfig(importance=0.5, n=3, m=1)), torch.tensor([1.0, 0.5, 0.25]))


def _polygon(angles_deg, norms=None):
    a = np.radians(np.asarray(angles_deg, dtype=float))
    r = np.ones_like(a) if norms is None else np.asarray(norms, dtype=float)
    return np.stack([r * np.cos(a), r * np.sin(a)])


def test_geometry_classifier_on_hand_made_W():
    rot = 37.0
    orth = np.concatenate([_polygon([rot, rot + 90]), np.zeros((2, 3)) + 0.01], axis=1)
    g = classify_geometry(orth)
    assert g["label"] == "2 orthogonal" and g["n_represented"] == 2 and list(g["represented"]) == [1, 1, 0, 0, 0]
    assert classify_geometry(np.concatenate([_polygon([rot, rot + 180]), np.zeros((2, 3))], 1))["label"] == "antipodal pair"
    assert classify_geometry(_polygon(rot + 72 * np.arange(5) + [0, 5, -5, 3, 0], [1, 0.9, 1.1, 1, 0.8]))["label"] == "pentagon"
    assert classify_geometry(_polygon([0, 180, 90, 270, 10], [1, 1, 1, 1, 0.1]))["label"] == "2 antipodal pairs"
    assert classify_geometry(_polygon([0, 120, 240, 0, 0], [1, 1, 1, 0, 0]))["label"] == "triangle"
    assert classify_geometry(_polygon([0, 180, 90, 0, 0], [1, 1, 1, 0, 0]))["label"] == "antipodal pair + 1"
    assert classify_geometry(_polygon([0, 45, 0, 0, 0], [1, 1, 0, 0, 0]))["label"] == "other"
    assert classify_geometry(_polygon([0, 0, 0, 0, 0], [1, 0, 0, 0, 0]))["label"] == "1 feature"
    assert classify_geometry(np.zeros((2, 5)))["label"] == "none"
    assert classify_geometry(torch.tensor(orth))["label"] == "2 orthogonal"  # tensors too
    # m > 2: orthogonal sets and antipodal pairs
    assert classify_geometry(np.eye(3, 5))["label"] == "3 orthogonal"
    assert classify_geometry(np.array([[1, -1, 0, 0], [0, 0, 1, -1], [0, 0, 0, 0.]]))["label"] == "2 antipodal pairs"
    with pytest.raises(ValueError, match="shape"):
        classify_geometry(np.zeros(5))


def _per_sample_grads(cfg, W, b, X):
    imp = importances(cfg)
    rows = []
    for x in X:
        Wq, bq = W.clone().requires_grad_(True), b.clone().requires_grad_(True)
        gW, gb = torch.autograd.grad(per_sample_loss(Wq, bq, x[None], imp).sum(), (Wq, bq))
        rows.append(torch.cat([gW.reshape(-1), gb]))
    return torch.stack(rows).double()


@pytest.mark.parametrize("scheme", ["with_replacement", "without_replacement"])
def test_gd_gaussian_noise_has_sgd_covariance(scheme):
    cfg = TMSConfig(n_samples=40, B=5, sparsity=0.5, scheme=scheme, seed=2)
    X = make_data(cfg)
    W, b = init_params(cfg)
    b = b + 0.1
    G = _per_sample_grads(cfg, W, b, X)
    g_n = gradient_estimate(cfg.replace(optimizer="gd"), W, b, X, generator=torch.Generator()).double()
    torch.testing.assert_close(G.mean(0), g_n, rtol=1e-5, atol=1e-7)
    Gc = G - G.mean(0)
    C = noise_factor(cfg) * Gc.T @ Gc / cfg.n_samples
    M, z = 4000, 4.5
    for opt, seed in (("sgd", 1), ("gd_gaussian", 2)):
        gen = torch.Generator().manual_seed(seed)
        c = cfg.replace(optimizer=opt)
        xi = torch.stack([gradient_estimate(c, W, b, X, generator=gen).double() - g_n for _ in range(M)])
        _, vecs = torch.linalg.eigh(C)
        U = torch.cat([vecs[:, -3:], torch.eye(C.shape[0], dtype=C.dtype)[:, :2]], 1)
        U = U / U.norm(dim=0)
        proj = xi @ U
        target = ((U.T @ C) * U.T).sum(1)
        sq = proj**2
        assert ((sq.mean(0) - target).abs() < z * sq.std(0) / math.sqrt(M)).all(), (opt, sq.mean(0), target)
        assert (proj.mean(0).abs() < z * (target / M).sqrt()).all(), opt
        tr = (xi**2).sum(1)
        assert abs(tr.mean() - C.trace()) < z * tr.std() / math.sqrt(M), opt


@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "gd", "gd_gaussian"])
def test_tiny_run_returns_documented_fields(optimizer):
    r = run_tms(TINY.replace(optimizer=optimizer, lr=0.01 if optimizer == "adamw" else 0.1), progress=False)
    assert list(r["steps"]) == eval_steps(40, 2) and r["loss"].shape == r["steps"].shape and np.isfinite(r["loss"]).all()
    assert r["W"].shape == (2, 5) and r["b"].shape == (5,) and r["W"].dtype == np.float32
    assert r["label"] == r["geometry"]["label"] and r["geometry"]["norms"].shape == (5,)
    assert r["config"]["optimizer"] == optimizer and r["wall_time_s"] > 0
    np.testing.assert_allclose(r["geometry"]["norms"], np.linalg.norm(r["W"], axis=0), rtol=1e-6)
    if optimizer != "gd_gaussian":
        assert r["loss"][-1] < r["loss"][0]


def test_batched_replicas_equal_single_runs_and_online():
    cfg = TINY.replace(optimizer="sgd", lr=0.1)
    batch = run_tms_seeds(cfg, seeds=(0, 1), sparsities=(0.0, 0.9), progress=False)
    assert batch["seeds"] == [0, 1, 0, 1] and batch["sparsities"] == [0.0, 0.0, 0.9, 0.9]
    assert batch["W"].shape == (4, 2, 5) and batch["loss"].shape == (4, len(batch["steps"])) and len(batch["labels"]) == 4
    alone = run_tms(cfg.replace(seed=1, sparsity=0.9), progress=False)
    np.testing.assert_allclose(batch["W"][3], alone["W"], rtol=1e-4, atol=1e-6)
    assert batch["diverged_at"] == [-1] * 4
    online = run_tms(cfg.replace(online=True, B=16), progress=False)
    assert np.isfinite(online["loss"]).all()
    with pytest.raises(ValueError, match="differ only"):
        run_tms_batch([cfg, cfg.replace(lr=0.2)], progress=False)


def test_divergence_names_eta_B_and_step_or_is_marked():
    cfg = TINY.replace(optimizer="sgd", lr=50.0)
    with pytest.raises(DivergenceError, match=r"step \d+.*eta=50\.0, B=8"):
        run_tms(cfg, progress=False)
    r = run_tms_seeds(cfg, seeds=(0,), sparsities=(0.0,), progress=False, on_divergence="mark")
    assert r["labels"] == ["diverged"] and r["diverged_at"][0] >= 0 and np.isnan(r["loss"][0, -1])


def test_phase_diagram_counts_and_cache(tmp_path):
    base = TINY.replace(steps=30)
    settings = noise_settings(base, horizon=3.0, eta=0.1, batch_sizes=(4,))
    assert set(settings) == {"gd", "sgd B=4", "gd_gaussian B=4"} and settings["gd"]["steps"] == 30
    cache = ResultCache(tmp_path)
    d = phase_diagram(base, settings, sparsities=(0.0, 0.9), seeds=(0, 1), cache=cache, progress=False)
    assert len(d["cells"]) == 6 and d["n_seeds"] == 2
    for c in d["cells"]:
        assert sum(c["counts"].values()) == c["n_seeds"] == 2 and math.isclose(sum(c["fractions"].values()), 1.0)
    table = format_phase_table(d)
    assert "gd_gaussian B=4" in table and "/2" in table
    again = phase_diagram(base, settings, sparsities=(0.0, 0.9), seeds=(0, 1), cache=cache, progress=False)
    assert cache.hits == 3 and [c["counts"] for c in again["cells"]] == [c["counts"] for c in d["cells"]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("optimizer", ["adamw", "sgd", "gd", "gd_gaussian"])
def test_runs_on_cuda(optimizer):
    cfg = TINY.replace(optimizer=optimizer, lr=0.01 if optimizer == "adamw" else 0.1)
    gpu = run_tms(cfg.replace(device="cuda"), progress=False)
    cpu = run_tms(cfg, progress=False)
    assert gpu["config"]["device"] == "cuda" and np.isfinite(gpu["loss"]).all()
    assert gpu["loss"][0] == pytest.approx(cpu["loss"][0], rel=1e-5)  # same data and initialisation
    np.testing.assert_allclose(gpu["W"], cpu["W"], rtol=1e-3, atol=1e-5)  # same randomness (drawn on the CPU)


def _toy_diagram():
    # two settings, two sparsities, four seeds; labels run sparsity-major, as in phase_diagram
    return {"settings": ["a", "b"], "sparsities": [0.0, 0.9], "n_seeds": 4,
            "runs": {"a": {"labels": ["x", "x", "x", "y", "p", "p", "p", "p"]},
                     "b": {"labels": ["y", "y", "x", "x", "p", "q", "q", "q"]}}}


def test_paired_sign_test_counts_only_discordant_seeds():
    d = _toy_diagram()
    r = tms.paired_sign_test(d, "a", "b", 0.9, "p")  # seed 0 reaches it in both: not counted
    assert (r["a_only"], r["b_only"]) == (3, 0) and r["p"] == pytest.approx(2 / 2**3)
    r = tms.paired_sign_test(d, "b", "a", 0.0, "x")  # a: x x x y, b: y y x x
    assert (r["a_only"], r["b_only"]) == (1, 2) and r["p"] == pytest.approx(1.0)
    assert tms.paired_sign_test(d, "a", "a", 0.0, "x") == {"a_only": 0, "b_only": 0, "p": 1.0}


def test_paired_sign_test_names_what_is_missing():
    d = _toy_diagram()
    with pytest.raises(ValueError, match=r"setting 'c' is not in the diagram; its settings are \['a', 'b'\]"):
        tms.paired_sign_test(d, "a", "c", 0.0, "x")
    with pytest.raises(ValueError, match=r"sparsity=0.5 is not in the diagram"):
        tms.paired_sign_test(d, "a", "b", 0.5, "x")


# ----------------------------------------------------------------------------- noise kinds, quench, dimensionality
def _kanter_wrong(shape, a, gen):
    # the failing variant: Kanter's formula with sin(aU) raised to 1/a (a transcription slip made while writing it)
    U = torch.rand(shape, generator=gen, dtype=torch.float64) * math.pi
    E = -torch.log1p(-torch.rand(shape, generator=gen, dtype=torch.float64))
    return (torch.sin(a * U) / torch.sin(U)) ** (1 / a) * (torch.sin((1 - a) * U) / E) ** ((1 - a) / a)


def test_positive_stable_laplace_transform_and_failing_variant():
    from sgdnoise.sde import positive_stable

    M, z = 200_000, 4.5
    for a in (0.6, 0.75, 0.9):
        for draw, ok in ((positive_stable, True), (_kanter_wrong, False)):
            A = draw((M,), a, torch.Generator().manual_seed(3))
            worst = 0.0
            for s in (0.5, 1.0, 2.0):
                v = torch.exp(-s * A)
                worst = max(worst, abs(float(v.mean()) - math.exp(-s**a)) / (float(v.std()) / math.sqrt(M)))
            assert (worst < z) == ok, (a, draw.__name__, worst)
    with pytest.raises(ValueError, match="a=1.0"):
        positive_stable(3, 1.0, torch.Generator())


def test_stable_bulk_factor_matches_the_gaussian_median():
    from sgdnoise.sde import positive_stable

    M = 400_000
    for alpha in (1.5, 1.8):
        kappa = tms.stable_bulk_factor(alpha)
        gen = torch.Generator().manual_seed(11)  # independent of the factor's own draws
        x = kappa * positive_stable((M,), alpha / 2, gen).sqrt() * torch.randn(M, generator=gen, dtype=torch.float64)
        frac = float((x.abs() <= 0.6744897501960817).double().mean())  # P(|x| <= median of |Z|) should be 1/2
        assert abs(frac - 0.5) < 4.5 * 0.5 / math.sqrt(M), (alpha, frac)
        assert abs(frac - 0.5) > 0.01 or kappa != 1.0
        # the tails are heavier than the Gaussian's: far more mass beyond 4 standard units
        assert float((x.abs() > 4).double().mean()) > 50 * 6.3e-5, alpha
    with pytest.raises(ValueError, match="alpha=2"):
        tms.stable_bulk_factor(2)


def test_gd_stable_projections_are_bulk_matched_and_heavy_tailed():
    from scipy import stats
    from sgdnoise.sde import positive_stable

    cfg = TMSConfig(n_samples=40, B=5, sparsity=0.5, seed=2, optimizer="gd_stable", alpha=1.5)
    X = make_data(cfg)
    W, b = init_params(cfg)
    b = b + 0.1
    G = _per_sample_grads(cfg, W, b, X)
    g_n = G.mean(0)
    Gc = G - g_n
    C = noise_factor(cfg) * Gc.T @ Gc / cfg.n_samples
    gen = torch.Generator().manual_seed(5)
    M = 3000
    xi = torch.stack([gradient_estimate(cfg, W, b, X, generator=gen).double() - g_n for _ in range(M)])
    _, vecs = torch.linalg.eigh(C)
    ref_gen = torch.Generator().manual_seed(6)
    ref = (tms.stable_bulk_factor(1.5) * positive_stable((100_000,), 0.75, ref_gen).sqrt()
           * torch.randn(100_000, generator=ref_gen, dtype=torch.float64)).numpy()
    for v in (vecs[:, -1], vecs[:, -2]):
        u = (xi @ v / (v @ C @ v).sqrt()).numpy()  # the projection in units of the Gaussian's standard deviation
        assert stats.ks_2samp(u, ref).pvalue > 1e-3  # the sub-Gaussian stable law, bulk-matched
        # and not the Gaussian (the failing variant): beyond 4 standard units a Gaussian puts 3000 · 6.3e-5 ≈ 0.19
        # draws on average (10 or more with probability below 1e-15)
        assert (np.abs(u) > 4).sum() >= 10, (np.abs(u) > 4).sum()
    mu2 = run_tms(TINY.replace(optimizer="gd_gaussian", noise_mult=2.0, lr=0.1), progress=False)
    assert np.isfinite(mu2["loss"]).all()


def test_noise_mult_scales_the_injected_noise_exactly():
    cfg = TMSConfig(n_samples=40, B=5, sparsity=0.5, seed=2, optimizer="gd_gaussian")
    X = make_data(cfg)
    W, b = init_params(cfg)
    g_n = gradient_estimate(cfg.replace(optimizer="gd"), W, b, X, generator=torch.Generator())
    one = gradient_estimate(cfg, W, b, X, generator=torch.Generator().manual_seed(1)) - g_n
    two = gradient_estimate(cfg.replace(noise_mult=2.0), W, b, X, generator=torch.Generator().manual_seed(1)) - g_n
    torch.testing.assert_close(two, 2 * one, rtol=1e-4, atol=1e-6)
    assert cfg.replace(noise_mult=2.0, lr=0.4, B=8).noise_level == pytest.approx(4 * 0.05)
    for bad, match in (({"optimizer": "sgd", "noise_mult": 2.0}, "injects none"), ({"noise_mult": 0.0}, "noise_mult"),
                       ({"alpha": 2.0}, "alpha"), ({"quench_steps": -1}, "quench_steps")):
        with pytest.raises(ValueError, match=match):
            cfg.replace(**bad)


def test_quench_is_gradient_descent_and_labels_before_are_kept():
    gd = TINY.replace(optimizer="gd", lr=0.1)
    quenched = run_tms(gd.replace(quench_steps=25), progress=False)
    longer = run_tms(gd.replace(steps=65), progress=False)
    np.testing.assert_allclose(quenched["W"], longer["W"], rtol=1e-5, atol=1e-7)  # 40 + 25 steps of GD either way
    sgd = TINY.replace(optimizer="sgd", lr=0.1)
    r = run_tms_seeds(sgd.replace(quench_steps=30), seeds=(0, 1), sparsities=(0.0,), progress=False)
    plain = run_tms_seeds(sgd, seeds=(0, 1), sparsities=(0.0,), progress=False)
    assert r["labels_before_quench"] == plain["labels"]
    assert (r["final_loss"] < plain["loss"][:, -1]).all()  # gradient descent from the noisy end lowers the loss
    assert r["dimensionality"].shape == (2, 5) and r["n_represented_before_quench"].shape == (2,)


def test_diverging_replicas_are_censored_and_the_others_unchanged():
    cfg = TINY.replace(optimizer="sgd", lr=2.0, quench_steps=5)  # dense data diverges at this step size, sparse does not
    r = run_tms_seeds(cfg, seeds=(0, 1), sparsities=(0.0, 0.99), progress=False, on_divergence="mark")
    assert [d >= 0 for d in r["diverged_at"]] == [True, True, False, False], r["diverged_at"]
    assert r["labels"][:2] == ["diverged", "diverged"] and np.isnan(r["final_loss"][:2]).all()
    assert np.all(r["W"][:2] == 0) and np.isfinite(r["W"]).all()
    alone = run_tms(cfg.replace(seed=1, sparsity=0.99), progress=False)
    np.testing.assert_allclose(r["W"][3], alone["W"], rtol=1e-4, atol=1e-6)


def test_feature_dimensionality_of_the_known_geometries():
    ang = np.radians(np.arange(5) * 72.0)
    np.testing.assert_allclose(tms.feature_dimensionality(np.stack([np.cos(ang), np.sin(ang)])), [0.4] * 5)
    anti = np.array([[1.0, -1.0, 0, 0, 0], [0, 0, 1.0, -1.0, 0]])
    np.testing.assert_allclose(tms.feature_dimensionality(anti), [0.5, 0.5, 0.5, 0.5, 0.0])
    orth = np.array([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]])
    np.testing.assert_allclose(tms.feature_dimensionality(orth), [1, 1, 0, 0, 0])
    # not the square of the norm ratio: a pair at 60° shares less than an antipodal pair
    sixty = np.array([[1.0, 0.5, 0, 0, 0], [0, math.sqrt(3) / 2, 0, 0, 0]])
    np.testing.assert_allclose(tms.feature_dimensionality(sixty)[:2], [0.8, 0.8])


def test_capped_stable_noise_cuts_only_the_large_kicks():
    cfg = TMSConfig(optimizer="gd_stable", alpha=1.5)
    capped = cfg.replace(stable_cap=0.9)
    free = tms._stable_mults(cfg, (20_000,), torch.Generator().manual_seed(4)).double()
    cut = tms._stable_mults(capped, (20_000,), torch.Generator().manual_seed(4)).double()  # the same draws
    c = tms.stable_cap_value(1.5, 0.9)
    k0, k1 = tms.stable_bulk_factor(1.5), tms.stable_bulk_factor(1.5, cap=0.9)
    small = free / k0 < c
    torch.testing.assert_close(cut[small], free[small] * (k1 / k0), rtol=1e-5, atol=0)  # unchanged below the cap
    assert torch.all(cut[~small] <= k1 * c * (1 + 1e-6)) and 0.07 < float((~small).double().mean()) < 0.13
    assert float(free.max()) > 10 * k1 * c  # the failing variant: without the cap the largest kick is far larger
    assert math.isinf(tms.stable_cap_value(1.5, 1.0)) and tms.stable_bulk_factor(1.5, cap=1.0) == k0
    with pytest.raises(ValueError, match="stable_cap"):
        cfg.replace(optimizer="gd_gaussian", stable_cap=0.9)
    with pytest.raises(ValueError, match="stable_cap"):
        cfg.replace(stable_cap=0.3)
