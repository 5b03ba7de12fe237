"""The seed's networks: shapes, parametrization, seeding, parameter counts and input errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from core import ConfigError, build_model, n_params
from core._arch import layers_of
from core._layers import param_shapes
from tests.tolerance import EXACT_F64, assert_close


def _X(n: int = 5, d: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_and_dtype(arch, dtype):
    model = build_model(arch, 3, 8, 2, dtype=dtype)
    f = model(_X().to(dtype))
    assert f.shape == (5,)
    assert f.dtype == dtype


def test_fcn_matches_the_seed_formula():
    model = build_model("fcn", 3, 7, 3, seed=4)
    X, m = _X(), 7
    a = X  # a_0 = x; a_l = sqrt(2/m) relu(W_l a_{l-1} + b_l); f = w . a_L
    for W, b in zip(model.W, model.b, strict=True):
        a = math.sqrt(2 / m) * torch.relu(a @ W.T + b)
    assert_close(model(X), a @ model.w[0], EXACT_F64, "fcn forward")


def test_resnet_matches_the_seed_formula():
    alpha, m = 0.7, 6
    model = build_model("resnet", 3, m, 2, alpha=alpha, seed=4)
    X = _X()
    a = (X @ model.A.T + model.b) / math.sqrt(m)
    for W, V in zip(model.W, model.V, strict=True):
        t = math.sqrt(2 / m) * torch.relu(a @ W.T)
        a = a + alpha / math.sqrt(m) * (t @ V.T)
    assert_close(model(X), a @ model.w[0], EXACT_F64, "resnet forward")


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_same_seed_same_parameters(arch):
    a, b = build_model(arch, 3, 9, 2, seed=11), build_model(arch, 3, 9, 2, seed=11)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_different_seed_different_parameters(arch):
    a, b = build_model(arch, 3, 9, 2, seed=0), build_model(arch, 3, 9, 2, seed=1)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert not torch.equal(p, q)


def test_float32_model_is_the_rounded_float64_draw():
    a = build_model("resnet", 3, 9, 2, seed=3, dtype=torch.float32)
    b = build_model("resnet", 3, 9, 2, seed=3, dtype=torch.float64)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q.to(torch.float32))


def test_parameters_are_standard_normal():
    params = torch.cat([p.detach().flatten() for p in build_model("fcn", 4, 256, 2).parameters()])
    assert abs(float(params.mean())) < 5 / math.sqrt(params.numel())
    assert abs(float(params.std()) - 1.0) < 0.01


def test_resnet_block_biases_are_not_parameters():
    names = {name for name, _ in build_model("resnet", 3, 5, 2).named_parameters()}
    assert names == {"A", "b", "W.0", "W.1", "V.0", "V.1", "w"}


def test_resnet_is_homogeneous_in_the_input_map():
    """Block biases fixed at 0: scaling (A, b) by c > 0 scales f by c (a block bias would not)."""
    model, X = build_model("resnet", 3, 8, 3, seed=2), _X()
    f = model(X)
    with torch.no_grad():
        model.A.mul_(2.5)
        model.b.mul_(2.5)
    assert_close(model(X), 2.5 * f, EXACT_F64, "f(2.5 A, 2.5 b)")


def test_fcn_is_not_homogeneous_in_its_first_layer():
    """The control: the FCN's inner biases break the same relation."""
    model, X = build_model("fcn", 3, 8, 3, seed=2), _X()
    f = model(X)
    with torch.no_grad():
        model.W[0].mul_(2.5)
        model.b[0].mul_(2.5)
    assert (model(X) - 2.5 * f).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("arch", "d", "m", "L", "expected"),
    [
        ("fcn", 3, 5, 1, 3 * 5 + 5 + 5),
        ("fcn", 3, 5, 2, 3 * 5 + 5 + (25 + 5) + 5),
        ("fcn", 2, 16, 4, 2 * 16 + 16 + 3 * (256 + 16) + 16),
        ("resnet", 3, 5, 1, 3 * 5 + 5 + 2 * 25 + 5),
        ("resnet", 2, 16, 3, 2 * 16 + 16 + 6 * 256 + 16),
    ],
)
def test_parameter_count(arch, d, m, L, expected):
    model = build_model(arch, d, m, L)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert n_params(arch, d, m, L) == expected


