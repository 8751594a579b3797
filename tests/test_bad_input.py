"""Bad input fails at once, naming the value and what would be valid; nothing half-done is left behind."""

import math

import numpy as np
import pytest
import torch

from sgdnoise.curvature import hessian_top_eigs, sharpness
from sgdnoise.gradients import center_gram
from sgdnoise.noise import (
    batch_weights,
    estimator_expectation_factor,
    estimator_trace_draws,
    loglog_slope,
    loglog_slope_ci,
    noise_trace_scan,
)
from sgdnoise.problems import half_squared_error, linear_regression, lr_draw, mlp
from sgdnoise.sampling import batches_per_epoch, check_batch_size
from sgdnoise.sde import euler_maruyama, sgd_sde, symmetric_stable
from sgdnoise.sgd import DivergenceError, linear_regression_chains, run_chains, svag_coefficients, train_sgd


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def lr():
    return linear_regression(n=8, d=2)


def test_loss_does_not_broadcast_targets():
    with pytest.raises(ValueError, match=r"output of shape \(6, 1\) and target of shape \(6, 2\) do not match"):
        half_squared_error(torch.zeros(6, 1), torch.ones(6, 2))
    assert half_squared_error(torch.zeros(6), torch.ones(6, 1)).shape == (6,)  # (n,) against (n, 1) is fine


def test_problem_constructors_check_sizes():
    with pytest.raises(ValueError, match=r"theta_true has shape \(2, 1\); need \(2,\)"):
        linear_regression(n=6, d=2, theta_true=torch.ones(2, 1))
    with pytest.raises(ValueError, match=r"n=2.5 must be an int >= 1"):
        lr_draw(1, 2.5, 2, sigma=0.1, generator=gen())
    with pytest.raises(ValueError, match=r"widths=\[3, 0, 2\] must list at least two layer widths"):
        mlp([3, 0, 2], generator=gen())


def test_sgd_sde_keeps_the_model_when_the_reference_point_is_bad(lr):
    before = lr.theta().clone()
    with pytest.raises(FloatingPointError):
        sgd_sde(lr, torch.full((2,), math.nan, dtype=torch.float64), eta=0.1, B=2, dt=0.1, steps=1,
                generator=gen(), covariance="constant")
    torch.testing.assert_close(lr.theta(), before)


def test_train_sgd_restores_the_model_after_divergence(lr):
    before = lr.theta().clone()
    with pytest.raises(DivergenceError, match=r"eta=50"):
        train_sgd(lr, eta=50.0, B=1, steps=200, generator=gen())
    torch.testing.assert_close(lr.theta(), before)


@pytest.mark.parametrize("kw, match", [
    ({"explode_factor": math.nan}, r"explode_factor=nan must be a positive number"),
    ({"explode_factor": 0.0}, r"explode_factor=0.0 must be a positive number"),
    ({"snapshot_at": [1.5]}, r"snapshot_at=\[1.5\] must hold ints in \[0, 3\]"),
    ({"steps": -1}, r"steps=-1 must be a non-negative int"),
])
def test_train_sgd_arguments(lr, kw, match):
    args = {"eta": 0.1, "B": 2, "steps": 3, "generator": gen()} | kw
    with pytest.raises(ValueError, match=match):
        train_sgd(lr, **args)


@pytest.mark.parametrize("kw, match", [
    ({"explode": math.nan}, r"explode=nan must be a positive number"),
    ({"explode_loss": -1.0}, r"explode_loss=-1.0 must be a positive number"),
    ({"steps": 2.5}, r"steps=2.5 must be a non-negative int"),
    ({"record_steps": []}, r"record_steps is empty"),
    ({"record_steps": [1.5]}, r"record_steps=\[1.5\] must hold ints in \[0, 3\]"),
])
def test_run_chains_arguments(lr, kw, match):
    args = {"eta": 0.1, "B": 2, "steps": 3, "generator": gen()} | kw
    with pytest.raises(ValueError, match=match):
        run_chains(lr, torch.zeros(2, 2, dtype=torch.float64), **args)


def test_sgd_sde_threshold_and_generator(lr):
    th = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"explode=nan must be a positive number"):
        sgd_sde(lr, th, eta=0.1, B=2, dt=0.1, steps=2, generator=gen(), explode=math.nan)
    with pytest.raises(TypeError, match=r"generator must be a seeded torch.Generator; got NoneType"):
        sgd_sde(lr, th, eta=0.1, B=2, dt=0.1, steps=2, generator=None)
    with pytest.raises(TypeError, match=r"generator must be a seeded torch.Generator"):
        symmetric_stable((3,), 1.5, None)


