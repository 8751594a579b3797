"""Ledger rows for chapter 1: the gradient noise (notes §1.3–§1.8, appendix 5.0.1, §6).

Exact checks enumerate every batch of small data sets (n = 3, 4; d = 2; every B ≤ n) with
symbolic per-sample gradients; the one statement about data-dependent θ is checked by seeded
Monte Carlo on linear regression, with its threshold in standard errors.
"""

from __future__ import annotations

from functools import lru_cache

import sympy as sp
import torch

from .. import symbolic as sy
from ..ledger import Evidence, register
from ..noise import estimator_expectation_factor, noise_covariance_factor
from ..sampling import SCHEMES

CH = "chapters/01_gradient_noise"
D = 2
CASES = tuple((n, B) for n in (3, 4) for B in range(1, n + 1))


@lru_cache(maxsize=None)
def _G(n: int) -> sp.Matrix:
    return sy.gradient_symbols(n, D)


@lru_cache(maxsize=None)
def _sigma(n: int) -> sp.Matrix:
    return sy.sigma_emp(_G(n))


@lru_cache(maxsize=None)
def _noise_cov(n: int, B: int, scheme: str) -> sp.Matrix:
    """Exact ``Cov_B[ξ | D_n]`` with ``ξ = g_n - g_B`` (every batch enumerated)."""
    G = _G(n)
    gn = sy.full_mean(G)
    return sy.covariance(lambda idx: gn - sy.batch_mean(G, idx), sy.batch_distribution(n, B, scheme))


def _schemes_where(identity) -> tuple[str, ...]:
    """Schemes under which ``identity(n, B, scheme)`` is exactly zero for every (n, B) case."""
    return tuple(s for s in SCHEMES if all(sy.is_zero(identity(n, B, s)) for n, B in CASES))


def _fmt(schemes) -> str:
    return ", ".join(s.replace("_", " ") for s in schemes) or "no scheme"


def _verdict_on_schemes(identity, holds_for, what: str) -> Evidence:
    found = _schemes_where(identity)
    ok = set(found) == set(holds_for)
    return Evidence(ok, f"{what}: exact for {_fmt(found)} (n ∈ {{3, 4}}, every B ≤ n, d = {D}, all batches enumerated)")


# ----------------------------------------------------------------------------- §1.3, (5)
@register(
    key="ch1:unbiased",
    location="§1.3; (5); Prop. 1 (item 1)",
    section="1.3, 1.8.1, 1.8.3",
    chapter=CH,
    claim=r"The minibatch gradient is unbiased: $\mathbb E_{\mathcal B}[g_{\mathcal B}(\theta)] = "
    r"g_n(\theta)$, so the noise has mean zero.",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="",
    mutant={"batch_gradient": lambda G, idx: sy.batch_mean(G, idx) * len(idx) / G.shape[0]},
)
def _unbiased(batch_gradient=sy.batch_mean, holds_for=SCHEMES):
    def identity(n, B, s):
        G = _G(n)
        return sy.expect(lambda idx: batch_gradient(G, idx), sy.batch_distribution(n, B, s)) - sy.full_mean(G)

    return _verdict_on_schemes(identity, holds_for, "E[g_B] - g_n = 0")


@register(
    key="ch1:marginal",
    location="(30)–(38)",
    section="5.0.1",
    chapter=CH,
    claim=r"Each batch index $I_j$ is uniform on $\{1, \dots, n\}$, so $\mathbb E[g_{I_j}] = g_n$ and the "
    r"batch noise (the notes' $\nu_{\mathrm{batch}} = g_{\mathcal B} - g_n$, which is $-\xi$) has "
    "mean zero given $D_n$.",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="",
    mutant={"marginal": lambda n: sp.Rational(1, n - 1)},
)
def _marginal(marginal=lambda n: sp.Rational(1, n), holds_for=SCHEMES):
    def identity(n, B, s):
        dist = sy.batch_distribution(n, B, s)
        diffs = []
        for j in range(B):
            for i in range(n):
                p = sum((p for idx, p in dist if idx[j] == i), sp.Integer(0))
                diffs.append(p - marginal(n))
        return sp.Matrix(diffs)

    return _verdict_on_schemes(identity, holds_for, "P(I_j = i) = 1/n for every position j")