@pytest.mark.parametrize(
    ("arch", "L", "n_maps", "n_hidden"), [("fcn", 3, 4, 3), ("resnet", 3, 8, 3)]
)
def test_forward_maps_cover_every_parameter(arch, L, n_maps, n_hidden):
    model, X = build_model(arch, 3, 6, L), _X()
    f, maps = model.forward_maps(X)
    assert len(maps) == n_maps and sum(mp.hidden for mp in maps) == n_hidden
    weights = sum(mp.u.shape[1] * mp.y.shape[1] for mp in maps)
    biases = sum(mp.y.shape[1] for mp in maps if mp.bias)
    assert weights + biases == sum(p.numel() for p in model.parameters())
    G = torch.autograd.grad(f.sum(), [mp.y for mp in maps])
    assert all(g.shape == mp.y.shape for g, mp in zip(G, maps, strict=True))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"arch": "cnn"}, "model.arch"),
        ({"width": 0}, "model.width"),
        ({"depth": 0}, "model.depth"),
        ({"alpha": 0.0}, "model.alpha"),
        ({"alpha": -1.0}, "model.alpha"),
        ({"alpha": float("nan")}, "model.alpha"),
        ({"d": 0}, "data.d"),
    ],
)
def test_bad_input_raises_config_error(kwargs, field):
    args = {"arch": "fcn", "d": 2, "width": 4, "depth": 1, **kwargs}
    with pytest.raises(ConfigError, match=field):
        build_model(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_cpu_and_cuda_start_identical(arch):
    cpu, gpu = (
        build_model(arch, 3, 16, 2, seed=5),
        build_model(arch, 3, 16, 2, seed=5, device="cuda"),
    )
    for p, q in zip(cpu.parameters(), gpu.parameters(), strict=True):
        assert q.device.type == "cuda" and torch.equal(p, q.cpu())


BITS = json.loads((Path(__file__).parent / "fixtures" / "network_bits.json").read_text())


@pytest.mark.parametrize("arch, alpha", [("fcn", 1.0), ("resnet", 0.7)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_initialization_and_outputs_keep_their_bits(arch, alpha, dtype):
    """What was recorded before the networks were built from layers (fixtures/network_bits.json):
    the same parameters in the same order and the same checkpoint keys, bit for bit; the same
    outputs to a few units in the last place. The initialization is the CPU generator's and
    the same everywhere; a matrix product's last bits depend on the kernel the BLAS picks for
    the CPU (the outputs recorded on one Xeon differ by up to 6.4 ulps on another)."""
    want = BITS[f"{arch}/{dtype}"]
    model = build_model(arch, 3, 16, 3, alpha=alpha, seed=7, dtype=getattr(torch, dtype))
    X = torch.randn(5, 3, generator=torch.Generator().manual_seed(123), dtype=torch.float64)
    params = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    assert hashlib.sha256(params).hexdigest() == want["parameters_sha256"]
    assert list(model.state_dict()) == want["state_dict_keys"]
    f = model(X.to(getattr(torch, dtype))).detach().double()
    recorded = torch.tensor([float.fromhex(v) for v in want["f"]], dtype=torch.float64)
    ulps = (f - recorded).abs() / (recorded.abs() * torch.finfo(getattr(torch, dtype)).eps)
    assert ulps.max() <= 16, ulps


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_layers_define_the_trained_tensors(arch):
    """The shapes the layers declare are the module's linear maps, in forward order."""
    model = build_model(arch, 3, 6, 2)
    declared = param_shapes(layers_of(arch, 2), 3, 6)
    held = [[tuple(W.shape)] + ([tuple(b.shape)] if b is not None else [])
            for W, b in model.linear_params()]  # fmt: skip
    assert held == declared
