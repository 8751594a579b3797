r"""Saddle-to-saddle dynamics of a deep linear network from small initialisation (notes §4.1), trained
by GD, SGD, or the Gaussian / α-stable SDE that models SGD.

**Teacher and data.** ``M = U diag(s) Vᵀ`` (``k × k``; ``U``, ``V`` Haar-random orthogonal from the data
seed; ``s`` = ``singular_values`` padded with zeros to ``k``). ``n`` inputs ``x ~ N(0, I_k)``, by default
*exactly* whitened (``XᵀX/n = I``), and targets ``y = M x + σ ε`` (``σ = label_noise``).

**Network.** ``f(x) = W_D ⋯ W_1 x``: an ``nn.Sequential`` of ``D = depth`` bias-free ``nn.Linear``
layers (``k → h → ⋯ → h → k``, ``h = width``), so :func:`~sgdnoise.gradients.per_sample_grads` takes
its fast path. Loss ``ℓ = ½‖f(x) - y‖²`` per sample, risk = the mean (the package convention).
The mode strengths are ``a_i = u_iᵀ (W_D ⋯ W_1) v_i`` (:func:`mode_strengths`).

**Initialisation** (balanced, ``W_{l+1}ᵀW_{l+1} = W_l W_lᵀ``, exactly so when ``h = k``), ``ε = init_scale``:
``"random"``: ``W_l = ε O_l`` with Haar-random orthogonal (or orthonormal-column/row) ``O_l``;
``"aligned"``: ``W_1 = ε Q_1 Vᵀ``, ``W_l = ε Q_l Q_{l-1}ᵀ``, ``W_D = ε U Q_{D-1}ᵀ``, so the network starts
decoupled with every ``a_i(0) = ε^D``. With ``shared_init`` all chains start from the same point (drawn
from ``seed``) and differ only in their noise; otherwise chain ``c`` draws its own.

**Gradient flow** (time ``t = η · step`` for GD/SGD with learning rate ``η``; with whitened inputs
``∇_W L = W - M`` for the end-to-end map). Saxe, McClelland & Ganguli (2014, *Exact solutions to the
nonlinear dynamics of learning in deep linear neural networks*) for depth 2: from a decoupled small
balanced start each mode is a sigmoid,

    a(t) = s e^{2st} / (e^{2st} - 1 + s/a_0),      half-way (a = s/2) at  t_½ = ln(s/a_0 - 1) / (2s).

For depth ``D ≥ 2`` the balanced, decoupled reduction (every layer carries the mode with the same
strength ``b``, ``a = b^D``, ``ḃ = b^{D-1}(s - b^D)``) gives the scalar ODE

    ȧ = D a^{2 - 2/D} (s - a),

which is the depth-2 law for ``D = 2``; ``t_½ = ∫_{a_0}^{s/2} da / (D a^{2-2/D}(s - a))`` (by quadrature).
Both are checked against GD at small ``η`` in the tests (aligned start: within 1% at ``η = 2e-3``).
From a *random* start, depth 2, the mode's linearised dynamics from the origin are exact: with
``c = W_1 v_i``, ``d = W_2ᵀ u_i`` the growing part ``(c + d)/2`` gives the effective start
``a_0 = (ε² + a_i(0))/2`` (:func:`effective_a0`; it uses the same formula, a heuristic, for ``D ≥ 3``).

**Optimisers** (``C = chains`` at once): ``"gd"`` (full batch), ``"sgd"``
(:func:`sgdnoise.sgd.run_chains`, batches of ``B`` drawn by ``scheme``), ``"sde_gaussian"`` and
``"sde_stable"`` (:func:`sgdnoise.sde.sgd_sde`, ``dθ = -∇L dt + ω sqrt(c η Σ(θ)) dL_t`` with ``dt =
η / sde_substeps`` and ``ω = noise_scale``; the α-stable driver has the matched scale of
:mod:`sgdnoise.sde`, i.e. for ``α < 2`` its Euler step noise scales as ``dt^{1/α}``, not ``dt^{1/2}``).
``stable_driver`` picks the α-stable driver: ``"independent"`` (one symmetric α-stable variable per sample,
mapped through the centred per-sample gradients) or ``"sub_gaussian"`` (the Gaussian driver times one radial
factor ``√A`` per chain and step: every projection of the noise is symmetric α-stable with the Gaussian
noise's shape). :func:`bulk_matched_scale` gives the ``ω`` at which the sub-Gaussian noise over one SGD step
has the Gaussian noise's median absolute value along every direction ("matched in bulk").

**Divergence.** ``"raise"`` stops the run; ``"drop"`` redraws the piece of the run in which chains
diverged and retires those that diverge again (a selection); ``"censor"`` (SDEs only) stops a chain at the
step where it leaves the finite range and keeps the others as they are, so that its escape times are
right-censored there (``censor_times``), the input of a survival analysis (SGD and the SDEs).

**Escape times.** The first time ``t`` at which ``a_i`` reaches ``s_i/2``, linearly interpolated
between recorded steps (``NaN`` if never): the end of mode ``i``'s plateau. :func:`compare_to_sgd`
measures how close a model's escape-time distribution is to SGD's (KS statistic, relative
Wasserstein-1 distance).

**Noise tails.** At ``tail_steps`` (for chain 0) the SGD noise ``g_B - g_n`` is projected on
``tail_directions`` random unit vectors for ``tail_batches`` batches, and
:func:`sgdnoise.tails.stable_alpha` estimates its stable index along each direction.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..gradients import per_sample_grads
from ..problems import Problem, half_squared_error
from ..sampling import SCHEMES, check_batch_size, sample_batches
from ..sgd import DivergenceError, check_bounded, check_learning_rate, flat_grad_fn, run_chains
from .cache import ResultCache
from ._common import check_cache, check_device, check_steps_and_seeds, set_canonical_types, check_threads, child_seed, is_int, is_real, torch_threads

__all__ = ["LARGE", "DLNConfig", "DEFAULT", "OPTIMIZERS", "INITS", "DLNData", "EXPERIMENT", "teacher", "make_data",
           "make_problem", "init_params", "layer_matrices", "end_to_end", "mode_strengths", "effective_a0",
           "saxe_mode_strength", "saxe_escape_time", "analytic_escape_times", "escape_times", "noise_tail_index",
           "run_dln", "compare_to_sgd", "summarize", "layer_geometry", "bulk_matched_scale", "STABLE_DRIVERS"]

OPTIMIZERS = ("gd", "sgd", "sde_gaussian", "sde_stable")
INITS = ("random", "aligned")
DIVERGENCE = ("raise", "drop", "censor")
STABLE_DRIVERS = ("independent", "sub_gaussian")
EXPERIMENT = "deep_linear"
DTYPE = torch.float64


@dataclass(frozen=True)
class DLNConfig:
    """Everything that defines one run of ``chains`` deep-linear-network chains (module docstring).

    Validated on construction; a bad value raises a ``ValueError`` naming it and what is valid.
    """

    k: int = 6                                   # input = output dimension
    singular_values: tuple = (4.0, 2.0, 1.0)     # teacher's nonzero singular values, > 0, at most k of them
    n: int = 64                                  # training samples
    whiten: bool = True                          # exactly whitened inputs (XᵀX/n = I); needs n >= k
    label_noise: float = 0.0                     # σ in y = M x + σ ε
    depth: int = 2                               # D >= 2 layers
    width: int | None = None                     # hidden width h >= k; None: k
    init: str = "random"                         # "random" or "aligned"
    init_scale: float = 1e-3                     # ε
    shared_init: bool = True                     # all chains start from the same point
    optimizer: str = "sgd"                       # one of OPTIMIZERS
    lr: float = 0.05                             # η
    B: int = 2                                   # batch size (of SGD, and whose noise the SDEs model)
    scheme: str = "with_replacement"             # minibatch sampling scheme
    alpha: float = 1.8                           # stable index of "sde_stable", in (0, 2]
    stable_driver: str = "independent"           # "sde_stable"'s driver: one of STABLE_DRIVERS
    noise_scale: float = 1.0                     # ω: the SDEs' noise is ω times the modelled one
    sde_substeps: int = 5                        # SDE time step dt = lr / sde_substeps
    steps: int = 300                             # steps of size η (SDE: steps · sde_substeps steps of dt)
    record_every: int = 1                        # record the mode strengths every this many steps
    chains: int = 32                             # seeds run at once
    seed: int = 0                                # initialisation and noise
    data_seed: int | None = None                 # teacher and data; None: 0
    tail_steps: tuple = (0, 30, 60, 120)         # steps at which the SGD noise's stable index is measured
    tail_batches: int = 2000                     # batches per tail-index estimate
    tail_directions: int = 4                     # random directions per tail-index estimate
    divergence: str = "raise"                    # "raise" a DivergenceError, "drop" or "censor" the diverging chains
    device: str = "cpu"                          # "cpu", "cuda" or "cuda:<index>"

    def __post_init__(self):
        if not is_int(self.k) or self.k < 1:
            raise ValueError(f"k={self.k!r} must be an int >= 1 (input and output dimension)")
        sv = self.singular_values
        if not isinstance(sv, (tuple, list)) or not sv or not all(is_real(s) and s > 0 for s in sv):
            raise ValueError(f"singular_values={sv!r} must be a non-empty tuple of finite numbers > 0")
        if len(sv) > self.k:
            raise ValueError(f"singular_values has {len(sv)} entries; a k={self.k} teacher has at most {self.k}")
        if not is_int(self.n) or self.n < 1:
            raise ValueError(f"n={self.n!r} must be an int >= 1 (number of training samples)")
        if not isinstance(self.whiten, bool):
            raise ValueError(f"whiten={self.whiten!r} must be a bool")
        if self.whiten and self.n < self.k:
            raise ValueError(f"whiten=True needs n >= k to make XᵀX/n = I; got n={self.n}, k={self.k}")
        if not is_real(self.label_noise) or self.label_noise < 0:
            raise ValueError(f"label_noise={self.label_noise!r} must be a finite number >= 0")
        if not is_int(self.depth) or self.depth < 2:
            raise ValueError(f"depth={self.depth!r} must be an int >= 2")
        if self.width is not None and (not is_int(self.width) or self.width < self.k):
            raise ValueError(f"width={self.width!r} must be None (= k) or an int >= k={self.k}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r}; valid initialisations are {INITS}")
        if not is_real(self.init_scale) or self.init_scale <= 0:
            raise ValueError(f"init_scale={self.init_scale!r} must be a finite number > 0")
        if not isinstance(self.shared_init, bool):
            raise ValueError(f"shared_init={self.shared_init!r} must be a bool")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}; valid optimizers are {OPTIMIZERS}")
        check_learning_rate(float(self.lr) if is_real(self.lr) else self.lr)
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme={self.scheme!r}; valid schemes are {SCHEMES}")
        if not is_int(self.B) or self.B < 1:
            raise ValueError(f"batch size B={self.B!r} must be an int >= 1")
        if self.scheme != "with_replacement" and self.B > self.n:
            raise ValueError(f"batch size B={self.B} exceeds n={self.n} for scheme={self.scheme!r}; valid: 1 <= B <= {self.n}")
        if not is_real(self.alpha) or not 0 < self.alpha <= 2:
            raise ValueError(f"alpha={self.alpha!r} must lie in (0, 2]")
        if self.stable_driver not in STABLE_DRIVERS:
            raise ValueError(f"stable_driver={self.stable_driver!r}; valid drivers are {STABLE_DRIVERS}")
        if not is_real(self.noise_scale) or not 0 < self.noise_scale < math.inf:
            raise ValueError(f"noise_scale={self.noise_scale!r} must be a finite number > 0")
        if self.noise_scale != 1 and not self.optimizer.startswith("sde"):
            raise ValueError(f"noise_scale={self.noise_scale} scales an SDE's noise; optimizer={self.optimizer!r} has "
                             "none to scale (use 'sde_gaussian' or 'sde_stable', or noise_scale=1)")
        for name in ("sde_substeps", "record_every", "chains", "tail_batches", "tail_directions"):
            v = getattr(self, name)
            if not is_int(v) or v < 1:
                raise ValueError(f"{name}={v!r} must be an int >= 1")
        if self.tail_batches < 4:
            raise ValueError(f"tail_batches={self.tail_batches} must be >= 4 (stable_alpha needs K >= 4)")
        check_steps_and_seeds(self.steps, self.seed, self.data_seed)
        ts = self.tail_steps
        if not isinstance(ts, (tuple, list)) or not all(is_int(s) and 0 <= s <= self.steps for s in ts):
            raise ValueError(f"tail_steps={ts!r} must be a tuple of ints in [0, steps={self.steps}] (may be empty)")
        if self.divergence not in DIVERGENCE:
            raise ValueError(f"divergence={self.divergence!r}; valid values are {DIVERGENCE}")
        if self.divergence == "censor" and self.optimizer == "gd":
            raise ValueError("divergence='censor' is for SGD and the SDEs; optimizer='gd' takes 'raise' or 'drop'")
        check_device(self.device)
        # canonical types, so that equal configurations make the same cache key
        object.__setattr__(self, "singular_values", tuple(float(s) for s in sv))
        object.__setattr__(self, "tail_steps", tuple(sorted({int(s) for s in ts})))
        set_canonical_types(self, ("label_noise", "init_scale", "lr", "alpha", "noise_scale"),
                            ("k", "n", "depth", "B", "sde_substeps", "steps", "record_every", "chains", "seed",
                             "tail_batches", "tail_directions"), optional_ints=("width", "data_seed"))

    @property
    def hidden(self) -> int:
        return self.k if self.width is None else self.width

    @property
    def modes(self) -> int:
        return len(self.singular_values)

    @property
    def d(self) -> int:
        h, k = self.hidden, self.k
        return 2 * k * h + (self.depth - 2) * h * h

    def replace(self, **changes) -> "DLNConfig":
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


#: The book's configuration (k = 6, s = (4, 2, 1), n = 64 whitened samples, depth 2, ε = 1e-3, shared random
#: start, η = 0.05, B = 2, 300 steps so t = 15, SDE dt = η/5, 32 chains). ``sde_stable`` can diverge here (a
#: large jump followed by the cubic drift), so use ``divergence="drop"`` and report ``diverged`` and ``redrawn_pieces``.
DEFAULT = DLNConfig()
#: The same experiment with eight times as many seeds (chains), for a GPU (``device="cuda"``) or a long CPU run.
LARGE = DEFAULT.replace(chains=256)


# ----------------------------------------------------------------------------- data and model
def _orthogonal(rows: int, cols: int, gen: torch.Generator) -> Tensor:
    """Haar-random matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    big, small = max(rows, cols), min(rows, cols)
    Q, R = torch.linalg.qr(torch.randn(big, small, generator=gen, dtype=DTYPE))
    Q = Q * torch.sign(torch.diagonal(R))
    return Q if rows >= cols else Q.T


