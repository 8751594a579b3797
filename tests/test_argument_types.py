"""Wrong argument types fail at once, with an error that names the argument (issue 23).

A probe passed wrong types to every argument of the public API: ``None``, ``'abc'``, ``[1.0, 2.0]``,
``2.5`` where an int is expected, ``torch.tensor(3.0)``, ``{}`` and ``np.ones(3)``. The cases below are
the ones that failed from inside torch, numpy or sympy, or with a message that did not name the argument
(``'<' not supported between 'NoneType' and 'int'``, ``the truth value of an array is ambiguous``,
``unhashable type: 'list'``, sympy's ``None is not an integer``…), and the ones that were accepted with a
surprising meaning (a flag taking ``'abc'``, ``sizes={}`` giving an empty table). Each must now raise a
``TypeError`` or ``ValueError`` from the package's own checks, whose message contains the argument's name.
"""

import re
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch

import sgdnoise
from sgdnoise import current as C
from sgdnoise import curvature as CV
from sgdnoise import diagnostics as D
from sgdnoise import exact as E
from sgdnoise import fokker_planck as FP
from sgdnoise import gradients as GR
from sgdnoise import heavy as H
from sgdnoise import noise as N
from sgdnoise import problems as PR
from sgdnoise import sampling as SA
from sgdnoise import sde as SDE
from sgdnoise import sgd as SG
from sgdnoise import symbolic as SY
from sgdnoise import tails as T

BAD = {"N": None, "S": "abc", "L": [1.0, 2.0], "F": 2.5, "T": torch.tensor(3.0), "D": {}, "A": np.ones(3)}
KIND = {"N": "None", "S": "str", "L": "list", "F": "float", "T": "tensor0d", "D": "dict", "A": "ndarray"}
ALL = "NSLFTDA"
PACKAGE = Path(sgdnoise.__file__).parent
WR = "with_replacement"


def gen():
    return torch.Generator().manual_seed(0)


# ----------------------------------------------------------------------------- valid arguments the cases vary one of
P = PR.linear_regression(20, 3, seed=0)
TH = P.theta()
G = GR.per_sample_grads(P.model, P.loss_fn, P.X, P.y)
K = G @ G.T
W = torch.full((20,), 0.05, dtype=torch.float64)
BT = SA.sample_batches(20, 4, 5, WR, gen())
TH0 = torch.zeros(2, 3, dtype=torch.float64)
XL = torch.randn(6, 2, generator=gen(), dtype=torch.float64)  # exact moments: a small linear-regression data set
YL = torch.randn(6, generator=gen(), dtype=torch.float64)
TL = torch.zeros(2, dtype=torch.float64)
PATHS = np.random.default_rng(0).standard_normal((3, 20, 2))
EDGES = np.linspace(-2, 2, 4)
XI = torch.randn(60, generator=gen(), dtype=torch.float64)
U = torch.eye(3, dtype=torch.float64)[:, :2]
A0 = [0.1, -0.3, 0.5, 0.2]


def drift1(x):
    return -x


def diff1(x):
    return 0.5 * np.ones_like(x)


def drift2(X, Y):
    return -X, -Y


def diff2(X, Y):
    return 0.5, 0.0, 0.5


GS = SY.gradient_symbols(3, 2)
DIST = SY.batch_distribution(3, 1, WR)
GP, MU, SP_S, Z = SY.population_model(2, 2)


def mean_of(idx):
    return SY.batch_mean(GS, idx)


def em(**kw):
    args = dict(dt=0.1, steps=3, noise_dim=2, generator=gen()) | kw
    return SDE.euler_maruyama(lambda x: -x, lambda x, dW: dW, torch.zeros(2, 2, dtype=torch.float64), **args)


def sde(**kw):
    return SDE.sgd_sde(P, kw.pop("theta0", TH0), **(dict(eta=0.1, B=4, dt=0.1, steps=1, generator=gen()) | kw))


def chains(**kw):
    return SG.run_chains(P, kw.pop("theta0", TH0), **(dict(eta=0.05, B=4, steps=3, generator=gen()) | kw))


def streaming(**kw):
    args = dict(chains=4, steps=3, rng=np.random.default_rng(0)) | kw
    return H.streaming_lr_1d(0.1, 4, **args)


