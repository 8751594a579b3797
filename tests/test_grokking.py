import math

import numpy as np
import pytest
import torch
from scipy import stats

from sgdnoise.experiments.cache import ResultCache
from sgdnoise.experiments.grokking import (
    DEFAULT,
    LARGE,
    ModAddConfig,
    eval_steps,
    gradient_estimate,
    learning_rate,
    make_data,
    make_model,
    noise_factor,
    run_grokking,
    split_indices,
)
from sgdnoise.gradients import per_sample_grads
from sgdnoise.sgd import DivergenceError

# lr of order width (mean-field scaling); heavy-tailed noise blows the quadratic network up quickly, so
# gd_stable runs here use alpha close to 2
TINY = ModAddConfig(p=5, train_frac=0.6, width=6, lr=0.3, weight_decay=1e-3, B=4, alpha=1.9, steps=30,
                    evals_per_decade=4)


def test_split_is_deterministic_disjoint_and_covers_all_pairs():
    tr, te = split_indices(7, 0.4, seed=3)
    tr2, te2 = split_indices(7, 0.4, seed=3)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)
    assert len(tr) == round(0.4 * 49) == ModAddConfig(p=7, train_frac=0.4, B=1).n_train
    assert torch.equal(torch.cat([tr, te]).sort().values, torch.arange(49))
    assert not set(tr.tolist()) & set(te.tolist())
    assert not torch.equal(split_indices(7, 0.4, seed=4)[0], tr)


def test_data_encode_pairs_and_labels():
    cfg = ModAddConfig(p=5, train_frac=0.6, B=2, loss="cross_entropy", seed=1)
    data = make_data(cfg)
    assert data.n == cfg.n_train == 15 and data.X_test.shape == (10, 10)
    for X, y, idx in ((data.X_train, data.y_train, data.train_idx), (data.X_test, data.y_test, data.test_idx)):
        a, b = X[:, :5].argmax(1), X[:, 5:].argmax(1)
        assert torch.equal(a * 5 + b, idx) and torch.equal(y, (a + b) % 5) and torch.equal(X.sum(1), torch.full((len(y),), 2.0))
    assert torch.equal(data.T_train, data.y_train)
    mse = make_data(cfg.replace(loss="mse"))
    assert torch.equal(mse.T_train.argmax(1), mse.y_train) and mse.T_train.shape == (15, 5)
    assert torch.equal(make_data(cfg.replace(data_seed=1, seed=2)).train_idx, data.train_idx)


def test_eval_steps_and_schedule():
    assert eval_steps(0, 5) == [0]
    s = eval_steps(1000, 2)
    assert s == [0, 1, 3, 10, 32, 100, 316, 1000]
    cfg = DEFAULT.replace(lr_schedule="linear_warmup", warmup_steps=4)
    assert [learning_rate(cfg, k) for k in range(6)] == [25.0, 50.0, 75.0, 100.0, 100.0, 100.0]


@pytest.mark.parametrize("optimizer", ["gd", "sgd", "gd_gaussian", "gd_stable"])
def test_tiny_run_returns_documented_fields(optimizer):
    seen = []

    def callback(step, model, data):
        seen.append(step)
        return {"norm": float(sum(q.detach().norm() ** 2 for q in model.parameters())), "n": data.n}

    r = run_grokking(TINY.replace(optimizer=optimizer), progress=False, callback=callback)
    steps = r["steps"]
    assert steps[0] == 0 and steps[-1] == 30 and list(steps) == eval_steps(30, 4) == seen
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "weight_norm", "seconds"):
        assert r[key].shape == steps.shape and np.isfinite(r[key]).all(), key
    assert r["n_train"] == 15 and r["n_test"] == 10 and r["d"] == 3 * 5 * 6 == r["theta"].size
    assert r["theta"].dtype == np.float32 and r["config"]["optimizer"] == optimizer
    assert np.isclose(r["weight_norm"][-1], np.linalg.norm(r["theta"]), rtol=1e-5)
    assert [rec["step"] for rec in r["records"]] == seen and r["records"][0]["n"] == 15
    for t in ("time_to_fit", "time_to_generalise"):
        assert r[t] is None or r[t] in steps
    assert r["last_step"] == 30 and r["wall_time_s"] > 0


