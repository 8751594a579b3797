"""Exact weak errors when a hypothesis of the weak-approximation theorem fails (``sgdnoise.weak``), each checked
against an independent computation: numerical integration, a closed form, or enumeration of every sample path."""

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, stats

from sgdnoise import weak


@pytest.mark.parametrize("nu", [2.5, 3.5, 6.0])
def test_student_t_charfn_matches_integration(nu):
    s = math.sqrt((nu - 2) / nu)
    for u in (0.0, 0.3, 1.7):
        val = integrate.quad(lambda x: math.cos(u * x) * stats.t.pdf(x / s, nu) / s, -np.inf, np.inf, limit=400)[0]
        assert abs(weak.student_t_charfn(np.array([u]), nu)[0] - val) < 1e-7


def test_cos_moment_with_gaussian_noise_is_the_gaussian_closed_form():
    eta, h, th0, T = 0.05, 1.3, 0.7, 1.0
    K = round(T / eta)
    a = 1 - eta * h
    var = eta**2 * np.sum(a ** (2 * np.arange(K)))
    exact = math.cos(a**K * th0) * math.exp(-var / 2)
    assert abs(weak.cos_moment_sgd(eta, h, th0, T, weak.gaussian_charfn) - exact) < 1e-14


def _enumerate(eta, h, b, th0, epochs, scheme):
    """E θ² over every sequence of draws: all N^K index sequences, or all permutations per epoch."""
    N = len(b)
    a = 1 - eta * h

    def run(seq):
        th = th0
        for i in seq:
            th = a * th + eta * h * b[i]
        return th

    if scheme == "with_replacement":
        seqs = list(itertools.product(range(N), repeat=N * epochs))
    else:
        perms = list(itertools.permutations(range(N)))
        seqs = [sum(p, ()) for p in itertools.product(perms, repeat=epochs)]
    return float(np.mean([run(s) ** 2 for s in seqs]))


@pytest.mark.parametrize("scheme", ["with_replacement", "reshuffle"])
def test_second_moment_matches_enumeration(scheme):
    b = np.array([-1.5, 0.2, 1.3])
    b = b - b.mean()
    eta = 1 / 6
    exact = _enumerate(eta, 0.9, b, 2.0, 2, scheme)
    assert abs(weak.second_moment_quadratic(eta, 0.9, b, 2.0, 6 * eta, scheme) - exact) < 1e-12
    # the two schemes differ (the check can tell them apart)
    other = "reshuffle" if scheme == "with_replacement" else "with_replacement"
    assert abs(weak.second_moment_quadratic(eta, 0.9, b, 2.0, 6 * eta, other) - exact) > 1e-4


def test_cubic_lower_bound_grows_as_eta_shrinks():
    lb = [weak.cubic_second_moment_lower_bound(e, 1.0) for e in (0.2, 0.1, 0.05)]
    assert lb[0] < 0 < 8000 < lb[1] < lb[2]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="nu"):
        weak.student_t_charfn(np.array([1.0]), 2.0)
    with pytest.raises(ValueError, match="whole number"):
        weak.cos_moment_sgd(0.3, 1.0, 1.0, 1.0, weak.gaussian_charfn)
    with pytest.raises(ValueError, match="offsets"):
        weak.second_moment_quadratic(0.125, 1.0, [1.0, 2.0], 1.0, 1.0, "reshuffle")
    with pytest.raises(ValueError, match="epochs"):
        weak.second_moment_quadratic(0.125, 1.0, [-1.0, 0.0, 1.0], 1.0, 1.0, "reshuffle")
    with pytest.raises(ValueError, match="scheme"):
        weak.second_moment_quadratic(0.125, 1.0, [-1.0, 1.0], 1.0, 1.0, "shuffle_once")


def test_sgd_escape_time_on_the_grid_matches_monte_carlo():
    eta, sigma = 0.2, math.sqrt(2)
    exact = weak.mean_escape_time_sgd(eta, sigma, barrier=1.0) / eta  # in steps
    rng = np.random.default_rng(11)
    th = np.full(4000, -1.0)
    steps = np.zeros(4000)
    alive = np.ones(4000, bool)
    for k in range(1, 3001):
        th[alive] = th[alive] - eta * (th[alive] ** 3 - th[alive] + sigma * rng.standard_normal(alive.sum()))
        crossed = alive & (th >= 1.0)
        steps[crossed] = k
        alive &= ~crossed
        if not alive.any():
            break
    assert not alive.any()
    se = steps.std(ddof=1) / math.sqrt(len(steps))
    assert abs(steps.mean() - exact) < 4 * se, (steps.mean(), se, exact)


def test_sde_escape_time_against_the_pure_diffusion_limit():
    """With a very large diffusion the potential barely matters: τ → ((b − l)² − (a − l)²)/(2D)."""
    D = 400.0
    eta = 2 * D / 2.0  # σ² = 2: D = η
    tau = weak.mean_escape_time_sde(eta, math.sqrt(2), start=-1.0, barrier=1.0, left=-3.0)
    assert abs(tau / ((4**2 - 2**2) / (2 * eta)) - 1) < 0.01
