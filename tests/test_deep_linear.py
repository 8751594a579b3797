import math

import numpy as np
import pytest
import torch

from sgdnoise.experiments.cache import ResultCache
from sgdnoise.experiments.deep_linear import (
    DEFAULT,
    OPTIMIZERS,
    DLNConfig,
    analytic_escape_times,
    compare_to_sgd,
    effective_a0,
    end_to_end,
    escape_times,
    init_params,
    layer_matrices,
    make_data,
    make_problem,
    mode_strengths,
    run_dln,
    saxe_escape_time,
    saxe_mode_strength,
    summarize,
    teacher,
)
from sgdnoise.gradients import flat_params
from sgdnoise.sgd import DivergenceError

TINY = DLNConfig(k=3, singular_values=(3.0, 1.0), n=12, init_scale=1e-2, lr=0.05, B=3, steps=40, chains=3,
                 tail_steps=(0, 40), tail_batches=64, tail_directions=2)


@pytest.mark.parametrize("changes, match", [
    ({"k": 0}, "k=0"),
    ({"singular_values": ()}, "singular_values"),
    ({"singular_values": (1.0, -2.0)}, "singular_values"),
    ({"k": 2, "singular_values": (3.0, 2.0, 1.0)}, "at most 2"),
    ({"n": 4}, "whiten=True needs n >= k"),
    ({"depth": 1}, "depth=1"),
    ({"width": 3}, "width=3"),
    ({"init": "xavier"}, "valid initialisations"),
    ({"init_scale": 0.0}, "init_scale"),
    ({"optimizer": "adam"}, "valid optimizers"),
    ({"lr": -1.0}, "learning rate"),
    ({"lr": float("nan")}, "learning rate"),
    ({"B": 0}, "batch size"),
    ({"scheme": "without_replacement", "B": 100}, "exceeds n"),
    ({"scheme": "bogus"}, "valid schemes"),
    ({"alpha": 2.5}, "alpha"),
    ({"sde_substeps": 0}, "sde_substeps"),
    ({"chains": 0}, "chains"),
    ({"tail_steps": (0, 10_000)}, "tail_steps"),
    ({"tail_batches": 3}, "tail_batches"),
    ({"steps": -1}, "steps"),
    ({"device": "tpu"}, "device"),
    ({"whiten": 1}, "whiten"),
])
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        DEFAULT.replace(**changes)


def test_config_canonical_types_and_replace():
    cfg = DLNConfig(singular_values=[4, 2], lr=1, tail_steps=[5, 0, 5])
    assert cfg.singular_values == (4.0, 2.0) and isinstance(cfg.lr, float) and cfg.tail_steps == (0, 5)
    assert cfg.replace(depth=3).d == 2 * 36 + 36 and cfg.d == 72 and cfg.hidden == 6
    assert DEFAULT.optimizer in OPTIMIZERS


def test_data_are_whitened_and_teacher_is_exact():
    cfg = DEFAULT.replace(label_noise=0.0)
    data = make_data(cfg)
    torch.testing.assert_close(data.X.T @ data.X / cfg.n, torch.eye(cfg.k, dtype=torch.float64))
    torch.testing.assert_close(data.Y, data.X @ data.M.T)
    U, s, V = teacher(cfg)
    torch.testing.assert_close(U.T @ U, torch.eye(6, dtype=torch.float64))
    assert s.tolist() == [4.0, 2.0, 1.0, 0.0, 0.0, 0.0]
    assert not torch.equal(make_data(cfg.replace(data_seed=1)).X, data.X)


