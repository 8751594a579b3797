"""sgdnoise.audit: its numbers against slow obvious twins, its intervals' coverage, its test's calibration,
its verdict rules, and its errors for bad input."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import sgdnoise
from sgdnoise.audit import AuditReport, _stats
from sgdnoise.diagnostics import random_reshuffling_lag_correlation
from sgdnoise.gradients import per_sample_grads
from sgdnoise.problems import cross_entropy, half_squared_error

F64 = torch.float64
Z = 4.0  # Monte-Carlo tolerance, in standard errors (fixed seeds)
FAST = dict(noise_draws=400, null_reps=250, spectrum_folds=4, sharpness_folds=3)


class Tiny(nn.Module):
    """A sequence model with Embedding, LayerNorm and tied output weights (GPT-2's tying): not on the Gram route's
    all-Linear path."""

    def __init__(self, vocab=50, dim=16):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.mix = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, tokens):
        h = self.norm(self.emb(tokens))
        h = h + torch.tanh(self.mix(h)).cumsum(1) / torch.arange(1, tokens.shape[1] + 1)[:, None]
        return self.out(h)


def token_loss(out, tgt):
    """One loss per sequence: the mean over its tokens."""
    return nn.functional.cross_entropy(out.transpose(1, 2), tgt, reduction="none").mean(1)


def small_mlp(seed=0, d_in=5, width=7, k=3, N=60, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, k)).to(dtype)
    X = torch.randn(N, d_in, generator=g, dtype=dtype)
    y = torch.randint(k, (N,), generator=g)
    return model, X, y


def loop_G(model, X, y, loss_fn=cross_entropy):
    """The slow twin: one backward pass per sample."""
    rows = []
    params = [p for p in model.parameters() if p.requires_grad]
    for i in range(X.shape[0]):
        loss = loss_fn(model(X[i:i + 1]), y[i:i + 1]).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows).double()


# ----------------------------------------------------------------------------- exact when m = N
def test_all_samples_give_the_dense_twins_exactly():
    model, X, y = small_mlp()
    rep = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, **FAST)
    G = loop_G(model, X, y)
    N = G.shape[0]
    gbar = G.mean(0)
    Sigma = (G - gbar).T @ (G - gbar) / N  # the dense Σ_emp, 1/N
    assert rep["trace_sigma"].value == pytest.approx(float(torch.trace(Sigma)), rel=1e-10)
    assert rep["trace_sigma"].se == 0.0 and rep["trace_sigma"].exact
    assert rep["grad_norm_sq"].value == pytest.approx(float(gbar @ gbar), rel=1e-10)
    assert rep["noise_scale"].value == pytest.approx(float(torch.trace(Sigma) / (gbar @ gbar)), rel=1e-10)
    lam = torch.linalg.eigvalsh(Sigma).flip(0)
    top = [e.value for e in rep["sigma_top_eigenvalues"]]
    assert np.allclose(top, lam[: len(top)].numpy(), rtol=1e-8, atol=1e-12)
    # eigenvectors: Σ v = λ v
    V = rep.sigma_top_eigenvectors.double()
    assert torch.allclose(Sigma @ V, V * lam[: V.shape[1]], atol=1e-5)
    # the sharpness: the dense Hessian of the mean loss
    from torch.func import functional_call
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(th):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = th[i:i + s.numel()].reshape(s)
            i += s.numel()
        return cross_entropy(functional_call(model, parts, (X,)), y).mean()

    H = torch.autograd.functional.hessian(f, theta)
    assert rep["sharpness"].value == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-4)


def test_per_layer_noise_scales_are_those_of_the_layer_blocks():
    model, X, y = small_mlp(seed=1)
    rep = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, alignment=False, **FAST)
    G = loop_G(model, X, y)
    slices, start = {}, 0  # the columns of G owned by each module, from model.parameters() order
    for name, p in model.named_parameters():
        owner = name.rsplit(".", 1)[0]
        prev = slices.get(owner, slice(start, start))
        slices[owner] = slice(prev.start, start + p.numel())
        start += p.numel()
    assert set(rep["noise_scale_per_layer"]) == {"0", "2"} == set(slices)
    for name, sl in slices.items():
        Gl = G[:, sl]
        g = Gl.mean(0)
        exact = float(((Gl - g) ** 2).sum(1).mean() / (g @ g))
        assert rep["noise_scale_per_layer"][name].value == pytest.approx(exact, rel=1e-10)


def test_tied_weights_and_a_sequence_model_match_the_loop():
    """Weight tying (GPT-2's embedding = output layer) and LayerNorm/Embedding: the audit's tr Σ is the
    per-sample loop's."""

    torch.manual_seed(0)
    model = Tiny(vocab=11, dim=6).double()
    g = torch.Generator().manual_seed(3)
    X = torch.randint(11, (40, 5), generator=g)
    y = torch.randint(11, (40, 5), generator=g)
    rep = sgdnoise.audit(model, token_loss, (X, y), lr=0.05, batch_size=4, alignment=False, **FAST)
    G = loop_G(model, X, y, token_loss)
    assert G.shape[1] == rep.settings["d"] == sum(p.numel() for p in model.parameters())
    gbar = G.mean(0)
    assert rep["trace_sigma"].value == pytest.approx(float(((G - gbar) ** 2).sum(1).mean()), rel=1e-9)


def test_dataloader_input_gives_the_tensor_numbers():
    model, X, y = small_mlp(seed=2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=7, shuffle=True)
    a = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, alignment=False, **FAST)
    b = sgdnoise.audit(model, cross_entropy, loader, lr=0.1, batch_size=8, alignment=False, **FAST)
    for key in ("trace_sigma", "grad_norm_sq", "noise_scale"):
        assert b[key].value == pytest.approx(a[key].value, rel=1e-12)


# ----------------------------------------------------------------------------- subsamples: bias and coverage
def _population(N=300, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, d, generator=g, dtype=F64) * torch.linspace(0.3, 1.5, d, dtype=F64) + 0.25


def _stats_of(G, N):
    g = G.mean(0)
    return _stats.noise_scale_stats((G * G).sum(1), G @ g, float(g @ g), N)


def test_subsample_estimates_are_unbiased_and_their_intervals_cover():
    """m = 60 of N = 300 rows, 600 subsamples: each estimate's mean within Z SE of the data set's value, and
    its 95% interval covers that value 95% of the time (within Z binomial SEs)."""
    Gp = _population()
    N = Gp.shape[0]
    g = Gp.mean(0)
    truth = {"trace_sigma": float(((Gp - g) ** 2).sum(1).mean()), "grad_norm_sq": float(g @ g)}
    truth["noise_scale"] = truth["trace_sigma"] / truth["grad_norm_sq"]
    gen = torch.Generator().manual_seed(5)
    reps = 600
    vals = {k: [] for k in truth}
    cover = {k: 0 for k in truth}
    naive = []
    for _ in range(reps):
        rows = torch.randperm(N, generator=gen)[:60]
        out = _stats_of(Gp[rows], N)
        for k in truth:
            vals[k].append(out[k].value)
            cover[k] += out[k].low <= truth[k] <= out[k].high
        naive.append(float(Gp[rows].mean(0) @ Gp[rows].mean(0)))
    for k in ("trace_sigma", "grad_norm_sq"):
        v = np.asarray(vals[k])
        assert abs(v.mean() - truth[k]) < Z * v.std() / math.sqrt(reps), k
    se_cov = math.sqrt(0.95 * 0.05 / reps)
    for k in truth:
        assert abs(cover[k] / reps - 0.95) < Z * se_cov, (k, cover[k] / reps)
    # the failing variant: ‖ḡ_m‖² without the correction is biased upward by (1 - m/N) S²/m
    v = np.asarray(naive)
    assert v.mean() - truth["grad_norm_sq"] > Z * v.std() / math.sqrt(reps)


def test_noise_scale_without_a_detectable_gradient_has_no_upper_bound():
    g = torch.Generator().manual_seed(0)
    Gp = torch.randn(400, 5, generator=g, dtype=F64)
    Gp = Gp - Gp.mean(0)  # ‖g_N‖² = 0 exactly
    out = _stats_of(Gp[:50], 400)
    assert out["noise_scale"].high == math.inf and out["noise_scale"].low >= 0


# ----------------------------------------------------------------------------- the tail test
def test_tail_test_false_heavy_rate_is_its_level_and_its_power_is_the_documented_one():
    """At the audit's default 4000 draws: the false "heavy-tailed" rate on Gaussian noise is the level, and
    the power on α-stable noise is what the docstring of ``audit`` states (1.0 at α = 1.5, about 0.57 at 1.8)."""
    gen = torch.Generator().manual_seed(1)
    null = _stats.tail_null(4000, 400, gen)
    reps = 300
    z = torch.randn((reps, 4000), generator=gen, dtype=F64).numpy()
    false = sum(_stats.tail_pvalue(row, null)[1] <= 0.05 for row in z)
    se = math.sqrt(0.05 * 0.95 / reps)
    assert abs(false / reps - 0.05) < Z * se + 1 / 400, false / reps
    from sgdnoise.tails import sample_law
    for alpha, power_doc in ((1.5, 1.0), (1.8, 0.57)):
        heavy = sample_law("stable", alpha, (100, 4000), torch.Generator().manual_seed(2)).numpy()
        power = sum(_stats.tail_pvalue(row, null)[1] <= 0.05 for row in heavy) / 100
        assert abs(power - power_doc) <= Z * math.sqrt(max(power_doc * (1 - power_doc), 0.01) / 100), (alpha, power)


def test_holm():
    assert _stats.holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert _stats.holm([0.001, 0.02, 0.04], 0.05) == [True, True, True]
    assert _stats.holm([0.2, 0.001], 0.05) == [False, True]


def test_gaussian_per_sample_gradients_pass_and_stable_ones_fail():
    """The whole Gaussianity block on synthetic per-sample projections."""
    gen = torch.Generator().manual_seed(4)
    m = 400
    Pg = torch.randn(m, 4, generator=gen, dtype=F64)
    from sgdnoise.tails import sample_law
    Ps = sample_law("stable", 1.2, (m, 4), gen).double()
    for P, want in ((Pg, False), (Ps, True)):
        P = P - P.mean(0)
        Kc = P @ P.T
        lam = torch.linalg.eigvalsh(Kc).flip(0).clamp_min(0) / m
        out = _stats.gaussianity(P, [f"d{j}" for j in range(4)], lam, Kc, 1, 2000, 200, 0.05, gen)
        assert any(r["heavy_tailed"] for r in out["rows"]) is want


def test_direction_null_is_exact_when_samples_are_reused():
    """m = 40 Gaussian per-sample values, B = 1, 800 draws (each value reused about 20 times): the direction
    tests' p-values fall at or below 0.05 at the rate 0.05 (240 p-values: 60 audits of 4 directions)."""
    gen = torch.Generator().manual_seed(0)
    ps = []
    for _ in range(60):
        P = torch.randn(40, 4, generator=gen, dtype=F64)
        P = P - P.mean(0)
        Kc = P @ P.T
        lam = torch.linalg.eigvalsh(Kc).flip(0).clamp_min(0) / 40
        out = _stats.gaussianity(P, [f"d{j}" for j in range(4)], lam, Kc, 1, 800, 100, 0.05, gen)
        ps += [r["p_value"] for r in out["rows"][:4]]
    rate = np.mean(np.asarray(ps) <= 0.05)
    assert abs(rate - 0.05) < Z * math.sqrt(0.05 * 0.95 / len(ps)), rate


def test_the_norm_test_detects_a_heavy_tailed_radius():
    """Per-sample vectors z·R with z Gaussian and a Pareto(1.2) radius R (a scale mixture with an
    infinite-variance norm): at B = 1 the norm test rejects after Holm's correction."""
    gen = torch.Generator().manual_seed(5)
    m, d = 400, 30
    from sgdnoise.tails import sample_law
    radius = sample_law("pareto", 1.2, (m, 1), gen).double().abs() + 1.0
    P = torch.randn(m, d, generator=gen, dtype=F64) * radius
    P = P - P.mean(0)
    Kc = P @ P.T
    lam = torch.linalg.eigvalsh(Kc).flip(0).clamp_min(0) / m
    out = _stats.gaussianity(P[:, :2], ["d0", "d1"], lam, Kc, 1, 2000, 250, 0.05, gen)
    assert out["rows"][-1]["heavy_tailed"], out["rows"][-1]


def test_finite_variance_test_is_conservative_on_t3_and_detects_t12():
    gen = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(1)
    false = 0
    for _ in range(30):
        P = torch.from_numpy(rng.standard_t(3, size=(512, 10)))
        out = _stats.per_sample_tails(P - P.mean(0), [str(j) for j in range(10)], 250, 0.05, gen)
        false += any(r["below_two"] for r in out["rows"])
    assert false / 30 <= 0.05 + Z * math.sqrt(0.05 * 0.95 / 30), false
    P = torch.from_numpy(rng.standard_t(1.2, size=(512, 10)))
    out = _stats.per_sample_tails(P - P.mean(0), [str(j) for j in range(10)], 250, 0.05, gen)
    assert sum(r["below_two"] for r in out["rows"]) >= 3, out["rows"]


def test_too_few_null_samples_are_refused():
    model, X, y = small_mlp()
    with pytest.raises(ValueError, match="null_reps=40 is too few"):
        sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, null_reps=40)


