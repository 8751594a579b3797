"""The loss contract, the last SGD step and explicit generators (issue 23, items 5-7)."""

import numpy as np
import pytest
import torch
from torch import nn

from sgdnoise.curvature import sharpness
from sgdnoise.heavy import double_well_escape, quadratic_stationary
from sgdnoise.problems import Problem, linear_regression
from sgdnoise.sde import sgd_sde
from sgdnoise.sgd import DivergenceError, linear_regression_chains, run_chains, train_sgd
from sgdnoise.tails import sample_law


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def column_problem():
    g = gen(3)
    X, y = torch.randn((30, 3), generator=g, dtype=torch.float64), torch.randn((30, 1), generator=g, dtype=torch.float64)
    return X, y, nn.Linear(3, 1).double()


@pytest.mark.parametrize("loss", [nn.MSELoss(reduction="none"), nn.MSELoss()], ids=["(n,1)", "mean"])
def test_problem_refuses_a_loss_that_is_not_per_sample(loss):
    X, y, model = column_problem()
    with pytest.raises(ValueError, match=r"one loss per sample, shape \(2,\); it returned shape (\(2, 1\)|\(\)) "):
        Problem("p", X, y, model, loss)


def test_problem_check_leaves_no_trace():
    X, y, _ = column_problem()
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    rng = torch.random.get_rng_state()
    Problem("p", X, y[:, 0], model, lambda o, t: ((o[:, 0] - t) ** 2))
    assert torch.equal(model[1].running_mean, torch.zeros(4, dtype=torch.float64))
    assert int(model[1].num_batches_tracked) == 0
    assert torch.equal(rng, torch.random.get_rng_state())


def swapped_loss_problem():
    """A valid problem whose loss is swapped afterwards for one that broadcasts (n,1) against (n,) to (n, n)."""
    p = linear_regression(20, 3)
    p.loss_fn = lambda out, target: 0.5 * (out - target) ** 2  # (n, 1) - (n,) broadcasts to (n, n)
    return p


@pytest.mark.parametrize("call", [
    lambda p: run_chains(p, torch.zeros(2, 3, dtype=torch.float64), eta=0.1, B=4, steps=2, generator=gen()),
    lambda p: sgd_sde(p, torch.zeros(2, 3, dtype=torch.float64), eta=0.1, B=4, dt=0.1, steps=2, generator=gen()),
    lambda p: sharpness(p, iters=3),
    lambda p: train_sgd(p, eta=0.1, B=4, steps=2, generator=gen()),
    lambda p: p.loss(),
], ids=["run_chains", "sgd_sde", "sharpness", "train_sgd", "loss"])
def test_every_place_a_loss_enters_checks_it(call):
    with pytest.raises(ValueError, match=r"one loss per sample"):
        call(swapped_loss_problem())


def test_last_sgd_step_is_checked():
    p = linear_regression(20, 3)
    theta = p.theta()
    with pytest.raises(DivergenceError, match=r"diverged in its last step \(0\)"):
        train_sgd(p, eta=1e30, B=2, steps=1, generator=gen())
    assert torch.equal(p.theta(), theta)  # restored
    train_sgd(p, eta=0.1, B=2, steps=1, generator=gen())  # the failing variant's control: a sane step passes


def test_numpy_learning_rates_are_accepted():
    p = linear_regression(20, 3)
    run = train_sgd(p, eta=np.float32(0.1), B=np.int64(2), steps=2, generator=gen())
    assert run.eta == pytest.approx(0.1)