def test_mode_strengths_exact_on_a_constructed_network():
    cfg = DLNConfig(k=4, singular_values=(5.0, 3.0, 0.5), depth=3, width=5)
    U, _, V = teacher(cfg)
    a = torch.tensor([0.7, -1.3, 2.0, 0.25], dtype=torch.float64)
    # W_3 W_2 W_1 = U diag(a) Vᵀ with orthonormal-column hidden factors
    Q1 = torch.linalg.qr(torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    W1 = Q1 @ torch.diag(a) @ V.T
    W2 = 2.0 * torch.eye(5, dtype=torch.float64)
    W3 = 0.5 * U @ Q1.T
    theta = torch.cat([W1.reshape(-1), W2.reshape(-1), W3.reshape(-1)])
    torch.testing.assert_close(end_to_end(theta, cfg), U @ torch.diag(a) @ V.T)
    torch.testing.assert_close(mode_strengths(theta, cfg), a[:3])
    # batched, and consistent with the nn.Sequential of the Problem
    torch.testing.assert_close(mode_strengths(torch.stack([theta, 2 * theta]), cfg), torch.stack([a[:3], 8 * a[:3]]))
    problem = make_problem(cfg)
    problem.set_theta(theta)
    torch.testing.assert_close(problem.model(problem.X), problem.X @ end_to_end(theta, cfg).T)
    assert [W.shape for W in layer_matrices(theta, cfg)] == [(5, 4), (5, 5), (4, 5)]
    with pytest.raises(ValueError, match="d="):
        mode_strengths(theta[:-1], cfg)


def test_init_is_balanced_and_aligned_init_is_decoupled():
    for init in ("random", "aligned"):
        cfg = DLNConfig(depth=3, init=init, init_scale=0.1, chains=2, shared_init=False)
        theta = init_params(cfg)
        assert theta.shape == (2, cfg.d) and not torch.equal(theta[0], theta[1])
        Ws = layer_matrices(theta[0], cfg)
        for lo, hi in zip(Ws[:-1], Ws[1:]):
            torch.testing.assert_close(hi.T @ hi, lo @ lo.T)
    U, _, V = teacher(cfg)
    torch.testing.assert_close(end_to_end(theta[1], cfg), 1e-3 * U @ V.T)
    shared = init_params(DLNConfig(chains=3))
    assert torch.equal(shared[0], shared[2])


def test_saxe_formulas():
    s, a0 = 2.0, 1e-4
    t = np.linspace(0, 5, 11)
    # the depth-2 closed form solves ȧ = 2a(s - a), and the depth-D integrator agrees with it at D = 2
    a = saxe_mode_strength(t, s, a0, 2)
    dt = 1e-6
    deriv = (saxe_mode_strength(t + dt, s, a0, 2) - saxe_mode_strength(t - dt, s, a0, 2)) / (2 * dt)
    np.testing.assert_allclose(deriv, 2 * a * (s - a), rtol=1e-5, atol=1e-10)
    t_half = saxe_escape_time(s, a0, 2)
    assert saxe_mode_strength([t_half], s, a0, 2)[0] == pytest.approx(s / 2, rel=1e-9)
    t3 = saxe_escape_time(s, a0, 3)
    assert saxe_mode_strength([t3], s, a0, 3)[0] == pytest.approx(s / 2, rel=1e-6)
    assert saxe_escape_time(s, -1.0) == math.inf and saxe_escape_time(s, 1.5) == 0.0


@pytest.mark.parametrize("depth, scale, lr, steps", [(2, 1e-3, 4e-3, 2000), (3, 0.1, 4e-3, 2500)])
def test_gradient_descent_matches_the_analytic_plateaus(depth, scale, lr, steps):
    """Aligned balanced start: GD at small η follows ȧ = D a^{2-2/D}(s - a) mode by mode. The error is
    the discretisation, relative ≈ η s; for η = 4e-3 and s ≤ 4 within 2.5%."""
    cfg = DLNConfig(singular_values=(4.0, 2.0), depth=depth, init="aligned", init_scale=scale, optimizer="gd",
                    lr=lr, steps=steps, chains=1, tail_steps=())
    r = run_dln(cfg, progress=False)
    np.testing.assert_allclose(r["escape_times"], r["analytic_escape_times"], rtol=0.025)
    assert r["in_order"].all()
    np.testing.assert_allclose(r["final_mode_strengths"], [[4.0, 2.0]], rtol=1e-3)


def test_random_start_depth_two_matches_the_effective_a0():
    """Random balanced start: the effective start (ε² + a_i(0))/2 predicts each plateau within 5%."""
    cfg = DLNConfig(singular_values=(4.0, 1.5), optimizer="gd", lr=5e-3, steps=1300, chains=3, shared_init=False,
                    tail_steps=())
    r = run_dln(cfg, progress=False)
    np.testing.assert_allclose(r["escape_times"], r["analytic_escape_times"], rtol=0.05)
    np.testing.assert_allclose(r["a0_effective"], effective_a0(init_params(cfg), cfg))
    np.testing.assert_allclose(analytic_escape_times(cfg), r["analytic_escape_times"])
    assert r["in_order"].all()


def test_escape_times_interpolate():
    times = np.array([0.0, 1.0, 2.0, 3.0])
    a = np.array([[0.0, 0.0], [1.0, 0.1], [3.0, 0.2], [4.0, 0.3]])[:, None, :]  # (R, C=1, modes)
    out = escape_times(times, a, (4.0, 2.0))
    assert out[0, 0] == pytest.approx(1.5) and math.isnan(out[0, 1])


def test_run_dln_returns_the_documented_fields(tmp_path):
    for opt in OPTIMIZERS:
        r = run_dln(TINY.replace(optimizer=opt, alpha=1.9), progress=False)
        R = len(range(0, 41))
        assert r["mode_strengths"].shape == (R, 3, 2) and r["times"].shape == (R,)
        assert r["escape_times"].shape == r["analytic_escape_times"].shape == (3, 2)
        assert r["final_mode_strengths"].shape == (3, 2) and r["in_order"].shape == (3,)
        assert r["tail_alpha"].shape == (2, 2) and np.isfinite(r["tail_alpha"]).all()
        assert r["config"]["optimizer"] == opt and r["d"] == 18 and r["wall_time_s"] >= 0
        np.testing.assert_allclose(r["times"], 0.05 * r["record_steps"])
    r = run_dln(TINY.replace(record_every=7, tail_steps=()), progress=False)
    assert r["record_steps"].tolist() == [0, 7, 14, 21, 28, 35, 40] and r["tail_alpha"].shape == (0, 2)
    cache = ResultCache(tmp_path)
    first = run_dln(TINY, cache=cache, progress=False)
    again = run_dln(TINY, cache=cache, progress=False)
    assert cache.hits == 1 and cache.misses == 1
    np.testing.assert_array_equal(first["escape_times"], again["escape_times"])


def test_runs_are_reproducible_and_chains_differ():
    a = run_dln(TINY, progress=False)
    b = run_dln(TINY, progress=False)
    np.testing.assert_array_equal(a["mode_strengths"], b["mode_strengths"])
    assert not np.array_equal(a["mode_strengths"][-1, 0], a["mode_strengths"][-1, 1])


def test_divergence_names_eta_and_B():
    with pytest.raises(DivergenceError, match=r"eta=2\.0.*B=3"):
        run_dln(TINY.replace(lr=2.0, init_scale=0.5), progress=False)


def test_compare_to_sgd_and_summarize():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 1.0, size=(200, 2))
    same = compare_to_sgd(x, x)
    assert same["ks"].tolist() == [0.0, 0.0] and same["w1"].tolist() == [0.0, 0.0]
    shifted = compare_to_sgd(x, x + 1.0)
    np.testing.assert_allclose(shifted["w1"], [1.0, 1.0])
    np.testing.assert_allclose(shifted["w1_rel"], 1.0 / x.mean(0))
    assert (shifted["ks"] > 0.3).all()
    y = x.copy()
    y[:, 1] = np.nan
    out = compare_to_sgd(x, y)
    assert math.isnan(out["ks"][1]) and out["ks"][0] == 0.0
    s = summarize(x)
    np.testing.assert_allclose(s["se"], x.std(0, ddof=1) / math.sqrt(200))
    assert s["count"].tolist() == [200, 200]
    with pytest.raises(ValueError, match="modes"):
        compare_to_sgd(x, x[:, :1])


