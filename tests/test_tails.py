import math

import numpy as np
import pytest
import scipy.stats as st
import torch
from scipy.integrate import simpson
from scipy.optimize import minimize_scalar

from sgdnoise.tails import (
    DEFAULT_LAWS,
    HillFit,
    hill,
    hill_auto,
    sample_law,
    stable_alpha,
    target_index,
    validation_table,
)

Z = 4.0  # Monte-Carlo tolerance, in standard errors (fixed seeds)
SIG = 2**-0.5  # scale of sgdnoise.sde.symmetric_stable in scipy's S1 parameterisation


def gen(seed):
    return torch.Generator().manual_seed(seed)


def within(draws, target, z=Z):
    a = np.asarray(draws, dtype=np.float64)
    se = a.std(ddof=1) / math.sqrt(a.size)
    assert abs(a.mean() - target) < z * se, f"mean {a.mean():.4f} vs target {target:.4f}, SE {se:.4f}"


# --- Hill -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [10, 999])
def test_hill_on_exact_pareto_has_mean_alpha_k_over_k_minus_1(k):
    # Rényi: the k log-spacings above X_(k) are i.i.d. Exp(α), so α̂_k = k/Gamma(k, α) and
    # E α̂_k = α k/(k-1) exactly. At k = 10 this separates the correct threshold X_(k) from the
    # off-by-one X_(k-1) (which would give α k/(k-2), 0.35 higher here; the SE is about 0.02).
    X = sample_law("pareto", 2.5, (2000, 1000), gen(0))
    est = [hill(r, k) for r in X]
    within(est, 2.5 * k / (k - 1))


def test_hill_equals_a_direct_scipy_pareto_mle():
    x = sample_law("stable", 1.3, 3000, gen(1)).numpy()
    top = np.sort(np.abs(x))[::-1]
    for k in (5, 50, 700):
        def nll(b):
            return -st.pareto.logpdf(top[:k], b, scale=top[k]).sum()

        mle = minimize_scalar(nll, bounds=(0.01, 50.0), method="bounded", options={"xatol": 1e-10}).x
        assert hill(x, k) == pytest.approx(mle, rel=1e-6)


def test_hill_vectorised_over_k_equals_scalar_calls():
    x = sample_law("student_t", 3.0, 1000, gen(2))
    ks = np.array([1, 2, 10, 500, 999])
    vec = hill(x, ks)
    assert vec.dtype == torch.float64 and vec.shape == (5,)
    torch.testing.assert_close(vec, torch.tensor([hill(x, int(k)) for k in ks], dtype=torch.float64))
    assert hill(x.numpy(), 10) == hill(-x, 10)  # numpy in; uses |x|
    torch.testing.assert_close(hill(x, torch.arange(1, 1000)), hill(x, list(range(1, 1000))))


def test_hill_auto_ks_distance_is_the_exact_ks_statistic():
    x = sample_law("stable", 1.5, 20000, gen(3))
    fit = hill_auto(x)
    assert isinstance(fit, HillFit) and fit.n == 20000 and 10 <= fit.k <= 10000
    assert fit.alpha == hill(x, fit.k)
    top = np.sort(np.abs(x.numpy()))[::-1]
    ks = st.kstest(top[: fit.k], st.pareto(b=fit.alpha, scale=top[fit.k]).cdf).statistic
    assert fit.ks_distance == pytest.approx(ks, rel=1e-9)
    small = hill_auto(x[:100], k_min=5, k_max=40)  # full integer grid
    assert 5 <= small.k <= 40


def test_hill_auto_recovers_pareto_index():
    X = sample_law("pareto", 2.5, (20, 100000), gen(4))
    fits = [hill_auto(r) for r in X]
    # exact Pareto: conditionally on k, E α̂_k = α k/(k-1), so undo that factor (no other bias)
    within([f.alpha * (f.k - 1) / f.k for f in fits], 2.5)


def _stable_abs_sf(x, a, z0=50.0):
    """P(|X| > x) for symmetric_stable: scipy below z0 = x/SIG, the 3-term tail series beyond
    (scipy's numerical sf underflows to 0 far out; the series' 4th term is < 1e-7 relative there)."""
    z = np.asarray(x, dtype=np.float64) / SIG
    j = np.arange(1, 4)[:, None]
    c = 2 / math.pi * (-1.0) ** (j + 1) / np.array([[1], [2], [6]]) * np.array([[math.gamma(i * a)] for i in (1, 2, 3)]) * np.sin(j * math.pi * a / 2)
    series = (c * np.maximum(z, z0) ** (-j * a)).sum(0)
    return np.where(z > z0, series, 2 * st.levy_stable.sf(np.minimum(z, z0), a, 0)), c[:, 0]


