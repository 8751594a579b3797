"""The package on a GPU: the same results as on the CPU. Skipped where no CUDA device is present."""

import pytest
import torch

import sgdnoise
from sgdnoise.noise import noise_trace_scan
from sgdnoise.problems import digits_mlp
from sgdnoise.sgd import train_sgd

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def both(dtype=torch.float64, n=300):
    return digits_mlp(n=n, dtype=dtype), digits_mlp(n=n, dtype=dtype, device="cuda")


def test_per_sample_grads_and_gram_on_cuda():
    cpu, gpu = both()
    for method in ("auto", "functorch"):
        G_cpu = sgdnoise.per_sample_grads(cpu.model, cpu.loss_fn, cpu.X, cpu.y, method=method)
        G_gpu = sgdnoise.per_sample_grads(gpu.model, gpu.loss_fn, gpu.X, gpu.y, method=method)
        assert G_gpu.device.type == "cuda"
        torch.testing.assert_close(G_gpu.cpu(), G_cpu, atol=1e-10, rtol=1e-9)
    K_gpu = sgdnoise.gram_matrix(gpu.model, gpu.loss_fn, gpu.X, gpu.y)
    torch.testing.assert_close(K_gpu.cpu(), G_cpu @ G_cpu.T, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(sgdnoise.noise_spectrum(K_gpu).cpu(), sgdnoise.noise_spectrum(G_cpu @ G_cpu.T), atol=1e-9, rtol=1e-7)


def test_sigma_spectrum_on_cuda_matches_cpu():
    """The lower-triangle route (blocked products into views of one n × n array) on the GPU."""
    cpu, gpu = both()
    K_l = sgdnoise.gradients.centred_gram_lower(gpu.model, gpu.loss_fn, gpu.X, gpu.y, block_rows=64)
    assert K_l.device.type == "cuda"
    K_c = sgdnoise.gram_matrix(cpu.model, cpu.loss_fn, cpu.X, cpu.y, centered=True)
    torch.testing.assert_close(torch.tril(K_l).cpu(), torch.tril(K_c), atol=1e-9, rtol=1e-9)
    lam_gpu = sgdnoise.sigma_spectrum(gpu.model, gpu.loss_fn, gpu.X, gpu.y)
    torch.testing.assert_close(lam_gpu.cpu(), sgdnoise.noise_spectrum(K_c, centered=True), atol=1e-9, rtol=1e-7)


def test_noise_scan_on_cuda_matches_cpu():
    cpu, gpu = both()
    K_cpu = sgdnoise.gram_matrix(cpu.model, cpu.loss_fn, cpu.X, cpu.y)
    K_gpu = sgdnoise.gram_matrix(gpu.model, gpu.loss_fn, gpu.X, gpu.y)
    for scheme in sgdnoise.SCHEMES:
        m_cpu, _ = noise_trace_scan(K_cpu, [1, 16, 300], scheme, 200, torch.Generator().manual_seed(0))
        m_gpu, _ = noise_trace_scan(K_gpu, [1, 16, 300], scheme, 200, torch.Generator().manual_seed(0))
        torch.testing.assert_close(m_gpu, m_cpu, atol=1e-10, rtol=1e-8)


def test_training_on_cuda_matches_cpu():
    cpu, gpu = both()
    runs = []
    for p in (cpu, gpu):
        runs.append(train_sgd(p, eta=0.1, B=16, steps=50, scheme="reshuffling",
                              generator=torch.Generator().manual_seed(0), snapshot_at=[50]))
    torch.testing.assert_close(runs[1].snapshots[0].cpu(), runs[0].snapshots[0], atol=1e-8, rtol=1e-7)


def test_chains_and_sde_on_cuda_match_cpu():
    """Many chains (vmap over chains) and the SGD SDE on the GPU: same law as on the CPU, same draws where shared."""
    from sgdnoise.sde import sgd_sde
    from sgdnoise.sgd import run_chains

    cpu, gpu = both(n=200)
    th = cpu.theta()
    r_cpu = run_chains(cpu, th.repeat(4, 1), eta=0.1, B=8, steps=10, generator=torch.Generator().manual_seed(0))
    r_gpu = run_chains(gpu, th.repeat(4, 1).cuda(), eta=0.1, B=8, steps=10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r_gpu.thetas.cpu(), r_cpu.thetas, atol=1e-8, rtol=1e-7)
    # the SDE: with CPU generators the Gaussian draws are identical, so the paths must agree
    s_cpu = sgd_sde(cpu, th.repeat(3, 1), eta=0.1, B=8, dt=0.05, steps=5, generator=torch.Generator().manual_seed(1))
    s_gpu = sgd_sde(gpu, th.repeat(3, 1).cuda(), eta=0.1, B=8, dt=0.05, steps=5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(s_gpu.thetas.cpu(), s_cpu.thetas, atol=1e-8, rtol=1e-7)
    # and with a CUDA generator the draws stay on the device
    s_dev = sgd_sde(gpu, th.repeat(3, 1).cuda(), eta=0.1, B=8, dt=0.05, steps=5,
                    generator=torch.Generator(device="cuda").manual_seed(1))
    assert s_dev.thetas.device.type == "cuda" and torch.isfinite(s_dev.thetas).all()


def test_noise_diagnostics_and_hessian_on_cuda_match_cpu():
    """Chapter 4's tools on the GPU: the same numbers as on the CPU."""
    from sgdnoise import diagnostics as dg
    from sgdnoise.curvature import hessian_top_eigs
    from sgdnoise.tails import stable_alpha

    cpu, gpu = both(n=200)
    G_cpu = sgdnoise.per_sample_grads(cpu.model, cpu.loss_fn, cpu.X, cpu.y)
    G_gpu = sgdnoise.per_sample_grads(gpu.model, gpu.loss_fn, gpu.X, gpu.y)
    assert abs(dg.noise_scale(G_gpu) - dg.noise_scale(G_cpu)) < 1e-9 * dg.noise_scale(G_cpu)
    lam_c, V_c = dg.noise_top_eigs(G_cpu, 3)
    lam_g, V_g = dg.noise_top_eigs(G_gpu, 3)
    torch.testing.assert_close(lam_g.cpu(), lam_c, atol=1e-10, rtol=1e-8)
    h_c, U_c = hessian_top_eigs(cpu, k=3, generator=torch.Generator().manual_seed(0))
    h_g, U_g = hessian_top_eigs(gpu, k=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(h_g.cpu(), h_c, atol=1e-8, rtol=1e-6)
    assert dg.subspace_overlap(U_g.cpu(), U_c) > 1 - 1e-6
    small_c = digits_mlp(n=100, hidden=8, dtype=torch.float64)  # d = 682: the exact trace of H is cheap
    small_g = digits_mlp(n=100, hidden=8, dtype=torch.float64, device="cuda")
    Gs_c = sgdnoise.per_sample_grads(small_c.model, small_c.loss_fn, small_c.X, small_c.y)
    Gs_g = sgdnoise.per_sample_grads(small_g.model, small_g.loss_fn, small_g.X, small_g.y)
    ths = dg.trace_h_sigma(small_g, small_g.theta(), Gs_g, probes=None)
    ths_c = dg.trace_h_sigma(small_c, small_c.theta(), Gs_c, probes=None)
    assert abs(ths.ratio - ths_c.ratio) < 1e-6 * ths_c.ratio
    # stable_alpha accepts CUDA tensors (it computes on the CPU)
    last_g, last_c = G_gpu[:, -10:].T, G_cpu[:, -10:].T  # the output biases: never exactly zero
    a_g = stable_alpha(last_g - last_g.mean(1, keepdim=True))
    a_c = stable_alpha(last_c - last_c.mean(1, keepdim=True))
    torch.testing.assert_close(torch.as_tensor(a_g).cpu(), torch.as_tensor(a_c), atol=1e-9, rtol=1e-9)
