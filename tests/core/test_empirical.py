"""The empirical NTK: the per-linear-map identity against the full Jacobian, blocks, patterns."""

from __future__ import annotations

import math

import pytest
import torch

from core import ConfigError, build_model, empirical_ntk, jacobian_ntk, ntk_with_patterns
from tests.tolerance import EXACT_F64, GRADIENT_FLOW, assert_close, max_rel_err


def circle() -> torch.Tensor:
    """The seed's six points x_i = (cos(i pi/3), sin(i pi/3)), i = 1..6: (6, 2) float64."""
    angle = torch.arange(1, 7, dtype=torch.float64) * math.pi / 3
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def _X(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# (arch, d, m, L, alpha, n): small random configurations, d up to 10, n up to 32
CONFIGS = [
    ("fcn", 1, 5, 1, 1.0, 3),
    ("fcn", 3, 16, 2, 1.0, 9),
    ("fcn", 10, 32, 4, 1.0, 32),
    ("resnet", 2, 8, 1, 1.0, 6),
    ("resnet", 7, 24, 3, 0.3, 17),
    ("resnet", 10, 12, 5, 2.0, 32),
]


@pytest.mark.parametrize(("arch", "d", "m", "L", "alpha", "n"), CONFIGS)
def test_identity_equals_jacobian_contraction(arch, d, m, L, alpha, n):
    model = build_model(arch, d, m, L, alpha, seed=d + m)
    X = 2.0 * _X(n, d, seed=n)
    K = empirical_ntk(model, X)
    assert K.shape == (n, n) and K.dtype == torch.float64
    assert max_rel_err(K, jacobian_ntk(model, X)) <= EXACT_F64[0]


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
@pytest.mark.parametrize("block_size", [1, 4, 11, 64])
def test_blocks_give_the_same_kernel(arch, block_size):
    model, X = build_model(arch, 4, 20, 3, seed=1), _X(11, 4)
    full = ntk_with_patterns(model, X)
    blocked = ntk_with_patterns(model, X, block_size=block_size)
    assert_close(blocked.K, full.K, EXACT_F64, f"K with block_size={block_size}")
    assert torch.equal(blocked.patterns, full.patterns)
    assert_close(blocked.f, full.f, EXACT_F64, "f")


@pytest.mark.parametrize("block_size", [0, -3])
def test_bad_block_size_raises_config_error(block_size):
    with pytest.raises(ConfigError, match="ntk_block"):
        empirical_ntk(build_model("fcn", 2, 4, 1), circle(), block_size=block_size)


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_kernel_is_symmetric_positive_semidefinite(arch):
    K = empirical_ntk(build_model(arch, 3, 16, 3, seed=2), _X(20, 3))
    assert torch.equal(K, K.T)
    eig = torch.linalg.eigvalsh(K)
    assert float(eig[0]) > -1e-10 * float(eig[-1])


def test_fcn_patterns_are_the_preactivation_signs():
    model, X = build_model("fcn", 3, 10, 3, seed=3), _X(8, 3)
    out = ntk_with_patterns(model, X)
    a, signs = X, []
    for W, b in zip(model.W, model.b, strict=True):
        h = (a @ W.T + b).detach()
        signs.append(h > 0)
        a = math.sqrt(2 / 10) * torch.relu(h)
    assert out.patterns.dtype == torch.bool and out.patterns.shape == (8, 30)
    assert torch.equal(out.patterns, torch.cat(signs, dim=1))


def test_resnet_patterns_cover_every_block():
    out = ntk_with_patterns(build_model("resnet", 3, 10, 4, seed=3), _X(8, 3))
    assert out.patterns.shape == (8, 40)
    assert 0 < int(out.patterns.sum()) < 8 * 40


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_with_patterns_returns_f_and_the_same_kernel(arch):
    model, X = build_model(arch, 2, 16, 2, seed=4), circle()
    out = ntk_with_patterns(model, X)
    assert torch.equal(out.f, model(X).detach())
    assert not out.f.requires_grad and not out.K.requires_grad
    assert torch.equal(out.K, empirical_ntk(model, X))


def test_works_under_no_grad():
    model, X = build_model("fcn", 2, 16, 2, seed=5), circle()
    with torch.no_grad():
        K = empirical_ntk(model, X)
    assert torch.equal(K, empirical_ntk(model, X))


def test_float32_model_gives_float32_kernel():
    K64 = empirical_ntk(build_model("resnet", 2, 64, 2, seed=6), circle())
    K32 = empirical_ntk(build_model("resnet", 2, 64, 2, seed=6, dtype=torch.float32), circle())
    assert K32.dtype == torch.float32
    assert max_rel_err(K32, K64) < 1e-5


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_small_gradient_step_moves_f_by_minus_lr_K_residual(arch):
    """One GD step on L = sum_i r_i f_i changes f by -lr K r to first order (gradient flow)."""
    model, X = build_model(arch, 2, 64, 3, seed=7), circle()
    r = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.8, 0.2], dtype=torch.float64)
    K, f0 = empirical_ntk(model, X), model(X).detach()
    (model(X) * r).sum().backward()
    lr = 1e-7
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    df = model(X).detach() - f0
    assert_close(df, -lr * (K @ r), GRADIENT_FLOW, "f(theta - lr grad) - f(theta)")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_cuda_matches_cpu(arch):
    X = _X(12, 3)
    cpu = empirical_ntk(build_model(arch, 3, 32, 3, seed=8), X)
    gpu_model = build_model(arch, 3, 32, 3, seed=8, device="cuda")
    gpu = empirical_ntk(gpu_model, X, block_size=5)
    assert gpu.device.type == "cuda"
    assert_close(gpu.cpu(), cpu, EXACT_F64, "K on CUDA")
    assert_close(gpu.cpu(), jacobian_ntk(gpu_model, X).cpu(), EXACT_F64, "identity on CUDA")