def _population_hill(u, a, z0=50.0, m=101):
    """α_pop(u) = S(u) / ∫_u^∞ S(x)/x dx: the limit of α̂_k given the threshold X_(k) = u."""
    t = np.linspace(0.0, math.log(z0 * SIG / u), m)
    S, c = _stable_abs_sf(u * np.exp(t), a, z0)
    j = np.arange(1, 4)
    return S[0] / (simpson(S, x=t) + (c * z0 ** (-j * a) / (j * a)).sum())


def test_hill_auto_on_stable_matches_alpha_up_to_the_second_order_tail_bias():
    # The stable tail is not exactly Pareto: P(|X|>x) = c1 x^-α + c2 x^-2α + ..., with c2 > 0 for
    # 1 < α < 2, so at a finite threshold u the Hill estimator targets the population value
    # α_pop(u) = S(u) / ∫_u^∞ S(x)/x dx > α (given X_(k) = u the k exceedances are i.i.d. from the law
    # above u, and E log(X/u) = 1/α_pop(u)). The minimum-KS rule picks thresholds where this bias is
    # several SEs (about 0.15 at n = 1e5), so the allowance is α_pop at the chosen threshold.
    a = 1.5
    X = sample_law("stable", a, (20, 100000), gen(5))
    fits = [hill_auto(r) for r in X]
    u = [np.sort(np.abs(r))[::-1][f.k] for r, f in zip(X.numpy(), fits)]  # the thresholds X_(k)
    pop = np.array([_population_hill(ui, a) for ui in u])
    assert (pop > a).all()  # theory: the bias is upward
    within(np.array([f.alpha for f in fits]) - pop, 0.0)


# --- stable_alpha --------------------------------------------------------------------------------


@pytest.mark.parametrize("law, param, target", [("stable", 1.2, 1.2), ("stable", 1.8, 1.8), ("gaussian", None, 2.0)])
def test_stable_alpha_recovers_the_stable_index(law, param, target):
    # For a strictly stable law Y_i =_d K1^{1/α} X, so 1/α̂ is exactly unbiased for 1/α: test 1/α̂.
    X = sample_law(law, param, (40, 10000), gen(6))
    est = stable_alpha(X)
    within(1.0 / est, 1.0 / target)
    within(est, target, z=Z + 1)  # α̂ itself: Jensen bias ≈ α³ Var(1/α̂) ≈ 0.3 SE here, hence +1
    within(1.0 / stable_alpha(X, K1=20), 1.0 / target)  # K1 = 20 ≠ K2 = 500: log K1, not log K2


def test_stable_alpha_rowwise_and_remainder():
    X = sample_law("stable", 1.5, (5, 1003), gen(7))
    rows = stable_alpha(X)
    assert rows.shape == (5,) and rows.dtype == torch.float64
    torch.testing.assert_close(rows, torch.tensor([stable_alpha(r) for r in X], dtype=torch.float64))
    # default K1 = round(sqrt(1003)) = 32, K2 = 31: the last 1003 - 992 = 11 samples are dropped
    assert stable_alpha(X[0]) == stable_alpha(X[0, :992].numpy(), K1=32)
    assert stable_alpha(X[0], K1=7) == stable_alpha(X[0, :1001], K1=7)


# --- laws -----------------------------------------------------------------------------------------


def test_student_t_sampler():
    x = sample_law("student_t", 5.0, 400000, gen(8))
    within(x**2, 5.0 / 3.0)  # Var t_5 = ν/(ν-2); E x^4 < ∞ for ν = 5, so the SE exists
    for nu in (1.5, 3.0):
        assert st.kstest(sample_law("student_t", nu, 20000, gen(9)).numpy(), st.t(nu).cdf).pvalue > 1e-3


def test_stable_and_pareto_samplers():
    x = sample_law("stable", 2.0, 200000, gen(10))
    within(x**2, 1.0)
    assert st.kstest(x[:20000].numpy(), st.norm.cdf).pvalue > 1e-3
    y = sample_law("stable", 1.5, 2000, gen(11)).numpy()
    assert st.kstest(y, st.levy_stable(1.5, 0, scale=SIG).cdf).pvalue > 1e-3
    p = sample_law("pareto", 2.5, 200000, gen(12))
    assert p.abs().min() >= 1.0
    within((p.abs() > 2.0).double(), 2.0**-2.5)
    within((p > 0).double(), 0.5)


def test_target_index():
    assert target_index("hill", "stable", 1.5) == 1.5 and target_index("hill_auto", "stable", 2.0) == math.inf
    assert target_index("hill", "gaussian", None) == math.inf and target_index("hill", "student_t", 3) == 3.0
    assert target_index("stable_alpha", "student_t", 3.0) == 2.0 and target_index("stable_alpha", "student_t", 1.5) == 1.5
    assert target_index("stable_alpha", "pareto", 2.5) == 2.0 and target_index("stable_alpha", "gaussian", None) == 2.0


# --- errors ---------------------------------------------------------------------------------------