def teacher(cfg: DLNConfig) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, s, V)`` of the teacher ``M = U diag(s) Vᵀ`` (``U``, ``V``: ``k × k`` orthogonal, ``s`` padded
    with zeros to ``k``), float64 on the CPU, from ``data_seed``."""
    gen = torch.Generator().manual_seed(child_seed(0 if cfg.data_seed is None else cfg.data_seed, 0))
    U, V = _orthogonal(cfg.k, cfg.k, gen), _orthogonal(cfg.k, cfg.k, gen)
    s = torch.zeros(cfg.k, dtype=DTYPE)
    s[: cfg.modes] = torch.tensor(cfg.singular_values, dtype=DTYPE)
    return U, s, V


@dataclass
class DLNData:
    """Teacher ``M = U diag(s) Vᵀ`` and the training set ``X (n, k)``, ``Y (n, k)`` on the run's device."""

    U: Tensor
    s: Tensor
    V: Tensor
    X: Tensor
    Y: Tensor

    @property
    def M(self) -> Tensor:
        return self.U @ torch.diag(self.s) @ self.V.T


def make_data(cfg: DLNConfig) -> DLNData:
    """Teacher and data of ``cfg`` (drawn on the CPU in float64, then moved to ``cfg.device``)."""
    U, s, V = teacher(cfg)
    gen = torch.Generator().manual_seed(child_seed(0 if cfg.data_seed is None else cfg.data_seed, 1))
    X = torch.randn(cfg.n, cfg.k, generator=gen, dtype=DTYPE)
    if cfg.whiten:
        evals, evecs = torch.linalg.eigh(X.T @ X / cfg.n)
        X = X @ (evecs @ torch.diag(evals.rsqrt()) @ evecs.T)
    M = U @ torch.diag(s) @ V.T
    Y = X @ M.T + cfg.label_noise * torch.randn(cfg.n, cfg.k, generator=gen, dtype=DTYPE)
    dev = torch.device(cfg.device)
    return DLNData(U=U.to(dev), s=s.to(dev), V=V.to(dev), X=X.to(dev), Y=Y.to(dev))