def test_subsample_spectrum_caps_k_and_never_reads_exact():
    model, X, y = small_mlp(seed=8, N=200)
    rep = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, max_samples=60, top_k=50,
                         alignment=False, **dict(FAST, spectrum_folds=2))
    eig = rep["sigma_top_eigenvalues"]
    assert len(eig) <= 60 - 30 - 1 and all(e.se > 0 for e in eig)
    assert rep["power_law_exponent"].value < 10  # numerical zeros are not fitted


# ----------------------------------------------------------------------------- verdict rules
def test_learning_rate_verdict_follows_eta_lambda():
    model, X, y = small_mlp(seed=3)
    base = sgdnoise.audit(model, cross_entropy, (X, y), lr=1e-3, batch_size=8, alignment=False, **FAST)
    lam = base["sharpness"].value
    assert base.verdict("small learning rate").status == "holds"
    mid = sgdnoise.audit(model, cross_entropy, (X, y), lr=1.0 / lam, batch_size=8, alignment=False, **FAST)
    assert mid.verdict("small learning rate").status == "doubtful"
    big = sgdnoise.audit(model, cross_entropy, (X, y), lr=2.5 / lam, batch_size=8, alignment=False, **FAST)
    assert big.verdict("small learning rate").status == "fails"
    # momentum raises the limit to 2(1+β): the same step is no longer beyond it
    hb = sgdnoise.audit(model, cross_entropy, (X, y), lr=2.5 / lam, batch_size=8, momentum=0.5, alignment=False, **FAST)
    assert hb.verdict("small learning rate").status == "doubtful"
    assert hb.verdict("no auto-correlation").status == "doubtful"