def test_clear_errors():
    x = torch.randn(1000, generator=gen(13), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"k=0 must lie in 1\.\.n-1 = 1\.\.999"):
        hill(x, 0)
    with pytest.raises(ValueError, match=r"k=\[1000\] must lie in 1\.\.n-1 = 1\.\.999"):
        hill(x, [5, 1000])
    with pytest.raises(ValueError, match=r"k=2\.5 must be an int"):
        hill(x, 2.5)
    with pytest.raises(ValueError, match=r"k=5 reaches the exact zeros of \|x\|: only 3 values"):
        hill(torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0]), 5)
    with pytest.raises(ValueError, match=r"too few samples: n=1"):
        hill([1.0], 1)
    with pytest.raises(ValueError, match=r"too few samples: n=15; hill_auto needs n >= 2\*k_min = 20"):
        hill_auto(x[:15])
    with pytest.raises(ValueError, match=r"k_max=1000 must be an int in k_min\.\.n-1 = 10\.\.999"):
        hill_auto(x, k_max=1000)
    with pytest.raises(ValueError, match=r"too few samples: K=3"):
        stable_alpha(x[:3])
    bad = x.clone()
    bad[[3, 7]] = float("nan")
    for f in (lambda: hill(bad, 5), lambda: hill_auto(bad), lambda: stable_alpha(bad)):
        with pytest.raises(ValueError, match=r"x has 2 non-finite value\(s\)"):
            f()
    with pytest.raises(ValueError, match=r"K1=1 must be an int in 2\.\.K//2 = 2\.\.500"):
        stable_alpha(x, K1=1)
    with pytest.raises(ValueError, match=r"x has 1 exact zero"):
        stable_alpha(torch.cat([x[:99], torch.zeros(1, dtype=torch.float64)]), center=None)
    with pytest.raises(ValueError, match=r"center='mean'; valid values are 'median'"):
        stable_alpha(x, center="mean")
    with pytest.raises(ValueError, match=r"law name='cauchy' is unknown; valid laws are \('stable'"):
        sample_law("cauchy", 1.0, 10, gen(0))
    with pytest.raises(ValueError, match=r"stable param=2\.5 \(alpha\) must lie in \(0, 2\]"):
        sample_law("stable", 2.5, 10, gen(0))
    with pytest.raises(ValueError, match=r"student_t param=-1 \(tail index\)"):
        target_index("hill", "student_t", -1)
    with pytest.raises(ValueError, match=r"estimator='moment' is unknown"):
        target_index("moment", "gaussian", None)
    with pytest.raises(ValueError, match=r"must have 1 or 2 dimension"):
        stable_alpha(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match=r"x has only 0 nonzero value\(s\) among n=10; .* at least 2 nonzero"):
        hill(torch.zeros(10), 1)
    with pytest.raises(ValueError, match=r"x has only 1 nonzero value\(s\) among n=100"):
        hill_auto(torch.cat([torch.ones(1), torch.zeros(99)]))


def test_stable_alpha_rejects_zero_block_sums():
    signs = torch.randint(2, (1000,), generator=gen(0)) * 2 - 1.0  # K1 = 32 (even): sums of ±1 can be 0
    with pytest.raises(ValueError, match=r"\d+ of the block sums Y \(K1=32 samples each\) are exactly zero"):
        stable_alpha(signs, center=None)
    with pytest.raises(ValueError, match=r"block sums Y \(K1=2 samples each\)"):
        stable_alpha(torch.tensor([[1.0, -1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]]), K1=2, center=None)


@pytest.mark.parametrize("mu", [0.3, 3.0])
def test_stable_alpha_centres_uncentred_data(mu):
    """A shifted Gaussian is not heavy-tailed: median-centring the shifted data gives, on average over
    400 rows, the estimate of the same data unshifted and uncentred within 4 SE (paired SE from the rows'
    differences), while the uncentred estimate of the shifted data reads far lower."""
    X = torch.randn((400, 2500), generator=gen(21), dtype=torch.float64)
    diff = stable_alpha(X + mu) - stable_alpha(X, center=None)
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / 20
    assert float(stable_alpha(X + mu, center=None).mean()) < 1.9  # the failing variant: the old behaviour


# --- validation table -----------------------------------------------------------------------------


def test_validation_table():
    df = validation_table((1000, 5000), 10, gen(14))
    assert list(df.columns) == ["law", "param", "n", "estimator", "target", "mean", "bias", "sd", "rmse", "se"]
    assert len(df) == len(DEFAULT_LAWS) * 2 * 2
    inf = np.isinf(df.target)
    assert df.bias[inf].isna().all() and df.rmse[inf].isna().all() and df.bias[~inf].notna().all()
    np.testing.assert_allclose(df.se, df.sd / math.sqrt(10))
    g = df[(df.law == "gaussian") & (df.estimator == "stable_alpha")]
    assert (abs(g["mean"] - 2.0) < Z * g.se).all()
