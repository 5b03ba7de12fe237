"""The analytic NTKs: reference values, identities between special cases, and Monte Carlo."""

from __future__ import annotations

import math

import pytest
import torch

from core import (
    ConfigError,
    DataError,
    analytic_ntk,
    bound,
    build_model,
    empirical_ntk,
    lambda0,
    lambda_max,
    ntk_reference,
    stability_limits,
)
from core._analytic import augmented_gram, fcn_ntk_from_gram, resnet_ntk_from_gram
from core._layers import arccos_k0, arccos_k1
from tests.tolerance import ANALYTIC, EXACT_F64, QUADRATURE, assert_close, max_rel_err


def circle() -> torch.Tensor:
    """The seed's six points x_i = (cos(i pi/3), sin(i pi/3)), i = 1..6: (6, 2) float64."""
    angle = torch.arange(1, 7, dtype=torch.float64) * math.pi / 3
    return torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def _X(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- arc-cosine functions ---------------------------------------------------------------------


def test_arccos_values_at_known_points():
    rho = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    assert_close(arccos_k0(rho), [0.0, 0.5, 1.0], EXACT_F64, "k0")
    assert_close(arccos_k1(rho), [0.0, 1 / math.pi, 1.0], EXACT_F64, "k1")


def test_arccos_clamps_out_of_range_rho():
    rho = torch.tensor([-1.0 - 1e-12, 1.0 + 1e-12], dtype=torch.float64)
    assert_close(arccos_k0(rho), [0.0, 1.0], EXACT_F64, "k0 clamped")
    assert_close(arccos_k1(rho), [0.0, 1.0], EXACT_F64, "k1 clamped")


def test_k1_derivative_is_k0():
    """d k1 / d rho = k0: the two arc-cosine functions are one kernel and its derivative."""
    rho = torch.linspace(-0.95, 0.95, 39, dtype=torch.float64)
    h = 1e-6
    slope = (arccos_k1(rho + h) - arccos_k1(rho - h)) / (2 * h)
    assert_close(slope, arccos_k0(rho), QUADRATURE, "k1'")


@pytest.mark.parametrize("rho", [-0.7, 0.0, 0.4, 0.9])
def test_arccos_functions_are_relu_expectations(rho):
    """k1 = 2 E[relu(u) relu(v)] and k0 = 2 E[1(u > 0) 1(v > 0)], corr(u, v) = rho.

    Given u, v = rho u + s z with s = sqrt(1 - rho^2) and mu = rho u, so
    E[relu(v) | u] = mu Phi(mu/s) + s phi(mu/s); the integral over u > 0 is a trapezoid rule.
    """
    u = torch.linspace(0.0, 12.0, 40_001, dtype=torch.float64)
    s = math.sqrt(1 - rho**2)
    density = torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)  # phi(u)
    mu = rho * u
    relu_v = mu * torch.special.ndtr(mu / s) + s * torch.exp(-0.5 * (mu / s) ** 2) / math.sqrt(
        2 * math.pi
    )
    k1 = 2 * torch.trapezoid(u * relu_v * density, u)
    k0 = 2 * torch.trapezoid(torch.special.ndtr(mu / s) * density, u)
    rho_t = torch.tensor(rho, dtype=torch.float64)
    assert_close(k1, arccos_k1(rho_t), QUADRATURE, "k1")
    assert_close(k0, arccos_k0(rho_t), QUADRATURE, "k0")


# --- reference values (DESIGN §1 worked example) ----------------------------------------------


def test_fcn_circle_reference():
    ref = ntk_reference("fcn", circle(), 3)
    assert_close(ref.K.diagonal(), torch.full((6,), 13.0), EXACT_F64, "diag K^FC")
    assert_close(ref.lambda0, 1.775534, ANALYTIC, "lambda0")
    assert abs(ref.lambda_max - 51.9) < 0.05
    assert abs(ref.bound - 0.0247) < 1e-4
    assert ref.max_abs == 13.0


def test_resnet_circle_reference():
    ref = ntk_reference("resnet", circle(), 3, alpha=1.0)
    assert_close(ref.K.diagonal(), torch.full((6,), 80.0), EXACT_F64, "diag K^Res")
    assert_close(ref.lambda0, 10.889736, ANALYTIC, "lambda0")