def escape(fn, **kw):
    steps = "max_steps" if fn is H.double_well_escape else "steps"
    return fn(kw.pop("a", A0), **(dict(eta=0.1, B=2, chains=3, generator=gen(), **{steps: 3}) | kw))


def problem(**kw):
    args = dict(name="p", X=P.X, y=P.y, model=P.model, loss_fn=P.loss_fn) | kw
    return PR.Problem(**args)


# ----------------------------------------------------------------------------- the table: module, function, argument, call, kinds
CASES = [
    # current
    ("current", "binned_current", "paths", lambda v: C.binned_current(v, 0.1, EDGES, EDGES), "SD"),
    ("current", "binned_current", "dt", lambda v: C.binned_current(PATHS, v, EDGES, EDGES), "NSDLA"),
    ("current", "binned_current", "x_edges", lambda v: C.binned_current(PATHS, 0.1, v, EDGES), "SD"),
    ("current", "binned_current", "y_edges", lambda v: C.binned_current(PATHS, 0.1, EDGES, v), "SD"),
    ("current", "antisymmetric_lag_covariance", "paths", lambda v: C.antisymmetric_lag_covariance(v, 0.1), "SD"),
    ("current", "antisymmetric_lag_covariance", "dt", lambda v: C.antisymmetric_lag_covariance(PATHS, v), "NSDLA"),
    # fokker_planck
    ("fokker_planck", "stationary_1d", "drift", lambda v: FP.stationary_1d(v, diff1, -2, 2, 16), ALL),
    ("fokker_planck", "stationary_1d", "diffusion", lambda v: FP.stationary_1d(drift1, v, -2, 2, 16), ALL),
    ("fokker_planck", "stationary_1d", "lo", lambda v: FP.stationary_1d(drift1, diff1, v, 2, 16), "NSDLA"),
    ("fokker_planck", "stationary_1d", "hi", lambda v: FP.stationary_1d(drift1, diff1, -2, v, 16), "NSDLA"),
    ("fokker_planck", "stationary_2d", "drift", lambda v: FP.stationary_2d(v, diff2, ((-2, 2), (-2, 2)), (8, 8)), ALL),
    ("fokker_planck", "stationary_2d", "diffusion",
     lambda v: FP.stationary_2d(drift2, v, ((-2, 2), (-2, 2)), (8, 8)), ALL),
    ("fokker_planck", "stationary_2d", "box[0][0]",
     lambda v: FP.stationary_2d(drift2, diff2, ((v, 2), (-2, 2)), (8, 8)), ALL),
    # diagnostics
    ("diagnostics", "noise_scale_from_gram", "K", lambda v: D.noise_scale_from_gram(v), "NSLFD"),
    ("diagnostics", "noise_scale_two_batch", "B_small",
     lambda v: D.noise_scale_two_batch(G, v, 5, 4, gen()), ALL),
    ("diagnostics", "noise_scale_two_batch", "B_big", lambda v: D.noise_scale_two_batch(G, 2, v, 4, gen()), ALL),
    ("diagnostics", "autocorrelation", "center", lambda v: D.autocorrelation(XI, 3, center=v), ALL),
    ("diagnostics", "noise_top_eigs", "K", lambda v: D.noise_top_eigs(G, 2, K=v), "SLFD"),
    ("diagnostics", "noise_top_eigs", "method", lambda v: D.noise_top_eigs(G, 2, method=v), "A"),
    ("diagnostics", "noise_top_eigs", "tol", lambda v: D.noise_top_eigs(G, 2, tol=v), "NSLDA"),
    ("diagnostics", "noise_top_eigs", "tol", lambda v: D.noise_top_eigs(G, 2, method="lanczos", tol=v), "NSLDA"),
    ("diagnostics", "trace_h_sigma", "theta", lambda v: D.trace_h_sigma(P, v, G, 5, gen(), probes=3), "NSLFDA"),
    # exact
    ("exact", "sgd_moment_operator", "scheme", lambda v: E.sgd_moment_operator(XL, YL, eta=0.1, B=2, scheme=v), "A"),
    ("exact", "sgd_moments", "scheme", lambda v: E.sgd_moments(XL, YL, TL, eta=0.1, B=2, steps=2, scheme=v), "A"),
    ("exact", "sgd_stationary_moments", "scheme",
     lambda v: E.sgd_stationary_moments(XL, YL, eta=0.1, B=2, scheme=v), "A"),
    ("exact", "sde_moments", "noise", lambda v: E.sde_moments(XL, YL, TL, eta=0.1, B=2, times=[1.0], noise=v), ALL),
    ("exact", "initial_moments", "theta0", lambda v: E.initial_moments(v), ALL),
    # gradients
    ("gradients", "check_loss_contract", "model", lambda v: GR.check_loss_contract(v, P.loss_fn, P.X, P.y), ALL),
    ("gradients", "per_sample_grads", "method", lambda v: GR.per_sample_grads(P.model, P.loss_fn, P.X, P.y, method=v),
     "A"),
    ("gradients", "centred_gram_lower", "block_rows",
     lambda v: GR.centred_gram_lower(P.model, P.loss_fn, P.X, P.y, block_rows=v), ALL),
    ("gradients", "flat_params", "model", lambda v: GR.flat_params(v), ALL),
    ("gradients", "num_params", "model", lambda v: GR.num_params(v), ALL),
    ("gradients", "set_flat_params", "model", lambda v: GR.set_flat_params(v, TH), ALL),
    ("gradients", "set_flat_params", "theta", lambda v: GR.set_flat_params(P.model, v), "NSLFDA"),
    ("gradients", "per_sample_losses", "out", lambda v: GR.per_sample_losses(P.loss_fn, v, P.y), "T"),
    ("gradients", "per_sample_losses", "y", lambda v: GR.per_sample_losses(P.loss_fn, P.model(P.X), v), "NSLFDT"),
    ("gradients", "check_per_sample_model", "model", lambda v: GR.check_per_sample_model(v), ALL),
    # noise
    ("noise", "batch_gradients", "batches", lambda v: N.batch_gradients(G, v), "NSLFD"),
    ("noise", "batch_noise", "G", lambda v: N.batch_noise(v, BT), "NSLFDA"),
    ("noise", "batch_noise", "batches", lambda v: N.batch_noise(G, v), "NSLFD"),
    ("noise", "batch_weights", "batches", lambda v: N.batch_weights(v, 20), "NSLFD"),
    ("noise", "batch_weights", "n", lambda v: N.batch_weights(BT, v), ALL),
    ("noise", "batch_weights", "dtype", lambda v: N.batch_weights(BT, 20, v), ALL),
    ("noise", "noise_sq_norms_from_gram", "K", lambda v: N.noise_sq_norms_from_gram(v, BT), "NSLFD"),
    ("noise", "noise_sq_norms_from_gram", "batches", lambda v: N.noise_sq_norms_from_gram(K, v), "NSLFD"),
    ("noise", "estimate_noise_covariance", "batch_grads", lambda v: N.estimate_noise_covariance(v, 4), ALL),
    ("noise", "noise_spectrum", "K", lambda v: N.noise_spectrum(v), "NSLFD"),
    ("noise", "noise_spectrum", "centered", lambda v: N.noise_spectrum(K, centered=v), ALL),
    ("noise", "effective_rank", "eigenvalues", lambda v: N.effective_rank(v), "NSD"),
    ("noise", "noise_trace_scan", "batch_sizes", lambda v: N.noise_trace_scan(K, v, WR, 3, gen()), ALL),
    ("noise", "loglog_slope", "x", lambda v: N.loglog_slope(v, [1.0, 0.5, 0.3, 0.2]), "SD"),
    ("noise", "loglog_slope", "y", lambda v: N.loglog_slope([1.0, 2.0, 3.0, 4.0], v), "SD"),
    ("noise", "loglog_slope_ci", "x", lambda v: N.loglog_slope_ci(v, [1.0, 0.5, 0.3, 0.2], 0.01), "SD"),
    ("noise", "loglog_slope_ci", "y", lambda v: N.loglog_slope_ci([1.0, 2.0, 3.0, 4.0], v, 0.01), "SD"),
    ("noise", "loglog_slope_ci", "yerr", lambda v: N.loglog_slope_ci([1.0, 2.0, 3.0, 4.0], [1.0, 0.5, 0.3, 0.2], v),
     "NSD"),
    ("noise", "loglog_slope_ci", "level",
     lambda v: N.loglog_slope_ci([1.0, 2.0, 3.0, 4.0], [1.0, 0.5, 0.3, 0.2], 0.01, level=v), "NSLDA"),
    # problems
    ("problems", "lr_draw", "sigma", lambda v: PR.lr_draw(2, 5, 3, sigma=v, generator=gen()), "NSLDA"),
    ("problems", "lr_draw", "S", lambda v: PR.lr_draw(2, 5, 3, sigma=0.1, S=v, generator=gen()), "SLFDA"),
    ("problems", "lr_draw", "theta_true", lambda v: PR.lr_draw(2, 5, 3, sigma=0.1, theta_true=v, generator=gen()),
     "SLFDA"),
    ("problems", "lr_draw", "dtype", lambda v: PR.lr_draw(2, 5, 3, sigma=0.1, generator=gen(), dtype=v), ALL),
    ("problems", "lr_per_sample_grads", "X", lambda v: PR.lr_per_sample_grads(v, P.y, TH), "NSLFD"),
    ("problems", "lr_per_sample_grads", "y", lambda v: PR.lr_per_sample_grads(P.X, v, TH), "NSLFD"),
    ("problems", "lr_per_sample_grads", "theta", lambda v: PR.lr_per_sample_grads(P.X, P.y, v), "NSLFD"),
    ("problems", "lr_sigma_emp", "X", lambda v: PR.lr_sigma_emp(v, P.y, TH), "NSLFD"),
    ("problems", "lr_sigma_emp", "y", lambda v: PR.lr_sigma_emp(P.X, v, TH), "NSLFD"),
    ("problems", "lr_sigma_emp", "theta", lambda v: PR.lr_sigma_emp(P.X, P.y, v), "NSLFD"),
    ("problems", "lr_theta_star", "X", lambda v: PR.lr_theta_star(v, P.y), "NSLFD"),
    ("problems", "lr_theta_star", "y", lambda v: PR.lr_theta_star(P.X, v), "NSLFD"),
    ("problems", "lr_sigma_pop", "theta", lambda v: PR.lr_sigma_pop(v, P.theta_true, P.S, 0.5), ALL),
    ("problems", "lr_sigma_pop", "theta_true", lambda v: PR.lr_sigma_pop(TH, v, P.S, 0.5), ALL),
    ("problems", "lr_sigma_pop", "S", lambda v: PR.lr_sigma_pop(TH, P.theta_true, v, 0.5), ALL),
    ("problems", "lr_sigma_pop", "sigma", lambda v: PR.lr_sigma_pop(TH, P.theta_true, P.S, v), "NSLDA"),
    ("problems", "half_squared_error", "output", lambda v: PR.half_squared_error(v, P.y), "NSLFDT"),
    ("problems", "half_squared_error", "target", lambda v: PR.half_squared_error(P.y, v), "NSLFDT"),
    ("problems", "cross_entropy", "output", lambda v: PR.cross_entropy(v, torch.zeros(3, dtype=torch.long)), ALL),
    ("problems", "cross_entropy", "target", lambda v: PR.cross_entropy(torch.zeros(3, 4), v), ALL),
    ("problems", "linear_regression", "sigma", lambda v: PR.linear_regression(10, 2, sigma=v), "NSLDA"),
    ("problems", "linear_regression", "S", lambda v: PR.linear_regression(10, 2, S=v), "SLFDA"),
    ("problems", "linear_regression", "theta_true", lambda v: PR.linear_regression(10, 2, theta_true=v), "SLFDA"),
    ("problems", "linear_regression", "seed", lambda v: PR.linear_regression(10, 2, seed=v), ALL),
    ("problems", "linear_regression", "dtype", lambda v: PR.linear_regression(10, 2, dtype=v), "N"),
    ("problems", "mlp", "widths", lambda v: PR.mlp(v, generator=gen()), "NFT"),
    ("problems", "mlp", "activation", lambda v: PR.mlp([2, 3, 1], activation=v, generator=gen()), ALL),
    ("problems", "mlp", "dtype", lambda v: PR.mlp([2, 3, 1], generator=gen(), dtype=v), "NSLDA"),
    ("problems", "digits_mlp", "seed", lambda v: PR.digits_mlp(seed=v, n=20, hidden=4), ALL),
    ("problems", "digits_mlp", "hidden", lambda v: PR.digits_mlp(n=20, hidden=v), ALL),
    ("problems", "digits_mlp", "dtype", lambda v: PR.digits_mlp(n=20, hidden=4, dtype=v), "N"),
    ("problems", "digits_mlp", "device", lambda v: PR.digits_mlp(n=20, hidden=4, device=v), "SLFTDA"),
    ("problems", "Problem", "name", lambda v: problem(name=v), "NLFTDA"),
    ("problems", "Problem", "info", lambda v: problem(info=v), "NSLFTA"),
    # sampling
    ("sampling", "check_generator", "name", lambda v: SA.check_generator(1, v), "NLFTDA"),
    # sgd
    ("sgd", "train_sgd", "snapshot_at", lambda v: SG.train_sgd(P, eta=0.05, B=4, steps=3, generator=gen(),
                                                               snapshot_at=v), "FTDA"),
    ("sgd", "run_chains", "theta0", lambda v: chains(theta0=v), "NSLFDA"),
    ("sgd", "run_chains", "record_steps", lambda v: chains(record_steps=v), "FT"),
    ("sgd", "run_chains", "record_loss", lambda v: chains(record_loss=v), ALL),
    ("sgd", "run_chains", "record_noise", lambda v: chains(record_noise=v), ALL),
    ("sgd", "flat_grad_fn", "in_dims", lambda v: SG.flat_grad_fn(P, v), ALL),
    ("sgd", "flat_loss_fn(problem)", "theta", lambda v: SG.flat_loss_fn(P)(v, P.X, P.y, W), ALL),
    ("sgd", "flat_loss_fn(problem)", "w", lambda v: SG.flat_loss_fn(P)(TH, P.X, P.y, v), "NSLDA"),
    ("sgd", "linear_regression_chains", "theta0",
     lambda v: SG.linear_regression_chains(P.X, P.y, v, eta=0.05, B=4, steps=3, generator=gen()), "NSLFDA"),
    ("sgd", "check_bounded", "theta", lambda v: SG.check_bounded(v, 1e8, "x {size}"), "NSLFDA"),
    ("sgd", "check_bounded", "what", lambda v: SG.check_bounded(TH0 + 1e9, 1e8, v), "NLFTDA"),
    ("sgd", "parameter_batch", "problem", lambda v: SG.parameter_batch(v, TH0), ALL),
    ("sgd", "parameter_batch", "theta0", lambda v: SG.parameter_batch(P, v), "NSLFDA"),
    ("sgd", "parameter_batch", "letter", lambda v: SG.parameter_batch(P, TH0, v), "NLFTDA"),
    # sde
    ("sde", "symmetric_stable", "shape", lambda v: SDE.symmetric_stable(v, 1.5, gen()), ALL),
    ("sde", "symmetric_stable", "dtype", lambda v: SDE.symmetric_stable(4, 1.5, gen(), dtype=v), ALL),
    ("sde", "symmetric_stable", "device", lambda v: SDE.symmetric_stable(4, 1.5, gen(), device=v), "SLFTDA"),
    ("sde", "euler_maruyama", "noise_dim", lambda v: em(noise_dim=v), ALL),
    ("sde", "euler_maruyama", "generator", lambda v: em(generator=v), ALL),
    ("sde", "euler_maruyama", "increments", lambda v: em(increments=v), "SLFD"),
    ("sde", "euler_maruyama", "driver", lambda v: em(driver=v), "A"),
    ("sde", "euler_maruyama", "alpha", lambda v: em(alpha=v), ALL),
    ("sde", "euler_maruyama", "alpha", lambda v: em(driver="alpha_stable", alpha=v), "NSLDA"),
    ("sde", "euler_maruyama", "record_steps", lambda v: em(record_steps=v), "FT"),
    ("sde", "sgd_sde", "theta0", lambda v: sde(theta0=v), "NSLFDA"),
    ("sde", "sgd_sde", "covariance", lambda v: sde(covariance=v), "A"),
    ("sde", "sgd_sde", "theta_ref", lambda v: sde(theta_ref=v), "SLFTDA"),
    ("sde", "sgd_sde", "theta_ref", lambda v: sde(covariance="constant", theta_ref=v), "SLFTDA"),
    ("sde", "sgd_sde", "driver", lambda v: sde(driver=v), "A"),
    ("sde", "sgd_sde", "alpha", lambda v: sde(alpha=v), ALL),
    ("sde", "sgd_sde", "alpha", lambda v: sde(driver="alpha_stable", alpha=v), "NSLDA"),
    ("sde", "sgd_sde", "record_steps", lambda v: sde(record_steps=v), "FT"),
    # curvature
    ("curvature", "hvp_fn(problem, theta)", "v", lambda v: CV.hvp_fn(P, TH)(v), ALL),
    ("curvature", "sharpness", "iters", lambda v: CV.sharpness(P, iters=v), ALL),
    ("curvature", "sharpness", "tol", lambda v: CV.sharpness(P, iters=3, tol=v), "NSLDA"),
    ("curvature", "batched_hvp", "theta", lambda v: CV.batched_hvp(P, v, TH0), ALL),
    ("curvature", "batched_hvp", "V", lambda v: CV.batched_hvp(P, TH, v), "NSLFD"),
    ("curvature", "hessian_top_eigs", "theta", lambda v: CV.hessian_top_eigs(P, v, k=2), "SLFTDA"),
    ("curvature", "hessian_top_eigs", "which", lambda v: CV.hessian_top_eigs(P, k=2, which=v), "A"),
    ("curvature", "hessian_top_eigs", "tol", lambda v: CV.hessian_top_eigs(P, k=2, tol=v), "NSLDA"),
    # symbolic
    ("symbolic", "gradient_symbols", "n", lambda v: SY.gradient_symbols(v, 2), ALL),
    ("symbolic", "gradient_symbols", "d", lambda v: SY.gradient_symbols(2, v), ALL),
    ("symbolic", "gradient_symbols", "name", lambda v: SY.gradient_symbols(2, 2, v), "NLFTDA"),
    ("symbolic", "batch_distribution", "n", lambda v: SY.batch_distribution(v, 2, WR), "LDA"),
    ("symbolic", "batch_distribution", "B", lambda v: SY.batch_distribution(3, v, WR), "LDA"),
    ("symbolic", "batch_distribution", "scheme", lambda v: SY.batch_distribution(3, 2, v), "LDA"),
    ("symbolic", "epoch_distribution", "n", lambda v: SY.epoch_distribution(v, 1, 2), "LDA"),
    ("symbolic", "epoch_distribution", "B", lambda v: SY.epoch_distribution(4, v, 2), "LDA"),
    ("symbolic", "epoch_distribution", "m", lambda v: SY.epoch_distribution(4, 1, v), "NSLFDA"),
    ("symbolic", "independent_batches", "m", lambda v: SY.independent_batches(3, 1, v, WR), "NSLFDA"),
    ("symbolic", "independent_batches", "scheme", lambda v: SY.independent_batches(3, 1, 2, v), "LDA"),
    ("symbolic", "expect", "f", lambda v: SY.expect(v, DIST), ALL),
    ("symbolic", "expect", "distribution", lambda v: SY.expect(mean_of, v), ALL),
    ("symbolic", "batch_mean", "G", lambda v: SY.batch_mean(v, (0, 1)), ALL),
    ("symbolic", "batch_mean", "idx", lambda v: SY.batch_mean(GS, v), ALL),
    ("symbolic", "sigma_emp", "G", lambda v: SY.sigma_emp(v), ALL),
    ("symbolic", "covariance", "f", lambda v: SY.covariance(v, DIST), ALL),
    ("symbolic", "covariance", "distribution", lambda v: SY.covariance(mean_of, v), ALL),
    ("symbolic", "is_zero", "M", lambda v: SY.is_zero(v), "NSLTD"),
    ("symbolic", "population_model", "n", lambda v: SY.population_model(v, 2), ALL),
    ("symbolic", "population_model", "d", lambda v: SY.population_model(2, v), ALL),
    ("symbolic", "population_expect", "expr", lambda v: SY.population_expect(v, Z, SP_S), "NSLTDA"),
    ("symbolic", "population_expect", "z", lambda v: SY.population_expect(SY.sigma_emp(GP), v, SP_S), ALL),
    ("symbolic", "population_expect", "S", lambda v: SY.population_expect(SY.sigma_emp(GP), Z, v), ALL),
    ("symbolic", "population_expect", "rho", lambda v: SY.population_expect(SY.sigma_emp(GP), Z, SP_S, v), "NSLDA"),
    # tails
    ("tails", "hill", "x", lambda v: T.hill(v, 3), "SD"),
    ("tails", "hill_auto", "x", lambda v: T.hill_auto(v, k_min=3, num_k=5), "SD"),
    ("tails", "stable_alpha", "x", lambda v: T.stable_alpha(v), "SD"),
    ("tails", "stable_alpha", "center", lambda v: T.stable_alpha(XI, center=v), "A"),
    ("tails", "sample_law", "name", lambda v: T.sample_law(v, 1.5, 5, gen()), ALL),
    ("tails", "sample_law", "size", lambda v: T.sample_law("stable", 1.5, v, gen()), ALL),
    ("tails", "target_index", "estimator", lambda v: T.target_index(v, "stable", 1.5), "A"),
    ("tails", "target_index", "name", lambda v: T.target_index("hill", v, 1.5), ALL),
    ("tails", "validation_table", "sizes", lambda v: T.validation_table(v, 2, gen(), laws=(("gaussian", None),)), ALL),
    ("tails", "validation_table", "laws", lambda v: T.validation_table([50], 2, gen(), laws=v), ALL),
    # heavy
    ("heavy", "log_multiplier_mean", "sigma2", lambda v: H.log_multiplier_mean(0.1, 4, v), "NSLDA"),
    ("heavy", "sde_tail_index", "sigma2", lambda v: H.sde_tail_index(0.1, 4, v), "NSLDA"),
    ("heavy", "sgd_stationary_variance", "sigma2", lambda v: H.sgd_stationary_variance(0.1, 4, v), "NSLDA"),
    ("heavy", "sgd_stationary_variance", "noise_var",
     lambda v: H.sgd_stationary_variance(0.1, 4, 1.0, v), "NSLDA"),
    ("heavy", "sde_stationary_variance", "sigma2", lambda v: H.sde_stationary_variance(0.1, 4, v), "NSLDA"),
    ("heavy", "kesten_index", "alpha_max", lambda v: H.kesten_index(1.5, 1, alpha_max=v), "NSLDA"),
    ("heavy", "streaming_lr_1d", "chains", lambda v: streaming(chains=v), ALL),
    ("heavy", "streaming_lr_1d", "steps", lambda v: streaming(steps=v), ALL),
    ("heavy", "streaming_lr_1d", "sigma2", lambda v: streaming(sigma2=v), "NSLDA"),
    ("heavy", "streaming_lr_1d", "noise_var", lambda v: streaming(noise_var=v), "NSLDA"),
    ("heavy", "stable_scale_from_median", "xi", lambda v: H.stable_scale_from_median(v, 1.5, draws=100), "NSD"),
    ("heavy", "stable_scale_from_median", "draws", lambda v: H.stable_scale_from_median(XI, 1.5, draws=v), ALL),
    ("heavy", "stable_scale_from_median", "seed",
     lambda v: H.stable_scale_from_median(XI, 1.5, draws=100, seed=v), ALL),
    ("heavy", "double_well_escape", "chains", lambda v: escape(H.double_well_escape, chains=v), ALL),
    ("heavy", "double_well_escape", "max_steps", lambda v: escape(H.double_well_escape, max_steps=v), ALL),
    ("heavy", "double_well_escape", "noise", lambda v: escape(H.double_well_escape, noise=v), "A"),
    ("heavy", "double_well_escape", "alpha", lambda v: escape(H.double_well_escape, alpha=v), ALL),
    ("heavy", "double_well_escape", "scale", lambda v: escape(H.double_well_escape, scale=v), "SLDA"),
    ("heavy", "double_well_escape", "scale", lambda v: escape(H.double_well_escape, noise="stable", scale=v), "SLDA"),
    ("heavy", "quadratic_stationary", "chains", lambda v: escape(H.quadratic_stationary, chains=v), ALL),
    ("heavy", "quadratic_stationary", "steps", lambda v: escape(H.quadratic_stationary, steps=v), ALL),
    ("heavy", "quadratic_stationary", "noise", lambda v: escape(H.quadratic_stationary, noise=v), "A"),
    ("heavy", "quadratic_stationary", "alpha", lambda v: escape(H.quadratic_stationary, alpha=v), ALL),
    ("heavy", "quadratic_stationary", "scale", lambda v: escape(H.quadratic_stationary, scale=v), "SLDA"),
    ("heavy", "quadratic_stationary", "scale",
     lambda v: escape(H.quadratic_stationary, noise="stable", scale=v), "SLDA"),
]


