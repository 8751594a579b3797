"""Sparse parity learned online by a one-hidden-layer ReLU network (Barak, Edelman, Goel, Kakade, Malach & Zhang
2022), under SGD and under large-batch gradient descent with injected noise of SGD's covariance: Gaussian, or
sub-Gaussian α-stable matched to it in bulk.

The task: ``x`` uniform on ``{-1, 1}^n``, label ``y = x_1 x_2 ⋯ x_k`` (the relevant coordinates are the first
``k``, which the network cannot know: its input layer treats every coordinate alike). Every step draws fresh
samples (online learning, an infinite data set). The loss is the hinge ``max(0, 1 - y f(x))``.

Optimisers (one step of size ``lr`` on the gradient of ``Σ_i w_i ℓ_i``):

* ``"sgd"``: ``B`` fresh samples, ``w_i = 1/B``.
* ``"gd"``: ``N`` fresh samples (``N ≫ B``), ``w_i = 1/N``: an estimate of the population gradient whose own
  noise covariance is ``B/N`` of SGD's.
* ``"gd_gaussian"``: the same ``N`` samples with ``w_i = 1/N + s (z_i - z̄)``, ``z ~ N(0, I_N)``, ``s = 1/√(NB)``:
  the added noise ``s Σ_i (z_i - z̄) g_i = s G̃ᵀ z`` (``G̃`` the centred per-sample gradients) has covariance
  ``G̃ᵀ G_c/(NB) = Σ̂/B``, SGD's, with ``Σ̂`` the batch's covariance of the per-sample gradients.
* ``"gd_stable_matched"``: ``z`` multiplied by ``ω_α √A`` with one positive ``α/2``-stable ``A`` per step: a
  sub-Gaussian α-stable vector of the same covariance *shape*, whose projections have the Gaussian noise's
  median absolute value (:func:`sgdnoise.experiments.superposition.stable_bulk_factor`): the same bulk, a
  heavier tail.

Measured per run: the first evaluation step at which the test accuracy (a fixed test set) reaches ``target``
(``None`` if never, within ``max_steps``: right-censored), whether the run diverged (non-finite loss; then
censored at that step), and at every evaluation the test accuracy and two measures of progress on the
first layer ``W`` (one row per hidden unit): the *hidden progress*, the largest share of a unit's squared
weight norm on the ``k`` relevant coordinates, ``max_j ‖W_{j, :k}‖² / ‖W_j‖²`` (about ``0.15`` at initialisation
for ``n = 50``, ``k = 3``, 256 units), which grows while the accuracy is still at chance: the progress that the
loss curve hides; and the whole layer's share ``‖W_{:, :k}‖² / ‖W‖²`` (``k/n`` at initialisation), which moves
only with the accuracy.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import fullscale

__all__ = ["ParityConfig", "OPTIMIZERS", "VARIANTS", "parity_data", "make_model", "step_objective", "train_parity",
           "parity_runs", "EXPERIMENTS"]

OPTIMIZERS = ("sgd", "gd", "gd_gaussian", "gd_stable_matched")


@dataclass(frozen=True)
class ParityConfig:
    n: int = 50
    k: int = 3
    width: int = 256
    B: int = 32
    N: int = 256
    lr: float = 0.1
    max_steps: int = 20_000
    eval_every: int = 50
    test_size: int = 2_000
    target: float = 0.99
    optimizer: str = "sgd"
    alpha: float = 2.0
    seed: int = 0

    def __post_init__(self):
        for name in ("n", "k", "width", "B", "N", "max_steps", "eval_every", "test_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be an int >= 1")
        if self.k > self.n:
            raise ValueError(f"k={self.k} relevant bits cannot exceed n={self.n}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if not (0 < self.alpha <= 2):
            raise ValueError(f"alpha={self.alpha!r} must lie in (0, 2]")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr!r} must be a finite number > 0")
        if not 0 < self.target <= 1:
            raise ValueError(f"target={self.target!r} must lie in (0, 1]")


def parity_data(n: int, k: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)``: ``size`` points uniform on ``{-1, 1}^n`` and their parity of the first ``k`` bits."""
    X = torch.randint(0, 2, (size, n), generator=generator).float() * 2 - 1
    return X, X[:, :k].prod(1)


def make_model(cfg: ParityConfig) -> nn.Module:
    """``n → width → 1``, ReLU, PyTorch's default initialisation from the run's seed."""
    torch.manual_seed(cfg.seed)
    return nn.Sequential(nn.Linear(cfg.n, cfg.width), nn.ReLU(), nn.Linear(cfg.width, 1))