def make_problem(cfg: DLNConfig, data: DLNData | None = None) -> Problem:
    """The network (``nn.Sequential`` of ``depth`` bias-free ``nn.Linear``, float64, weights zero) and the
    training set as a :class:`~sgdnoise.problems.Problem` with loss ``½‖f(x) - y‖²``."""
    data = make_data(cfg) if data is None else data
    dims = [cfg.k] + [cfg.hidden] * (cfg.depth - 1) + [cfg.k]
    model = nn.Sequential(*[nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])]).to(DTYPE)
    with torch.no_grad():
        for lin in model:
            lin.weight.zero_()
    model = model.to(data.X.device)
    return Problem(name=f"deep linear network D={cfg.depth}, k={cfg.k}", X=data.X, y=data.Y, model=model,
                   loss_fn=half_squared_error, info={"U": data.U, "s": data.s, "V": data.V})


def _init_one(cfg: DLNConfig, gen: torch.Generator, U: Tensor, V: Tensor) -> Tensor:
    k, h, D, eps = cfg.k, cfg.hidden, cfg.depth, cfg.init_scale
    if cfg.init == "random":
        Ws = [_orthogonal(h, k, gen)] + [_orthogonal(h, h, gen) for _ in range(D - 2)] + [_orthogonal(k, h, gen)]
    else:
        Q = [_orthogonal(h, k, gen) for _ in range(D - 1)]
        Ws = [Q[0] @ V.T] + [Q[l] @ Q[l - 1].T for l in range(1, D - 1)] + [U @ Q[D - 2].T]
    return torch.cat([(eps * W).reshape(-1) for W in Ws])