def test_svag_coefficients_need_l_at_least_one():
    for bad in (0.5, -1, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"must be a finite number >= 1"):
            svag_coefficients(bad)
    c1, c2 = svag_coefficients(3)
    assert c1 + c2 == pytest.approx(1) and c1**2 + c2**2 == pytest.approx(3)


def test_euler_maruyama_refuses_to_return_non_finite_paths():
    with pytest.raises(FloatingPointError, match=r"non-finite by step \d+ .* dt=1.0"):
        euler_maruyama(lambda x: x, lambda x, v: v, torch.ones(2, 1, dtype=torch.float64), dt=1.0, steps=1100,
                       noise_dim=1, generator=gen())
    with pytest.raises(ValueError, match=r"x0 must be a \(P, d\) tensor"):
        euler_maruyama(lambda x: -x, lambda x, v: v, torch.ones(3), dt=0.1, steps=2, noise_dim=1, generator=gen())
    with pytest.raises(ValueError, match=r"record_steps=\[1.5\] must hold ints in \[0, 2\]"):
        euler_maruyama(lambda x: -x, lambda x, v: v, torch.ones(2, 1), dt=0.1, steps=2, noise_dim=1,
                       generator=gen(), record_steps=[1.5])


def test_linear_regression_chains_arguments(lr):
    th = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"n"):
        linear_regression_chains(lr.X, lr.y[:5], th, eta=0.1, B=2, steps=3, generator=gen())
    with pytest.raises(ValueError, match=r"record_every=0 must be an int >= 1"):
        linear_regression_chains(lr.X, lr.y, th, eta=0.1, B=2, steps=3, generator=gen(), record_every=0)
    with pytest.raises(ValueError, match=r"record_from=5 must not exceed steps=3"):
        linear_regression_chains(lr.X, lr.y, th, eta=0.1, B=2, steps=3, generator=gen(), record_from=5)


def test_noise_helpers_arguments():
    K = torch.eye(6, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"batch size batch_sizes\[0\]=2.7 must be an int"):
        noise_trace_scan(K, [2.7], "with_replacement", 10, gen())
    with pytest.raises(ValueError, match=r"batch size B=7 exceeds n=6"):
        estimator_trace_draws(K, 7, 2, "reshuffling", 3, gen())
    with pytest.raises(ValueError, match=r"K must be a square \(n, n\) Gram matrix"):
        center_gram(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"needs n >= 2 samples; got n=1"):
        estimator_expectation_factor(1, 1, "without_replacement")
    with pytest.raises(ValueError, match=r"batches must have shape \(m, B\) with B >= 1"):
        batch_weights(torch.zeros(2, 0, dtype=torch.long), 6)
    with pytest.raises(ValueError, match=r"batch size B=-3 must be at least 1"):
        batches_per_epoch(10, -3)
    assert check_batch_size(np.int64(4), np.int64(10), "without_replacement") == 4