def test_sampler_verdicts():
    model, X, y = small_mlp(seed=4, N=80)
    wr = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.01, batch_size=20, alignment=False, **FAST)
    assert wr.verdict("no auto-correlation").status == "holds" and wr["lag1_correlation"].value == 0.0
    assert wr.verdict("B ≪ N").status == "holds"  # with replacement: Σ/B at any B/N
    rr = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.01, batch_size=20, scheme="reshuffling", alignment=False,
                        **FAST)
    assert rr["lag1_correlation"].value == pytest.approx(float(random_reshuffling_lag_correlation(80, 20, 1)[1]))
    assert rr.verdict("B ≪ N").status == "doubtful"  # B/N = 1/4 without replacement
    assert rr.verdict("no auto-correlation").status == "doubtful"  # small η: the epoch's sum reaches zero
    # d = 66 <= N - 1 = 79, yet Σ is singular: cross-entropy's logit gradients sum to zero, so the last layer's
    # per-sample gradients obey width + 1 = 8 linear constraints (rank <= 58), measured on all samples
    pd_ = wr.verdict("Σ positive definite")
    assert pd_.status == "fails" and wr["numerical_rank"] == 58, pd_


def test_positive_definite_verdict_counts():
    model, X, y = small_mlp(seed=5, N=30)  # d = 66 > N - 1 = 29
    rep = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.01, batch_size=4, alignment=False, **FAST)
    assert rep.verdict("Σ positive definite").status == "fails"
    # squared error on one output: no constraint ties the per-sample gradients, d = 9 <= N - 1 = 199, full rank
    model, X, _ = small_mlp(seed=5, d_in=2, width=2, k=1, N=200)
    y = torch.randn(200, 1, generator=torch.Generator().manual_seed(0), dtype=F64)
    rep = sgdnoise.audit(model, half_squared_error, (X, y), lr=0.01, batch_size=4, alignment=False, **FAST)
    assert rep.verdict("Σ positive definite").status == "holds" and rep["numerical_rank"] == 9