# ----------------------------------------------------------------------------- (1)–(4)
@register(
    key="ch1:sampling-mean",
    location="(1)",
    section="1.8.1",
    chapter=CH,
    claim=r"The sampling noise $g_n(\theta) - g(\theta)$ has mean zero over data sets.",
    heading="Two sources of noise, and a hidden assumption",
    verdict="holds",
    statement="",
    mutant={"estimator": lambda G: sy.batch_mean(G, range(G.shape[0])) * G.shape[0] / (G.shape[0] - 1)},
)
def _sampling_mean(estimator=sy.full_mean, z_max: float = 4.0):
    for n in (2, 3, 4):
        G, mu, S, z = sy.population_model(n, D)
        if not sy.is_zero(sy.population_expect(estimator(G) - mu, z, S)):
            return Evidence(False, f"E_D[g_n] ≠ g(θ) for n = {n}")
    # The symbolic rule E[z_i] = 0 makes the above linearity; so also on simulated data sets, against the closed
    # form of the population gradient of linear regression, g(θ) = S(θ − θ_true), at a θ ≠ θ_true.
    zs = _mc_sampling_mean()
    ok = max(abs(v) for v in zs) < z_max
    return Evidence(ok, "E_D[g_n] = g(θ) exactly for n = 2, 3, 4 (identically distributed samples, θ fixed); "
                    "linear regression, n = 10, 4000 data sets, θ = (1, -1): (mean of g_n - S(θ - θ_true)) / SE = "
                    + ", ".join(f"{v:.1f}" for v in zs))


def _mc_sampling_mean(R: int = 4000, n: int = 10, d: int = 2, seed: int = 3,
                      population_gradient=lambda S, theta, theta_true: S @ (theta - theta_true)) -> list[float]:
    from ..problems import lr_draw, lr_per_sample_grads

    X, y, theta_true, S = lr_draw(R, n, d, sigma=1.0, generator=torch.Generator().manual_seed(seed))
    theta = torch.tensor([1.0, -1.0], dtype=torch.float64)
    dev = lr_per_sample_grads(X, y, theta.expand(R, d)).mean(dim=-2) - population_gradient(S, theta, theta_true)
    return [float(v) for v in dev.mean(0) / (dev.std(0) / R**0.5)]


@register(
    key="ch1:sampling-cov",
    location="(2)–(4)",
    section="1.8.1",
    chapter=CH,
    claim=r"$\operatorname{Cov}_D[g_n(\theta)] = \Sigma_{\mathrm{pop}}(\theta)/n$.",
    heading="Two sources of noise, and a hidden assumption",
    verdict="holds only if",
    statement=r"the samples are independent (step (3) drops the cross-covariances) and $\theta$ is fixed "
    r"independently of $D_n$; with pairwise correlation $\rho$ it is $(1 + "
    r"(n-1)\rho)\,\Sigma_{\mathrm{pop}}/n$",
    mutant={"factor": lambda n: sp.Rational(1, n - 1)},
)
def _sampling_cov(factor=lambda n: sp.Rational(1, n)):
    rho = sp.Symbol("rho", real=True)
    for n in (2, 3, 4):
        G, mu, S, z = sy.population_model(n, D)
        dev = sy.full_mean(G) - mu
        cov_iid = sy.population_expect(dev * dev.T, z, S)
        cov_rho = sy.population_expect(dev * dev.T, z, S, rho=rho)
        if not sy.is_zero(cov_iid - factor(n) * S):
            return Evidence(False, f"Cov_D[g_n] ≠ factor·Σ_pop for independent samples, n = {n}")
        if not sy.is_zero(cov_rho - (1 + (n - 1) * rho) / n * S) or sy.is_zero(cov_rho - factor(n) * S):
            return Evidence(False, f"correlated samples do not give (1 + (n-1)ρ)Σ_pop/n at n = {n}")
    return Evidence(True, "exact for independent samples (n = 2, 3, 4); with correlation ρ: (1 + (n-1)ρ)Σ_pop/n")