def test_reference_agrees_with_the_single_functions():
    K = analytic_ntk("fcn", circle(), 3)
    ref = ntk_reference("fcn", circle(), 3)
    assert torch.equal(ref.K, K)
    assert ref.lambda0 == lambda0(K) and ref.lambda_max == lambda_max(K)
    assert ref.bound == bound(K) == lambda0(K) / 72
    limits = stability_limits(K)
    assert limits == {"mse": 2 / lambda_max(K), "cross_entropy": 8 / lambda_max(K)}
    assert (ref.lr_limit_mse, ref.lr_limit_ce) == (limits["mse"], limits["cross_entropy"])
    assert 0.15 < ref.lr_limit_ce < 0.16 and 0.038 < ref.lr_limit_mse < 0.039


def _resnet_backward_form(S0: torch.Tensor, depth: int, alpha: float) -> torch.Tensor:
    """K^Res in DESIGN §1's backward form, written out independently of the layers:
    S_l = S_{l-1} + a^2 N k1, P_L = 1, P_{l-1} = P_l (1 + a^2 k0),
    K = S_L + sum_l a^2 P_l (N k1 + k0 S_{l-1}) + P_0 S_0."""
    a2, S, terms = alpha * alpha, [S0], []
    for _ in range(depth):
        d = S[-1].diagonal()
        N = torch.sqrt(torch.outer(d, d))
        theta = torch.arccos((S[-1] / N).clamp(-1, 1))
        k0 = (math.pi - theta) / math.pi
        Nk1 = N * ((S[-1] / N) * (math.pi - theta) + torch.sin(theta)) / math.pi
        terms.append((Nk1, k0))
        S.append(S[-1] + a2 * Nk1)
    K, P = S[depth].clone(), torch.ones_like(S0)
    for l in range(depth, 0, -1):
        Nk1, k0 = terms[l - 1]
        K += a2 * P * (Nk1 + k0 * S[l - 1])
        P = P * (1 + a2 * k0)
    return K + P * S0


@pytest.mark.parametrize(("depth", "alpha"), [(1, 1.0), (3, 1.0), (4, 0.6)])
def test_resnet_layers_give_the_backward_form(depth, alpha):
    X = _X(7, 3)
    K = analytic_ntk("resnet", X, depth, alpha)
    assert_close(K, _resnet_backward_form(augmented_gram(X), depth, alpha), EXACT_F64, "K^Res")


# --- identities between special cases ---------------------------------------------------------


def test_fcn_one_layer_closed_form():
    """L = 1: K = S_1 k0(rho) + N k1(rho) with S_1 = x.x' + 1 (no bias after the last layer)."""
    X = _X(7, 3)
    S1 = X @ X.T + 1
    N = torch.sqrt(S1.diagonal()[:, None] * S1.diagonal()[None, :])
    theta = torch.arccos((S1 / N).clamp(-1, 1))
    k0 = (math.pi - theta) / math.pi
    k1 = ((S1 / N) * (math.pi - theta) + torch.sin(theta)) / math.pi
    assert_close(analytic_ntk("fcn", X, 1), S1 * k0 + N * k1, EXACT_F64, "K^FC, L = 1")


def test_resnet_without_branches_is_twice_the_input_gram():
    """alpha -> 0: only w (S_L = S_0) and (A, b) (P_0 S_0 = S_0) remain, K -> 2 x~.x~'."""
    X = _X(5, 4)
    K = analytic_ntk("resnet", X, 3, alpha=1e-7)
    assert_close(K, 2 * augmented_gram(X), (1e-12, 1e-10), "K^Res, alpha -> 0")


@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_kernel_is_symmetric_positive_definite(arch):
    K = analytic_ntk(arch, _X(12, 3), 3, 0.8)
    assert torch.equal(K, K.T)
    assert lambda0(K) > 0


def test_resnet_kernel_is_homogeneous_in_x_tilde():
    """K^Res(D S0 D) = D K^Res(S0) D for positive diagonal D: degree one in x~ and in x~'."""
    S0 = augmented_gram(_X(6, 3))
    D = torch.diag(torch.tensor([0.3, 1.0, 2.0, 5.0, 0.7, 1.3], dtype=torch.float64))
    K = resnet_ntk_from_gram(S0, 3, 0.6)
    assert_close(resnet_ntk_from_gram(D @ S0 @ D, 3, 0.6), D @ K @ D, EXACT_F64, "K^Res(DSD)")


