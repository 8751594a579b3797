r"""Grokking on modular addition ``a + b mod p``, trained by GD, SGD, or GD plus SGD-shaped noise.

**Task.** The ``p²`` pairs ``(a, b)`` are split once, at random (seed ``data_seed``), into
``n = round(train_frac · p²)`` training pairs and ``p² - n`` test pairs. The input is the
concatenation of the one-hot codes of ``a`` and ``b`` (``2p`` numbers), the label ``(a + b) mod p``.

**Model** (after Gromov 2023, *Grokking modular arithmetic*): a two-layer network without biases,

    f(x) = (1/N) · W σ(U x),     U ∈ R^{N×2p},  W ∈ R^{p×N},  U_ij, W_ij ~ N(0, init_scale²),

with ``σ(z) = z²`` by default (``"relu"``, ``"gelu"``, ``"tanh"`` are also offered) and width ``N``.
The ``1/N`` in front is the mean-field scaling: gradients carry a factor ``1/N``, so the learning rate
is of order ``N``. Both layers are ``nn.Linear``, so :func:`~sgdnoise.gradients.per_sample_grads` takes its fast
path. Loss (per sample, mean over the data, as everywhere in the package): ``"mse"`` is
``½‖f(x) - e_y‖²`` against the one-hot target ``e_y``; ``"cross_entropy"`` uses ``f(x)`` as logits.

**Optimisers.** With ``g_n`` the full training gradient, ``λ`` the weight decay, ``η_k`` the learning
rate at step ``k`` and ``ĝ_k`` a gradient estimate, every optimiser takes the step

    θ_{k+1} = θ_k - η_k (ĝ_k + λ θ_k).

* ``"gd"``: ``ĝ = g_n``.
* ``"sgd"``: ``ĝ = g_B``, the mean gradient of a minibatch of ``B`` indices drawn by ``scheme`` (see
  :mod:`sgdnoise.sampling`). Its noise ``ξ = ĝ - g_n`` has mean 0 and covariance ``c(n, B) Σ(θ)`` with
  ``Σ = (1/n) G̃ᵀ G̃`` (``G̃``: centred per-sample gradients) and ``q_B = 1/B`` with replacement,
  ``(n-B)/(B(n-1))`` without (:func:`sgdnoise.noise.noise_covariance_factor`).
* ``"gd_gaussian"``: ``ĝ = g_n + √(q_B/n) G̃ᵀ z``, ``z ~ N(0, I_n)``: Gaussian noise with exactly SGD's
  covariance ``q_B Σ(θ)`` (``1/√(nB) G̃ᵀ z`` with replacement). As in :mod:`sgdnoise.sde`, no ``G`` is
  formed: ``G̃ᵀ z = ∇_θ Σ_i (z_i - z̄) ℓ_i``, so ``ĝ`` is the gradient of the weighted loss
  ``Σ_i w_i ℓ_i`` with ``w_i = 1/n + √(q_B/n) (z_i - z̄)`` — one full-batch forward and backward pass.
* ``"gd_stable"``: the same with ``z_i`` i.i.d. symmetric α-stable of scale ``2^{-1/2}``
  (:func:`sgdnoise.sde.symmetric_stable`), so ``α = 2`` *is* ``"gd_gaussian"`` ("matched scale"); for
  ``α < 2`` the noise has infinite variance. The step noise is ``η · √(q_B/n) G̃ᵀ z`` for every ``α``: the
  discrete "SGD with α-stable gradient noise". (Euler–Maruyama for the Lévy-driven SDE of
  :func:`sgdnoise.sde.sgd_sde` with ``dt = η`` would instead scale it by ``η^{1/2 + 1/α}``, which
  coincides with ``η`` only at ``α = 2``.)

* ``"gd_stable_matched"``: ``ĝ = g_n + ω_α √A · √(q_B/n) G̃ᵀ z`` with ``z ~ N(0, I_n)`` and one positive
  ``α/2``-stable ``A`` per step (:func:`sgdnoise.sde.positive_stable`): a *sub-Gaussian* α-stable vector
  with the shape of SGD's covariance, whose radial law alone is heavy-tailed. ``ω_α``
  (:func:`~sgdnoise.experiments.superposition.stable_bulk_factor`) makes the median of ``|vᵀξ|`` equal to
  the Gaussian noise's along every direction ``v``: the two noises agree in bulk and differ in the tail,
  the comparison chapters 4 and 5 make. (``"gd_stable"``, with i.i.d. weights, is *not* matched in bulk:
  its typical size is about ``n^{1/α - 1/2}`` times the Gaussian's.) ``α = 2`` is ``"gd_gaussian"``.

The noisy-GD steps cost one full-batch pass, like ``"gd"``; an ``"sgd"`` step costs a ``B``-sample pass.

*Heavy tails and the quadratic network.* ``σ(z) = z²`` makes the gradient grow like the cube of the
weights, so one large α-stable kick can start a runaway. At :data:`DEFAULT` (``η = 100``, ``B = 32``),
seed 0, ``"gd_stable"`` diverged for α = 1.5, 1.6 and 1.7 (within ~100 steps; at α = 1.5 also with
``B = 480``, with ``η = 30``, or with a 500-step learning-rate warm-up), and grokked for α = 1.8 and 1.9;
but α = 1.8 diverged for seed 1, α = 1.9 for seeds 1 and 2, and α = 1.95 for seed 1 (it grokked for
seed 2).
Rescaling the kicks by ``n^{1/2-1/α}`` (the normalisation under which a sum of ``n`` stable variables
keeps its scale) did not help, so the tails, not the overall scale, are what breaks the run. The ReLU
network of :data:`DEFAULT_RELU` survives α = 1.8 (seeds 0 and 1). For comparable ``g_i``, the sum
``Σ_i (z_i - z̄) g_i`` has for α < 2 a typical size about ``n^{1/α - 1/2}`` times the Gaussian one.

**Grokking.** Training and test loss and accuracy are recorded at log-spaced steps
(``evals_per_decade`` per decade, plus steps 0 and ``steps``). *Time to fit* is the first recorded
step with training accuracy 1; *time to generalise* the first with test accuracy ``≥ threshold``
(``None`` when never reached). Grokking is a long delay between the two; ``delay_decades`` is
``log10`` of their ratio.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import sys
import time
import types
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from ..gradients import flat_params
from ..noise import noise_covariance_factor
from ..problems import Problem, cross_entropy, half_squared_error
from ..sampling import SCHEMES, batches_per_epoch, sample_batches
from ..sgd import DivergenceError, check_learning_rate
from .cache import ResultCache, canonical_json
from ._common import check_cache, check_device, check_steps_and_seeds, set_canonical_types, check_threads, child_seed, eval_steps, is_int, is_real, torch_threads

__all__ = ["ModAddConfig", "DEFAULT", "DEFAULT_RELU", "LARGE", "DEFAULT_SEEDS", "LARGE_SEEDS", "OPTIMIZERS", "ACTIVATIONS", "LOSSES",
           "LR_SCHEDULES", "ModAddData", "ModAddMLP", "split_indices", "make_data", "make_model", "eval_steps",
           "learning_rate", "noise_factor", "gradient_estimate", "run_grokking", "fourier_power",
           "restrict_to_frequencies", "fourier_measures", "EXPERIMENT"]

OPTIMIZERS = ("gd", "sgd", "gd_gaussian", "gd_stable", "gd_stable_matched")
ACTIVATIONS = ("quadratic", "relu", "gelu", "tanh")
LOSSES = ("mse", "cross_entropy")
LR_SCHEDULES = ("constant", "linear_warmup")
EXPERIMENT = "grokking"
EXPLODE = 1e6  # a loss above EXPLODE × the initial training loss counts as divergence


@dataclass(frozen=True)
class ModAddConfig:
    """Everything that defines one grokking run (see the module docstring for the maths).

    Validated on construction; every bad value raises a ``ValueError`` naming it and what is valid.
    """

    p: int = 31                       # modulus; the data are all p² pairs (a, b)
    train_frac: float = 0.5           # fraction of the p² pairs used for training, in (0, 1)
    width: int = 256                  # hidden width N
    activation: str = "quadratic"     # σ: one of ACTIVATIONS
    init_scale: float = 1.0           # initial weights ~ N(0, init_scale²)
    loss: str = "mse"                 # "mse" (½‖f - one-hot‖²) or "cross_entropy"
    optimizer: str = "gd"             # one of OPTIMIZERS
    lr: float = 100.0                 # η (mean-field scaling: of order N)
    lr_schedule: str = "constant"     # "constant" or "linear_warmup" (η k/warmup_steps for k < warmup_steps)
    warmup_steps: int = 0
    weight_decay: float = 1e-5        # λ in θ ← θ - η (ĝ + λθ)
    B: int = 32                       # batch size of "sgd", and whose noise "gd_gaussian"/"gd_stable" mimic
    scheme: str = "with_replacement"  # minibatch sampling scheme of "sgd" (sets c(n, B) for the noisy GDs)
    alpha: float = 1.5                # tail index of "gd_stable" / "gd_stable_matched", in (0, 2]
    steps: int = 10_000
    seed: int = 0                     # initialisation, minibatches and injected noise
    data_seed: int | None = None      # train/test split; None: the same as seed
    evals_per_decade: int = 20        # log-spaced evaluation steps
    threshold: float = 0.95           # test accuracy that counts as "generalised"
    stop_at_generalisation: bool = False  # end the run at the first evaluation with test accuracy ≥ threshold
    device: str = "cpu"               # "cpu", "cuda" or "cuda:<index>"

    def __post_init__(self):
        if not is_int(self.p) or self.p < 2:
            raise ValueError(f"p={self.p!r} must be an int >= 2 (the modulus)")
        if not is_real(self.train_frac) or not 0 < self.train_frac < 1:
            raise ValueError(f"train_frac={self.train_frac!r} must lie in the open interval (0, 1)")
        n = self.n_train
        if not 1 <= n <= self.p**2 - 1:
            raise ValueError(f"train_frac={self.train_frac} gives {n} training pairs out of p²={self.p**2}; need "
                             f"between 1 and {self.p**2 - 1} so that both the training and the test set are non-empty")
        if not is_int(self.width) or self.width < 1:
            raise ValueError(f"width={self.width!r} must be an int >= 1")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r}; valid activations are {ACTIVATIONS}")
        if not is_real(self.init_scale) or self.init_scale <= 0:
            raise ValueError(f"init_scale={self.init_scale!r} must be a finite number > 0")
        if self.loss not in LOSSES:
            raise ValueError(f"loss={self.loss!r}; valid losses are {LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}; valid optimizers are {OPTIMIZERS}")
        check_learning_rate(float(self.lr) if is_real(self.lr) else self.lr)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r}; valid schedules are {LR_SCHEDULES}")
        if not is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r} must be an int >= 0")
        if self.lr_schedule == "linear_warmup" and self.warmup_steps < 1:
            raise ValueError("lr_schedule='linear_warmup' needs warmup_steps >= 1")
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be a finite number >= 0")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme={self.scheme!r}; valid schemes are {SCHEMES}")
        if not is_int(self.B) or not 1 <= self.B <= n:
            raise ValueError(f"batch size B={self.B!r} must be an int with 1 <= B <= n_train={n}")
        if not is_real(self.alpha) or not 0 < self.alpha <= 2:
            raise ValueError(f"alpha={self.alpha!r} must lie in (0, 2]")
        check_steps_and_seeds(self.steps, self.seed, self.data_seed)
        if not is_int(self.evals_per_decade) or self.evals_per_decade < 1:
            raise ValueError(f"evals_per_decade={self.evals_per_decade!r} must be an int >= 1")
        if not is_real(self.threshold) or not 0 < self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold!r} must lie in (0, 1]")
        if not isinstance(self.stop_at_generalisation, bool):
            raise ValueError(f"stop_at_generalisation={self.stop_at_generalisation!r} must be a bool")
        check_device(self.device)
        # canonical types, so that lr=100 and lr=100.0 (or numpy scalars) make the same cache key
        set_canonical_types(self, ("train_frac", "init_scale", "lr", "weight_decay", "alpha", "threshold"),
                            ("p", "width", "warmup_steps", "B", "steps", "seed", "evals_per_decade"))

    @property
    def n_train(self) -> int:
        return int(round(self.train_frac * self.p**2))

    @property
    def n_test(self) -> int:
        return self.p**2 - self.n_train

    def replace(self, **changes) -> "ModAddConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


#: The book's size, which groks in seconds on one CPU thread (p = 31, half of the 961 pairs for training,
#: N = 256, η = 100, λ = 1e-5). Chapter 6 measures its grokking delay and the optimisers on it.
DEFAULT = ModAddConfig()
DEFAULT_SEEDS = (0, 1, 2)
#: A ReLU network that survives α-stable noise at α = 1.8 more often than DEFAULT does, and still groks.
DEFAULT_RELU = ModAddConfig(activation="relu", lr=300.0, weight_decay=3e-6)
#: The larger size, meant for a GPU and more seeds (p = 59, 30% of the 3481 pairs, N = 512, 50 000 steps).
LARGE = ModAddConfig(p=59, train_frac=0.3, width=512, lr=200.0, weight_decay=2e-6, steps=50_000)
LARGE_SEEDS = tuple(range(10))


# ----------------------------------------------------------------------------- data
def split_indices(p: int, train_frac: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted indices ``i = a·p + b`` of the training and test pairs: a uniformly random subset of
    ``round(train_frac·p²)`` of the ``p²`` pairs, and the rest. Deterministic given ``seed``."""
    cfg = ModAddConfig(p=p, train_frac=train_frac, B=1)  # validates p and train_frac
    gen = torch.Generator().manual_seed(child_seed(seed, 0))
    perm = torch.randperm(p * p, generator=gen)
    return perm[: cfg.n_train].sort().values, perm[cfg.n_train:].sort().values


