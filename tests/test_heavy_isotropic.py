"""Heavy-tailed iterates in d dimensions (issue 17, item 5): the one-column reduction, its indices, the SDE's
index, and the d-dimensional streaming simulation, each against an independent computation."""

import math

import numpy as np
import pytest
import torch

from sgdnoise import heavy
from sgdnoise.sgd import DivergenceError


@pytest.mark.parametrize("eta, B", [(0.3, 1), (0.7, 1), (0.5, 4)])
def test_one_dimension_is_the_one_dimensional_index(eta, B):
    assert heavy.kesten_index_isotropic(eta, B, 1) == pytest.approx(heavy.kesten_index(eta, B), rel=1e-8)
    assert heavy.log_multiplier_mean_isotropic(eta, B, 1) == pytest.approx(heavy.log_multiplier_mean(eta, B), rel=1e-8)
    assert heavy.sde_tail_index_isotropic(eta, B, 1) == heavy.sde_tail_index(eta, B)


@pytest.mark.parametrize("B, d", [(1, 10), (3, 7)])
def test_second_moment_of_the_column_is_exact(B, d):
    """E‖Me₁‖² = 1 − 2η + η²(B + d + 1)/B for M = I − (η/B)Σ a aᵀ; with χ²_d in place of χ²_{d−1} (the
    failing variant: the column's own entry counted twice) it would be larger by η²/B."""
    eta = 0.1
    c = eta / B
    got = heavy._isotropic_expectation(2.0, c, B, d)
    exact = 1 - 2 * eta + eta**2 * (B + d + 1) / B
    assert got == pytest.approx(exact, rel=1e-9)
    assert abs(got - (exact + eta**2 / B)) > 1e-4


def test_the_column_reduction_matches_the_matrix_in_law():
    """E‖(I − (η/B) Σ a aᵀ) e₁‖³ computed from the matrices themselves, by Monte Carlo, against the quadrature."""
    rng = np.random.default_rng(0)
    B, d, eta, N = 2, 5, 0.3, 400_000
    a = rng.standard_normal((N, B, d))
    col = -eta / B * (a * a[:, :, :1]).sum(1)  # -(η/B) Σ a a₁ : the first column of M - I
    col[:, 0] += 1
    r3 = np.linalg.norm(col, axis=1) ** 3
    quad = heavy._isotropic_expectation(3.0, eta / B, B, d)
    assert abs(r3.mean() - quad) < 4 * r3.std() / math.sqrt(N), (r3.mean(), quad)


def test_divergence_rate_is_where_the_log_mean_vanishes_and_the_index_collapses():
    eta_star = heavy.divergence_lr_isotropic(1, 10)
    assert abs(heavy.log_multiplier_mean_isotropic(eta_star, 1, 10)) < 1e-9
    assert heavy.kesten_index_isotropic(0.97 * eta_star, 1, 10) < heavy.kesten_index_isotropic(0.9 * eta_star, 1, 10)
    with pytest.raises(ValueError, match="no stationary law"):
        heavy.kesten_index_isotropic(1.02 * eta_star, 1, 10)


def test_sde_index_in_d_dimensions_and_its_refusal():
    assert heavy.sde_tail_index_isotropic(0.02, 1, 100) == pytest.approx(1 + 50 - 49.5)
    with pytest.raises(ValueError, match="no stationary law"):
        heavy.sde_tail_index_isotropic(0.05, 1, 100)
    with pytest.raises(ValueError, match="d="):
        heavy.sde_tail_index_isotropic(0.05, 1, 0)


def test_streaming_simulation_has_the_exact_stationary_second_moment():
    """u ← Mu + q with E‖q‖² = η²d/B and isotropy give E‖u‖² = η²d / (B (1 − E‖Me₁‖²)) at stationarity."""
    eta, B, d = 0.1, 2, 5
    u = heavy.streaming_lr(eta, B, d, chains=4000, steps=300, generator=torch.Generator().manual_seed(0))
    sq = (u**2).sum(1)
    m2 = 1 - 2 * eta + eta**2 * (B + d + 1) / B
    exact = eta**2 * d / (B * (1 - m2))
    assert abs(float(sq.mean()) - exact) < 4 * float(sq.std()) / math.sqrt(sq.numel()), (float(sq.mean()), exact)


def test_streaming_simulation_reports_divergence():
    with pytest.raises(DivergenceError, match="d=10"):
        heavy.streaming_lr(1.0, 1, 10, chains=10, steps=2000, generator=torch.Generator().manual_seed(0))


def test_dimension_study_refuses_inconsistent_configurations():
    from sgdnoise.experiments import chapter4

    base = dict(dims=[10], chains=[100], fractions=[0.9], B=1, steps_per_efold=8.0, max_steps=10, groups=5,
                k_frac=0.01, seed=0)
    with pytest.raises(ValueError, match="one entry per dimension"):
        chapter4.iterate_tails_by_dimension(**{**base, "chains": [100, 100]})
    with pytest.raises(ValueError, match="multiple of groups"):
        chapter4.iterate_tails_by_dimension(**{**base, "chains": [101]})
    with pytest.raises(ValueError, match="eta_stars"):
        chapter4.iterate_tails_by_dimension(**base, theory=False)


def test_dimension_study_live_configuration_simulates_without_quadrature():
    from sgdnoise.experiments import chapter4

    out = chapter4.iterate_tails_by_dimension(dims=[10], chains=[500], fractions=[0.9], B=1, steps_per_efold=8.0,
                                              max_steps=50, groups=5, k_frac=0.01, seed=0, theory=False,
                                              eta_stars=[0.1798885694236108])
    (row,) = out["rows"]
    assert row["kesten"] is None and row["sde"] is None and row["steps"] == 50
    assert math.isfinite(row["hill"]) and row["hill_se"] > 0