def test_resnet_kernel_factorizes_through_the_sphere():
    """K^Res(x, x') = |x~| r(phi(x), phi(x')) |x~'|, with r the kernel of phi(x) = x~ / |x~|."""
    X = _X(6, 3) * 3.0
    Xt = torch.cat([X, torch.ones(6, 1, dtype=torch.float64)], dim=1)  # x~ = (x, 1)
    norm = Xt.norm(dim=1)
    phi = Xt / norm[:, None]
    r = resnet_ntk_from_gram(phi @ phi.T, 2, 1.0)
    K = analytic_ntk("resnet", X, 2, 1.0)
    assert_close(K, norm[:, None] * r * norm[None, :], EXACT_F64, "|x~| r |x~'|")


def test_fcn_kernel_is_not_homogeneous():
    """The control: the FCN's inner biases break homogeneity, so the check above can fail."""
    S1 = augmented_gram(_X(4, 3))
    D = torch.diag(torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64))
    K = fcn_ntk_from_gram(S1, 3)
    assert max_rel_err(fcn_ntk_from_gram(D @ S1 @ D, 3), D @ K @ D) > 1e-2


def test_any_input_dtype_gives_float64_on_cpu():
    X = circle()
    K32 = analytic_ntk("fcn", X.float(), 3)
    assert K32.dtype == torch.float64 and K32.device.type == "cpu"
    assert max_rel_err(K32, analytic_ntk("fcn", X, 3)) < 1e-6


@pytest.mark.parametrize(
    ("args", "error", "field"),
    [
        (("cnn", 3, 1.0), ConfigError, "model.arch"),
        (("fcn", 0, 1.0), ConfigError, "model.depth"),
        (("resnet", 2, 0.0), ConfigError, "model.alpha"),
        (("resnet", 2, -0.5), ConfigError, "model.alpha"),
    ],
)
def test_bad_config_raises(args, error, field):
    arch, depth, alpha = args
    with pytest.raises(error, match=field):
        analytic_ntk(arch, circle(), depth, alpha)


def test_bad_inputs_raise_data_error():
    with pytest.raises(DataError, match="shape"):
        analytic_ntk("fcn", torch.ones(6), 3)
    with pytest.raises(DataError, match="NaN"):
        analytic_ntk("fcn", torch.tensor([[0.0, float("nan")]]), 3)


# --- analytic vs Monte Carlo over finite networks ---------------------------------------------

MC_CASES = [("fcn", 1, 1.0), ("fcn", 3, 1.0), ("resnet", 2, 1.0), ("resnet", 3, 0.5)]


@pytest.mark.parametrize(("arch", "L", "alpha"), MC_CASES)
def test_seed_average_matches_analytic_within_three_standard_errors(arch, L, alpha):
    """Mean of K over 32 seeds at m = 1024 lies within 3 standard errors of K, entry by entry."""
    X, seeds = circle(), 32
    K = analytic_ntk(arch, X, L, alpha)
    Ks = torch.stack(
        [empirical_ntk(build_model(arch, 2, 1024, L, alpha, seed=s), X) for s in range(seeds)]
    )  # (seeds, 6, 6)
    se = Ks.std(dim=0) / math.sqrt(seeds)
    z = (Ks.mean(dim=0) - K).abs() / se
    assert float(z.max()) < 3.0, f"max |mean - K| / se = {float(z.max()):.2f}"


@pytest.mark.parametrize(
    ("arch", "L", "alpha"),
    [c if c[0] == "fcn" else pytest.param(*c, marks=pytest.mark.slow) for c in MC_CASES],
)  # the ResNets at m = 4096 take 13-22 s each on 2 cores: the full suite runs them
def test_finite_width_error_shrinks_with_width(arch, L, alpha):
    """The max relative error (mean over 4 seeds) falls >= 2x from m = 256 to m = 4096."""
    X = circle()
    K = analytic_ntk(arch, X, L, alpha)

    def error(m: int) -> float:
        errs = [max_rel_err(empirical_ntk(build_model(arch, 2, m, L, alpha, seed=s), X), K)
                for s in range(4)]  # fmt: skip
        return sum(errs) / 4

    small, large = error(256), error(4096)
    assert small / large >= 2.0, f"error {small:.3g} at m = 256, {large:.3g} at m = 4096"