def test_loglog_fits_check_their_data():
    with pytest.raises(ValueError, match=r"all y must be finite and positive"):
        loglog_slope([1, 2, 3], [1, -2, 3])
    with pytest.raises(ValueError, match=r"all x must be finite and positive"):
        loglog_slope([0, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match=r"same length"):
        loglog_slope([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"level=1.5 must lie in \(0, 1\)"):
        loglog_slope_ci([1, 2, 3], [1, 2, 3], [0.1, 0.1, 0.1], level=1.5)
    with pytest.raises(ValueError, match=r"draws=0 must be an int >= 2"):
        loglog_slope_ci([1, 2, 3], [1, 2, 3], [0.1, 0.1, 0.1], draws=0)
    with pytest.raises(ValueError, match=r"yerr must be one finite, non-negative error or 3 of them"):
        loglog_slope_ci([1, 2, 3], [1, 2, 3], [0.1, math.nan, 0.1])


def test_curvature_checks_theta(lr):
    with pytest.raises(ValueError, match=r"theta must be a flat parameter vector of shape \(2,\); got \(5,\)"):
        sharpness(lr, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"theta has non-finite entries"):
        hessian_top_eigs(lr, torch.full((2,), math.nan, dtype=torch.float64), k=1)


def test_experiment_entry_points_check_cache_and_batches():
    from sgdnoise.experiments import deep_linear, grokking, superposition

    with pytest.raises(TypeError, match=r"cache must be None or a ResultCache .* got a str"):
        grokking.run_grokking(grokking.DEFAULT, cache="results/")
    with pytest.raises(TypeError, match=r"cache must be None or a ResultCache"):
        deep_linear.run_dln(deep_linear.DEFAULT, cache="results/")
    with pytest.raises(TypeError, match=r"cache must be None or a ResultCache"):
        superposition.run_tms(superposition.DEFAULT, cache="results/")
    with pytest.raises(TypeError, match=r"cfgs must be a sequence of TMSConfig"):
        superposition.run_tms_batch(superposition.DEFAULT)
    with pytest.raises(ValueError, match=r"eta=0 must be a positive finite number"):
        superposition.noise_settings(superposition.DEFAULT, horizon=10.0, eta=0)
    with pytest.raises(ValueError, match=r"horizon=-10.0 must be a positive finite number"):
        superposition.noise_settings(superposition.DEFAULT, horizon=-10.0, eta=0.3)
    with pytest.raises(ValueError, match=r"batch_sizes=\[2.5\] must be ints >= 1"):
        superposition.noise_settings(superposition.DEFAULT, horizon=10.0, eta=0.3, batch_sizes=(2.5,))


def test_linear_regression_helpers_check_shapes(lr):
    from sgdnoise.problems import lr_per_sample_grads, lr_theta_star

    with pytest.raises(ValueError, match=r"X of shape \(8, 2\) and y of shape \(5,\) do not match"):
        lr_per_sample_grads(lr.X, lr.y[:5], torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"theta has shape \(3,\); need \(\.\.\., 2\)"):
        lr_per_sample_grads(lr.X, lr.y, torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"do not match"):
        lr_theta_star(lr.X, lr.y[:5])
    G = lr_per_sample_grads(lr.X, lr.y, torch.zeros(4, 2, dtype=torch.float64))  # a batch of θ is fine
    assert G.shape == (4, 8, 2)


def test_valid_inputs_the_checks_must_keep_accepting():
    """Found by a review of the checks: inputs that worked before them and must keep working."""
    p = linear_regression(n=10, d=2, seed=0)
    th = torch.zeros(3, 2, dtype=torch.float64)
    # with replacement a batch may be larger than the data set
    run = run_chains(p, th, eta=0.1, B=16, steps=3, generator=gen())
    assert run.thetas.shape == (1, 3, 2)
    assert batches_per_epoch(10, 16) == 0
    # step lists given as an iterator, as a tensor, as numpy ints
    for steps_given in (iter([0, 3]), torch.tensor([0, 3]), np.array([0, 3])):
        paths = euler_maruyama(lambda x: -x, lambda x, v: v, torch.ones(2, 1, dtype=torch.float64), dt=0.1,
                               steps=3, noise_dim=1, generator=gen(), record_steps=steps_given)
        assert paths.times == pytest.approx([0.0, 0.3])
    assert run_chains(p, th, eta=0.1, B=2, steps=3, generator=gen(), record_steps=torch.tensor([1, 3])).thetas.shape[0] == 2
    # batch sizes as a tensor; one error bar for every point
    K = torch.eye(6, dtype=torch.float64)
    mean, _ = noise_trace_scan(K, torch.tensor([1, 2]), "with_replacement", 10, gen())
    assert mean.shape == (2,)
    slope, lo, hi = loglog_slope_ci([1, 2, 4, 8], [1, 0.5, 0.26, 0.12], 0.01, draws=np.int64(100))
    assert lo <= slope <= hi


def test_cache_config_with_nan_names_the_key():
    from sgdnoise.experiments.cache import config_dict

    with pytest.raises(ValueError, match=r"config\.lr=nan: a configuration must hold finite numbers"):
        config_dict({"lr": math.nan, "B": 2})
    with pytest.raises(ValueError, match=r"config\.sizes\[1\]=inf"):
        config_dict({"sizes": (1.0, np.float64(np.inf))})
    assert config_dict({"lr": np.float32(0.5), "B": np.int64(2)}) == {"lr": 0.5, "B": 2}