@dataclass
class ModAddData:
    """The split data set on the run's device. ``X_*``: concatenated one-hot inputs ``(m, 2p)``;
    ``y_*``: labels ``(a + b) mod p``; ``T_*``: the targets the loss takes (one-hot rows for ``"mse"``,
    the labels for ``"cross_entropy"``); ``*_idx``: pair indices ``a·p + b``; ``ab_*``: the columns
    ``(a, p + b)`` that are 1 in each row of ``X_*`` (for :meth:`ModAddMLP.forward_indices`)."""

    p: int
    X_train: Tensor
    y_train: Tensor
    T_train: Tensor
    X_test: Tensor
    y_test: Tensor
    T_test: Tensor
    train_idx: Tensor
    test_idx: Tensor
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    ab_train: Tensor | None = None
    ab_test: Tensor | None = None

    @property
    def n(self) -> int:
        return self.X_train.shape[0]

    def problem(self, model: nn.Module) -> Problem:
        """The training set and ``model`` as a :class:`~sgdnoise.problems.Problem`, for the noise and
        curvature tools of the package (``Problem.accuracy`` needs ``loss="cross_entropy"`` targets)."""
        return Problem(name=f"modular addition p={self.p}", X=self.X_train, y=self.T_train, model=model,
                       loss_fn=self.loss_fn, info={"p": self.p})