def test_fit_and_generalise_times_are_first_crossings():
    r = run_grokking(ModAddConfig(p=7, train_frac=0.8, width=32, lr=10.0, weight_decay=1e-3, steps=400, evals_per_decade=10), progress=False)
    i = int(np.argmax(r["train_acc"] >= 1.0))
    assert r["train_acc"][i] == 1.0 and r["time_to_fit"] == r["steps"][i]
    if r["time_to_generalise"] is not None:
        j = list(r["steps"]).index(r["time_to_generalise"])
        assert r["test_acc"][j] >= 0.95 and (r["test_acc"][:j] < 0.95).all()
    stop = run_grokking(ModAddConfig(p=7, train_frac=0.8, width=32, lr=10.0, weight_decay=1e-3, steps=400,
                                     evals_per_decade=10, threshold=0.2, stop_at_generalisation=True), progress=False)
    assert stop["last_step"] == stop["time_to_generalise"] == stop["steps"][-1] < 400


def _noise_draws(cfg, M, seed):
    data, model = make_data(cfg), make_model(cfg)
    gen = torch.Generator().manual_seed(seed)
    g_n = gradient_estimate(cfg.replace(optimizer="gd"), model, data, generator=gen).double()
    xi = torch.stack([gradient_estimate(cfg, model, data, generator=gen).double() - g_n for _ in range(M)])
    G = per_sample_grads(model, data.loss_fn, data.X_train, data.T_train).double()
    torch.testing.assert_close(G.mean(0), g_n, rtol=1e-5, atol=1e-7)
    Gc = G - G.mean(0)
    return xi, noise_factor(cfg) * Gc.T @ Gc / data.n  # draws, and c(n, B) Σ_emp


def _directions(C, k=3, seed=0):
    _, vecs = torch.linalg.eigh(C)
    rand = torch.randn((C.shape[0], k), generator=torch.Generator().manual_seed(seed), dtype=C.dtype)
    return torch.cat([vecs[:, -k:], rand / rand.norm(dim=0)], dim=1)


def _check_covariance(xi, C, z=4.5):
    """Mean 0 and ``uᵀ Cov u = uᵀ C u`` along a few directions, within ``z`` Monte Carlo standard errors."""
    M = xi.shape[0]
    U = _directions(C)
    proj = xi @ U
    target = ((U.T @ C) * U.T).sum(1)
    sq = proj**2
    est, se = sq.mean(0), sq.std(0) / math.sqrt(M)
    assert ((est - target).abs() < z * se).all(), (est, target, se)
    assert (proj.mean(0).abs() < z * (target / M).sqrt()).all()
    tr = (xi**2).sum(1)
    assert abs(tr.mean() - C.trace()) < z * tr.std() / math.sqrt(M)


@pytest.mark.parametrize("scheme", ["with_replacement", "without_replacement"])
def test_gd_gaussian_noise_has_sgd_covariance(scheme):
    cfg = TINY.replace(scheme=scheme)
    xi_sgd, C = _noise_draws(cfg.replace(optimizer="sgd"), 3000, seed=1)
    xi_gauss, C2 = _noise_draws(cfg.replace(optimizer="gd_gaussian"), 3000, seed=2)
    torch.testing.assert_close(C, C2)
    assert C.trace() > 0
    _check_covariance(xi_sgd, C)  # SGD's minibatch noise has covariance c(n, B) Σ ...
    _check_covariance(xi_gauss, C)  # ... and so has the injected Gaussian noise