def test_no_cuda_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="no CUDA device"):
        run_dln(TINY.replace(device="cuda"), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_for_gd():
    cfg = TINY.replace(optimizer="gd")
    cpu = run_dln(cfg, progress=False)
    gpu = run_dln(cfg.replace(device="cuda"), progress=False)
    np.testing.assert_allclose(gpu["mode_strengths"], cpu["mode_strengths"], rtol=1e-8, atol=1e-12)
    sgd = run_dln(cfg.replace(optimizer="sgd", device="cuda"), progress=False)
    assert np.isfinite(sgd["mode_strengths"]).all()


def test_divergence_drop_retires_chains_and_keeps_the_rest():
    cfg = TINY.replace(lr=0.3, init_scale=0.3, chains=4, shared_init=False, divergence="drop", tail_steps=(0,))
    with pytest.raises(DivergenceError):
        run_dln(cfg.replace(divergence="raise"), progress=False)
    r = run_dln(cfg, progress=False)
    assert r["diverged"].shape == (4,) and r["diverged"].any() and not r["diverged"].all()
    for c in range(4):
        finite = np.isfinite(r["mode_strengths"][:, c]).all()
        assert finite == (not r["diverged"][c])
        assert (r["diverged_at"][c] >= 0) == r["diverged"][c]
    assert len(r["redrawn_pieces"]) >= 1 and len(run_dln(TINY, progress=False)["redrawn_pieces"]) == 0
    with pytest.raises(ValueError, match="divergence"):
        TINY.replace(divergence="ignore")


def test_large_size_is_the_default_with_more_seeds():
    from sgdnoise.experiments import deep_linear as dln

    assert dln.LARGE.chains > dln.DEFAULT.chains
    assert dln.LARGE.replace(chains=dln.DEFAULT.chains) == dln.DEFAULT