def make_data(cfg: ModAddConfig) -> ModAddData:
    """The training and test sets of ``cfg`` on ``cfg.device`` (float32 inputs)."""
    p = cfg.p
    seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    tr, te = split_indices(p, cfg.train_frac, seed)
    a, b = torch.arange(p * p) // p, torch.arange(p * p) % p
    X = torch.cat([nn.functional.one_hot(a, p), nn.functional.one_hot(b, p)], dim=1).float()
    y = (a + b) % p
    T = nn.functional.one_hot(y, p).float() if cfg.loss == "mse" else y
    loss_fn = half_squared_error if cfg.loss == "mse" else cross_entropy
    dev = torch.device(cfg.device)
    ab = torch.stack([a, p + b], dim=1)
    return ModAddData(p=p, X_train=X[tr].to(dev), y_train=y[tr].to(dev), T_train=T[tr].to(dev), X_test=X[te].to(dev),
                      y_test=y[te].to(dev), T_test=T[te].to(dev), train_idx=tr, test_idx=te, loss_fn=loss_fn,
                      ab_train=ab[tr].to(dev), ab_test=ab[te].to(dev))


# ----------------------------------------------------------------------------- model
class _Square(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * x


def _activation(name: str) -> nn.Module:
    return {"quadratic": _Square, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[name]()


class ModAddMLP(nn.Module):
    """``f(x) = (1/N) W σ(U x)``: ``hidden`` is ``U`` (``2p → N``), ``out`` is ``W`` (``N → p``), no biases."""

    def __init__(self, p: int, width: int, activation: str = "quadratic", *, init_scale: float = 1.0,
                 generator: torch.Generator):
        super().__init__()
        self.hidden = nn.Linear(2 * p, width, bias=False)
        self.act = _activation(activation)
        self.out = nn.Linear(width, p, bias=False)
        self.scale = 1.0 / width
        with torch.no_grad():
            for lin in (self.hidden, self.out):
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=generator) * init_scale)

    def forward(self, x: Tensor) -> Tensor:
        """``(1/N) W σ(U x)`` for a batch of inputs ``x`` of shape ``(m, 2p)``."""
        return self.out(self.act(self.hidden(x))) * self.scale

    def forward_indices(self, ab: Tensor) -> Tensor:
        """The same outputs for the inputs whose one-hot columns ``ab`` (shape ``(m, 2)``: ``a`` and
        ``p + b``) are 1: ``U x`` is the sum of two columns of ``U``, gathered instead of multiplied.
        Bit for bit equal to :meth:`forward` on the one-hot inputs (every other term of ``U x`` is an exact
        zero), and about twice as fast for training; only the order in which the backward pass sums
        ``U``'s gradient over samples differs."""
        Ut = self.hidden.weight.T
        return self.out(self.act(Ut[ab[:, 0]] + Ut[ab[:, 1]])) * self.scale