# ----------------------------------------------------------------------------- the report
def test_report_renders_and_serialises():
    model, X, y = small_mlp(seed=6, N=100)
    rep = sgdnoise.audit(model, cross_entropy, (X, y), lr=0.05, batch_size=8, max_samples=50, **FAST)
    assert isinstance(rep, AuditReport)
    d = json.loads(json.dumps(rep.to_dict(), allow_nan=False))  # strict JSON: inf and NaN as strings / null
    for key in ("trace_sigma", "noise_scale", "sigma_top_eigenvalues", "sharpness", "effective_rank",
                "power_law_exponent", "noise_scale_per_layer", "gaussianity", "commutator"):
        assert key in d["numbers"], key
    assert d["numbers"]["trace_sigma"]["se"] > 0  # a subsample: an interval, not "exact"
    md, html = rep.to_markdown(), rep.to_html()
    for v in rep.verdicts:
        assert v.assumption in md and v.status in html
    assert rep.settings["audited_samples"] == 50 and rep.settings["dataset_size"] == 100
    import matplotlib
    matplotlib.use("Agg")
    fig = rep.plot()
    assert len(fig.axes) == 3
    import matplotlib.pyplot as plt
    plt.close(fig)
    assert sgdnoise.audit.audit is sgdnoise.audit.__call__.__globals__["audit"]
    db = rep.verdict("detailed balance")
    assert db.status in ("holds", "doubtful") and "top-" in db.rule  # a point value: never "fails"


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"), (dict(momentum=1.0), "momentum"), (dict(batch_size=0), "batch_size"),
    (dict(scheme="shuffled"), "valid schemes"), (dict(batch_size=100, scheme="reshuffling"), "exceeds"),
    (dict(sharpness_folds=1), "sharpness_folds"), (dict(max_samples=3), "max_samples"),
])
def test_bad_arguments_are_named(kwargs, match):
    model, X, y = small_mlp()
    args = dict(lr=0.1, batch_size=8)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        sgdnoise.audit(model, cross_entropy, (X, y), **args)