def _hinge(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.clamp(1 - y * model(X).squeeze(1), min=0)


def step_objective(cfg: ParityConfig, model: nn.Module, X: torch.Tensor, y: torch.Tensor,
                   noise_gen: torch.Generator, kappa: float = 1.0) -> torch.Tensor:
    """The weighted loss ``Σ_i w_i ℓ_i`` whose gradient is the step's direction (module docstring): the batch mean
    for ``"sgd"`` and ``"gd"``, plus the noise weights ``s (z_i - z̄)`` for the noisy variants."""
    losses = _hinge(model, X, y)
    if cfg.optimizer == "sgd":
        return losses.mean()
    if cfg.optimizer == "gd":
        return (torch.full((X.shape[0],), 1.0 / X.shape[0]) * losses).sum()
    z = torch.randn(X.shape[0], generator=noise_gen)
    if cfg.optimizer == "gd_stable_matched" and cfg.alpha < 2:
        from ..sde import positive_stable

        z = z * kappa * float(positive_stable((1,), cfg.alpha / 2, noise_gen).sqrt())
    w = torch.full((X.shape[0],), 1.0 / X.shape[0]) + (1 / math.sqrt(X.shape[0] * cfg.B)) * (z - z.mean())
    return (w * losses).sum()


def train_parity(cfg: ParityConfig) -> dict:
    """One run; see the module docstring for what is recorded."""
    model = make_model(cfg)
    data_gen = torch.Generator().manual_seed(10_000 + cfg.seed)
    noise_gen = torch.Generator().manual_seed(20_000 + cfg.seed)
    X_test, y_test = parity_data(cfg.n, cfg.k, cfg.test_size, torch.Generator().manual_seed(30_000 + cfg.seed))
    kappa = 1.0
    if cfg.optimizer == "gd_stable_matched" and cfg.alpha < 2:
        from .superposition import stable_bulk_factor

        kappa = float(stable_bulk_factor(cfg.alpha))
    steps, acc, progress, share = [], [], [], []
    learned, diverged = None, None
    for step in range(cfg.max_steps + 1):
        if step % cfg.eval_every == 0:
            with torch.no_grad():
                a = float(((model(X_test).squeeze(1) * y_test) > 0).float().mean())
                W2 = model[0].weight ** 2
                p = float((W2[:, : cfg.k].sum(1) / W2.sum(1)).max())
                share.append(float(W2[:, : cfg.k].sum() / W2.sum()))
            steps.append(step)
            acc.append(a)
            progress.append(p)
            if a >= cfg.target:
                learned = step
                break
        if step == cfg.max_steps:
            break
        X, y = parity_data(cfg.n, cfg.k, cfg.B if cfg.optimizer == "sgd" else cfg.N, data_gen)
        objective = step_objective(cfg, model, X, y, noise_gen, kappa)
        if not bool(torch.isfinite(objective)):
            diverged = step
            break
        model.zero_grad()
        objective.backward()
        with torch.no_grad():
            for prm in model.parameters():
                prm -= cfg.lr * prm.grad
        if not all(bool(torch.isfinite(prm).all()) for prm in model.parameters()):
            diverged = step + 1
            break
    return {"config": asdict(cfg), "learned_step": learned, "diverged_step": diverged, "steps": steps,
            "test_accuracy": acc, "hidden_progress": progress, "weight_share": share}


#: The variants compared, each label mapped to (optimizer, alpha).
VARIANTS = {"SGD": ("sgd", 2.0), "GD (N = 256)": ("gd", 2.0), "GD + Gaussian": ("gd_gaussian", 2.0),
            "GD + α-stable 1.8": ("gd_stable_matched", 1.8), "GD + α-stable 1.5": ("gd_stable_matched", 1.5)}


def parity_runs(*, variants: list, seeds: list, n: int = 50, max_steps: int = 20_000, device: str = "cpu") -> dict:
    """Every variant at every seed (paired: a seed fixes the initialisation and the test set); returns, per
    variant, the learning steps (``None`` if censored), the divergence steps and the curves of the first seed."""
    out = {}
    for label in variants:
        opt, alpha = VARIANTS[label]
        runs = [train_parity(ParityConfig(n=n, max_steps=max_steps, optimizer=opt, alpha=alpha, seed=s)) for s in seeds]
        out[label] = {"seeds": list(seeds), "learned_step": [r["learned_step"] for r in runs],
                      "diverged_step": [r["diverged_step"] for r in runs],
                      "curve_steps": runs[0]["steps"], "curve_accuracy": runs[0]["test_accuracy"],
                      "curve_progress": runs[0]["hidden_progress"], "curve_share": runs[0]["weight_share"]}
    return out


EXPERIMENTS = (
    fullscale.Experiment(
        name="ch9_parity", compute=parity_runs,
        full={"variants": list(VARIANTS), "seeds": list(range(40)), "n": 50, "max_steps": 20_000},
        reduced={"variants": ["SGD", "GD + Gaussian"], "seeds": [100, 101, 102], "n": 50, "max_steps": 20_000},
        description="chapter 9: sparse parity (n = 50, k = 3) learned online by SGD and by large-batch GD with "
                    "Gaussian or bulk-matched α-stable noise of SGD's covariance, 40 paired seeds",
        modules=(sys.modules[__name__],)),
)