def init_params(cfg: DLNConfig) -> Tensor:
    """Initial flat parameters ``(chains, d)`` (float64, on ``cfg.device``): balanced, scale ``init_scale``."""
    U, _, V = teacher(cfg)
    if cfg.shared_init:
        theta = _init_one(cfg, torch.Generator().manual_seed(child_seed(cfg.seed, 1)), U, V)
        theta = theta[None].repeat(cfg.chains, 1)
    else:
        theta = torch.stack([_init_one(cfg, torch.Generator().manual_seed(child_seed(cfg.seed, 100 + c)), U, V)
                             for c in range(cfg.chains)])
    return theta.to(cfg.device)


def layer_matrices(theta: Tensor, cfg: DLNConfig) -> list[Tensor]:
    """``[W_1, …, W_D]`` from flat parameters ``theta (..., d)`` (``model.parameters()`` order), each ``(..., out, in)``."""
    k, h = cfg.k, cfg.hidden
    shapes = [(h, k)] + [(h, h)] * (cfg.depth - 2) + [(k, h)]
    if theta.shape[-1] != cfg.d:
        raise ValueError(f"theta has {theta.shape[-1]} parameters in its last dimension; cfg needs d={cfg.d}")
    parts = theta.split([a * b for a, b in shapes], dim=-1)
    return [p.reshape(*theta.shape[:-1], a, b) for p, (a, b) in zip(parts, shapes)]


def layer_geometry(theta: Tensor, cfg: DLNConfig) -> dict[str, Tensor]:
    """Where on the set of factorisations ``theta (..., d)`` sits: ``layer_norms`` ``(..., D)`` (``‖W_l‖_F``),
    ``imbalance`` ``(..., D-1)`` (``‖W_{l+1}ᵀW_{l+1} - W_l W_lᵀ‖_F``; zero for a balanced network, conserved by
    gradient flow) and ``hessian_trace`` ``(...)``: the trace of the Hessian of the training loss, which for
    whitened inputs is exactly ``Σ_l ‖W_D⋯W_{l+1}‖_F² ‖W_{l-1}⋯W_1‖_F²`` at every point (the network is linear
    in each layer, so the residual term of the Hessian has a zero diagonal; empty products are ``I_k``)."""
    if not cfg.whiten:
        raise ValueError("layer_geometry's Hessian trace needs whitened inputs (cfg.whiten=True)")
    Ws = layer_matrices(theta, cfg)
    norms = torch.stack([W.flatten(-2).norm(dim=-1) for W in Ws], dim=-1)
    imb = torch.stack([(Ws[l + 1].transpose(-1, -2) @ Ws[l + 1] - Ws[l] @ Ws[l].transpose(-1, -2)).flatten(-2).norm(dim=-1)
                       for l in range(cfg.depth - 1)], dim=-1)
    eye = torch.eye(cfg.k, dtype=theta.dtype, device=theta.device).expand(*theta.shape[:-1], cfg.k, cfg.k)
    below, above = [eye], [eye]  # W_{l-1}⋯W_1 and W_D⋯W_{l+1}, built from both ends
    for W in Ws[:-1]:
        below.append(W @ below[-1])
    for W in reversed(Ws[1:]):
        above.append(above[-1] @ W)
    above = above[::-1]
    sq = lambda M: M.flatten(-2).pow(2).sum(-1)  # noqa: E731
    trace = sum(sq(above[l]) * sq(below[l]) for l in range(cfg.depth))
    return {"layer_norms": norms, "imbalance": imb, "hessian_trace": trace}