# ----------------------------------------------------------------------------- (6)–(7), Prop. 1 (item 2), §1.8.4
@register(
    key="ch1:batch-cov",
    location="(6)–(7); Prop. 1 (item 2); §1.8.4 (1)",
    section="1.8.1, 1.8.3, 1.8.4",
    chapter=CH,
    claim=r"$\operatorname{Cov}_{\mathcal B}[\xi \mid D_n] = \Sigma_{\mathrm{emp}}(\theta)/B$: the noise "
    "covariance scales as $1/B$.",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="with replacement, the notes' setting for (6)–(7) and Prop. 1; without replacement (and for one "
    r"reshuffled batch) it is $\frac{n-B}{n-1}\,\Sigma_{\mathrm{emp}}/B$, which vanishes at $B = n$",
    mutant={"holds_for": SCHEMES},
)
def _batch_cov(holds_for=("with_replacement",)):
    return _verdict_on_schemes(
        lambda n, B, s: _noise_cov(n, B, s) - _sigma(n) / B, holds_for, "Cov[ξ] = Σ_emp/B"
    )


@register(
    key="ch1:fpc",
    location="§1.8.4 (4)",
    section="1.8.4",
    chapter=CH,
    claim=r"Without replacement, $\operatorname{Cov}_{\mathcal B}[\xi \mid D_n] = "
    r"\frac{n-B}{n-1}\,\Sigma_{\mathrm{emp}}/B$ (the finite-population correction).",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="",
    mutant={"factor": lambda n, B: sp.Rational(n - B, n * B)},
)
def _fpc(factor=lambda n, B: sp.Rational(n - B, (n - 1) * B)):
    def identity(n, B, s):
        return _noise_cov(n, B, s) - factor(n, B) * _sigma(n)

    found = _schemes_where(identity)
    pkg = all(
        sy.is_zero(_noise_cov(n, B, s) - sp.nsimplify(noise_covariance_factor(n, B, s)) * _sigma(n))
        for n, B in CASES
        for s in SCHEMES
    )
    ok = set(found) == {"without_replacement", "reshuffling"} and pkg
    return Evidence(ok, f"exact for {_fmt(found)}; sgdnoise.noise_covariance_factor agrees for all three schemes: {pkg}")


@register(
    key="ch1:prop1-steps",
    location="(8)–(11)",
    section="1.8.3",
    chapter=CH,
    claim=r"Proof of Prop. 1 (item 2): $\operatorname{Cov}[\xi] = \operatorname{Cov}[g_{\mathcal B}]$ (8), "
    "and the variance of the batch sum is the sum of the variances (9)→(10).",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="with replacement, the notes' setting for the proof; (8) and (11) hold for every scheme, the "
    "step (9)→(10) needs the independent indices of sampling with replacement",
    mutant={"holds_for": SCHEMES},
)
def _prop1_steps(holds_for=("with_replacement",)):
    def step8(n, B, s):
        G = _G(n)
        cov_gB = sy.covariance(lambda idx: sy.batch_mean(G, idx), sy.batch_distribution(n, B, s))
        return _noise_cov(n, B, s) - cov_gB

    def step10(n, B, s):
        G = _G(n)
        dist = sy.batch_distribution(n, B, s)
        per_index = sum(
            (sy.covariance(lambda idx, j=j: G[idx[j], :].T, dist) for j in range(B)), sp.zeros(D)
        )
        return _noise_cov(n, B, s) - per_index / B**2

    all8 = _schemes_where(step8)
    found = _schemes_where(step10)
    ok = set(all8) == set(SCHEMES) and set(found) == set(holds_for)
    return Evidence(ok, f"(8) exact for {_fmt(all8)}; (9)→(10) exact for {_fmt(found)}")