def make_model(cfg: ModAddConfig) -> ModAddMLP:
    """The initial network of ``cfg`` (drawn on the CPU, so it is the same on every device), on ``cfg.device``."""
    gen = torch.Generator().manual_seed(child_seed(cfg.seed, 1))
    model = ModAddMLP(cfg.p, cfg.width, cfg.activation, init_scale=cfg.init_scale, generator=gen)
    return model.to(cfg.device)


# ----------------------------------------------------------------------------- steps
def learning_rate(cfg: ModAddConfig, k: int) -> float:
    """``η_k``: ``cfg.lr``, ramped linearly as ``lr · (k+1)/warmup_steps`` over the warm-up."""
    if cfg.lr_schedule == "linear_warmup" and k < cfg.warmup_steps:
        return cfg.lr * (k + 1) / cfg.warmup_steps
    return float(cfg.lr)


def noise_factor(cfg: ModAddConfig) -> float:
    """``q_B(n, B)``: SGD's noise covariance is ``q_B Σ``; the noisy GDs inject ``√(q_B/n) G̃ᵀ z``."""
    return noise_covariance_factor(cfg.n_train, cfg.B, cfg.scheme)


def _outputs(model: nn.Module, data: ModAddData, split: str, batch: Tensor | None = None) -> Tensor:
    """The model's outputs on the training or test inputs (rows ``batch`` only, if given): gathered through
    :meth:`ModAddMLP.forward_indices` when the model is a :class:`ModAddMLP` and the data carry ``ab_*``."""
    X, ab = (data.X_train, data.ab_train) if split == "train" else (data.X_test, data.ab_test)
    if isinstance(model, ModAddMLP) and ab is not None:
        return model.forward_indices(ab if batch is None else ab[batch])
    return model(X if batch is None else X[batch])