@pytest.mark.parametrize("call", [
    lambda g: run_chains(linear_regression(20, 3), torch.zeros(2, 3, dtype=torch.float64), eta=0.1, B=4, steps=2,
                         scheme="reshuffling", generator=g),
    lambda g: linear_regression_chains(torch.randn(10, 2, dtype=torch.float64), torch.randn(10, dtype=torch.float64),
                                       torch.zeros(3, 2, dtype=torch.float64), eta=0.1, B=2, steps=3, generator=g),
    lambda g: sample_law("student_t", 3.0, 10, g),
    lambda g: double_well_escape(np.linspace(-1, 1, 10), eta=0.1, B=2, chains=3, max_steps=5, generator=g),
    lambda g: quadratic_stationary(np.linspace(-1, 1, 10), eta=0.1, B=2, chains=3, steps=5, generator=g),
    lambda g: train_sgd(linear_regression(20, 3), eta=0.1, B=4, steps=2, generator=g),
], ids=["run_chains", "lr_chains", "sample_law", "double_well", "quadratic", "train_sgd"])
def test_global_random_state_is_never_used(call):
    with pytest.raises(TypeError, match=r"generator must be a seeded torch.Generator; got NoneType"):
        call(None)
    call(gen())  # and a generator works


# ----------------------------------------------------------------------------- issue 23, item 11: smaller cases
def test_smaller_silent_cases_now_fail_clearly():
    from sgdnoise.current import binned_current
    from sgdnoise.heavy import kesten_index
    from sgdnoise.noise import effective_rank, empirical_noise_covariance, noise_trace_scan
    from sgdnoise.sde import euler_maruyama, symmetric_stable
    from sgdnoise.tails import hill_auto

    G = torch.randn(6, 3, generator=gen(), dtype=torch.float64)
    with pytest.raises(TypeError, match=r"G has dtype torch.complex128; per-sample gradients are real"):
        empirical_noise_covariance(G.to(torch.complex128))
    with pytest.raises(ValueError, match=r"eigenvalues must be a 1-D spectrum; got shape \(3, 3\)"):
        effective_rank(torch.eye(3))
    assert effective_rank(torch.ones(3)) == pytest.approx(3.0)  # the valid call still works
    with pytest.raises(ValueError, match=r"num_batches=0 must be an int >= 2"):
        noise_trace_scan(G @ G.T, [2], "with_replacement", 0, gen())
    x = torch.randn(1000, generator=gen(), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"num_k=2.5 must be ints >= 2"):
        hill_auto(x, num_k=2.5)
    with pytest.raises(ValueError, match=r"diffusion\(x, dW\) shape \(4, 4, 2\); both must return the state's shape \(4, 2\)"):
        euler_maruyama(lambda th: -th, lambda th, dW: dW[:, None, :] * torch.ones(1, 4, 1, dtype=torch.float64),
                       torch.zeros(4, 2, dtype=torch.float64), dt=0.1, steps=3, noise_dim=2, generator=gen())
    with pytest.raises(FloatingPointError, match=r"alpha=0.001: symmetric alpha-stable draws overflow"):
        symmetric_stable((1000,), 1e-3, gen())
    assert torch.isfinite(symmetric_stable((1000,), 0.5, gen())).all()
    with pytest.raises(ValueError, match=r"alpha_max=nan must be a finite positive number"):
        kesten_index(0.1, 1, alpha_max=float("nan"))
    paths = torch.randn(3, 50, 2, generator=gen(), dtype=torch.float64).numpy()
    with pytest.raises(ValueError, match=r"x_edges must be a 1-D array of at least 2 finite, increasing bin edges"):
        binned_current(paths, 0.1, [0.0], [-1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=r"y_edges must be a 1-D array"):
        binned_current(paths, 0.1, [-1.0, 0.0, 1.0], [1.0, 0.0])


def test_obscure_errors_are_clear():
    from sgdnoise import gram_matrix, per_sample_grads
    from sgdnoise.noise import loglog_slope, noise_trace_scan

    X, y = torch.randn(5, 3), torch.randn(5, 1)
    model = nn.Linear(3, 1).double()
    mse = lambda o, t: ((o - t) ** 2).sum(1)  # noqa: E731
    with pytest.raises(TypeError, match=r"X has dtype torch.float32 but the model's parameters are torch.float64"):
        per_sample_grads(model, mse, X, y)
    with pytest.raises(TypeError, match=r"X has dtype torch.float32"):
        gram_matrix(model, mse, X, y)
    frozen = nn.Linear(3, 1).requires_grad_(False)
    with pytest.raises(ValueError, match=r"no trainable parameters"):
        per_sample_grads(frozen, mse, X, y)
    with pytest.raises(ValueError, match=r"all x are equal \(2.0\); a slope needs at least two distinct x values"):
        loglog_slope([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    K = torch.eye(4, dtype=torch.float64)
    K[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"K has 1 non-finite entries"):
        noise_trace_scan(K, [2], "with_replacement", 4, gen())
    p = linear_regression(20, 3)
    with pytest.raises(ValueError, match=r"time step dt=nan must be a finite number > 0"):
        sgd_sde(p, torch.zeros(2, 3, dtype=torch.float64), eta=0.1, B=4, dt=float("nan"), steps=2, generator=gen())
    sgd_sde(p, torch.zeros(2, 3, dtype=torch.float64), eta=0.1, B=4, dt=np.float32(0.1), steps=2, generator=gen())


def test_nan_data_is_not_reported_as_divergence():
    X, y, model = column_problem()
    X[4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"X has non-finite values \(NaN or ±inf\) in 1 sample\(s\), the first at sample 4"):
        Problem("p", X, y[:, 0], model, lambda o, t: (o[:, 0] - t) ** 2)


def test_bad_types_found_by_a_probe_of_the_api():
    """A review that passed wrong types to every public function: the cases with side effects, and the
    patterns shared by many functions, now fail at once naming the argument."""
    from sgdnoise import gram_matrix, per_sample_grads
    from sgdnoise.problems import lr_draw, mlp
    from sgdnoise.sampling import check_scheme
    from sgdnoise.sde import euler_maruyama

    p = linear_regression(20, 3)
    theta = p.theta()
    with pytest.raises(TypeError, match=r"callback must be callable"):
        train_sgd(p, eta=0.1, B=2, steps=3, generator=gen(), callback="abc")
    assert torch.equal(p.theta(), theta)  # refused before any step
    for call in (lambda: lr_draw(2, 5, 3, sigma=0.1, generator=None), lambda: mlp([3, 2], generator=None)):
        with pytest.raises(TypeError, match=r"generator must be a seeded torch.Generator; got NoneType"):
            call()
    with pytest.raises(ValueError, match=r"scheme=array\(\[1., 1.\]\); valid schemes are"):
        check_scheme(np.ones(2))
    with pytest.raises(TypeError, match=r"loss_fn must be callable"):
        per_sample_grads(p.model, None, p.X, p.y)
    for call in (lambda: run_chains(None, theta[None], eta=0.1, B=2, steps=2, generator=gen()),
                 lambda: sgd_sde("p", theta[None], eta=0.1, B=2, dt=0.1, steps=2, generator=gen()),
                 lambda: sharpness(None), lambda: train_sgd({}, eta=0.1, B=2, steps=2, generator=gen())):
        with pytest.raises(TypeError, match=r"problem must be a sgdnoise.problems.Problem"):
            call()
    with pytest.raises(TypeError, match=r"drift must be callable"):
        euler_maruyama(None, lambda x, dW: dW, torch.zeros(2, 1), dt=0.1, steps=1, noise_dim=1, generator=gen())
    with pytest.raises(TypeError, match=r"centered='no' must be True or False"):
        gram_matrix(p.model, p.loss_fn, p.X, p.y, centered="no")


def test_optional_generators_alpha_and_momentum_are_checked():
    from sgdnoise.curvature import hessian_top_eigs
    from sgdnoise.sde import symmetric_stable

    p = linear_regression(20, 3)
    with pytest.raises(TypeError, match=r"generator must be a seeded torch.Generator; got str"):
        sharpness(p, generator="abc")
    with pytest.raises(TypeError, match=r"generator must be a seeded torch.Generator; got str"):
        hessian_top_eigs(p, k=1, generator="abc")
    with pytest.raises(ValueError, match=r"alpha=None must lie in \(0, 2\]"):
        symmetric_stable((3,), None, gen())
    with pytest.raises(ValueError, match=r"momentum=None must be a number in \[0, 1\)"):
        train_sgd(p, eta=0.1, B=2, steps=2, generator=gen(), momentum=None)