def bulk_matched_scale(alpha: float, lr: float) -> float:
    """``ω`` for ``stable_driver="sub_gaussian"``: over one SGD step (time ``lr``) the α-stable noise
    ``ω lr^{1/α} √A G`` has, along every direction, the median absolute value of the Gaussian SDE's noise
    ``√lr G`` (``ω = lr^{1/2 - 1/α} ω_α`` with :func:`~sgdnoise.experiments.superposition.stable_bulk_factor`'s
    ``ω_α``). The two noises then agree in bulk and differ in the tail. ``α = 2`` gives 1."""
    from ..sde import check_alpha
    from .superposition import stable_bulk_factor

    alpha, lr = float(check_alpha(alpha)), check_learning_rate(lr)
    return 1.0 if alpha == 2 else lr ** (0.5 - 1 / alpha) * stable_bulk_factor(alpha)


def end_to_end(theta: Tensor, cfg: DLNConfig) -> Tensor:
    """The end-to-end map ``W = W_D ⋯ W_1``, shape ``(..., k, k)``."""
    Ws = layer_matrices(theta, cfg)
    W = Ws[0]
    for L in Ws[1:]:
        W = L @ W
    return W


def mode_strengths(theta: Tensor, cfg: DLNConfig) -> Tensor:
    """``a_i = u_iᵀ (W_D ⋯ W_1) v_i`` for the teacher's ``modes`` singular pairs: shape ``(..., modes)``."""
    U, _, V = teacher(cfg)
    W = end_to_end(theta, cfg)
    U, V = U[:, : cfg.modes].to(W), V[:, : cfg.modes].to(W)
    return ((U.T @ W) * V.T).sum(-1)


# ----------------------------------------------------------------------------- gradient-flow theory
def saxe_mode_strength(t, s: float, a0: float, depth: int = 2) -> np.ndarray:
    """``a(t)`` of the balanced reduction ``ȧ = D a^{2-2/D}(s - a)``, ``a(0) = a0 > 0``: in closed form for
    ``D = 2`` (Saxe et al. 2014), by ``scipy.integrate.solve_ivp`` (in ``log a``) for ``D ≥ 3``."""
    t = np.asarray(t, dtype=np.float64)
    if not (a0 > 0 and s > 0):
        raise ValueError(f"need s > 0 and a0 > 0; got s={s}, a0={a0}")
    if depth == 2:
        e = np.exp(np.minimum(2 * s * t, 700.0))
        return s * e / (e - 1 + s / a0)
    from scipy.integrate import solve_ivp

    D = depth
    ts = np.unique(np.concatenate([[0.0], t.ravel()]))
    sol = solve_ivp(lambda _, u: D * np.exp(u * (1 - 2 / D)) * (s - np.exp(u)), (0.0, float(ts[-1])), [math.log(a0)],
                    t_eval=ts, rtol=1e-10, atol=1e-12, method="LSODA")
    return np.interp(t, sol.t, np.exp(sol.y[0]))


def saxe_escape_time(s: float, a0: float, depth: int = 2) -> float:
    """Gradient-flow time at which ``a`` reaches ``s/2`` from ``a0`` (``inf`` for ``a0 ≤ 0``, 0 if already there).

    ``ln(s/a0 - 1)/(2s)`` for ``D = 2`` (Saxe et al. 2014); ``∫ da / (D a^{2-2/D}(s-a))`` otherwise.
    """
    if a0 <= 0:
        return math.inf
    if a0 >= s / 2:
        return 0.0
    if depth == 2:
        return math.log(s / a0 - 1) / (2 * s)
    from scipy.integrate import quad

    D = depth
    val, _ = quad(lambda u: math.exp(u * (2 / D - 1)) / (D * (s - math.exp(u))), math.log(a0), math.log(s / 2),
                  limit=200, epsabs=0.0, epsrel=1e-10)
    return val


def effective_a0(theta0: Tensor, cfg: DLNConfig) -> np.ndarray:
    """Effective start ``a_0`` of each mode for the theory, shape ``(..., modes)``: ``a_i(0)`` for
    ``init="aligned"``; ``(ε^D + a_i(0))/2`` for ``"random"`` (exact linearisation for ``D = 2``, where it
    is ``‖(W_1 v_i + W_2ᵀ u_i)/2‖²``; a heuristic for ``D ≥ 3``)."""
    a = mode_strengths(theta0, cfg).detach().cpu().numpy()
    if cfg.init == "aligned":
        return a
    return (cfg.init_scale**cfg.depth + a) / 2


def analytic_escape_times(cfg: DLNConfig, a0=None) -> np.ndarray:
    """Gradient-flow escape times ``(…, modes)`` for starts ``a0`` (default: :func:`effective_a0` of
    :func:`init_params`, so ``(chains, modes)``)."""
    if a0 is None:
        a0 = effective_a0(init_params(cfg), cfg)
    a0 = np.asarray(a0, dtype=np.float64)
    s = np.broadcast_to(np.asarray(cfg.singular_values), a0.shape)
    return np.vectorize(lambda si, ai: saxe_escape_time(float(si), float(ai), cfg.depth))(s, a0).astype(np.float64)