def test_gd_stable_with_alpha_2_is_gd_gaussian_in_law():
    xi_stable, C = _noise_draws(TINY.replace(optimizer="gd_stable", alpha=2.0), 3000, seed=3)
    xi_gauss, _ = _noise_draws(TINY.replace(optimizer="gd_gaussian"), 3000, seed=4)
    _check_covariance(xi_stable, C)
    u = _directions(C)[:, -1]
    assert stats.ks_2samp((xi_stable @ u).numpy(), (xi_gauss @ u).numpy()).pvalue > 1e-3
    # α < 2: same scale parameter, far heavier tails
    xi_heavy, _ = _noise_draws(TINY.replace(optimizer="gd_stable", alpha=1.2), 2000, seed=5)
    assert stats.kurtosis((xi_heavy @ u).numpy()) > 10 > abs(stats.kurtosis((xi_stable @ u).numpy())) + 5


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(p=1), r"p=1 must be an int >= 2"),
        (dict(p=5.0), r"p=5.0 must be an int >= 2"),
        (dict(train_frac=0.0), r"train_frac=0.0 must lie in the open interval \(0, 1\)"),
        (dict(train_frac=1.0), r"train_frac=1.0 must lie"),
        (dict(p=3, train_frac=0.99), r"gives 9 training pairs out of p²=9"),
        (dict(B=0), r"batch size B=0 must be an int with 1 <= B <= n_train=480"),
        (dict(B=481), r"B=481 must be an int with 1 <= B <= n_train=480"),
        (dict(lr=0.0), r"learning rate eta=0.0 must be a finite number > 0"),
        (dict(lr=-1.0), r"learning rate eta=-1.0"),
        (dict(lr=float("nan")), r"learning rate eta=nan"),
        (dict(optimizer="adam"), r"optimizer='adam'; valid optimizers are \('gd', 'sgd', 'gd_gaussian', 'gd_stable', 'gd_stable_matched'\)"),
        (dict(loss="l1"), r"loss='l1'; valid losses"),
        (dict(activation="sigmoid"), r"activation='sigmoid'; valid activations"),
        (dict(alpha=2.5), r"alpha=2.5 must lie in \(0, 2\]"),
        (dict(alpha=0.0), r"alpha=0.0 must lie in \(0, 2\]"),
        (dict(weight_decay=-1e-3), r"weight_decay=-0.001 must be a finite number >= 0"),
        (dict(steps=-1), r"steps=-1 must be an int >= 0"),
        (dict(scheme="shuffle"), r"scheme='shuffle'; valid schemes"),
        (dict(lr_schedule="cosine"), r"lr_schedule='cosine'; valid schedules"),
        (dict(lr_schedule="linear_warmup"), r"needs warmup_steps >= 1"),
        (dict(threshold=1.5), r"threshold=1.5 must lie in \(0, 1\]"),
        (dict(device="tpu"), r"device='tpu'"),
        (dict(width=0), r"width=0 must be an int >= 1"),
        (dict(evals_per_decade=0), r"evals_per_decade=0"),
    ],
)
def test_bad_config_values_raise(change, message):
    with pytest.raises(ValueError, match=message):
        DEFAULT.replace(**change)


def test_progress_bar_and_threads_are_harmless(capsys):
    before = torch.get_num_threads()
    quiet = run_grokking(TINY, progress=False)
    loud = run_grokking(TINY, progress=True, threads=None)
    np.testing.assert_array_equal(quiet["theta"], loud["theta"])
    assert "gd p=5" in capsys.readouterr().err
    assert torch.get_num_threads() == before


def test_bad_run_arguments():
    with pytest.raises(TypeError, match="cfg must be a ModAddConfig"):
        run_grokking({"p": 5}, progress=False)
    with pytest.raises(ValueError, match="threads=0"):
        run_grokking(TINY, progress=False, threads=0)


def test_divergence_names_eta_B_and_step():
    with pytest.raises(DivergenceError, match=r"diverged (at|by) step \d+: .*eta=1000000.0, B=4, optimizer='sgd'"):
        run_grokking(TINY.replace(optimizer="sgd", lr=1e6, steps=50), progress=False)


def test_cache_is_used(tmp_path):
    cache = ResultCache(tmp_path)

    def callback(step, model, data):
        return {"step_sq": step * step}

    cfg = TINY.replace(optimizer="gd_gaussian", steps=10)
    first = run_grokking(cfg, cache=cache, progress=False, callback=callback)
    second = run_grokking(cfg, cache=cache, progress=False, callback=callback)
    assert cache.hits == 1 and cache.misses == 1  # not recomputed
    np.testing.assert_array_equal(first["test_acc"], second["test_acc"])
    np.testing.assert_array_equal(first["theta"], second["theta"])
    assert second["records"] == first["records"] and second["time_to_fit"] == first["time_to_fit"]
    # a fresh run reproduces the cached one exactly
    fresh = run_grokking(cfg, progress=False, callback=callback)
    np.testing.assert_array_equal(fresh["theta"], first["theta"])
    # another configuration, or no callback, is another entry
    run_grokking(cfg.replace(seed=1), cache=cache, progress=False)
    run_grokking(cfg, cache=cache, progress=False)
    assert cache.misses == 3 and len(cache.entries("grokking")) == 3


