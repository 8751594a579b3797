"""``audit``: the book's measurements applied to a user's model, as verdicts with evidence."""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import Tensor, nn

from .. import _args
from .._args import ArgumentTypeError, is_one_of, show
from ..curvature import hessian_top_eigs
from ..diagnostics import commutator_in_top_subspace, trace_h_sigma
from ..gradients import _trainable, check_data, flat_params
from ..problems import Problem
from ..sampling import check_generator, check_scheme
from . import _routes, _stats
from ._stats import Estimate
from .report import CHAPTERS, AuditReport, Verdict

#: The per-sample gradient matrix may take at most this many bytes (m · d · 8 with the float64 copies).
DEFAULT_MEMORY_BYTES = 2 * 2**30

# Rules that turn numbers into statuses (documented in ``audit``'s docstring and shown in the report).
SMALL_STEP = 0.2  # η_eff λ_max below this: SGD's stationary spread along the sharpest direction within 11% of the SDE's
WHITE_TOLERANCE = 0.1  # reshuffling: summed noise within 10% of white noise's variance over the relaxation time
SMALL_FRACTION = 0.1  # B/N below this: the Σ/B covariance overstates without-replacement noise by at most 11%
KURTOSIS_DOUBT = 1.0  # batch-noise excess kurtosis above this: visibly non-Gaussian bulk even without heavy tails
COMMUTE_HOLDS = 0.05  # relative commutator below this: Σ and H commute to within 5% on the top noise subspace


def _collect(data, generator, max_samples):
    """``(X, y, N, idx)``: the audited rows of a ``(X, y)`` pair or of a DataLoader's dataset."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(v, Tensor) for v in data):
        X, y = data
        N = check_data(X, y)
        idx = torch.arange(N) if N <= max_samples else torch.randperm(N, generator=generator)[:max_samples].sort().values
        return X[idx.to(X.device)], y[idx.to(y.device)], N, idx
    dataset = getattr(data, "dataset", None)
    if isinstance(data, torch.utils.data.DataLoader) and dataset is not None:
        try:
            N = len(dataset)
        except TypeError:
            raise ArgumentTypeError("the DataLoader's dataset has no len(); pass (X, y) tensors instead") from None
        idx = torch.arange(N) if N <= max_samples else torch.randperm(N, generator=generator)[:max_samples].sort().values
        batch = data.collate_fn([dataset[int(i)] for i in idx])
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ArgumentTypeError("the DataLoader must yield (inputs, targets) pairs; pass (X, y) tensors instead")
        return batch[0], batch[1], N, idx
    raise ArgumentTypeError(f"data={show(data)} must be a pair of tensors (X, y) with the samples along the first "
                            "axis, or a torch DataLoader over a map-style dataset of (input, target) pairs")


@contextlib.contextmanager
def _second_order():
    """Hessian-vector products differentiate a backward pass: run scaled-dot-product attention on its math
    kernel, whose backward is itself differentiable (the fused CPU kernels' is not: GPT-2 from ``transformers``
    fails there), and turn any other missing second derivative into an error that says what to do."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    except RuntimeError as err:
        if "derivative for" in str(err) and "not implemented" in str(err):
            raise RuntimeError(f"the sharpness and the alignment need second derivatives (Hessian-vector products), "
                               f"and an operation of the model has none ({err}); use a twice-differentiable "
                               "implementation of that operation (for attention, the math kernel, e.g. "
                               "attn_implementation='eager' in transformers)") from err
        raise