def escape_times(times, strengths, singular_values, fraction: float = 0.5) -> np.ndarray:
    """First time each mode reaches ``fraction · s_i``: ``strengths`` ``(R, ..., modes)`` at ``times`` ``(R,)``;
    linear interpolation between recorded times, ``NaN`` where never reached. Returns ``(..., modes)``."""
    t = np.asarray(times, dtype=np.float64)
    a = strengths.detach().cpu().numpy() if isinstance(strengths, Tensor) else np.asarray(strengths, np.float64)
    target = fraction * np.asarray(singular_values, dtype=np.float64)
    if a.shape[0] != t.size or a.shape[-1] != target.size:
        raise ValueError(f"strengths have shape {a.shape}; need ({t.size}, ..., {target.size})")
    above = a >= target
    hit = above.any(axis=0)
    j = above.argmax(axis=0)
    jm = np.maximum(j - 1, 0)
    aj, ajm = np.take_along_axis(a, j[None], 0)[0], np.take_along_axis(a, jm[None], 0)[0]
    tj, tjm = t[j], t[jm]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(j > 0, (target - ajm) / (aj - ajm), 0.0)
    out = tjm + np.clip(frac, 0.0, 1.0) * (tj - tjm)
    return np.where(hit, out, np.nan)


# ----------------------------------------------------------------------------- noise tails
def noise_tail_index(problem: Problem, theta: Tensor, *, B: int, scheme: str, batches: int, directions: int,
                     generator: torch.Generator) -> np.ndarray:
    """Stable index (:func:`sgdnoise.tails.stable_alpha`) of the SGD noise ``g_B - g_n`` at ``theta`` along
    ``directions`` random unit vectors, from ``batches`` minibatches; ``NaN`` where the noise is zero."""
    from ..tails import stable_alpha

    problem.set_theta(theta.to(problem.X.device))
    G = per_sample_grads(problem.model, problem.loss_fn, problem.X, problem.y)
    Gc = (G - G.mean(0, keepdim=True)).cpu()
    dirs = torch.randn(Gc.shape[1], directions, generator=generator, dtype=Gc.dtype)
    P = Gc @ (dirs / dirs.norm(dim=0, keepdim=True))  # (n, m)
    idx = sample_batches(problem.n, B, batches, scheme, generator)
    xi = P[idx].mean(1).T  # (m, K): noise projections
    out = np.full(directions, np.nan)
    for j in range(directions):
        row = xi[j].numpy()
        if np.count_nonzero(row) == row.size and np.abs(row).max() > 0:
            out[j] = stable_alpha(row, center=None)  # noise: centred by construction
    return out


# ----------------------------------------------------------------------------- the run
def _gd(problem, theta, *, eta, steps, record, cfg):
    grad = flat_grad_fn(problem, in_dims=(0, None, None, None))
    w = torch.full((problem.n,), 1.0 / problem.n, dtype=theta.dtype, device=theta.device)
    out, rec = [], set(record)
    for k in range(steps + 1):
        if k in rec:
            out.append(theta.clone())
        if k == steps:
            break
        theta = theta - eta * grad(theta, problem.X, problem.y, w)
        check_bounded(theta, 1e8, f"GD chains diverged at step {k}: parameters reached {{size:.3g}} with "
                      f"eta={eta}, B=n={problem.n} (full batch); lower eta")
    return theta, out


