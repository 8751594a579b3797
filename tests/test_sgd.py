import pytest
import torch

from sgdnoise.problems import linear_regression
from sgdnoise.sgd import DivergenceError, train_sgd


def test_sgd_converges_on_linear_regression():
    p = linear_regression(n=100, d=3, sigma=0.1, seed=0)
    run = train_sgd(p, eta=0.1, B=10, steps=500, generator=torch.Generator().manual_seed(0), snapshot_at=[0, 500])
    assert run.snapshot_steps == [0, 500]
    assert (run.snapshots[-1] - p.theta_star()).norm() < 0.1
    assert len(run.losses) == 500


@pytest.mark.parametrize("scheme", ["without_replacement", "reshuffling"])
def test_schemes_and_momentum_run(scheme):
    p = linear_regression(n=30, d=2, seed=0)
    run = train_sgd(p, eta=0.05, B=4, steps=40, scheme=scheme, momentum=0.9, generator=torch.Generator().manual_seed(1))
    assert len(run.losses) == 40


def test_divergence_names_eta_B_and_step():
    p = linear_regression(n=50, d=3, seed=0)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: .*eta=5.0, B=5"):
        train_sgd(p, eta=5.0, B=5, steps=200, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("eta", [0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rate(eta):
    p = linear_regression(n=10, d=2)
    with pytest.raises(ValueError, match="learning rate eta="):
        train_sgd(p, eta=eta, B=2, steps=1, generator=torch.Generator())


def test_bad_batch_size():
    p = linear_regression(n=10, d=2)
    with pytest.raises(ValueError, match="B=20 exceeds n=10"):
        train_sgd(p, eta=0.1, B=20, steps=1, scheme="without_replacement", generator=torch.Generator())
