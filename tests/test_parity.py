"""Sparse parity (chapter 9): the task, the noisy objectives' exact noise, a run that learns, bad input."""

import math

import pytest
import torch

from sgdnoise.experiments import parity as P
from sgdnoise.gradients import per_sample_grads


def test_parity_labels_are_the_product_of_the_first_k_bits():
    X, y = P.parity_data(8, 3, 100, torch.Generator().manual_seed(0))
    assert set(X.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(y, X[:, 0] * X[:, 1] * X[:, 2])
    # uncorrelated with every single coordinate (exactly, over all 2^8 points)
    grid = torch.cartesian_prod(*[torch.tensor([-1.0, 1.0])] * 8)
    labels = grid[:, :3].prod(1)
    assert torch.all((grid * labels[:, None]).mean(0) == 0)


def test_gaussian_objective_adds_exactly_s_times_centred_gradients_times_z():
    """The gradient of the noisy objective minus the batch-mean gradient is s G_cᵀ z (s = 1/√(NB)), with z the
    generator's draw: covariance Σ̂/B. A wrong scale (1/√B, forgetting the N samples) fails."""
    cfg = P.ParityConfig(n=6, k=2, width=5, B=4, N=16, optimizer="gd_gaussian")
    model = P.make_model(cfg).double()
    X, y = P.parity_data(6, 2, 16, torch.Generator().manual_seed(1))
    X, y = X.double(), y.double()
    params = list(model.parameters())

    def grad_of(obj):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(obj, params)])

    noisy = grad_of(P.step_objective(cfg, model, X, y, torch.Generator().manual_seed(7)))
    mean = grad_of(P.step_objective(P.ParityConfig(n=6, k=2, width=5, B=4, N=16, optimizer="gd"), model, X, y,
                                    torch.Generator()))
    z = torch.randn(16, generator=torch.Generator().manual_seed(7)).double()
    G = per_sample_grads(model, lambda out, t: torch.clamp(1 - t * out.squeeze(1), min=0), X, y).double()
    Gc = G - G.mean(0)
    expected = Gc.T @ z / math.sqrt(16 * 4)
    assert torch.allclose(noisy - mean, expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(noisy - mean, Gc.T @ z / math.sqrt(4), rtol=1e-3, atol=1e-6)


def test_stable_objective_scales_the_gaussian_noise_by_one_factor():
    cfg = P.ParityConfig(n=6, k=2, width=5, B=4, N=16, optimizer="gd_stable_matched", alpha=1.5)
    gcfg = P.ParityConfig(n=6, k=2, width=5, B=4, N=16, optimizer="gd_gaussian")
    model = P.make_model(cfg).double()
    X, y = P.parity_data(6, 2, 16, torch.Generator().manual_seed(1))
    X, y = X.double(), y.double()
    params = list(model.parameters())
    base = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        P.step_objective(P.ParityConfig(n=6, k=2, width=5, B=4, N=16, optimizer="gd"), model, X, y, torch.Generator()), params)])
    g1 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        P.step_objective(gcfg, model, X, y, torch.Generator().manual_seed(3)), params)]) - base
    g2 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        P.step_objective(cfg, model, X, y, torch.Generator().manual_seed(3), kappa=0.7), params)]) - base
    live = g1.abs() > 1e-9  # coordinates whose gradient the hinge's inactive units leave at zero carry no noise
    ratio = g2[live] / g1[live]
    assert live.sum() > 10 and torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-5) and float(ratio[0]) > 0


def test_a_small_parity_is_learned_and_progress_is_recorded():
    r = P.train_parity(P.ParityConfig(n=10, k=2, width=64, max_steps=3_000, eval_every=50, seed=0))
    assert r["learned_step"] is not None and r["diverged_step"] is None
    assert r["test_accuracy"][-1] >= 0.99
    assert r["hidden_progress"][-1] > 0.9 > r["hidden_progress"][0]  # a unit's weights moved onto the relevant bits
    assert len(r["weight_share"]) == len(r["steps"]) == len(r["test_accuracy"])


@pytest.mark.parametrize("field,value,match", [("optimizer", "adam", "optimizer='adam'"), ("k", 9, "cannot exceed"),
                                               ("alpha", 2.5, "alpha=2.5"), ("lr", 0.0, "lr=0.0"), ("B", 0, "B=0"),
                                               ("target", 1.5, "target=1.5")])
def test_bad_config_is_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        P.ParityConfig(n=8, **{field: value})