def _objective(cfg: ModAddConfig, model: nn.Module, data: ModAddData, *, noise_gen: torch.Generator | None,
               batch: Tensor | None, s: float) -> tuple[Tensor, Tensor]:
    """``(objective, reported loss)``: the gradient of ``objective`` is the estimate ``ĝ``; the reported
    loss is the minibatch mean for ``"sgd"`` and the full training mean otherwise."""
    if cfg.optimizer == "sgd":
        loss = data.loss_fn(_outputs(model, data, "train", batch), data.T_train[batch]).mean()
        return loss, loss
    losses = data.loss_fn(_outputs(model, data, "train"), data.T_train)
    mean = losses.mean()
    if cfg.optimizer == "gd":
        return mean, mean
    n = losses.shape[0]
    if cfg.optimizer == "gd_gaussian":
        z = torch.randn(n, generator=noise_gen, dtype=losses.dtype, device=noise_gen.device)
    elif cfg.optimizer == "gd_stable_matched":
        z = torch.randn(n, generator=noise_gen, dtype=losses.dtype, device=noise_gen.device)
        if float(cfg.alpha) < 2:
            from ..sde import positive_stable
            from .superposition import stable_bulk_factor

            A = positive_stable((1,), float(cfg.alpha) / 2, noise_gen, device=noise_gen.device)
            z = z * float(stable_bulk_factor(float(cfg.alpha)) * A.sqrt())
    else:  # gd_stable; drawn in float64 (float32 cos(±π/2) can turn negative), then cast
        from ..sde import symmetric_stable

        z = symmetric_stable((n,), float(cfg.alpha), noise_gen, dtype=torch.float64, device=noise_gen.device)
        z = z.to(losses.dtype)
    z = z.to(losses.device)
    w = (z - z.mean()) * s + 1.0 / n
    return (w.detach() * losses).sum(), mean


def gradient_estimate(cfg: ModAddConfig, model: nn.Module, data: ModAddData, *, generator: torch.Generator,
                      batch: Tensor | None = None) -> Tensor:
    """One draw of the flat gradient estimate ``ĝ`` (without weight decay) that ``cfg.optimizer`` steps
    along, at the model's current parameters: the code path of :func:`run_grokking`.

    For ``"sgd"`` the minibatch comes from ``batch`` or is drawn with ``generator`` (a CPU generator);
    for ``"gd_gaussian"``, ``"gd_stable"`` and ``"gd_stable_matched"`` the noise is drawn with ``generator`` (on its device).
    """
    if cfg.optimizer == "sgd" and batch is None:
        batch = sample_batches(data.n, cfg.B, 1, cfg.scheme, generator)[0].to(data.X_train.device)
    s = math.sqrt(noise_factor(cfg) / data.n)
    obj, _ = _objective(cfg, model, data, noise_gen=generator, batch=batch, s=s)
    params = [q for q in model.parameters() if q.requires_grad]
    grads = torch.autograd.grad(obj, params)
    return torch.cat([g.reshape(-1) for g in grads])


@torch.no_grad()
def _evaluate(model: nn.Module, data: ModAddData) -> tuple[float, float, float, float]:
    out_tr, out_te = _outputs(model, data, "train"), _outputs(model, data, "test")
    return (float(data.loss_fn(out_tr, data.T_train).mean()), float((out_tr.argmax(1) == data.y_train).double().mean()),
            float(data.loss_fn(out_te, data.T_test).mean()), float((out_te.argmax(1) == data.y_test).double().mean()))