def _train(cfg: DLNConfig, *, progress: bool) -> dict[str, Any]:
    from tqdm import tqdm

    from ..sde import sgd_sde

    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but no CUDA device is available; use device='cpu'")
    check_batch_size(cfg.B, cfg.n, cfg.scheme)
    data = make_data(cfg)
    problem = make_problem(cfg, data)
    theta = init_params(cfg)
    a0_eff = effective_a0(theta, cfg)
    record = sorted(set(range(0, cfg.steps + 1, cfg.record_every)) | {cfg.steps} | set(cfg.tail_steps))
    # SGD draws its minibatch indices on the CPU (sgdnoise.sampling); the SDEs draw their noise on the device
    gdev = dev if cfg.optimizer.startswith("sde") else "cpu"
    gen = torch.Generator(device=gdev).manual_seed(child_seed(cfg.seed, 2))
    B_text = "B=n (full batch)" if cfg.optimizer == "gd" else f"B={cfg.B}"
    seg = max(1, math.ceil(cfg.steps / 20))  # the run in pieces, for the progress bar

    def segment(th: Tensor, steps: int, rel: list[int], g: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        if cfg.optimizer == "gd":
            return _gd(problem, th, eta=cfg.lr, steps=steps, record=rel, cfg=cfg)
        if cfg.optimizer == "sgd":
            run = run_chains(problem, th, eta=cfg.lr, B=cfg.B, steps=steps, scheme=cfg.scheme, generator=g,
                             record_steps=rel + [steps], on_divergence="censor" if cfg.divergence == "censor" else "raise")
            if run.diverged is not None:
                censored_now.append(run.diverged * cfg.sde_substeps)  # in the SDEs' substeps, as below
            return run.thetas[-1], list(run.thetas[: len(rel)])
        m = cfg.sde_substeps
        driver = ("gaussian" if cfg.optimizer == "sde_gaussian" else
                  "sub_gaussian_stable" if cfg.stable_driver == "sub_gaussian" else "alpha_stable")
        paths = sgd_sde(problem, th, eta=cfg.lr, B=cfg.B, dt=cfg.lr / m, steps=steps * m, generator=g,
                        scheme=cfg.scheme, driver=driver, alpha=cfg.alpha, record_steps=[r * m for r in rel] + [steps * m],
                        noise_scale=cfg.noise_scale, on_divergence="censor" if cfg.divergence == "censor" else "raise")
        if paths.diverged is not None:
            censored_now.append(paths.diverged)
        return paths.thetas[-1], list(paths.thetas[: len(rel)])

    censored_now: list[np.ndarray] = []  # "censor": the substep at which each chain of the last piece diverged
    C = cfg.chains
    TH = torch.full((len(record), C, cfg.d), math.nan, dtype=DTYPE, device=theta.device)
    alive = torch.ones(C, dtype=torch.bool)
    diverged_at = np.full(C, -1, dtype=np.int64)
    censor_time = np.full(C, cfg.steps * cfg.lr)  # the end of the run, or the time a chain diverged ("censor")
    redrawn: list[int] = []
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, disable=not progress, desc=f"DLN {cfg.optimizer}", unit="step", leave=False)
    try:
        if 0 in record:
            TH[0] = theta
        start, piece = 0, 0
        while start < cfg.steps and bool(alive.any()):
            end = min(cfg.steps, start + seg)
            rel = [r - start for r in record if start < r <= end]
            rows = [record.index(r + start) for r in rel]
            idx = alive.nonzero()[:, 0].to(theta.device)
            try:
                new, out = segment(theta[idx], end - start, rel, gen)
                theta[idx] = new
                for row, th in zip(rows, out):
                    TH[row, idx] = th
                if censored_now:
                    sub = censored_now.pop()
                    for c, k in zip(idx.tolist(), sub.tolist()):
                        if k >= 0:  # stopped at substep k of this piece: at time (start + k/m) η
                            alive[c] = False
                            diverged_at[c] = start
                            censor_time[c] = (start + k / cfg.sde_substeps) * cfg.lr
            except DivergenceError as err:
                if cfg.divergence == "raise":
                    raise DivergenceError(f"deep linear network run diverged between steps {start} and {end} with "
                                          f"eta={cfg.lr}, {B_text}, optimizer={cfg.optimizer!r}: {err}") from err
                # "drop": redo this piece chain by chain (fresh, reproducible noise) and retire the chains that diverge
                redrawn.append(start)
                for c in idx.tolist():
                    g = torch.Generator(device=gdev).manual_seed(child_seed(cfg.seed, 10_000 + C * piece + c))
                    try:
                        new, out = segment(theta[c:c + 1], end - start, rel, g)
                    except DivergenceError:
                        alive[c] = False
                        diverged_at[c] = start
                        censor_time[c] = start * cfg.lr
                        theta[c] = math.nan
                        continue
                    theta[c] = new[0]
                    for row, th in zip(rows, out):
                        TH[row, c] = th[0]
            bar.update(end - start)
            start, piece = end, piece + 1
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    a = mode_strengths(TH, cfg).cpu().numpy()  # (R, C, modes)
    geom = {k: v.cpu().numpy() for k, v in layer_geometry(TH, cfg).items()} if cfg.whiten else {}
    times = np.asarray(record, dtype=np.float64) * cfg.lr
    esc = escape_times(times, a, cfg.singular_values)
    order = np.argsort(-np.asarray(cfg.singular_values), kind="stable")
    in_order = np.all(np.diff(esc[:, order], axis=1) > 0, axis=1)

    tail = np.full((len(cfg.tail_steps), cfg.tail_directions), np.nan)
    if cfg.tail_steps and not (cfg.scheme != "with_replacement" and cfg.B == cfg.n):
        tgen = torch.Generator().manual_seed(child_seed(cfg.seed, 3))
        saved = problem.theta()
        for i, st in enumerate(cfg.tail_steps):
            at = TH[record.index(st)]
            ok = torch.isfinite(at).all(dim=1).nonzero()[:, 0]
            if len(ok):  # the first chain still alive at that step (chain 0 unless it diverged)
                tail[i] = noise_tail_index(problem, at[int(ok[0])], B=cfg.B, scheme=cfg.scheme, batches=cfg.tail_batches,
                                           directions=cfg.tail_directions, generator=tgen)
        problem.set_theta(saved)
    return {
        "config": dataclasses.asdict(cfg),
        "d": cfg.d, "n": cfg.n, "singular_values": np.asarray(cfg.singular_values),
        "record_steps": np.asarray(record, dtype=np.int64), "times": times,
        "mode_strengths": a, "final_mode_strengths": a[-1],
        "escape_times": esc, "in_order": in_order, "censor_times": censor_time,
        **geom,
        "diverged": diverged_at >= 0, "diverged_at": diverged_at,
        "redrawn_pieces": np.asarray(redrawn, dtype=np.int64),
        "a0_effective": a0_eff, "analytic_escape_times": analytic_escape_times(cfg, a0_eff),
        "tail_steps": np.asarray(cfg.tail_steps, dtype=np.int64), "tail_alpha": tail,
        "wall_time_s": wall,
    }


def _code_modules() -> tuple:
    from . import _common
    from .. import _args, gradients, noise, problems, sampling, sde, sgd, tails

    return (sys.modules[__name__], _common, _args, gradients, noise, problems, sampling, sde, sgd, tails)