def test_bad_models_and_data_get_clear_errors():
    model, X, y = small_mlp()
    with pytest.raises(ValueError, match="one loss per sample"):
        sgdnoise.audit(model, lambda o, t: cross_entropy(o, t).mean(), (X, y), lr=0.1, batch_size=8)
    bn = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3)).double()
    with pytest.raises(ValueError, match=r"'1' \(BatchNorm1d\).*model.eval\(\)"):
        sgdnoise.audit(bn, cross_entropy, (X, y), lr=0.1, batch_size=8)
    with pytest.raises(ValueError, match=r"replace_batch_norm\(model\)"):
        sgdnoise.audit(bn, cross_entropy, (X, y), lr=0.1, batch_size=8)
    # the per-sample-safe variant: a copy with GroupNorm, the original untouched, each sample normalised alone
    from sgdnoise.gradients import replace_batch_norm

    gn = replace_batch_norm(bn)
    assert isinstance(gn[1], nn.GroupNorm) and gn[1].num_groups == 1 and isinstance(bn[1], nn.BatchNorm1d)
    assert torch.equal(gn[1].weight, bn[1].weight) and gn[1].weight is not bn[1].weight
    assert torch.allclose(gn(X)[:1], gn(X[:1]))  # batch norm in training mode fails this
    assert not torch.allclose(bn(X)[:1], bn(X[:2])[:1])
    sgdnoise.audit(gn, cross_entropy, (X, y), lr=0.1, batch_size=8, alignment=False, **FAST)
    conv = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.Flatten())
    assert replace_batch_norm(conv, max_groups=4)[1].num_groups == 3  # the largest divisor of 6 up to 4
    assert isinstance(replace_batch_norm(nn.BatchNorm1d(4)), nn.GroupNorm)
    bn.eval()
    sgdnoise.audit(bn, cross_entropy, (X, y), lr=0.1, batch_size=8, alignment=False, **FAST)  # eval mode: fine
    with pytest.raises(TypeError, match="pair of tensors"):
        sgdnoise.audit(model, cross_entropy, X, lr=0.1, batch_size=8)
    Xbad = X.clone()
    Xbad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        sgdnoise.audit(model, cross_entropy, (Xbad, y), lr=0.1, batch_size=8)
    with pytest.raises(MemoryError, match="max_samples="):
        sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, memory_bytes=1000, route="gradients")
    with pytest.raises(MemoryError, match="Gram route"):  # 'auto' falls back to the Gram route, which needs m² too
        sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, memory_bytes=1000)
    reg = nn.Linear(5, 1).double()
    with pytest.raises(ValueError, match="one loss per sample"):  # targets (n,) against outputs (n, 1) broadcast
        sgdnoise.audit(reg, lambda o, t: (o - t) ** 2 / 2, (X, y.double()), lr=0.1, batch_size=8)