def _params():
    seen = {}
    for module, function, name, call, kinds in CASES:
        for k in kinds:
            case = f"{module}.{function}-{name}-{KIND[k]}"
            seen[case] = seen.get(case, 0) + 1
            ident = case if seen[case] == 1 else f"{case}-{seen[case]}"  # the same argument in another setting
            yield pytest.param(call, name, BAD[k], id=ident)


def assert_names_argument(call, name, value):
    """``call(value)`` raises a TypeError or ValueError from the package's own checks, naming ``name``."""
    with pytest.raises((TypeError, ValueError), match=re.escape(name)) as info:
        call(value)
    where = Path(info.traceback[-1].path)
    assert where.is_relative_to(PACKAGE), f"raised from {where}, not by a check of the package: {info.value}"


@pytest.mark.parametrize("call, name, value", list(_params()))
def test_a_wrong_type_names_the_argument(call, name, value):
    assert_names_argument(call, name, value)


def test_the_table_can_fail():
    """The assertion catches what the cases above used to do: an obscure error, or none at all."""

    def unchecked(steps):  # range() says "'float' object cannot be interpreted as an integer": no name
        return list(range(steps))

    with pytest.raises(AssertionError, match="Regex pattern did not match"):
        assert_names_argument(unchecked, "steps", 2.5)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        assert_names_argument(lambda flag: bool(flag), "flag", "abc")  # accepted silently
    with pytest.raises(AssertionError, match="not by a check of the package"):  # torch's message names 'shape'
        assert_names_argument(lambda shape: torch.zeros(1).reshape(shape), "shape", "abc")