def run_dln(cfg: DLNConfig, *, cache: ResultCache | None = None, progress: bool = True,
            threads: int | None = 1) -> dict[str, Any]:
    """Run ``cfg.chains`` chains of ``cfg.optimizer`` on the deep linear network and time its plateaus.

    Returns a dict with ``config`` (the fields of ``cfg``), ``d``, ``n``, ``singular_values``;
    ``record_steps`` ``(R,)`` and ``times = η · record_steps``; ``mode_strengths`` ``(R, chains, modes)``
    and ``final_mode_strengths`` ``(chains, modes)``; ``escape_times`` ``(chains, modes)`` (time at which
    ``a_i`` first reaches ``s_i/2``, ``NaN`` if never) and ``in_order`` ``(chains,)`` (escapes in the order
    of decreasing ``s``); ``a0_effective`` and ``analytic_escape_times`` ``(chains, modes)`` (the
    gradient-flow prediction from each chain's start); ``tail_steps`` and ``tail_alpha``
    ``(len(tail_steps), tail_directions)``: the stable index of the SGD noise (``B``, ``scheme``) at
    chain 0's iterate (the first surviving chain's), whatever the optimiser; ``diverged`` ``(chains,)`` and
    ``diverged_at`` (start of the piece of the run in which the chain diverged, ``-1`` if never) and
    ``redrawn_pieces`` (start steps of the pieces redone under ``divergence="drop"``); ``censor_times``
    ``(chains,)``: the time at which a chain diverged (``"censor"``: the exact step; ``"drop"``: the start of
    its piece), else the end of the run; ``layer_norms`` ``(R, chains, D)``, ``imbalance`` ``(R, chains, D-1)``
    and ``hessian_trace`` ``(R, chains)`` (:func:`layer_geometry`; absent without whitening);
    ``wall_time_s`` (the training, not the tail estimate).

    ``cfg.divergence = "drop"`` keeps going when chains diverge (the α-stable SDE's large jumps can throw
    a chain where the cubic drift and the state-dependent noise blow it up): the piece of the run (one
    twentieth of it) in which it happened is redone chain by chain with fresh noise, the chains that
    diverge again are retired, their later records set to ``NaN`` (escape times ``NaN`` unless reached
    before). Dropping and redrawing are a selection (against large jumps): report ``diverged`` and
    ``redrawn_pieces`` with the escape times.

    With a :class:`~sgdnoise.experiments.cache.ResultCache` the result is loaded when this configuration
    has been run by the same code and stored otherwise. ``progress`` shows a tqdm bar; ``threads`` sets
    ``torch.set_num_threads`` during the run (restored afterwards; ``None`` leaves it alone).

    With ``divergence="raise"`` (the default) raises :class:`sgdnoise.sgd.DivergenceError` naming ``η``,
    ``B`` and the steps when a chain's parameters become non-finite or exceed ``1e8``.
    """
    if not isinstance(cfg, DLNConfig):
        raise TypeError(f"cfg must be a DLNConfig; got a {type(cfg).__name__}")
    check_threads(threads)
    check_cache(cache)

    def compute():
        with torch_threads(threads):
            return _train(cfg, progress=progress)

    if cache is None:
        return compute()
    return cache.get_or_compute(EXPERIMENT, cfg, compute, modules=_code_modules())


# ----------------------------------------------------------------------------- comparison
def summarize(times) -> dict[str, np.ndarray]:
    """Per mode: ``mean``, ``se`` (standard error), ``sd`` and ``count`` of the finite escape times ``(chains, modes)``."""
    t = np.asarray(times, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    out = {"mean": [], "se": [], "sd": [], "count": []}
    for j in range(t.shape[1]):
        x = t[np.isfinite(t[:, j]), j]
        sd = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
        out["mean"].append(float(x.mean()) if x.size else math.nan)
        out["sd"].append(sd)
        out["se"].append(sd / math.sqrt(x.size) if x.size > 1 else math.nan)
        out["count"].append(int(x.size))
    return {k: np.asarray(v) for k, v in out.items()}


def compare_to_sgd(sgd_times, model_times) -> dict[str, np.ndarray]:
    """Distance between escape-time distributions, per mode (columns of ``(chains, modes)`` arrays; 1-D
    arrays are one mode). Returns ``ks`` (two-sample Kolmogorov–Smirnov statistic), ``ks_pvalue``,
    ``w1`` (Wasserstein-1 distance) and ``w1_rel`` (``w1 / |SGD's mean|``); ``NaN`` entries (never
    escaped) are dropped, and a mode with no finite times on either side gives ``NaN``."""
    from scipy import stats

    a, b = np.asarray(sgd_times, dtype=np.float64), np.asarray(model_times, dtype=np.float64)
    a, b = (a[:, None] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"escape times have shapes {a.shape} and {b.shape}; need (chains, modes) with equal modes")
    out = {"ks": [], "ks_pvalue": [], "w1": [], "w1_rel": []}
    for j in range(a.shape[1]):
        x, y = a[np.isfinite(a[:, j]), j], b[np.isfinite(b[:, j]), j]
        if x.size == 0 or y.size == 0:
            for key in out:
                out[key].append(math.nan)
            continue
        ks = stats.ks_2samp(x, y)
        w1 = float(stats.wasserstein_distance(x, y))
        out["ks"].append(float(ks.statistic))
        out["ks_pvalue"].append(float(ks.pvalue))
        out["w1"].append(w1)
        out["w1_rel"].append(w1 / abs(float(x.mean())) if x.mean() != 0 else math.nan)
    return {k: np.asarray(v) for k, v in out.items()}