# ----------------------------------------------------------------------------- a model no one here wrote
def test_gpt2_from_transformers_is_audited_exactly():
    """Hugging Face GPT-2 from a small configuration (random weights, synthetic tokens, no download): its
    embedding and output weights are tied and its attention runs on fused kernels. The audit's tr Σ, ‖g‖² and
    top eigenvalues equal the per-sample loop's, and its sharpness the power iteration's on autograd's
    Hessian-vector products. (transformers is a test-only install, with --no-deps: requirements-extras.txt.)"""
    import transformers  # make pytest installs it (requirements-extras.txt); its absence is a failure, not a skip
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=40, n_positions=8, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    gpt = transformers.GPT2LMHeadModel(cfg).double().eval()
    assert gpt.lm_head.weight is gpt.transformer.wte.weight

    class LM(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, tokens):
            return self.m(input_ids=tokens).logits

    def token_loss(out, tgt):
        return nn.functional.cross_entropy(out.transpose(1, 2), tgt, reduction="none").mean(1)

    model = LM(gpt)
    g = torch.Generator().manual_seed(1)
    X = torch.randint(40, (24, 6), generator=g)
    y = torch.roll(X, -1, 1)
    rep = sgdnoise.audit(model, token_loss, (X, y), lr=1e-2, batch_size=4, **FAST)
    G = loop_G(model, X, y, token_loss)
    assert G.shape[1] == rep.settings["d"]  # the tied matrix counted once
    gbar = G.mean(0)
    Gc = G - gbar
    assert rep["trace_sigma"].value == pytest.approx(float((Gc**2).sum(1).mean()), rel=1e-8)
    assert rep["grad_norm_sq"].value == pytest.approx(float(gbar @ gbar), rel=1e-8)
    lam = torch.linalg.eigvalsh(Gc @ Gc.T / G.shape[0]).flip(0)
    assert np.allclose([e.value for e in rep["sigma_top_eigenvalues"]], lam[:10].numpy(), rtol=1e-6)
    params = [p for p in model.parameters()]

    def hvp(v):
        loss = token_loss(model(X), y).mean()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        flat = torch.cat([q.reshape(-1) for q in grads])
        return torch.cat([q.reshape(-1) for q in torch.autograd.grad(flat @ v, params)])

    from torch.nn.attention import SDPBackend, sdpa_kernel

    def power(op, iters=400):  # the Rayleigh quotient of the dominant eigenvector of op
        v = torch.randn(G.shape[1], generator=torch.Generator().manual_seed(2), dtype=F64)
        for _ in range(iters):
            v = op(v / v.norm())
        v = v / v.norm()
        return float(v @ op(v))

    with sdpa_kernel(SDPBackend.MATH):
        rho = abs(power(hvp, 100))  # the largest |λ|, so that H + ρI has the largest algebraic λ on top
        top = power(lambda v: hvp(v) + rho * v) - rho
    assert rep["sharpness"].value == pytest.approx(top, rel=1e-3, abs=1e-3 * rho)
    # the sketch route (forward-mode products through GPT-2's attention on its math kernel): the same top
    # eigenvalues and tr Σ, and the sketch's own trace estimate within its stated error
    sk = sgdnoise.audit(model, token_loss, (X, y), lr=1e-2, batch_size=4, route="sketch", sketch_rank=10,
                        sketch_columns=64, alignment=False, **FAST)
    assert np.allclose([e.value for e in sk["sigma_top_eigenvalues"]], lam[:10].numpy(), rtol=1e-6)
    assert sk["trace_sigma"].value == pytest.approx(float((Gc**2).sum(1).mean()), rel=1e-8)
    assert abs(sk["sketch"]["trace_relative_error"]) < Z * sk["sketch"]["trace_relative_se"] + 1e-12


