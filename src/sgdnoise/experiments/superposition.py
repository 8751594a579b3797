r"""Toy models of superposition (Elhage et al. 2022), trained by AdamW, SGD, GD, or GD plus SGD-shaped noise.

**Model.** ``n`` features are stored in ``m < n`` dimensions and read back out:

    x' = ReLU(Wᵀ W x + b),     W ∈ R^{m×n},  b ∈ R^n,

``W`` initialised Xavier-normal (``N(0, 2/(m+n))`` entries), ``b = 0``. Column ``W_i`` is the direction
feature ``i`` is stored along.

**Data.** Feature ``x_i`` is 0 with probability ``S`` (the *sparsity*) and ``Uniform[0, 1]`` otherwise,
independently. Feature ``i`` (``i = 0, …, n-1``) has importance ``I_i = r^i`` (``r = importance``), and
the per-sample loss is ``ℓ(x) = Σ_i I_i (x_i - x'_i)²``; the training objective is its mean over the
data. By default the data are a **fixed finite set** of ``n_samples`` samples drawn once (seed
``data_seed``), so that minibatch noise has the well-defined covariance ``c(N, B) Σ(θ)`` of
:mod:`sgdnoise.noise`; with ``online=True`` every minibatch is fresh (the paper's setting) and the fixed
set only serves to evaluate the loss.

**Optimisers.** With ``g_N`` the full-data gradient, ``λ`` the weight decay:

* ``"adamw"``: ``torch.optim.AdamW`` (``β = (0.9, 0.999)``, ``ε = 1e-8``, decoupled weight decay ``λ``)
  on minibatch gradients of size ``B`` (``B = n_samples`` is full batch). The paper's optimiser.
* ``"sgd"``: ``θ ← θ - η (g_B + λθ)``, minibatches of ``B`` drawn by ``scheme`` (or fresh, online).
* ``"gd"``: ``θ ← θ - η (g_N + λθ)``.
* ``"gd_gaussian"``: ``θ ← θ - η (g_N + ξ + λθ)`` with ``ξ = μ √(q_B/N) G̃ᵀ z``, ``z ~ N(0, I_N)``: Gaussian
  noise with exactly SGD's covariance ``c(N, B) Σ(θ)`` at batch size ``B`` when the multiplier
  ``μ = noise_mult`` is 1 (``μ² q_B Σ`` otherwise), built as in :mod:`sgdnoise.experiments.grokking` by
  per-sample weights ``w_i = 1/N + μ√(q_B/N)(z_i - z̄)`` in one weighted full-batch backward pass (no
  per-sample gradients are formed).
* ``"gd_stable"``: the same with ``ξ = ω_α √A · μ √(q_B/N) G̃ᵀ z``, ``A`` a positive ``α/2``-stable variable
  drawn once per step (:func:`sgdnoise.sde.positive_stable`): a *sub-Gaussian* symmetric α-stable vector.
  Every projection ``vᵀξ`` is symmetric α-stable, with a scale proportional to the Gaussian's
  ``√(vᵀ μ² q_B Σ v)``, so the noise keeps SGD's covariance *shape*. ``ω_α`` (:func:`stable_bulk_factor`)
  makes the median of ``|vᵀξ|`` equal to the Gaussian noise's in every direction ``v``: the two noises
  agree in bulk and differ in the tail (the α-stable one has no variance).

**Quench.** With ``quench_steps = Q > 0`` every run ends with ``Q`` steps of gradient descent (same ``η``
and ``λ``, no noise) before its geometry is labelled, so that a noisy run is labelled at the minimum it
has reached, not at a jittering iterate; the labels before the quench are kept as well.

**Many runs at once.** All runs of :func:`run_tms_batch` (several seeds, and several sparsities) are one
set of tensors with a leading *replica* axis: ``W`` is ``(R, m, n)``, the data ``(R, N, n)``. The losses of
the replicas are summed before the backward pass, so each replica gets exactly its own gradient, and
every optimiser above acts elementwise, so the replicas do not interact. Each replica draws its data,
initialisation, minibatches and noise from its own generators (seeded by its ``seed``/``data_seed``), so a
run in a batch equals the same run alone (up to floating-point rounding).

**Geometry** (:func:`classify_geometry`). Feature ``i`` is *represented* when ``‖W_i‖ > threshold``
(default 0.5; a learned feature has ``‖W_i‖ ≈ 1``, an unlearned one ``≈ 0``). With ``k`` represented
features, for ``m = 2`` their angles in the plane are sorted around the circle and the ``k`` gaps
between neighbours (summing to 360°) compared with the ideal ones within ``angle_tol`` (default 20°):

* ``k = 0``: ``"none"``; ``k = 1``: ``"1 feature"``;
* ``k = 2``: gaps 90°/270° → ``"2 orthogonal"``; 180°/180° → ``"antipodal pair"``;
* ``k = 3``: gaps all 120° → ``"triangle"``; 90°, 90°, 180° → ``"antipodal pair + 1"`` (an antipodal pair and
  a third feature orthogonal to it);
* ``k = 4``: gaps all 90° → ``"2 antipodal pairs"`` (a square);
* ``k = 5``: gaps all 72° → ``"pentagon"``; ``k ≥ 6`` regular → ``"<k>-gon"``;
* anything else → ``"other"``.

For ``m > 2``: ``"<k> orthogonal"`` when every pair of represented directions is within ``angle_tol`` of
90° (so ``k ≤ m``); ``"<j> antipodal pairs"`` when the represented features split into ``j = k/2`` pairs at
180° (within ``angle_tol``) and all other pairs are at 90°; otherwise ``"other"``.

**Known result** (the paper's Figure 1 for ``n = 5, m = 2``): dense features (``S = 0``) give the two most
important features stored orthogonally and the rest dropped; as ``S → 1`` more features than dimensions
are stored, first as antipodal pairs, then as a pentagon. :func:`phase_diagram` counts the geometries
over seeds for a grid of sparsities and optimiser settings.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..noise import noise_covariance_factor
from ..sampling import SCHEMES, batches_per_epoch, sample_batches
from ..sgd import DivergenceError, check_learning_rate
from .cache import ResultCache
from ._common import check_cache, check_device, check_steps_and_seeds, set_canonical_types, check_threads, child_seed, eval_steps, is_int, is_real, torch_threads

__all__ = ["TMSConfig", "DEFAULT", "LARGE", "DEFAULT_SEEDS", "LARGE_SEEDS", "DEFAULT_SPARSITIES", "OPTIMIZERS",
           "NOISE_BASE", "NOISE_SWEEP", "NOISE_SEEDS",
           "importances", "make_data", "init_params", "forward", "per_sample_loss", "noise_factor",
           "gradient_estimate", "eval_steps", "classify_geometry", "feature_dimensionality", "stable_bulk_factor", "stable_cap_value", "run_tms", "run_tms_batch", "run_tms_seeds",
           "noise_settings", "phase_diagram", "format_phase_table", "paired_sign_test", "EXPERIMENT", "GEOMETRIES"]

OPTIMIZERS = ("adamw", "sgd", "gd", "gd_gaussian", "gd_stable")
EXPERIMENT = "superposition"
EXPLODE = 1e6  # a loss above EXPLODE × the initial loss counts as divergence
GEOMETRIES = ("none", "1 feature", "2 orthogonal", "antipodal pair", "triangle", "antipodal pair + 1",
              "2 antipodal pairs", "pentagon", "other")  # the m = 2 labels (plus "<k>-gon" for k ≥ 6)
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class TMSConfig:
    """Everything that defines one toy-model-of-superposition run (see the module docstring).

    Validated on construction; every bad value raises a ``ValueError`` naming it and what is valid.
    """

    n: int = 5                        # number of features
    m: int = 2                        # hidden dimensions (m < n for superposition; m <= n required)
    importance: float = 0.9           # r in I_i = r^i, in (0, 1]
    sparsity: float = 0.0             # S: P(x_i = 0), in [0, 1)
    n_samples: int = 4096             # N: the fixed training set (the evaluation set when online)
    online: bool = False              # fresh minibatches every step (adamw/sgd only)
    optimizer: str = "adamw"          # one of OPTIMIZERS
    lr: float = 0.01                  # η
    weight_decay: float = 0.0         # λ (decoupled for adamw; θ ← θ - η(ĝ + λθ) otherwise)
    B: int = 128                      # batch size of adamw/sgd, and whose noise gd_gaussian mimics
    scheme: str = "with_replacement"  # minibatch sampling scheme (sets c(N, B) for gd_gaussian)
    steps: int = 5000
    quench_steps: int = 0             # Q: gradient-descent steps (no noise) at the end, before labelling
    noise_mult: float = 1.0           # μ: gd_gaussian / gd_stable inject μ times SGD-shaped noise (covariance μ² q_B Σ)
    alpha: float = 1.8                # index of gd_stable's noise, in (1, 2)
    stable_cap: float = 1.0           # q: gd_stable's radial factor √A capped at its q-quantile (1: no cap)
    seed: int = 0                     # initialisation, minibatches and injected noise
    data_seed: int | None = None      # the data set; None: the same as seed
    threshold: float = 0.5            # ‖W_i‖ above which feature i counts as represented
    angle_tol: float = 20.0           # degrees, tolerance of the geometry classifier
    evals_per_decade: int = 4         # log-spaced loss evaluations
    device: str = "cpu"               # "cpu", "cuda" or "cuda:<index>"

    def __post_init__(self):
        if not is_int(self.n) or self.n < 1:
            raise ValueError(f"n={self.n!r} must be an int >= 1 (number of features)")
        if not is_int(self.m) or not 1 <= self.m <= self.n:
            raise ValueError(f"m={self.m!r} must be an int with 1 <= m <= n={self.n} (hidden dimensions)")
        if not is_real(self.importance) or not 0 < self.importance <= 1:
            raise ValueError(f"importance={self.importance!r} must lie in (0, 1] (I_i = importance**i)")
        if not is_real(self.sparsity) or not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity={self.sparsity!r} must lie in [0, 1) (the probability that a feature is 0)")
        if not is_int(self.n_samples) or self.n_samples < 2:
            raise ValueError(f"n_samples={self.n_samples!r} must be an int >= 2")
        if not isinstance(self.online, bool):
            raise ValueError(f"online={self.online!r} must be a bool")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}; valid optimizers are {OPTIMIZERS}")
        if self.online and self.optimizer in ("gd", "gd_gaussian", "gd_stable"):
            raise ValueError(f"online=True needs a minibatch optimizer ('adamw' or 'sgd'); "
                             f"optimizer={self.optimizer!r} uses the fixed data set")
        check_learning_rate(float(self.lr) if is_real(self.lr) else self.lr)
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme={self.scheme!r}; valid schemes are {SCHEMES}")
        if not is_int(self.B) or self.B < 1 or (not self.online and self.B > self.n_samples):
            raise ValueError(f"batch size B={self.B!r} must be an int with 1 <= B <= n_samples={self.n_samples}"
                             + (" (any B >= 1 online)" if self.online else ""))
        check_steps_and_seeds(self.steps, self.seed, self.data_seed)
        if not is_int(self.quench_steps) or self.quench_steps < 0:
            raise ValueError(f"quench_steps={self.quench_steps!r} must be an int >= 0")
        if not is_real(self.noise_mult) or self.noise_mult <= 0:
            raise ValueError(f"noise_mult={self.noise_mult!r} must be a finite number > 0")
        if self.noise_mult != 1 and self.optimizer not in ("gd_gaussian", "gd_stable"):
            raise ValueError(f"noise_mult={self.noise_mult!r} scales injected noise; optimizer={self.optimizer!r} "
                             "injects none (use 'gd_gaussian' or 'gd_stable', or noise_mult=1)")
        if not is_real(self.stable_cap) or not 0.5 < self.stable_cap <= 1:
            raise ValueError(f"stable_cap={self.stable_cap!r} must lie in (0.5, 1] (a quantile of the radial factor; "
                             "1 for no cap)")
        if self.stable_cap != 1 and self.optimizer != "gd_stable":
            raise ValueError(f"stable_cap={self.stable_cap!r} caps gd_stable's kicks; optimizer={self.optimizer!r} "
                             "draws none (use 'gd_stable', or stable_cap=1)")
        if not is_real(self.alpha) or not 1 < self.alpha < 2:
            raise ValueError(f"alpha={self.alpha!r} must lie in (1, 2) (the index of gd_stable's noise; 2 is "
                             "the Gaussian, 'gd_gaussian')")
        if not is_real(self.threshold) or self.threshold <= 0:
            raise ValueError(f"threshold={self.threshold!r} must be a finite number > 0")
        if not is_real(self.angle_tol) or not 0 < self.angle_tol < 45:
            raise ValueError(f"angle_tol={self.angle_tol!r} must lie in (0, 45) degrees")
        if not is_int(self.evals_per_decade) or self.evals_per_decade < 1:
            raise ValueError(f"evals_per_decade={self.evals_per_decade!r} must be an int >= 1")
        check_device(self.device)
        set_canonical_types(self, ("importance", "sparsity", "lr", "weight_decay", "threshold", "angle_tol", "noise_mult",
                                   "alpha", "stable_cap"),
                            ("n", "m", "n_samples", "B", "steps", "quench_steps", "seed", "evals_per_decade"))

    @property
    def noise_level(self) -> float:
        """``η/B`` for ``"sgd"``, ``μ² η/B`` for ``"gd_gaussian"`` and ``"gd_stable"`` (the η/B of the SGD whose
        noise they imitate, in bulk for the latter), 0 for ``"gd"``; ``nan`` for ``"adamw"``."""
        if self.optimizer == "gd":
            return 0.0
        if self.optimizer == "sgd":
            return self.lr / self.B
        return self.noise_mult**2 * self.lr / self.B if self.optimizer in ("gd_gaussian", "gd_stable") else float("nan")

    def replace(self, **changes) -> "TMSConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


#: The reproduction of the phase change with AdamW (η = 0.01, B = 128 from N = 4096 fixed samples, 5000 steps,
#: r = 0.9).
DEFAULT = TMSConfig()
DEFAULT_SEEDS = (0, 1, 2, 3)
DEFAULT_SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
#: The base of the noise sweep (N = 2048; the optimiser, η, B and steps come from :data:`NOISE_SWEEP`).
NOISE_BASE = TMSConfig(n_samples=2048)
#: Arguments of :func:`noise_settings` for the default sweep: η = 0.3 for η · steps = 900 (3000 steps),
#: GD, SGD with B = 4 and 32, and GD plus Gaussian noise matched to B = 4.
NOISE_SWEEP = {"horizon": 900.0, "eta": 0.3, "batch_sizes": (4, 32)}
#: The noise sweep's sixteen seeds, enough for an exact paired sign test to resolve a difference after a
#: correction for several comparisons (with six seeds no two-sided p-value can fall below 2/2⁶ ≈ 0.031).
NOISE_SEEDS = tuple(range(16))
#: More data, steps and seeds (meant for a GPU or a long CPU run); for the sweep use
#: ``noise_settings(LARGE, horizon=3000.0, eta=0.3, batch_sizes=(2, 4, 16, 64))`` with ``LARGE_SEEDS``.
LARGE = TMSConfig(n_samples=16_384, B=512, steps=20_000, lr=0.003)
LARGE_SEEDS = tuple(range(32))


# ----------------------------------------------------------------------------- data and model
def importances(cfg: TMSConfig) -> Tensor:
    """``I_i = r^i``, ``i = 0, …, n-1`` (float32, on the CPU)."""
    return cfg.importance ** torch.arange(cfg.n, dtype=torch.float32)


def _draw(shape: tuple, sparsity: float, gen: torch.Generator) -> Tensor:
    active = torch.rand(shape, generator=gen) >= sparsity
    return torch.rand(shape, generator=gen) * active


def make_data(cfg: TMSConfig) -> Tensor:
    """The fixed data set of ``cfg``, shape ``(n_samples, n)`` float32 on the CPU: each entry 0 with
    probability ``sparsity``, else ``Uniform[0, 1]``. Deterministic given ``data_seed`` (or ``seed``)."""
    seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    return _draw((cfg.n_samples, cfg.n), cfg.sparsity, torch.Generator().manual_seed(child_seed(seed, 0)))


def init_params(cfg: TMSConfig) -> tuple[Tensor, Tensor]:
    """Xavier-normal ``W`` ``(m, n)`` and ``b = 0`` ``(n,)``, float32 on the CPU, from ``seed``."""
    gen = torch.Generator().manual_seed(child_seed(cfg.seed, 1))
    W = torch.randn((cfg.m, cfg.n), generator=gen) * math.sqrt(2.0 / (cfg.m + cfg.n))
    return W, torch.zeros(cfg.n)


def forward(W: Tensor, b: Tensor, X: Tensor) -> Tensor:
    """``ReLU(Wᵀ W x + b)`` for each row ``x`` of ``X``; ``W (…, m, n)``, ``b (…, n)``, ``X (…, N, n)``."""
    return torch.relu((X @ W.transpose(-1, -2)) @ W + b.unsqueeze(-2))


def per_sample_loss(W: Tensor, b: Tensor, X: Tensor, imp: Tensor) -> Tensor:
    """``ℓ(x) = Σ_i I_i (x_i - x'_i)²`` for each row of ``X``: shape ``X.shape[:-1]``."""
    return ((X - forward(W, b, X)) ** 2 * imp).sum(-1)


def noise_factor(cfg: TMSConfig) -> float:
    """``q_B(N, B)``: SGD's noise covariance is ``q_B Σ``; ``"gd_gaussian"`` injects ``μ √(q_B/N) G̃ᵀ z``."""
    return noise_covariance_factor(cfg.n_samples, cfg.B, cfg.scheme)


_BULK: dict[tuple, tuple] = {}


def _bulk(alpha: float, cap: float, draws: int, seed: int) -> tuple[float, float]:
    """(κ, the cap on √A) for :func:`stable_bulk_factor` and :func:`stable_cap_value`."""
    from ..sde import positive_stable

    if not is_real(alpha) or not 1 < alpha < 2:
        raise ValueError(f"alpha={alpha!r} must lie in (1, 2)")
    if not is_real(cap) or not 0.5 < cap <= 1:
        raise ValueError(f"cap={cap!r} must lie in (0.5, 1] (a quantile of √A; 1 for no cap)")
    key = (float(alpha), float(cap))
    default = draws == 1_000_000 and seed == 0
    if not default or key not in _BULK:
        gen = torch.Generator().manual_seed(seed)
        root = positive_stable((draws,), key[0] / 2, gen).sqrt()
        Z = torch.randn(draws, generator=gen, dtype=torch.float64)
        c = float(torch.quantile(root[:200_000], key[1])) if key[1] < 1 else float("inf")
        value = (float(0.6744897501960817 / (root.clamp(max=c) * Z).abs().median()), c)
        if not default:
            return value
        _BULK[key] = value
    return _BULK[key]


def stable_bulk_factor(alpha: float, *, cap: float = 1.0, draws: int = 1_000_000, seed: int = 0) -> float:
    """``ω_α``: the median of ``|ω_α √A Z|`` equals the median of ``|Z|``, for ``Z ~ N(0, 1)`` and ``A`` positive
    ``α/2``-stable (:func:`sgdnoise.sde.positive_stable`), independent. Then every projection of
    ``ω_α √A G`` (``G`` Gaussian) has the median absolute value of the same projection of ``G``. With
    ``cap < 1``, the same for ``min(√A, c)`` with ``c`` the ``cap``-quantile of ``√A``
    (:func:`stable_cap_value`): the capped law, matched in bulk again. Estimated by Monte Carlo with
    ``draws`` draws from a fixed seed (relative standard error about ``1.3/√draws``) and remembered."""
    return _bulk(alpha, cap, draws, seed)[0]


def stable_cap_value(alpha: float, cap: float) -> float:
    """The ``cap``-quantile of ``√A`` (``A`` positive ``α/2``-stable), estimated from 200,000 draws of a fixed
    seed; ``inf`` for ``cap = 1``. ``gd_stable`` with ``stable_cap = q`` uses ``min(√A, c)``: its rare large
    kicks (the top ``1 - q`` of the radial factor) are cut to ``c``, the rest of the noise is unchanged."""
    return _bulk(alpha, cap, 1_000_000, 0)[1]


def _stable_mults(cfg: TMSConfig, shape: tuple, generator: torch.Generator) -> Tensor:
    """``ω_α √A`` for ``gd_stable``'s noise (``ω_α min(√A, c)`` with a cap), one per entry of ``shape`` (float32)."""
    from ..sde import positive_stable

    root = positive_stable(shape, cfg.alpha / 2, generator).sqrt()
    if cfg.stable_cap < 1:
        root = root.clamp(max=stable_cap_value(cfg.alpha, cfg.stable_cap))
    return (stable_bulk_factor(cfg.alpha, cap=cfg.stable_cap) * root).float()


def gradient_estimate(cfg: TMSConfig, W: Tensor, b: Tensor, X: Tensor, *, generator: torch.Generator,
                      batch: Tensor | None = None) -> Tensor:
    """One draw of the flat gradient estimate ``ĝ = (∂W, ∂b)`` (without weight decay) of
    ``cfg.optimizer`` at ``(W, b)`` on the data ``X`` ``(N, n)``, by the code path of the training loop:
    a minibatch mean for ``"sgd"``/``"adamw"`` (from ``batch`` or drawn with ``generator``), the full mean
    for ``"gd"``, the weighted full mean with Gaussian weights drawn with ``generator`` for ``"gd_gaussian"`` (and
    ``"gd_stable"``, whose weights carry one draw of ``ω_α √A``, drawn after them)."""
    W = W.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    imp = importances(cfg).to(X.device)
    if cfg.optimizer in ("sgd", "adamw"):
        if batch is None:
            batch = sample_batches(X.shape[0], cfg.B, 1, cfg.scheme, generator)[0]
        obj = per_sample_loss(W, b, X[batch.to(X.device)], imp).mean()
    else:
        losses = per_sample_loss(W, b, X, imp)
        obj = losses.mean()
        if cfg.optimizer in ("gd_gaussian", "gd_stable"):
            z = torch.randn(X.shape[0], generator=generator).to(X.device)
            s = math.sqrt(noise_factor(cfg) / X.shape[0]) * cfg.noise_mult
            if cfg.optimizer == "gd_stable":
                s = s * float(_stable_mults(cfg, (1,), generator)[0])
            obj = (((z - z.mean()) * s + 1.0 / X.shape[0]) * losses).sum()
    gW, gb = torch.autograd.grad(obj, (W, b))
    return torch.cat([gW.reshape(-1), gb])


# ----------------------------------------------------------------------------- geometry
def _gap_label(k: int, gaps: np.ndarray, tol: float) -> str:
    def close(target) -> bool:
        return bool(np.all(np.abs(np.sort(gaps) - np.sort(np.asarray(target, dtype=float))) <= tol))

    if k == 2:
        if close([90, 270]):
            return "2 orthogonal"
        if close([180, 180]):
            return "antipodal pair"
        return "other"
    if close([360.0 / k] * k):
        return {3: "triangle", 4: "2 antipodal pairs", 5: "pentagon"}.get(k, f"{k}-gon")
    if k == 3 and close([90, 90, 180]):
        return "antipodal pair + 1"
    return "other"


def classify_geometry(W, threshold: float = 0.5, angle_tol: float = 20.0) -> dict[str, Any]:
    """The geometry of the feature directions of ``W`` ``(m, n)`` (rule in the module docstring).

    Returns ``label``, ``n_represented`` (``k``), ``represented`` (bool per feature), ``norms``
    (``‖W_i‖``), ``angles`` (degrees of the represented columns in the plane, for ``m = 2``; else empty)
    and ``cosines`` (``k × k`` matrix of cosines between represented columns).
    """
    W = np.asarray(W.detach().cpu() if isinstance(W, Tensor) else W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must have shape (m, n); got {W.shape}")
    norms = np.linalg.norm(W, axis=0)
    rep = norms > threshold
    k = int(rep.sum())
    U = W[:, rep] / norms[rep]
    cos = np.clip(U.T @ U, -1.0, 1.0)
    angles = np.zeros(0)
    if k == 0:
        label = "none"
    elif k == 1:
        label = "1 feature"
    elif W.shape[0] == 2:
        angles = np.degrees(np.arctan2(U[1], U[0])) % 360.0
        a = np.sort(angles)
        gaps = np.diff(np.concatenate([a, [a[0] + 360.0]]))
        label = _gap_label(k, gaps, angle_tol)
    else:
        ang = np.degrees(np.arccos(cos))
        off = ~np.eye(k, dtype=bool)
        ortho = np.abs(ang - 90.0) <= angle_tol
        anti = ang >= 180.0 - angle_tol
        if np.all(ortho[off]):
            label = f"{k} orthogonal"
        elif np.all(anti.sum(1) == 1) and np.all((ortho | anti)[off]):
            label = "1 antipodal pair" if k == 2 else f"{k // 2} antipodal pairs"
        else:
            label = "other"
    return {"label": label, "n_represented": k, "represented": rep, "norms": norms, "angles": angles, "cosines": cos}


def feature_dimensionality(W) -> np.ndarray:
    """Elhage et al.'s feature dimensionality ``D_i = ‖W_i‖² / Σ_j (Ŵ_i · W_j)²`` for each column ``W_i`` of
    ``W`` ``(m, n)`` (``Ŵ_i = W_i/‖W_i‖``; ``D_i = 0`` for a zero column): the share of a dimension that
    feature ``i`` gets. A feature alone in its direction has ``D = 1``, one of an antipodal pair ``1/2``,
    one of a pentagon in the plane ``2/5`` (five features sharing two dimensions)."""
    W = np.asarray(W.detach().cpu() if isinstance(W, Tensor) else W, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"W must have shape (m, n); got {W.shape}")
    norms = np.linalg.norm(W, axis=0)
    out = np.zeros(W.shape[1])
    nz = norms > 0
    U = W[:, nz] / norms[nz]
    overlap = ((U.T @ W) ** 2).sum(1)  # Σ_j (Ŵ_i · W_j)², ≥ ‖W_i‖² > 0
    out[nz] = norms[nz] ** 2 / overlap
    return out


# ----------------------------------------------------------------------------- training
_SHARED = ("sparsity", "seed", "data_seed")  # the fields replicas of one batch may differ in


def _check_batch(cfgs: Sequence[TMSConfig]) -> None:
    if not cfgs:
        raise ValueError("need at least one configuration")
    for c in cfgs:
        if not isinstance(c, TMSConfig):
            raise TypeError(f"configurations must be TMSConfig; got a {type(c).__name__}")
    base = dataclasses.asdict(cfgs[0])
    for c in cfgs[1:]:
        d = dataclasses.asdict(c)
        diff = [k for k in base if k not in _SHARED and base[k] != d[k]]
        if diff:
            raise ValueError(f"configurations of one batch may differ only in {_SHARED}; they differ in {diff}")


def _train(cfgs: Sequence[TMSConfig], *, progress: bool, on_divergence: str = "raise") -> dict[str, Any]:
    cfg = cfgs[0]
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but no CUDA device is available; use device='cpu'")
    R, N, n, B = len(cfgs), cfg.n_samples, cfg.n, cfg.B
    X = torch.stack([make_data(c) for c in cfgs]).to(dev)                        # (R, N, n)
    inits = [init_params(c) for c in cfgs]
    W = torch.stack([w for w, _ in inits]).to(dev).requires_grad_(True)          # (R, m, n)
    b = torch.stack([v for _, v in inits]).to(dev).requires_grad_(True)          # (R, n)
    imp = importances(cfg).to(dev)
    gens = [torch.Generator().manual_seed(child_seed(c.seed, 2)) for c in cfgs]  # minibatches / fresh data / noise
    rows = torch.arange(R, device=dev).unsqueeze(1)
    opt = None
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW([W, b], lr=cfg.lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=cfg.weight_decay)
    injected = cfg.optimizer in ("gd_gaussian", "gd_stable")
    s = math.sqrt(noise_factor(cfg) / N) * cfg.noise_mult if injected else 0.0
    minibatch = cfg.optimizer in ("adamw", "sgd")
    if injected:
        chunk = max(1, min(256, 2**20 // (R * N)))
    elif cfg.online:
        chunk = max(1, min(256, 2**20 // (R * B * n)))
    elif cfg.scheme == "reshuffling":
        per_epoch = batches_per_epoch(N, B)
        chunk = per_epoch * max(1, 256 // per_epoch)
    else:
        chunk = 256
    buf, pos = None, chunk
    evals = eval_steps(cfg.steps, cfg.evals_per_decade)
    eval_set = set(evals)
    curve = []
    loss0 = None
    B_text = f"B={B}" if cfg.optimizer != "gd" else "B=N (full batch)"
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, disable=not progress, desc=f"tms {cfg.optimizer} R={R}", unit="step", leave=False)
    done = 0
    t0 = time.perf_counter()

    alive = torch.ones(R, dtype=torch.bool, device=dev)
    died_at = [None] * R

    def gd_update(gW: Tensor, gb: Tensor) -> None:
        """θ ← θ - η(g + λθ): the step of "sgd", "gd" and the injected-noise optimisers, and of the quench."""
        with torch.no_grad():
            for q, g in ((W, gW), (b, gb)):
                if cfg.weight_decay:
                    q.mul_(1.0 - cfg.lr * cfg.weight_decay)
                q.sub_(cfg.lr * g)

    def diverged(k: int, loss: Tensor, what: str) -> None:
        nonlocal alive
        bad = (~torch.isfinite(loss) | (loss > EXPLODE * loss0)) & alive
        if bool(bad.any()):
            r = int(bad.nonzero()[0, 0])
            if on_divergence == "mark":  # freeze the replica at W = 0, b = 0 and go on with the others
                for i in bad.nonzero()[:, 0].tolist():
                    died_at[i] = k
                # A new tensor, not an in-place change: the step's graph may hold the old mask. The frozen
                # replica's parameters are set to 0 after the step's update (its gradient has weight 0).
                alive = alive & ~bad
                return
            raise DivergenceError(f"toy-model run diverged {what} step {k}: loss {float(loss[r]):.3g} (initial "
                                  f"{float(loss0[r]):.3g}) with eta={cfg.lr}, {B_text}, optimizer={cfg.optimizer!r}, "
                                  f"sparsity={cfgs[r].sparsity}, seed={cfgs[r].seed}; lower eta")

    try:
        for k in range(cfg.steps + 1):
            if k in eval_set:
                with torch.no_grad():
                    full = per_sample_loss(W, b, X, imp).mean(-1)
                if loss0 is None:
                    loss0 = full.clamp_min(1e-12)
                diverged(k, full, "by")
                curve.append(torch.where(alive, full, torch.nan).cpu().numpy())
                bar.update(k - done)
                done = k
                bar.set_postfix(loss=f"{float(full.mean()):.4g}", refresh=False)
            if k == cfg.steps:
                break
            if pos == chunk:  # draw the randomness of the next `chunk` steps, per replica
                if injected:
                    buf = torch.stack([torch.randn((chunk, N), generator=g) for g in gens], 1).to(dev)  # (chunk, R, N)
                    if cfg.optimizer == "gd_stable":  # the radial multipliers κ√A, after the chunk's z
                        mult = torch.stack([_stable_mults(cfg, (chunk,), g) for g in gens], 1).to(dev)  # (chunk, R)
                elif minibatch and cfg.online:
                    buf = torch.stack([_draw((chunk, B, n), c.sparsity, g) for c, g in zip(cfgs, gens)], 1).to(dev)
                elif minibatch:
                    buf = torch.stack([sample_batches(N, B, chunk, cfg.scheme, g) for g in gens], 1).to(dev)  # (chunk, R, B)
                pos = 0
            if minibatch:
                Xb = buf[pos] if cfg.online else X[rows, buf[pos]]
                loss = per_sample_loss(W, b, Xb, imp).mean(-1)
                obj = (loss * alive).sum()
            else:
                losses = per_sample_loss(W, b, X, imp)
                loss = losses.mean(-1)
                if injected:
                    z = buf[pos]
                    if cfg.optimizer == "gd_stable":
                        w = (z - z.mean(-1, keepdim=True)) * (s * mult[pos]).unsqueeze(-1) + 1.0 / N
                    else:
                        w = (z - z.mean(-1, keepdim=True)) * s + 1.0 / N
                    obj = ((w * losses).sum(-1) * alive).sum()
                else:
                    obj = (loss * alive).sum()
            pos += 1
            diverged(k, loss.detach(), "at")
            if opt is not None:
                opt.zero_grad(set_to_none=True)
                obj.backward()
                opt.step()
            else:
                gd_update(*torch.autograd.grad(obj, (W, b)))
            if died_at.count(None) < R:  # keep the frozen replicas at 0 (AdamW's momentum would move them)
                with torch.no_grad():
                    W[~alive] = 0.0
                    b[~alive] = 0.0
        with torch.no_grad():
            W[~alive] = 0.0
            b[~alive] = 0.0
        W_before = W.detach().cpu().numpy().copy()
        for q in range(cfg.quench_steps):  # gradient descent, no noise: settle into the minimum reached
            loss = per_sample_loss(W, b, X, imp).mean(-1)
            diverged(cfg.steps + q, loss.detach(), "in the quench, at")
            gd_update(*torch.autograd.grad((loss * alive).sum(), (W, b)))
            with torch.no_grad():
                W[~alive] = 0.0
                b[~alive] = 0.0
        with torch.no_grad():
            final = per_sample_loss(W, b, X, imp).mean(-1)
        diverged(cfg.steps + cfg.quench_steps, final, "after the quench, at")
        final = torch.where(alive, final, torch.nan).cpu().numpy()
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    Wf, bf = W.detach().cpu().numpy(), b.detach().cpu().numpy()

    def label_all(Ws):
        geoms = [classify_geometry(Ws[r], cfg.threshold, cfg.angle_tol) for r in range(R)]
        for r in range(R):
            if died_at[r] is not None:
                geoms[r]["label"] = "diverged"
                geoms[r]["n_represented"] = 0
        return geoms

    geoms = label_all(Wf)
    before = label_all(W_before) if cfg.quench_steps else geoms
    return {
        "config": dataclasses.asdict(cfg),
        "seeds": [c.seed for c in cfgs], "sparsities": [c.sparsity for c in cfgs],
        "steps": np.asarray(evals, dtype=np.int64), "loss": np.stack(curve, 1),  # (R, len(steps))
        "W": Wf, "b": bf,
        "labels": [g["label"] for g in geoms], "n_represented": np.asarray([g["n_represented"] for g in geoms]),
        "norms": np.stack([g["norms"] for g in geoms]),
        "diverged_at": [-1 if d is None else int(d) for d in died_at],
        "final_loss": final,  # (R,): the full-data loss at the end (after the quench), nan where diverged
        "dimensionality": np.stack([feature_dimensionality(Wf[r]) for r in range(R)]),  # (R, n)
        "labels_before_quench": [g["label"] for g in before],
        "n_represented_before_quench": np.asarray([g["n_represented"] for g in before]),
        "wall_time_s": wall,
    }


def _code_modules() -> tuple:
    from . import _common
    from .. import _args, noise, sampling

    return (sys.modules[__name__], _common, _args, noise, sampling)


def run_tms_batch(cfgs: Sequence[TMSConfig], *, cache: ResultCache | None = None, progress: bool = True,
                  threads: int | None = 1, on_divergence: str = "raise") -> dict[str, Any]:
    """Train several runs at once, as replicas of one tensor program (module docstring). The
    configurations may differ only in ``sparsity``, ``seed`` and ``data_seed``.

    Returns ``config`` (the first configuration's fields), per replica ``seeds`` and ``sparsities``;
    ``steps`` (the evaluation steps) and ``loss`` ``(R, len(steps))``, the full-data loss there (the
    fixed set: the training loss, or for ``online`` an evaluation loss); the final ``W`` ``(R, m, n)``
    and ``b`` ``(R, n)``; ``labels`` (geometry per replica, :func:`classify_geometry`), ``n_represented``,
    ``norms`` ``(R, n)``; ``final_loss`` ``(R,)`` (the full-data loss at the very end, after any quench;
    ``nan`` where diverged); ``dimensionality`` ``(R, n)`` (:func:`feature_dimensionality`);
    ``labels_before_quench`` and ``n_represented_before_quench`` (the same as ``labels`` and
    ``n_represented`` when ``quench_steps = 0``); ``wall_time_s``.

    Raises :class:`sgdnoise.sgd.DivergenceError` (naming ``η``, ``B``, the step, the sparsity and seed)
    when a loss is non-finite or exceeds ``1e6`` times its initial value. With ``on_divergence="mark"``
    such a replica is instead frozen at ``W = 0, b = 0``, labelled ``"diverged"``, its later losses
    ``nan``, and the step recorded in ``diverged_at`` (``-1`` for replicas that did not diverge). ``cache`` and ``threads``
    as in :func:`~sgdnoise.experiments.grokking.run_grokking` (the model is tiny: one thread is fastest).
    """
    if isinstance(cfgs, TMSConfig):
        raise TypeError("cfgs must be a sequence of TMSConfig; for one configuration call run_tms, or pass [cfg]")
    cfgs = list(cfgs)
    _check_batch(cfgs)
    check_cache(cache)
    if on_divergence not in ("raise", "mark"):
        raise ValueError(f"on_divergence={on_divergence!r}; valid values are 'raise' and 'mark'")
    check_threads(threads)

    def compute():
        with torch_threads(threads):
            return _train(cfgs, progress=progress, on_divergence=on_divergence)

    if cache is None:
        return compute()
    key = {"runs": [dataclasses.asdict(c) for c in cfgs], "on_divergence": on_divergence}
    return cache.get_or_compute(EXPERIMENT, key, compute, modules=_code_modules())


def run_tms(cfg: TMSConfig, *, cache: ResultCache | None = None, progress: bool = True,
            threads: int | None = 1) -> dict[str, Any]:
    """Train the toy model of ``cfg``.

    Returns ``config``; ``steps`` and ``loss`` (the full-data loss at the log-spaced evaluation steps);
    the final ``W`` ``(m, n)`` and ``b`` ``(n,)`` (float32); ``geometry`` (the dict of
    :func:`classify_geometry`: ``label``, ``n_represented``, ``represented``, ``norms``, ``angles``,
    ``cosines``); ``label`` (the same label); ``wall_time_s``. Errors, ``cache`` and ``threads`` as in
    :func:`run_tms_batch`.
    """
    if not isinstance(cfg, TMSConfig):
        raise TypeError(f"cfg must be a TMSConfig; got a {type(cfg).__name__}")
    check_threads(threads)
    check_cache(cache)

    def compute():
        with torch_threads(threads):
            r = _train([cfg], progress=progress)
        geom = classify_geometry(r["W"][0], cfg.threshold, cfg.angle_tol)
        return {"config": r["config"], "steps": r["steps"], "loss": r["loss"][0], "W": r["W"][0], "b": r["b"][0],
                "geometry": geom, "label": geom["label"], "wall_time_s": r["wall_time_s"]}

    if cache is None:
        return compute()
    return cache.get_or_compute(EXPERIMENT, cfg, compute, modules=_code_modules())


def run_tms_seeds(cfg: TMSConfig, seeds: Iterable[int] = DEFAULT_SEEDS, sparsities: Iterable[float] | None = None,
                  **kwargs) -> dict[str, Any]:
    """:func:`run_tms_batch` over every ``(sparsity, seed)`` pair (sparsity-major; ``sparsities=None``:
    only ``cfg.sparsity``). Each replica's data set is drawn from its own seed (``cfg.data_seed`` if set).
    ``kwargs`` go to :func:`run_tms_batch`."""
    seeds = list(seeds)
    sps = [cfg.sparsity] if sparsities is None else list(sparsities)
    if not seeds or not sps:
        raise ValueError("need at least one seed and one sparsity")
    return run_tms_batch([cfg.replace(sparsity=S, seed=s) for S in sps for s in seeds], **kwargs)


# ----------------------------------------------------------------------------- noise sweep
def noise_settings(base: TMSConfig, *, horizon: float, eta: float, batch_sizes: Sequence[int] = (8, 64),
                   gaussian: bool = True) -> dict[str, dict]:
    """Optimiser settings at the same "time" ``η · steps = horizon`` for the noise sweep: ``"gd"`` (no noise),
    ``"sgd B=<B>"`` for each batch size (noise level ``η/B``), and, with ``gaussian``, ``"gd_gaussian B=<B>"``
    (Gaussian noise with SGD's covariance) for the smallest batch size. Values: changes for
    :meth:`TMSConfig.replace` (``base`` only supplies the defaults that are not changed)."""
    for name, v in (("horizon", horizon), ("eta", eta)):
        if not (is_real(v) and v > 0):
            raise ValueError(f"{name}={v!r} must be a positive finite number")
    if any(not is_int(B) or B < 1 for B in batch_sizes):
        raise ValueError(f"batch_sizes={list(batch_sizes)!r} must be ints >= 1")
    steps = int(round(horizon / eta))
    if steps < 1:
        raise ValueError(f"horizon={horizon!r} / eta={eta!r} rounds to {steps} steps; need horizon / eta to round "
                         "to at least 1 step")
    out = {"gd": {"optimizer": "gd", "lr": eta, "steps": steps}}
    for B in batch_sizes:
        out[f"sgd B={B}"] = {"optimizer": "sgd", "lr": eta, "steps": steps, "B": int(B)}
    if gaussian and batch_sizes:
        Bmin = int(min(batch_sizes))
        out[f"gd_gaussian B={Bmin}"] = {"optimizer": "gd_gaussian", "lr": eta, "steps": steps, "B": Bmin}
    for ch in out.values():
        base.replace(**ch)  # validate now, not half-way through a sweep
    return out


def phase_diagram(base: TMSConfig, settings: Mapping[str, Mapping[str, Any]], sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                  seeds: Sequence[int] = DEFAULT_SEEDS, *, cache: ResultCache | None = None, progress: bool = True,
                  threads: int | None = 1) -> dict[str, Any]:
    """Geometry counts over seeds for every ``(sparsity, setting)`` cell.

    ``settings`` maps a name to changes of ``base`` (e.g. :func:`noise_settings`); each setting is one
    :func:`run_tms_seeds` call over all sparsities and seeds. A run that diverges is counted under the
    label ``"diverged"`` (``on_divergence="mark"``); the others go on.

    Returns ``sparsities``, ``settings`` (names), ``seeds``, ``n_seeds``, ``cells``: a list of dicts with
    ``sparsity``, ``setting``, ``n_seeds``, ``counts`` (label → number of seeds), ``fractions``,
    ``mean_represented``, ``final_loss`` (mean over the seeds that did not diverge); ``runs`` (name → the
    :func:`run_tms_batch` result) and ``wall_time_s``.
    """
    sparsities, seeds = [float(S) for S in sparsities], [int(s) for s in seeds]
    t0 = time.perf_counter()
    cells, runs = [], {}
    for name, changes in settings.items():
        cfg = base.replace(**changes)
        r = run_tms_seeds(cfg, seeds, sparsities, cache=cache, progress=progress, threads=threads, on_divergence="mark")
        runs[name] = r
        K = len(seeds)
        for j, S in enumerate(sparsities):
            sl = slice(j * K, (j + 1) * K)
            labels = list(r["labels"][sl])
            counts: dict[str, int] = {}
            for lab in labels:
                counts[lab] = counts.get(lab, 0) + 1
            cells.append({"sparsity": S, "setting": name, "n_seeds": K, "counts": counts,
                          "fractions": {k: v / K for k, v in counts.items()},
                          "mean_represented": float(np.mean(np.asarray(r["n_represented"])[sl])),
                          "final_loss": float(np.nanmean(np.asarray(r["loss"])[sl, -1])) if counts.get("diverged", 0) < K
                          else float("nan")})
    return {"sparsities": sparsities, "settings": list(settings), "seeds": seeds, "n_seeds": len(seeds),
            "cells": cells, "runs": runs, "wall_time_s": time.perf_counter() - t0}


_SHORT = {"none": "0", "1 feature": "1", "2 orthogonal": "orth", "antipodal pair": "anti",
          "triangle": "tri", "antipodal pair + 1": "anti+1", "2 antipodal pairs": "2anti",
          "pentagon": "pent", "other": "oth", "diverged": "div"}


def paired_sign_test(diagram: Mapping[str, Any], a: str, b: str, sparsity: float, geometry: str) -> dict[str, Any]:
    """Exact two-sided sign test: does setting ``a`` end in ``geometry`` in more seeds than ``b``, at ``sparsity``?

    A seed starts from the same initialisation and data in every setting of a :func:`phase_diagram`, so the
    two settings' outcomes are paired by seed: only the seeds where exactly one of them reaches ``geometry``
    count. Returns ``a_only`` and ``b_only`` (those seeds, by which setting reached it) and ``p``, the
    two-sided binomial p-value of ``a_only`` among them at 1/2 (1.0 when there are none).
    """
    from scipy import stats

    names, sparsities = list(diagram["settings"]), [float(S) for S in diagram["sparsities"]]
    for name in (a, b):
        if name not in names:
            raise ValueError(f"setting {name!r} is not in the diagram; its settings are {names}")
    if float(sparsity) not in sparsities:
        raise ValueError(f"sparsity={sparsity!r} is not in the diagram; its sparsities are {sparsities}")
    j, K = sparsities.index(float(sparsity)), int(diagram["n_seeds"])
    reach = {name: [lab == geometry for lab in list(diagram["runs"][name]["labels"])[j * K:(j + 1) * K]]
             for name in (a, b)}
    a_only = sum(x and not y for x, y in zip(reach[a], reach[b]))
    b_only = sum(y and not x for x, y in zip(reach[a], reach[b]))
    p = float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue) if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p}


def format_phase_table(diagram: Mapping[str, Any]) -> str:
    """A plain-text table: one row per sparsity, one column per setting, each cell the geometry counts
    (``label:count`` with short labels ``orth``, ``anti``, ``2anti``, ``pent``, …) out of ``n_seeds``."""
    names = list(diagram["settings"])
    by = {(c["sparsity"], c["setting"]): c for c in diagram["cells"]}
    rows = [["S"] + names]
    for S in diagram["sparsities"]:
        row = [f"{S:g}"]
        for nm in names:
            c = by[(S, nm)]
            items = sorted(c["counts"].items(), key=lambda kv: -kv[1])
            row.append(" ".join(f"{_SHORT.get(k, k)}:{v}" for k, v in items) + f" /{c['n_seeds']}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, widths)) for r in rows)