def test_valid_values_stay_accepted():
    """The checks take what the number-like and sequence-like arguments always took."""
    one = torch.tensor(1)
    assert H.sde_tail_index(np.float32(0.5), np.int64(4), torch.tensor(1.0)) == pytest.approx(1 + 4 / 0.5)
    assert H.log_multiplier_mean(0.1, one * 4) == H.log_multiplier_mean(0.1, 4)  # a 0-d integer tensor is an int
    assert D.autocorrelation(XI, 2, center=np.bool_(True)).rho.shape == (3,)  # a numpy bool is a bool
    assert SY.is_zero(sp.Integer(0)) and SY.is_zero(0) and not SY.is_zero(sp.Symbol("x"))
    assert SY.batch_mean(GS, range(3)) == SY.batch_mean(GS, (0, 1, 2))  # any sequence of ints
    assert len(list(SY.independent_batches(3, 1, 2, WR))) == 9
    steps = em(record_steps=iter([0, 3])).times  # an iterator of steps is read once
    assert steps == pytest.approx([0.0, 0.3])
    assert C.antisymmetric_lag_covariance(PATHS, torch.tensor(0.1))[0].shape == (2, 2)
    assert FP.stationary_1d(drift1, diff1, torch.tensor(-2.0), 2, np.int64(16)).p.shape == (16,)
    assert T.sample_law("stable", torch.tensor(1.5), (2, 3), gen()).shape == (2, 3)
    assert SDE.symmetric_stable(torch.Size([4]), 1.5, gen(), device=torch.device("cpu")).shape == (4,)
    assert N.loglog_slope(np.array([1.0, 2.0, 4.0])[::-1], [0.3, 0.5, 1.0])[0] == pytest.approx(
        N.loglog_slope([4.0, 2.0, 1.0], [0.3, 0.5, 1.0])[0])  # a view with a negative stride