def test_the_gram_route_gives_the_gradient_routes_numbers():
    """The Gram route never forms G; on an MLP it must reproduce the per-sample-gradient route's numbers
    (the same random directions, drawn block by block), and 'auto' must take it when G does not fit."""
    model, X, y = small_mlp(seed=9, N=120)
    kw = dict(lr=0.1, batch_size=8, max_samples=80, alignment=False, **FAST)
    a = sgdnoise.audit(model, cross_entropy, (X, y), route="gradients", **kw)
    b = sgdnoise.audit(model, cross_entropy, (X, y), route="gram", **kw)
    for key in ("trace_sigma", "grad_norm_sq", "noise_scale", "effective_rank", "power_law_exponent", "sharpness"):
        assert b[key].value == pytest.approx(a[key].value, rel=1e-9), key
        assert b[key].se == pytest.approx(a[key].se, rel=1e-6), key
    for name in a["noise_scale_per_layer"]:
        assert b["noise_scale_per_layer"][name].value == pytest.approx(a["noise_scale_per_layer"][name].value, rel=1e-9)
    ra, rb = a["gaussianity"]["rows"], b["gaussianity"]["rows"]
    assert [r["tail_index"] for r in rb] == pytest.approx([r["tail_index"] for r in ra], rel=1e-7)
    assert [r["alpha"] for r in b["per_sample_tails"]["rows"]] == pytest.approx(
        [r["alpha"] for r in a["per_sample_tails"]["rows"]], rel=1e-7)
    assert torch.allclose(b.sigma_top_eigenvectors.double().abs(), a.sigma_top_eigenvectors.double().abs(), atol=1e-5)
    assert [v.status for v in a.verdicts] == [v.status for v in b.verdicts]
    # d = 2703, one random direction: G (80 × d, three copies) needs 5.2 MB, the Gram route about 3.4 MB
    wide, X, y = small_mlp(seed=9, N=120, width=300)
    full = sgdnoise.audit(wide, cross_entropy, (X, y), route="gradients", directions=1, **kw)
    auto = sgdnoise.audit(wide, cross_entropy, (X, y), memory_bytes=4_500_000, directions=1, **kw)
    assert auto.settings["route"].startswith("Gram") and full.settings["route"].startswith("per-sample")
    assert auto["trace_sigma"].value == pytest.approx(full["trace_sigma"].value, rel=1e-9)
    with pytest.raises(ValueError, match="Gram route needs"):
        sgdnoise.audit(nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3)).double(), cross_entropy,
                       (X, y), route="gram", **kw)
    with pytest.raises(ValueError, match="valid routes"):
        sgdnoise.audit(model, cross_entropy, (X, y), route="sketches", **kw)


def test_a_non_finite_gradient_names_its_parameter():
    class Root(nn.Module):  # d sqrt|h| / dh is infinite at h = 0
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3)
            with torch.no_grad():
                self.lin.weight.zero_()
                self.lin.bias.zero_()

        def forward(self, x):
            return torch.sqrt(self.lin(x).abs())

    model, X, y = Root().double(), *small_mlp()[1:]
    for route in ("gradients", "gram", "sketch"):
        with pytest.raises(FloatingPointError, match="parameter 'lin.weight'"):
            sgdnoise.audit(model, cross_entropy, (X, y), lr=0.1, batch_size=8, route=route)