def audit(model: nn.Module, loss_fn, data, *, lr: float, batch_size: int, scheme: str = "with_replacement",
          momentum: float = 0.0, max_samples: int = 512, top_k: int = 10, directions: int = 5,
          noise_draws: int = 4000, null_reps: int = 400, level: float = 0.05, spectrum_folds: int = 10,
          sharpness_folds: int = 5, alignment: bool = True, route: str = "auto",
          memory_bytes: int = DEFAULT_MEMORY_BYTES, sketch_rank: int = 20, sketch_columns: int = 256,
          generator: torch.Generator | None = None, progress: bool = False) -> AuditReport:
    """Audit the SDE picture of SGD for ``model`` at learning rate ``lr`` and batch size ``batch_size``.

    Parameters
    ----------
    model : torch.nn.Module
        At the parameters to audit, in the mode it trains in, provided per-sample gradients are defined
        there (no batch norm in training mode: call ``model.eval()``; the error names the layers).
    loss_fn : callable
        ``loss_fn(output, target)`` returning one loss per sample (``reduction="none"``); a reduced loss is
        refused.
    data : (X, y) or torch.utils.data.DataLoader
        The training set (of ``N`` samples). At most ``max_samples`` of them, drawn without replacement, are
        audited; the estimates then carry the finite-population correction ``1 - m/N`` and are exact when
        ``m = N``.
    lr, batch_size, scheme, momentum
        The user's SGD: step size ``η > 0``, batch size ``1 <= B``, the sampling scheme (one of
        ``sgdnoise.SCHEMES``) and heavy-ball momentum ``0 <= β < 1``.
    top_k, directions
        Eigenpairs of ``Σ`` to report; the Gaussianity test runs along the top ``directions`` eigenvectors of
        ``Σ`` and along as many random unit directions, and on the noise vector's norm.
    noise_draws, null_reps, level
        Batch-noise draws per direction, Gaussian null samples, and the family-wise level of the tail test.
    spectrum_folds, sharpness_folds
        Folds of the delete-a-fold jackknife for the spectral quantities and for ``λ_max`` (``sharpness_folds=0``:
        no interval for ``λ_max``).
    alignment
        Also measure ``tr(HΣ)`` against its isotropic value and the commutator ``[H, Σ]`` on the top noise
        subspace (Hessian-vector products; about ``64 + 20 + 6·5`` of them).
    route : {"auto", "gradients", "gram", "sketch"}
        ``"gradients"`` forms the ``m × d`` per-sample gradients (any model); ``"gram"`` never does (models whose
        trainable parameters all sit in ``nn.Linear`` layers: memory ``m²`` per layer plus the layers' inputs and
        output gradients, never ``m × d``; the same numbers; eigenvectors only if ``d × k`` fits in
        ``memory_bytes``); ``"sketch"`` never does either, for any model whose forward pass has forward-mode
        derivatives (layer norm, embeddings, convolutions, attention): the top ``sketch_rank`` eigenpairs of the
        centred Gram matrix by Lanczos on its operator (exact), the rest of the spectrum by a random projection
        of ``sketch_columns`` Gaussian directions (:mod:`sgdnoise.sketch`; the effective rank and the power-law
        exponent read it and get no interval), while ``tr Σ``, ``‖g‖²`` and the noise scales (also per layer)
        stay exact, from per-sample gradients formed 8 at a time; ``numbers["sketch"]`` reports the sketch.
        ``"auto"`` takes the first when ``G`` fits in ``memory_bytes``, else the second where it applies, else
        the third. Off the first route the alignment rows form the per-sample gradients 8 samples at a time.
    memory_bytes
        Refuse (with the largest ``max_samples`` that fits) rather than allocate more for ``G``.
    sketch_rank, sketch_columns
        The sketch route's Lanczos rank ``q`` and projection columns ``k`` (the sketch's error on the tail falls
        like ``√(λ_{q+1} t / k)``, ``t`` the trace beyond the top ``q``).

    Returns
    -------
    AuditReport
        ``report.verdicts``: one line per assumption of the SDE picture (the notes' §2.3), each ``"holds"``,
        ``"doubtful"``, ``"fails"`` or ``"not measured"`` by the rule stated in its row. ``report.numbers``
        (every :class:`Estimate` has ``value``, ``se``, ``low``, ``high``): ``trace_sigma`` (``tr Σ``),
        ``grad_norm_sq`` (``‖g_N‖²``), ``noise_scale`` (``B_simple = tr Σ/‖g_N‖²``),
        ``noise_scale_per_layer``, ``batch_over_noise_scale`` (``B/B_simple``), ``noise_to_signal``
        (``tr Σ/(B‖g_N‖²)``, the batch noise's squared size over the gradient's), ``sigma_top_eigenvalues``,
        ``effective_rank``, ``power_law_exponent``, ``numerical_rank``, ``gaussianity``,
        ``per_sample_tails``, ``sharpness`` (``λ_max`` of the Hessian of the audited samples' mean loss),
        ``lag1_correlation``, and with ``alignment``: ``trace_h_sigma_ratio`` and ``commutator``.

    The rules: **Gaussian noise** fails when any tested direction or the norm reads heavier-tailed than
    Gaussian (Holm, family-wise ``level``; the false "heavy-tailed" rate on Gaussian noise is ``level``; the
    power of one direction's test at the default 4000 draws and level 5%, measured in the tests and on the
    audit page: 1.0 on α-stable noise with α = 1.5, about one half with α = 1.8 (0.45 and 0.57 in two runs of
    100 samples), so an index near 1.8 is often missed),
    is doubtful when none does but the batch noise's excess kurtosis exceeds 1 along some direction.
    **Finite variance**: doubtful when Hill's index of the per-sample projections is significantly below its
    law on Student-t(2) samples (index 2) along some direction (Holm, family-wise ``level``). **Small learning rate**: holds when the upper 95% bound of
    ``η_eff λ_max`` is below 0.2 (``η_eff = η/(1-β)``; the stationary spread of SGD along the sharpest
    direction then exceeds the SDE's by under 11%, the factor ``2/(2 - η λ)``), fails when its lower bound
    reaches the stability limit ``2(1+β)``, doubtful between. **No auto-correlation**: exact for
    independent batches; with reshuffling, doubtful when the noise summed over the sharpest direction's
    relaxation time ``1/(η λ_max)`` steps has a variance more than 10% below white noise's; doubtful with
    momentum. **B ≪ N**: holds with replacement (the covariance is ``Σ/B`` at any ``B/N``) or when
    ``B/N <= 0.1``. **Σ positive definite**: fails when ``d > N - 1``. **Detailed balance (frozen noise)**:
    holds (on the top noise subspace) when the relative commutator is below 0.05, else doubtful (a point value,
    no test).
    """
    from torch.utils.data import DataLoader  # noqa: F401  (imported for isinstance in _collect)

    if not isinstance(model, nn.Module):
        raise ArgumentTypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    lr = _args.real("lr", lr, gt=0, valid="a positive learning rate")
    momentum = _args.real("momentum", momentum, ge=0, lt=1, valid="a number in [0, 1)")
    B = _args.integer("batch_size", batch_size, minimum=1)
    check_scheme(scheme)
    max_samples = _args.integer("max_samples", max_samples, minimum=20)
    top_k = _args.integer("top_k", top_k, minimum=1)
    directions = _args.integer("directions", directions, minimum=1)
    noise_draws = _args.integer("noise_draws", noise_draws, minimum=100)
    null_reps = _args.integer("null_reps", null_reps, minimum=20)
    level = _args.real("level", level, gt=0, lt=1, valid="a number in (0, 1)")
    _stats.check_resolution(null_reps, 2 * directions + 1, level)  # the Gaussianity family, at its largest
    spectrum_folds = _args.integer("spectrum_folds", spectrum_folds, minimum=2)
    sharpness_folds = _args.integer("sharpness_folds", sharpness_folds, minimum=0)
    if sharpness_folds == 1:
        raise ValueError("sharpness_folds=1; need 0 (no interval) or an int >= 2")
    alignment = _args.flag("alignment", alignment)
    gen = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)

    X, y, N, idx = _collect(data, gen, max_samples)
    m = X.shape[0]
    if scheme != "with_replacement" and B > N:
        raise ValueError(f"batch_size={B} exceeds the data set's N={N} samples for sampling "
                         f"{scheme.replace('_', ' ')}; need batch_size <= {N}")
    if m < 20:
        raise ValueError(f"the data set has N={N} samples; the audit needs at least 20")
    d = sum(p.numel() for _, p in _trainable(model))
    if not is_one_of(route, ("auto", "gradients", "gram", "sketch")):
        raise ValueError(f"route={show(route)}; valid routes are 'auto', 'gradients', 'gram' and 'sketch'")
    sketch_rank = _args.integer("sketch_rank", sketch_rank, minimum=1)
    sketch_columns = _args.integer("sketch_columns", sketch_columns, minimum=2)
    need = 3 * m * d * 8  # G in float64, its centred copy, and one temporary of the same size
    if route == "auto":
        route = "gradients" if need <= memory_bytes else ("gram" if _routes.gram_route_possible(model) else "sketch")
    if route == "sketch":
        # m² for K̂_c, K̂, Kc and three temporaries; θ-sized tangents (8 vmap-ed, 16 drawn) and row chunks (8)
        sketch_need = 6 * m * m * 8 + 34 * d * 8
        if sketch_need > memory_bytes:
            raise MemoryError(f"the sketch route for {m} samples and d={d:,} needs about {sketch_need / 2**20:.1f} MiB "
                              f"besides the model's activations (memory_bytes={memory_bytes:,}); raise memory_bytes")
    if route == "gram":
        linears = [mod for mod in model.modules() if isinstance(mod, nn.Linear)]
        biggest = max((p.numel() for _, p in _trainable(model)), default=0)
        # m² per layer and for K, Kc and two temporaries; A and Δ in their dtype and in float64; the random blocks
        gram_need = (m * m * 8 * (len(linears) + 4)
                     + 3 * m * 8 * sum(mod.in_features + mod.out_features for mod in linears)
                     + directions * biggest * 8)
        if gram_need > memory_bytes:
            raise MemoryError(f"the Gram route for {m} samples needs about {gram_need / 2**20:.1f} MiB "
                              f"(memory_bytes={memory_bytes:,}); pass a smaller max_samples or raise memory_bytes")
    if route == "gradients" and need > memory_bytes:
        fit = max(int(memory_bytes // (3 * 8 * d)), 0)
        raise MemoryError(f"the per-sample gradients of {m} samples × {d:,} parameters need about {need / 2**30:.2f} GiB "
                          f"(memory_bytes={memory_bytes:,}); pass max_samples={fit} or fewer, or raise memory_bytes")

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=6, desc="sgdnoise.audit")

    def step(what):
        if bar is not None:
            bar.set_postfix_str(what)
            bar.update(1)

    # ---------------------------------------------------------------- per-sample gradients
    problem = Problem("audited samples", X, y, model, loss_fn)  # checks: finite data, one loss per sample
    with _second_order():  # the math attention kernel also has vmap batching rules (the fused one has none)
        if route == "gradients":
            backend = _routes.GradientRoute(model, loss_fn, X, y)
        elif route == "gram":
            backend = _routes.GramRoute(model, loss_fn, X, y)
        else:
            backend = _routes.SketchRoute(model, loss_fn, X, y, min(sketch_rank, m - 2), sketch_columns, gen)
    step("per-sample gradients" if route == "gradients" else "Gram matrix")
    numbers: dict = {}
    layer_K = backend.layer_grams()
    if route == "sketch":  # exact norms (formed a few samples at a time); the Gram matrix is sketched
        K = backend.gram()
        numbers.update(_stats.noise_scale_stats(*backend.total, N))
        numbers["noise_scale_per_layer"] = {name: _stats.noise_scale_stats(*v, N)["noise_scale"]
                                            for name, v in backend.norms.items()}
        numbers["sketch"] = _stats.sketch_summary(backend.deflated, backend.total)
    else:
        K = sum(layer_K.values())
        # ‖g_i‖² = K_ii, g_i·ḡ = (K 1/m)_i, ‖ḡ‖² = 1ᵀK1/m²
        numbers.update(_stats.noise_scale_stats(torch.diagonal(K).clone(), K.mean(1), float(K.mean()), N))
        numbers["noise_scale_per_layer"] = {
            name: _stats.noise_scale_stats(torch.diagonal(Kl).clone(), Kl.mean(1), float(Kl.mean()), N)["noise_scale"]
            for name, Kl in layer_K.items()}
    bs = numbers["noise_scale"]
    inv = lambda v: B / v if v > 0 else math.inf  # noqa: E731
    numbers["batch_over_noise_scale"] = Estimate(inv(bs.value), None if bs.se is None else (B * bs.se / bs.value**2 if bs.value > 0 else math.inf),
                                                 inv(bs.high) if bs.high is not None else None,
                                                 inv(bs.low) if bs.low is not None else None, "B / noise_scale")
    numbers["noise_to_signal"] = Estimate(bs.value / B, None if bs.se is None else bs.se / B,
                                          None if bs.low is None else bs.low / B,
                                          None if bs.high is None else bs.high / B, "noise_scale / B")

    # ---------------------------------------------------------------- the spectrum of Σ
    row = K.mean(1, keepdim=True)
    Kc = K - row - row.T + row.mean()

    def kc_of(rows):
        Kr = K[rows][:, rows]
        r = Kr.mean(1, keepdim=True)
        return Kr - r - r.T + r.mean()

    fit = max(3, min(m // 4, 100, d))
    sketched = route == "sketch"
    full, U_top = backend.spectrum() if sketched else (None, None)
    spec = _stats.spectrum_stats(kc_of, m, N, min(top_k, m - 2, d), fit, spectrum_folds, gen, spectrum=full,
                                 exact_top=backend.deflated.eigenvalues.numel() if sketched else None)
    k = len(spec["eigenvalues"])
    fit = min(fit, max(spec["numerical_rank"], 3))
    numbers["sigma_top_eigenvalues"] = spec["eigenvalues"]
    numbers["effective_rank"] = spec["effective_rank"]
    numbers["power_law_exponent"] = spec["power_law_exponent"]
    numbers["numerical_rank"] = spec["numerical_rank"]
    if sketched:  # the exact top eigenpairs first, then the sketched rest (eigenvalues only)
        lam_all, U = full.clamp_min(0.0), U_top
    else:
        lam_all, U = torch.linalg.eigh(Kc)
        lam_all, U = lam_all.flip(0).clamp_min(0.0), U.flip(1)
    kk = min(k, int((lam_all > lam_all[0] * 1e-10).sum()))
    C = (U[:, :kk] - U[:, :kk].mean(0)) / torch.sqrt(lam_all[:kk])
    # unit eigenvectors of Σ, (d, kk): v_j = G̃ᵀ u_j / √λ̃_j = Gᵀ c_j (Σ_i c_ij = 0); on the Gram route only if they fit
    V = backend.combine(C) if route == "gradients" or d * kk * 8 <= memory_bytes else None
    step("spectrum of Σ")

    # ---------------------------------------------------------------- Gaussianity at B
    r_dirs = min(directions, kk)
    # projections of the centred per-sample gradients: on Σ's eigenvectors G̃ v_j = √λ̃_j u_j; on random unit
    # directions drawn block by block, G̃ r = (G r) - mean
    if route == "sketch":
        with _second_order():
            proj = backend.random_projections(directions, gen)
    else:
        proj, sq = 0.0, 0.0
        for name, _, block in _routes.random_blocks(model, directions, gen):
            proj = proj + backend.project(name, block)
            sq = sq + block.reshape(directions, -1).pow(2).sum(1)
        proj = proj / sq.sqrt()
    P = torch.cat([U[:, :r_dirs] * torch.sqrt(lam_all[:r_dirs]), proj - proj.mean(0)], 1)
    labels = [f"top-{j + 1} eigenvector of Σ" for j in range(r_dirs)] + [f"random direction {j + 1}" for j in range(directions)]
    numbers["gaussianity"] = _stats.gaussianity(P, labels, lam_all / m, Kc, B, noise_draws, null_reps, level, gen)
    numbers["per_sample_tails"] = _stats.per_sample_tails(P, labels, null_reps, level, gen)
    step("Gaussianity")

    # ---------------------------------------------------------------- curvature
    theta = flat_params(model).detach()
    # Lanczos keeps its basis, one float64 copy of θ per iteration: at most 100, fewer if they would not fit
    lanczos_iters = int(min(100, max(10, memory_bytes // (8 * d))))

    def lam_max(rows):
        pr = problem if rows is None else Problem("audit fold", X[rows], y[rows], model, loss_fn)
        with warnings.catch_warnings(), _second_order():
            warnings.simplefilter("ignore", RuntimeWarning)
            lam, _ = hessian_top_eigs(pr, theta, k=1, which="LA", iters=lanczos_iters, tol=1e-4,
                                      generator=torch.Generator().manual_seed(0))
        return float(lam[0])

    lam1 = lam_max(None)
    fpc = 1.0 - m / N
    if sharpness_folds and fpc > 0:
        folds = torch.randperm(m, generator=gen).chunk(sharpness_folds)
        loo = torch.tensor([lam_max(torch.cat([f for j, f in enumerate(folds) if j != i]).sort().values)
                            for i in range(len(folds))], dtype=torch.float64)
        F = loo.numel()
        se = math.sqrt((F - 1) / F * float(((loo - loo.mean()) ** 2).sum()) * fpc)
        numbers["sharpness"] = Estimate.normal(lam1, se, f"Lanczos; delete-a-fold jackknife ({F} folds, t interval) "
                                                         "with finite-population correction", df=F - 1)
    elif fpc == 0:
        numbers["sharpness"] = Estimate(lam1, 0.0, lam1, lam1, "Lanczos on all samples")
    else:
        numbers["sharpness"] = Estimate(lam1, None, None, None, "Lanczos on the audited samples (no interval)")
    step("sharpness")

    if alignment and route == "gradients":
        G = backend.G
        G_theta = G if G.dtype == theta.dtype else G.to(theta.dtype)
        with _second_order():
            ths = trace_h_sigma(problem, theta, G_theta, m=min(64, m), generator=gen, probes=20)
            numbers["trace_h_sigma_ratio"] = Estimate.normal(ths.ratio, ths.ratio_se,
                                                             "tr(HΣ) / (tr H tr Σ / d); delta-method SE")
            kc = min(5, kk)
            com = commutator_in_top_subspace(problem, theta, G_theta, kc, permutations=5, generator=gen)
            numbers["commutator"] = {"k": com.k, "relative": com.relative, "leakage": com.leakage,
                                     "null_relative": list(com.null_relative)}
        del G_theta
    elif alignment:
        if route == "sketch":  # the exact tr K_c from the per-sample norms, not the sketched Gram matrix's
            s_, t_, g2_ = backend.total
            tr_kc = float(s_.sum() - 2 * t_.sum() + m * g2_)
        else:
            tr_kc = float(torch.diagonal(Kc).sum())
        numbers.update(_alignment_by_products(problem, theta, backend, model, loss_fn, X, y, V, lam_all, kk,
                                              tr_kc / m, gen))
    step("alignment")

    # ---------------------------------------------------------------- the sampler
    eff = lr / (1 - momentum)
    sh = numbers["sharpness"]
    if scheme == "reshuffling" and B < N:
        per_epoch = N // B
        rho1 = -(per_epoch - 1) / per_epoch * B / (N - B)
    else:
        per_epoch, rho1 = None, 0.0
    numbers["lag1_correlation"] = Estimate(rho1, 0.0, rho1, rho1, "exact for the sampling scheme")
    step("verdicts")
    if bar is not None:
        bar.close()

    settings = {"model": type(model).__name__, "d": d, "route": backend.name, "lr": lr, "batch_size": B, "scheme": scheme,
                "momentum": momentum, "dataset_size": N, "audited_samples": m, "top_k": k, "directions": directions,
                "noise_draws": noise_draws, "null_reps": null_reps, "level": level, "spectrum_folds": spectrum_folds,
                "sharpness_folds": sharpness_folds, "spectrum_fit_ranks": fit}
    verdicts = _verdicts(numbers, settings, eff, per_epoch)
    notes = []
    if m < N:
        notes.append(f"{m} of {N} samples audited: intervals carry the finite-population correction; the spectrum "
                     "is the subsample's (its top eigenvalues are biased upward as estimates of the data set's "
                     "when eigenvalues crowd).")
    if B >= m:
        notes.append(f"batch_size={B} >= the {m} audited samples: the Gaussianity test draws batches with "
                     "replacement from them and says little about the batch noise of the full data set.")
    if lanczos_iters < 100:
        notes.append(f"the sharpness's Lanczos ran at most {lanczos_iters} iterations (its basis of one copy of θ per "
                     "iteration had to fit in memory_bytes); raise memory_bytes for up to 100")
    if alignment and route != "gradients" and V is None:
        notes.append("the commutator is not measured: Σ's eigenvectors (d × k) do not fit in memory_bytes")
    if route == "sketch":
        sk = numbers["sketch"]
        notes.append(f"sketch route: tr Σ, ‖g‖² and the noise scales are exact, and so are Σ's top "
                     f"{sk['lanczos_rank']} eigenvalues (Lanczos); the rest of the spectrum is a {sk['columns']}-column "
                     "random projection (holding "
                     f"{sk['tail_fraction']:.0%} of tr Σ; the sketch's own estimate of tr Σ is off by "
                     f"{sk['trace_relative_error']:+.2%}, its stated SE {sk['trace_relative_se']:.2%}): the effective "
                     "rank, the power-law exponent and the norm test read it, and the first two get no interval "
                     "(the sketched eigenvalues are biased: at most sketch_columns tail directions are kept).")
    return AuditReport(verdicts, numbers, settings, None if V is None else V[:, :k].float(), (lam_all / m).numpy(),
                       notes)


def _alignment_by_products(problem, theta, backend, model, loss_fn, X, y, V, lam_all, kk, trace_sigma, gen) -> dict:
    """``tr(HΣ)`` and the commutator without ``G``: the rows for ``tr(HΣ)`` (64 samples, without replacement) are
    formed 8 at a time, and ``Σ X = G̃ᵀ(G̃ X)/m`` is applied through the route's products."""
    from ..curvature import batched_hvp
    from ..diagnostics import commutator_from_products, trace_h_sigma_from_quadratic_forms
    from ..gradients import per_sample_grads

    m = X.shape[0]
    out = {}
    with _second_order():
        gbar = backend.combine(torch.full((m, 1), 1.0 / m, dtype=torch.float64))[:, 0]
        sub = torch.randperm(m, generator=gen)[:min(64, m)]
        q = []
        for chunk in sub.split(8):
            idx = chunk.to(X.device)
            rows = per_sample_grads(model, loss_fn, X[idx], y[idx]).double().cpu() - gbar
            hr = batched_hvp(problem, theta, rows.to(theta.device, theta.dtype), chunk_size=8).double().cpu()
            q.append((hr * rows).sum(1))
        ths = trace_h_sigma_from_quadratic_forms(problem, theta, torch.cat(q), m, trace_sigma, gen, probes=20)
        out["trace_h_sigma_ratio"] = Estimate.normal(ths.ratio, ths.ratio_se, "tr(HΣ) / (tr H tr Σ / d); delta-method "
                                                     "SE; rows formed 8 at a time")
        if V is not None:
            kc = min(5, kk)

            def sigma(Xd):
                Gx = backend.matmat(Xd.double().cpu())
                return backend.combine(Gx - Gx.mean(0)) / m

            com = commutator_from_products(problem, theta, lam_all[:kc] / m, V[:, :kc].double(), sigma,
                                           permutations=5, generator=gen)
            out["commutator"] = {"k": com.k, "relative": com.relative, "leakage": com.leakage,
                                 "null_relative": list(com.null_relative)}
    return out


def _verdicts(numbers, settings, eff, per_epoch) -> list[Verdict]:
    B, N, d, lr, beta = (settings[k] for k in ("batch_size", "dataset_size", "d", "lr", "momentum"))
    out = []
    # Gaussian noise
    rows = numbers["gaussianity"]["rows"]
    heavy = [r for r in rows if r["heavy_tailed"]]
    kb = max((r["kurtosis_batch"] for r in rows if math.isfinite(r["kurtosis_batch"])), default=math.nan)
    status = "fails" if heavy else ("doubtful" if kb > KURTOSIS_DOUBT else "holds")
    lowest = min(rows, key=lambda r: r["p_value"])
    found = (f"{len(heavy)} of {len(rows)} tests read heavier-tailed than Gaussian" if heavy else
             f"no heavier-than-Gaussian tail detected by {len(rows)} tests (which miss an index near 1.8 often)")
    out.append(Verdict(
        "Gaussian batch noise (CLT at B)", status,
        f"{found}; smallest p = {lowest['p_value']:.3g} ({lowest['direction']}); largest batch-noise excess "
        f"kurtosis {kb:.2f}",
        f"fails: any test rejects (Holm, family-wise {settings['level']:g}); doubtful: excess kurtosis > {KURTOSIS_DOUBT:g}",
        CHAPTERS["assumptions"], Estimate(kb, None, None, None, "max over directions of κ₁/B")))
    # finite variance
    tails = numbers["per_sample_tails"]["rows"]
    below = [r for r in tails if r["below_two"]]
    low = min(tails, key=lambda r: r["alpha"])
    out.append(Verdict(
        "finite variance (Lindeberg)", "doubtful" if below else "holds",
        f"per-sample tail index below 2 along {len(below)} of {len(tails)} directions (lowest Hill index "
        f"{low['alpha']:.2f} ± {low['se']:.2f}, p = {low['p_value']:.3g}); within the data set the variance is finite",
        f"doubtful: Hill's index below its law on Student-t(2) samples (Holm, family-wise {settings['level']:g})",
        CHAPTERS["assumptions"],
        Estimate(low["alpha"], low["se"], low["alpha"] - _stats.Z95 * low["se"], low["alpha"] + _stats.Z95 * low["se"],
                 "Hill, asymptotic SE α/√k")))
    # small learning rate
    sh = numbers["sharpness"]
    lo = sh.low if sh.low is not None else sh.value
    hi = sh.high if sh.high is not None else sh.value
    limit = 2 * (1 + beta)
    if lr * lo >= limit:
        status = "fails"
    elif eff * hi < SMALL_STEP:
        status = "holds"
    else:
        status = "doubtful"
    out.append(Verdict(
        "small learning rate (η λ_max ≪ 1)", status,
        f"η λ_max = {lr * sh.value:.3g}" + (" (no interval: decided on the point value)" if sh.low is None
                                            else f" [{lr * lo:.3g}, {lr * hi:.3g}]")
        + (f"; η/(1-β) λ_max = {eff * sh.value:.3g}" if beta else "")
        + f"; SGD/SDE stationary spread along the sharpest direction ≈ {_spread(eff * sh.value)}",
        f"holds: η_eff λ_max < {SMALL_STEP:g} (upper bound); fails: η λ_max ≥ {limit:g} (lower bound)",
        CHAPTERS["assumptions"], Estimate(lr * sh.value, None if sh.se is None else lr * sh.se,
                                          None if sh.low is None else lr * lo, None if sh.high is None else lr * hi,
                                          "η × sharpness")))
    # auto-correlation
    rho1 = numbers["lag1_correlation"].value
    if per_epoch is not None:
        steps = max(1.0, 1.0 / (eff * sh.value)) if sh.value > 0 else float(per_epoch)
        kk = min(steps, per_epoch)
        ratio = 1 - (kk - 1) * B / (N - B)
        status = "holds" if 1 - ratio < WHITE_TOLERANCE and not beta else "doubtful"
        ev = (f"reshuffling: lag-1 correlation {rho1:.3g}; over the {kk:.0f} steps in which the sharpest direction "
              f"relaxes, the summed noise has {ratio:.2f}× white noise's variance")
    else:
        status = "doubtful" if beta else "holds"
        ev = "independent batches: no auto-correlation (exact)"
    if beta:
        ev += f"; momentum β = {beta:g} colours the update (correlation β^ℓ): the SDE applies at η/(1-β)"
    out.append(Verdict("no auto-correlation", status, ev,
                       f"reshuffling: doubtful when the summed noise is > {WHITE_TOLERANCE:.0%} below white; "
                       "momentum: doubtful", CHAPTERS["limit"], numbers["lag1_correlation"]))
    # B ≪ N
    frac = B / N
    if settings["scheme"] == "with_replacement":
        status, ev = "holds", f"B/N = {frac:.3g}; with replacement the batch covariance is Σ/B at any B/N"
    else:
        factor = (N - B) / (N - 1)
        status = "holds" if frac <= SMALL_FRACTION else "doubtful"
        ev = f"B/N = {frac:.3g}; without replacement the batch covariance is {factor:.3g} × Σ/B"
    out.append(Verdict("B ≪ N", status, ev, f"holds: with replacement, or B/N ≤ {SMALL_FRACTION:g}",
                       CHAPTERS["noise"], Estimate(frac, 0.0, frac, frac, "exact")))
    # Σ positive definite
    rank, er = numbers["numerical_rank"], numbers["effective_rank"]
    if d > N - 1:
        status, ev = "fails", f"rank Σ ≤ N - 1 = {N - 1} < d = {d:,}"
    elif rank >= d:
        status, ev = "holds", f"numerical rank {rank} = d"
    elif settings["audited_samples"] == N:
        status, ev = "fails", f"numerical rank {rank} < d = {d} (all samples)"
    else:
        status, ev = "not measured", f"the {settings['audited_samples']} audited samples give rank {rank} < d = {d}; " \
                                     "all N samples could reach d"
    out.append(Verdict("Σ positive definite", status, ev + f"; effective rank {er.text('.3g')}",
                       "fails: d > N - 1 (counting), or rank < d on all samples; holds: rank = d",
                       CHAPTERS["noise"], er))
    out.append(Verdict("Σ constant", "not measured", "one parameter point; record Σ along a run with NoiseTracker",
                       "—", CHAPTERS["current"]))
    if "commutator" in numbers:
        com = numbers["commutator"]
        null_med = sorted(com["null_relative"])[len(com["null_relative"]) // 2] if com["null_relative"] else math.nan
        rel = com["relative"]
        status = "holds" if rel < COMMUTE_HOLDS else "doubtful"
        out.append(Verdict(
            "detailed balance (frozen noise: Σ and H commute)", status,
            f"relative commutator on the top-{com['k']} noise subspace {rel:.3g} (after permuting coordinates, "
            f"{null_med:.3g}); no test: a point value on the audited samples",
            f"holds (on the top-{com['k']} noise subspace only): < {COMMUTE_HOLDS:g}; else doubtful; only for the "
            "frozen-noise (quadratic) case",
            CHAPTERS["current"], Estimate(rel, None, None, None, "relative commutator")))
    out.append(Verdict("constant learning rate", "not measured", "the audit sees one η", "—", CHAPTERS["limit"]))
    out.append(Verdict("i.i.d. samples", "not measured", "how the data were collected is not visible to the audit",
                       "—", CHAPTERS["noise"]))
    return out


def _spread(x: float) -> str:
    return f"{2 / (2 - x):.3g}×" if x < 2 else "unbounded (unstable)"