# ----------------------------------------------------------------------------- progress measure
def fourier_power(model: ModAddMLP) -> Tensor:
    """Per-neuron Fourier power of the input weights: ``P[j, k] = |Û_a[j, k]|² + |Û_b[j, k]|²`` for the
    frequencies ``k = 1, …, ⌊p/2⌋``, where ``Û_a[j, ·]`` is the discrete Fourier transform over ``a ∈ Z_p`` of
    neuron ``j``'s weights on the one-hot code of ``a`` (and ``Û_b`` the same for ``b``). Shape
    ``(N, ⌊p/2⌋)``; the constant ``k = 0`` is left out."""
    if not isinstance(model, ModAddMLP):
        raise TypeError(f"model must be a ModAddMLP; got a {type(model).__name__}")
    U = model.hidden.weight.detach().double()
    p = U.shape[1] // 2
    Fa, Fb = torch.fft.rfft(U[:, :p], dim=1), torch.fft.rfft(U[:, p:], dim=1)
    return (Fa.abs() ** 2 + Fb.abs() ** 2)[:, 1: p // 2 + 1]


def restrict_to_frequencies(model: ModAddMLP, freqs: Tensor) -> ModAddMLP:
    """A copy of ``model`` whose neuron ``j`` keeps, of its input weights on ``a`` and on ``b``, only the
    Fourier component at frequency ``freqs[j]`` (``1 ≤ freqs[j] ≤ ⌊p/2⌋``): ``U_a[j, a] ← (2/p) Re(Û_a[j, k]
    e^{2πi k a/p})``, likewise for ``b``; ``W`` is unchanged."""
    U = model.hidden.weight.detach().double()
    N, p = U.shape[0], U.shape[1] // 2
    freqs = torch.as_tensor(freqs, dtype=torch.long, device=U.device)
    if freqs.shape != (N,) or int(freqs.min()) < 1 or int(freqs.max()) > p // 2:
        raise ValueError(f"freqs must hold one frequency in 1..{p // 2} per neuron (shape ({N},)); "
                         f"got shape {tuple(freqs.shape)}")
    mask = torch.zeros(N, p // 2 + 1, dtype=U.dtype, device=U.device)
    mask[torch.arange(N), freqs] = 1.0
    parts = [torch.fft.irfft(torch.fft.rfft(U[:, h * p:(h + 1) * p], dim=1) * mask, n=p, dim=1) for h in (0, 1)]
    out = ModAddMLP.__new__(ModAddMLP)
    nn.Module.__init__(out)
    out.hidden = nn.Linear(2 * p, N, bias=False).to(model.hidden.weight)
    out.act, out.out, out.scale = model.act, model.out, model.scale
    with torch.no_grad():
        out.hidden.weight.copy_(torch.cat(parts, dim=1).to(model.hidden.weight))
    return out


@torch.no_grad()
def fourier_measures(model: ModAddMLP, data: ModAddData) -> dict[str, float]:
    """A progress measure for the circuit of modular addition (after Nanda et al. 2023, for this network).

    The known solution of modular addition by a network of this form (Gromov 2023) gives each hidden
    neuron input weights that are a single Fourier mode of ``a`` and of ``b``, at one frequency. Two
    numbers say how far the current weights are from that:

    * ``"fourier_concentration"``: for each neuron, the share of its (non-constant) Fourier power in its
      strongest frequency, averaged over neurons weighted by their power. For Gaussian weights each
      ``P[j, k]`` is Gamma(2)-distributed up to scale, so the concentration is about
      ``E max_k P[j, k] / (2K)`` with ``K = ⌊p/2⌋`` (0.17 at ``p = 31``, 0.067 at ``p = 97``); the
      single-mode solution gives 1.
    * ``"restricted_test_acc"``: the test accuracy of the network with each neuron cut down to its
      strongest frequency (:func:`restrict_to_frequencies`), the analogue of Nanda et al.'s *restricted
      loss*: it is high once the Fourier circuit alone solves the task, whatever the rest of the weights do.
    """
    P = fourier_power(model)
    total = P.sum(1)
    top, k = P.max(1)
    conc = float((top.sum() / total.sum()).item()) if float(total.sum()) > 0 else float("nan")
    restricted = restrict_to_frequencies(model, k + 1)
    acc = float((_outputs(restricted, data, "test").argmax(1) == data.y_test).double().mean())
    return {"fourier_concentration": conc, "restricted_test_acc": acc}


# ----------------------------------------------------------------------------- the run
def _train(cfg: ModAddConfig, *, progress: bool, callback) -> dict[str, Any]:
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but no CUDA device is available; use device='cpu'")
    data = make_data(cfg)
    model = make_model(cfg)
    params = [q for q in model.parameters() if q.requires_grad]
    n = data.n
    s = math.sqrt(noise_factor(cfg) / n)
    batch_gen = torch.Generator().manual_seed(child_seed(cfg.seed, 2))
    noise_gen = torch.Generator(device=dev).manual_seed(child_seed(cfg.seed, 3))
    evals = eval_steps(cfg.steps, cfg.evals_per_decade)
    eval_set = set(evals)
    rec: dict[str, list] = {k: [] for k in ("steps", "train_loss", "train_acc", "test_loss", "test_acc",
                                            "weight_norm", "seconds")}
    records: list[dict] = []
    fit = gen = None
    fit_s = gen_s = None
    batches = torch.empty((0, cfg.B), dtype=torch.long)
    pos = 0
    per_epoch = batches_per_epoch(n, cfg.B)
    chunk = per_epoch * max(1, 1024 // per_epoch) if cfg.scheme == "reshuffling" else 1024
    wd = float(cfg.weight_decay)
    B_text = f"B={cfg.B}" if cfg.optimizer != "gd" else "B=n (full batch)"
    loss0 = None
    from tqdm import tqdm

    bar = tqdm(total=cfg.steps, disable=not progress, desc=f"{cfg.optimizer} p={cfg.p}", unit="step", leave=False)
    done = 0
    t0 = time.perf_counter()
    try:
        for k in range(cfg.steps + 1):
            if k in eval_set:
                tr_loss, tr_acc, te_loss, te_acc = _evaluate(model, data)
                if loss0 is None:
                    loss0 = max(tr_loss, 1e-12)
                if not math.isfinite(tr_loss) or tr_loss > EXPLODE * loss0:
                    raise DivergenceError(f"grokking run diverged by step {k}: training loss {tr_loss:.3g} (initial "
                                          f"{loss0:.3g}) with eta={cfg.lr}, {B_text}, optimizer={cfg.optimizer!r}; lower eta")
                elapsed = time.perf_counter() - t0
                for key, v in zip(rec, (k, tr_loss, tr_acc, te_loss, te_acc, float(flat_params(model).norm()), elapsed)):
                    rec[key].append(v)
                if fit is None and tr_acc >= 1.0:
                    fit, fit_s = k, elapsed
                if gen is None and te_acc >= cfg.threshold:
                    gen, gen_s = k, elapsed
                if callback is not None:
                    out = callback(k, model, data)
                    if out is not None:
                        if not isinstance(out, dict):
                            raise TypeError(f"callback returned a {type(out).__name__}; return a dict or None")
                        records.append({"step": k, **out})
                bar.update(k - done)
                done = k
                bar.set_postfix(train_acc=f"{tr_acc:.3f}", test_acc=f"{te_acc:.3f}", refresh=False)
                if cfg.stop_at_generalisation and gen is not None:
                    break
            if k == cfg.steps:
                break
            batch = None
            if cfg.optimizer == "sgd":
                if pos == len(batches):  # whole epochs at a time for random reshuffling
                    batches = sample_batches(n, cfg.B, chunk, cfg.scheme, batch_gen).to(dev)
                    pos = 0
                batch = batches[pos]
                pos += 1
            obj, loss = _objective(cfg, model, data, noise_gen=noise_gen, batch=batch, s=s)
            value = float(loss.detach())
            if not math.isfinite(value) or value > EXPLODE * loss0:
                raise DivergenceError(f"grokking run diverged at step {k}: loss {value:.3g} (initial {loss0:.3g}) with "
                                      f"eta={learning_rate(cfg, k)}, {B_text}, optimizer={cfg.optimizer!r}; lower eta")
            grads = torch.autograd.grad(obj, params)
            eta = learning_rate(cfg, k)
            with torch.no_grad():
                for q, g in zip(params, grads):
                    if wd:
                        q.mul_(1.0 - eta * wd)
                    q.sub_(eta * g)
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    theta = flat_params(model).cpu().numpy()
    delay = math.log10(gen / fit) if fit and gen else None
    return {
        "config": dataclasses.asdict(cfg),
        "n_train": n, "n_test": data.X_test.shape[0], "d": int(theta.size),
        "steps": np.asarray(rec["steps"], dtype=np.int64),
        "train_loss": np.asarray(rec["train_loss"]), "train_acc": np.asarray(rec["train_acc"]),
        "test_loss": np.asarray(rec["test_loss"]), "test_acc": np.asarray(rec["test_acc"]),
        "weight_norm": np.asarray(rec["weight_norm"]), "seconds": np.asarray(rec["seconds"]),
        "time_to_fit": fit, "time_to_generalise": gen, "seconds_to_fit": fit_s, "seconds_to_generalise": gen_s,
        "delay_decades": delay, "last_step": int(rec["steps"][-1]), "wall_time_s": wall,
        "theta": theta, "records": records,
    }


def _value_fingerprint(name: str, value: Any) -> str:
    """What the cache key records of a value that a callback reads by name; an error if it cannot."""
    if isinstance(value, types.ModuleType):
        return f"module {value.__name__}"  # package modules are keyed by their source already
    if inspect.isfunction(value) or inspect.isclass(value):
        try:
            return "source " + inspect.getsource(value)
        except (OSError, TypeError):
            pass
    if inspect.isbuiltin(value) or inspect.isfunction(value) or inspect.isclass(value):
        return f"object {getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    if isinstance(value, (Tensor, np.ndarray)):
        if isinstance(value, Tensor) and value.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
            value = value.float()  # numpy has no such dtype; the float32 copy holds the same values
        arr = value.detach().cpu().numpy() if isinstance(value, Tensor) else value
        if arr.dtype != object:
            arr = np.ascontiguousarray(arr)
            return f"array {arr.dtype} {arr.shape} " + hashlib.sha256(arr.tobytes()).hexdigest()
    try:
        plain = sorted(value) if isinstance(value, (set, frozenset)) else value
        return "value " + canonical_json(plain)
    except (TypeError, ValueError):
        pass
    raise ValueError(
        f"the callback reads {name!r}, a {type(value).__name__}, whose value the cache key cannot record, so a "
        "cached result could silently belong to another value of it. Read only numbers, strings, tensors, "
        "arrays and (nested) containers of these, functions and modules; put other state in the config, "
        "or pass cache=None"
    )


def _callback_source(callback) -> str:
    """The callback's source text and the current value of every global or closure variable it names.

    A callback that reads a global (a threshold, a set of steps, a tensor) is keyed by that global's
    value as well as by its own text, so changing the global recomputes instead of returning a
    result computed with the old value. A function it calls is keyed by its source text (one level).
    Callable objects and bound methods carry state the key cannot see: they are refused.
    """
    if not inspect.isfunction(callback):
        raise ValueError(f"callback {callback!r} is a {type(callback).__name__}; with a cache, pass a plain function "
                         "(def or lambda), whose source and the values it reads key the cached records, or pass cache=None")
    try:
        text = inspect.getsource(callback)
    except (OSError, TypeError):
        raise ValueError(f"cannot read the source of callback {callback!r}, which the cache key needs (so that editing "
                         "the callback invalidates the cached records); define it in a file or a notebook cell, "
                         "or pass cache=None") from None
    values = _names_read(callback)
    lines = [text] + [f"{k} = {_value_fingerprint(k, values[k])}" for k in sorted(values)]
    for label, defaults in (("defaults", callback.__defaults__), ("kwdefaults", callback.__kwdefaults__)):
        if defaults:
            items = defaults.items() if isinstance(defaults, dict) else enumerate(defaults)
            lines += [f"{label}[{k}] = {_value_fingerprint(f'default {k}', v)}" for k, v in items]
    return "\n".join(lines)


def _names_read(func) -> dict[str, Any]:
    """The globals and closure variables ``func`` reads, from its bytecode (nested code objects too:
    comprehensions, generator expressions and inner lambdas), with their current values.

    Only ``LOAD_GLOBAL``/``LOAD_NAME`` and closure loads count: an attribute ``model.weight`` is not a
    read of a global called ``weight``.
    """
    import dis

    glob, names, free = func.__globals__, set(), set()
    stack = [func.__code__]
    while stack:
        code = stack.pop()
        for ins in dis.get_instructions(code):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
                names.add(ins.argval)
            elif ins.opname in ("LOAD_DEREF", "LOAD_CLASSDEREF"):
                free.add(ins.argval)
        stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    values = {k: glob[k] for k in names if k in glob}
    cells = dict(zip(func.__code__.co_freevars, func.__closure__ or ()))
    for k in free:
        if k in cells:
            try:
                values[k] = cells[k].cell_contents
            except ValueError:  # an empty cell: not yet assigned
                pass
    return values


def _code_modules() -> tuple:
    from . import _common
    from .. import _args, noise, problems, sampling, sde
    from . import superposition

    return (sys.modules[__name__], _common, _args, noise, problems, sampling, sde, superposition)


def run_grokking(cfg: ModAddConfig, *, cache: ResultCache | None = None, progress: bool = True,
                 callback: Callable[[int, nn.Module, ModAddData], dict | None] | None = None,
                 threads: int | None = 1) -> dict[str, Any]:
    """Train the network of ``cfg`` on modular addition and record the grokking curves.

    Returns a dict with ``config`` (the fields of ``cfg``), ``n_train``, ``n_test``, ``d`` (number of
    parameters); at the evaluation steps ``steps`` the arrays ``train_loss``, ``train_acc``, ``test_loss``,
    ``test_acc``, ``weight_norm`` (``‖θ‖₂``) and ``seconds`` (wall time since the start); ``time_to_fit`` and
    ``time_to_generalise`` (steps, ``None`` if never), ``seconds_to_fit``, ``seconds_to_generalise``,
    ``delay_decades`` (``log10`` of their ratio), ``last_step``, ``wall_time_s``, the final flat parameters
    ``theta`` (float32) and ``records``.

    ``callback(step, model, data)`` is called at every evaluation step (after the metrics are taken,
    with gradients enabled); a dict it returns is appended to ``records`` with ``"step"`` added, so that
    statistics measured along training (noise scale, tail index, sharpness: use ``data.problem(model)``)
    are cached with the run. It must not change the parameters.

    With a :class:`~sgdnoise.experiments.cache.ResultCache` the result is loaded when this configuration
    has been run by the same code (this module, the package modules it uses, the callback's source text
    and the current values of the globals and closure variables it reads) and stored otherwise; cached and fresh results look the same. ``progress`` shows a tqdm bar.

    Raises :class:`sgdnoise.sgd.DivergenceError` (naming ``η``, ``B`` and the step) when the loss becomes
    non-finite or exceeds ``1e6`` times its initial value.

    ``threads`` sets ``torch.set_num_threads`` for the duration of the run (restored afterwards; ``None``
    leaves it alone). The default of one thread is deliberate: the network is so small that a second
    intra-op thread does not help, and when the cores are shared with other work the threads wait on
    each other — measured on two busy cores, DEFAULT took 1 ms per GD step on one thread and 4–18 ms on
    two, and the test-sized runs here were 300 times slower on two.
    """
    if not isinstance(cfg, ModAddConfig):
        raise TypeError(f"cfg must be a ModAddConfig; got a {type(cfg).__name__}")
    check_threads(threads)
    check_cache(cache)

    def compute():
        with torch_threads(threads):
            return _train(cfg, progress=progress, callback=callback)

    if cache is None:
        return compute()
    extra = (_callback_source(callback),) if callback is not None else ()
    return cache.get_or_compute(EXPERIMENT, cfg, compute, modules=_code_modules(), extra=extra)