# ----------------------------------------------------------------------------- Prop. 1 (item 3)
def _mc_prop13(R: int = 4000, n: int = 10, d: int = 2, seed: int = 0):
    """E_D[tr Σ_emp(θ)] against (n-1)/n E_D[tr Σ_pop(θ)] at a fixed θ and at the fitted θ̂(D)."""
    from ..problems import lr_draw, lr_sigma_emp, lr_sigma_pop, lr_theta_star

    gen = torch.Generator().manual_seed(seed)
    X, y, theta_true, S = lr_draw(R, n, d, sigma=1.0, generator=gen)
    tr = lambda M: M.diagonal(dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    out = {}
    for name, th in (("fixed", torch.zeros(R, d, dtype=torch.float64)), ("fitted", lr_theta_star(X, y))):
        out[name] = tr(lr_sigma_emp(X, y, th)) - (n - 1) / n * tr(lr_sigma_pop(th, theta_true, S, 1.0))
    z = {}
    for name, t in out.items():
        z[name] = float(t.mean() / (t.std() / R**0.5))
    return z


@register(
    key="ch1:prop1-expected",
    location="Prop. 1 (item 3); §1.8.4 (3)",
    section="1.8.3, 1.8.4",
    chapter=CH,
    claim=r"$\mathbb E_D\big[\operatorname{Cov}_{\mathcal B}[\xi \mid D_n, \theta]\big] = "
    r"\frac1B\,\frac{n-1}{n}\,\Sigma_{\mathrm{pop}}(\theta)$, using $\mathbb E[\Sigma_{\mathrm{emp}}] "
    r"= \frac{n-1}{n}\Sigma_{\mathrm{pop}}$; it tends to $\Sigma_{\mathrm{pop}}/B$ as $n \to \infty$.",
    heading="Two sources of noise, and a hidden assumption",
    verdict="holds only if",
    statement=r"batches are drawn with replacement, samples are i.i.d., and $\theta$ is fixed independently of "
    r"$D_n$; at a $\theta$ fitted to the data it can fail (shown at the least-squares $\hat\theta$ of "
    "linear regression)",
    mutant={"factor": lambda n: sp.Integer(1)},
    method="sympy + simulation",
)
def _prop13(factor=lambda n: sp.Rational(n - 1, n), z_consistent: float = 4.0, z_reject: float = 6.0):
    rho = sp.Symbol("rho", real=True)
    for n in (2, 3, 4):
        G, mu, S, z = sy.population_model(n, D)
        E = sy.population_expect(sy.sigma_emp(G), z, S)
        if not sy.is_zero(E - factor(n) * S):
            return Evidence(False, f"E_D[Σ_emp] ≠ factor·Σ_pop at n = {n}")
        if not sy.is_zero(sy.population_expect(sy.sigma_emp(G), z, S, rho=rho) - (1 - rho) * factor(n) * S):
            return Evidence(False, f"correlated samples do not give (1-ρ)(n-1)/n Σ_pop at n = {n}")
    zs = _mc_prop13()
    ok = abs(zs["fixed"]) < z_consistent and abs(zs["fitted"]) > z_reject
    return Evidence(
        ok,
        f"E_D[Σ_emp] = (n-1)/n Σ_pop exact (n = 2, 3, 4, i.i.d.); linear regression n = 10, 4000 data sets: "
        f"z = {zs['fixed']:.1f} at fixed θ, z = {zs['fitted']:.1f} at the least-squares θ̂(D)",
    )


# ----------------------------------------------------------------------------- §1.8.5
@register(
    key="ch1:estimator",
    location="§1.8.5",
    section="1.8.5",
    chapter=CH,
    claim=r"$\hat\Sigma = \frac{B}{m-1}\sum_j (g_{\mathcal B_j} - \bar g)(g_{\mathcal B_j} - \bar g)^\top$ "
    r"estimates $\Sigma_{\mathrm{emp}}(\theta)$.",
    heading="Estimating the noise covariance from a few batches",
    verdict="holds only if",
    statement="the $m$ batches are independent and drawn with replacement; for independent without-replacement "
    r"batches $\mathbb E[\hat\Sigma] = \frac{n-B}{n-1}\Sigma_{\mathrm{emp}}$, and for $m \ge 2$ "
    r"batches of one reshuffled epoch $\mathbb E[\hat\Sigma] = \frac{n}{n-1}\Sigma_{\mathrm{emp}}$",
    mutant={"kappa": lambda n, B, s: 1},
)
def _estimator(kappa=estimator_expectation_factor):
    G = None

    def sigma_hat(batches, B):
        gs = [sy.batch_mean(G, idx) for idx in batches]
        m = len(gs)
        gbar = sum(gs, sp.zeros(D, 1)) / m
        return B * sum(((g - gbar) * (g - gbar).T for g in gs), sp.zeros(D)) / (m - 1)

    cases = [
        ("with_replacement", 3, 1, 2, lambda n, B, m: sy.independent_batches(n, B, m, "with_replacement")),
        ("with_replacement", 3, 2, 2, lambda n, B, m: sy.independent_batches(n, B, m, "with_replacement")),
        ("without_replacement", 4, 2, 2, lambda n, B, m: sy.independent_batches(n, B, m, "without_replacement")),
        ("without_replacement", 3, 2, 3, lambda n, B, m: sy.independent_batches(n, B, m, "without_replacement")),
        ("reshuffling", 4, 1, 2, sy.epoch_distribution),
        ("reshuffling", 4, 1, 4, sy.epoch_distribution),
        ("reshuffling", 4, 2, 2, sy.epoch_distribution),
    ]
    lines = []
    for scheme, n, B, m, dist in cases:
        G = _G(n)
        E = sy.expect(lambda batches: sigma_hat(batches, B), dist(n, B, m))
        k = sp.nsimplify(kappa(n, B, scheme))
        if not sy.is_zero(E - k * _sigma(n)):
            return Evidence(False, f"E[Σ̂] ≠ {k}·Σ_emp for {scheme} (n={n}, B={B}, m={m})")
        lines.append(f"{scheme.replace('_', ' ')} n={n} B={B} m={m}: {k}")
    unbiased_only_with = all(
        (sp.nsimplify(kappa(n, B, s)) == 1) == (s == "with_replacement") for s, n, B, m, _ in cases if B > 1 or s == "reshuffling"
    )
    return Evidence(unbiased_only_with, "E[Σ̂] = κ·Σ_emp exactly with κ = " + "; ".join(lines))


# ----------------------------------------------------------------------------- appendix (39)–(54)
@register(
    key="ch1:expansion",
    location="(39)–(44)",
    section="5.0.1",
    chapter=CH,
    claim=r"The batch noise $g_{\mathcal B} - g_n = \frac1B\sum_j (g_{I_j} - g_n)$ (the notes' "
    r"$\nu_{\mathrm{batch}}$, which is $-\xi$), and its outer product expands into the double sum "
    "(44).",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="",
    illustration=True,
    mutant={"scale": lambda n, B: sp.Rational(1, n)},
)
def _expansion(scale=lambda n, B: sp.Rational(1, B)):
    for n, B in CASES:
        G = _G(n)
        gn = sy.full_mean(G)
        for idx, _ in sy.batch_distribution(n, B, "with_replacement"):
            nu = sy.batch_mean(G, idx) - gn
            centred = [G[i, :].T - gn for i in idx]
            rhs42 = scale(n, B) * sum(centred, sp.zeros(D, 1))
            rhs44 = scale(n, B) ** 2 * sum((a * b.T for a in centred for b in centred), sp.zeros(D))
            if not (sy.is_zero(nu - rhs42) and sy.is_zero(nu * nu.T - rhs44)):
                return Evidence(False, f"(42)/(44) fail for the index tuple {idx} (n={n}, B={B})")
    return Evidence(True, "(42) and (44) are exact identities for every index tuple (n ∈ {3, 4}, B ≤ n)")


@register(
    key="ch1:cross-terms",
    location="(45)–(47); (52)–(54)",
    section="5.0.1",
    chapter=CH,
    claim=r"For $j \ne k$ the cross terms $\mathbb E[(g_{I_j} - g_n)(g_{I_k} - g_n)^\top]$ vanish, so the "
    r"covariance is $\Sigma_{\mathrm{emp}}/B$ (54).",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="with replacement, as the notes assume for (45)–(47); without replacement each cross term is "
    r"$-\Sigma_{\mathrm{emp}}/(n-1)$, which gives the factor $\frac{n-B}{n-1}$",
    mutant={"holds_for": SCHEMES},
)
def _cross(holds_for=("with_replacement",)):
    def cross(n, B, s):
        if B < 2:
            return sp.zeros(D)
        G = _G(n)
        gn = sy.full_mean(G)
        return sy.expect(lambda idx: (G[idx[0], :].T - gn) * (G[idx[1], :].T - gn).T, sy.batch_distribution(n, B, s))

    found = _schemes_where(cross)
    exact_wo = all(
        sy.is_zero(cross(n, B, "without_replacement") + _sigma(n) / (n - 1)) for n, B in CASES if B >= 2
    )
    ok = set(found) == set(holds_for) and exact_wo
    return Evidence(ok, f"cross terms vanish for {_fmt(found)}; without replacement they equal -Σ_emp/(n-1): {exact_wo}")


@register(
    key="ch1:diagonal",
    location="(48)–(51)",
    section="5.0.1",
    chapter=CH,
    claim=r"The diagonal terms $\mathbb E[(g_{I_j} - g_n)(g_{I_j} - g_n)^\top]$ equal "
    r"$\Sigma_{\mathrm{emp}}$.",
    heading="The covariance of the minibatch noise",
    verdict="holds",
    statement="",
    mutant={"holds_for": ("with_replacement",)},
)
def _diagonal(holds_for=SCHEMES):
    def diag(n, B, s):
        G = _G(n)
        gn = sy.full_mean(G)
        dist = sy.batch_distribution(n, B, s)
        return sp.Matrix.vstack(
            *[
                sy.expect(lambda idx, j=j: (G[idx[j], :].T - gn) * (G[idx[j], :].T - gn).T, dist) - _sigma(n)
                for j in range(B)
            ]
        )

    return _verdict_on_schemes(diag, holds_for, "diagonal term = Σ_emp")


@register(
    key="ch1:section6",
    location="§6",
    section="6",
    chapter=CH,
    claim=r"With replacement, $\operatorname{Cov}[\xi \mid \theta] = "
    r"\frac1B\,\frac{n-B}{n-1}\operatorname{Cov}_i[g_i]$.",
    heading="The covariance of the minibatch noise",
    verdict="wrong",
    statement=r"with replacement $\operatorname{Cov}[\xi \mid \theta] = \Sigma_{\mathrm{emp}}/B$; the factor "
    r"$\frac{n-B}{n-1}$ belongs to sampling without replacement",
    mutant={"with_formula": lambda n, B: sp.Rational(n - B, (n - 1) * B)},
)
def _section6(with_formula=lambda n, B: sp.Rational(1, B)):
    notes = lambda n, B: sp.Rational(n - B, (n - 1) * B)  # noqa: E731
    corrected = all(sy.is_zero(_noise_cov(n, B, "with_replacement") - with_formula(n, B) * _sigma(n)) for n, B in CASES)
    notes_fail = [
        (n, B) for n, B in CASES if not sy.is_zero(_noise_cov(n, B, "with_replacement") - notes(n, B) * _sigma(n))
    ]
    ok = corrected and notes_fail == [(n, B) for n, B in CASES if B >= 2]
    return Evidence(ok, f"with replacement Cov = Σ_emp/B exact: {corrected}; the §6 formula fails for every B ≥ 2 ({len(notes_fail)} of {len(CASES)} cases)")