def test_config_types_are_canonical():
    a, b = DEFAULT.replace(lr=100, B=np.int64(32)), DEFAULT.replace(lr=100.0, B=32)
    assert a == b and type(a.lr) is float and type(a.B) is int
    cache = ResultCache("unused")
    assert cache.key("grokking", a) == cache.key("grokking", b)


def test_reshuffling_sgd_runs():
    r = run_grokking(TINY.replace(optimizer="sgd", scheme="reshuffling", B=4), progress=False)
    assert np.isfinite(r["train_loss"]).all()


def test_default_and_large_configs_are_consistent():
    assert DEFAULT.optimizer == "gd" and DEFAULT.p < LARGE.p and DEFAULT.width < LARGE.width
    assert DEFAULT.n_train == 480


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("optimizer", ["gd", "sgd", "gd_gaussian", "gd_stable"])
def test_runs_on_cuda(optimizer):
    cfg = TINY.replace(optimizer=optimizer, steps=20)
    gpu = run_grokking(cfg.replace(device="cuda"), progress=False)
    cpu = run_grokking(cfg, progress=False)
    assert gpu["config"]["device"] == "cuda" and np.isfinite(gpu["train_loss"]).all()
    assert gpu["train_loss"][0] == pytest.approx(cpu["train_loss"][0], rel=1e-5)  # same data and initialisation
    if optimizer in ("gd", "sgd"):  # same batches (drawn on the CPU): the same run up to rounding
        np.testing.assert_allclose(gpu["train_loss"], cpu["train_loss"], rtol=1e-3, atol=1e-6)


SCALE = 2.0


def reads_a_global(step, model, data):
    return {"scaled": SCALE * step}


def test_cached_callback_is_keyed_by_the_globals_it_reads(tmp_path):
    """Issue 23, item 10: a callback reading a global used to return stale records after the global changed."""
    global SCALE
    cache = ResultCache(tmp_path)
    cfg = TINY.replace(optimizer="gd", steps=10)
    first = run_grokking(cfg, cache=cache, progress=False, callback=reads_a_global)
    SCALE = 3.0
    try:
        second = run_grokking(cfg, cache=cache, progress=False, callback=reads_a_global)
    finally:
        SCALE = 2.0
    assert cache.misses == 2 and cache.hits == 0
    assert [r["scaled"] for r in second["records"]] == [1.5 * r["scaled"] for r in first["records"]]
    third = run_grokking(cfg, cache=cache, progress=False, callback=reads_a_global)  # the old value again: a hit
    assert cache.hits == 1 and third["records"] == first["records"]


def test_cached_callback_with_state_the_key_cannot_see_is_refused(tmp_path):
    cache = ResultCache(tmp_path)
    cfg = TINY.replace(optimizer="gd", steps=10)
    net = torch.nn.Linear(2, 2)

    def reads_a_module(step, model, data):
        return {"w": float(net.weight.sum())}

    with pytest.raises(ValueError, match=r"the callback reads 'net', a Linear, whose value the cache key cannot record"):
        run_grokking(cfg, cache=cache, progress=False, callback=reads_a_module)

    class Counter:
        def __call__(self, step, model, data):
            return None

    with pytest.raises(ValueError, match=r"is a Counter; with a cache, pass a plain function"):
        run_grokking(cfg, cache=cache, progress=False, callback=Counter())
    assert cache.misses == 0  # nothing was run


def test_callback_key_sees_defaults_nested_reads_and_not_attributes():
    from sgdnoise.experiments.grokking import _callback_source

    def make(k):
        return lambda step, model, data, k=k: {"k": k * step}

    assert _callback_source(make(1)) != _callback_source(make(2))  # default arguments are keyed

    def nested(step, model, data):
        return {"s": sum(SCALE * i for i in range(step))}  # a global read inside a generator expression

    global SCALE
    before = _callback_source(nested)
    SCALE = 5.0
    try:
        assert _callback_source(nested) != before
    finally:
        SCALE = 2.0
    def attribute(step, model, data):
        return {"w": float(model.weight.sum())}

    globals()["weight"] = torch.nn.Linear(2, 2)  # a global with the attribute's name, which the key cannot record
    try:
        _callback_source(attribute)  # not refused: model.weight is an attribute, not a read of the global
    finally:
        del globals()["weight"]
