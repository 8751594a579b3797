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
