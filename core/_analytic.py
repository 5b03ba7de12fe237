"""The infinite-width NTKs of the seed's networks (DESIGN §1), the bound and the GD limits.

Symbols follow DESIGN §1 and the paper (Yu, Tian, Chen, ICLR 2025, section "Neural Tangent
Kernel"): S is a covariance (the paper's Sigma), T the FCN's tangent kernel (the paper's Theta),
P the ResNet's backward covariance, N(x, x') = sqrt(S(x, x) S(x', x')) and rho = S / N.
Every kernel is computed in float64 on the CPU, whatever the input's dtype and device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._errors import ConfigError, DataError

Tensor = torch.Tensor


# --- arc-cosine functions (the ReLU's dual maps) ---------------------------------------------


def arccos_k0(rho: Tensor) -> Tensor:
    """k0(rho) = (pi - arccos rho) / pi, rho clamped to [-1, 1] (DESIGN §1).

    k0 = 2 E[relu'(u) relu'(v)] for standard normals (u, v) with correlation rho: the paper's
    derivative covariance Sigma-dot of one ReLU layer with the sqrt(2/m) scale.
    """
    return (math.pi - torch.arccos(rho.clamp(-1.0, 1.0))) / math.pi


def arccos_k1(rho: Tensor) -> Tensor:
    """k1(rho) = (rho (pi - arccos rho) + sqrt(1 - rho^2)) / pi, rho clamped to [-1, 1].

    k1 = 2 E[relu(u) relu(v)] for standard normals (u, v) with correlation rho (DESIGN §1).
    """
    rho = rho.clamp(-1.0, 1.0)
    return (rho * (math.pi - torch.arccos(rho)) + torch.sqrt(1.0 - rho * rho)) / math.pi


def relu_layer(S: Tensor) -> tuple[Tensor, Tensor]:
    """One ReLU layer's kernel maps of a covariance S (n, n): (N k1(rho), k0(rho)), both (n, n).

    N k1(rho) is the covariance of sqrt(2/m) relu(h) when h has covariance S; k0(rho) is the
    covariance of the layer's derivative. N = sqrt(S(x,x) S(x',x')) makes rho's diagonal exactly 1.
    """
    diag = S.diagonal()
    N = torch.sqrt(torch.outer(diag, diag))  # (n, n)
    rho = S / N
    return N * arccos_k1(rho), arccos_k0(rho)


def augmented_gram(X: Tensor) -> Tensor:
    """x~ . x~' = x . x' + 1 with x~ = (x, 1): X (n, d) -> (n, n) float64."""
    X = X.detach().to(device="cpu", dtype=torch.float64)
    return X @ X.T + 1.0


# --- the FCN kernel ---------------------------------------------------------------------------


def fcn_ntk_from_gram(S1: Tensor, depth: int) -> Tensor:
    """K^FC = T_{L+1} from S_1 = x.x' + 1 (DESIGN §1; the paper's Theta recursion).

    T_1 = S_1; for l = 1..L: S_{l+1} = N_l k1(rho_l) + [l < L], T_{l+1} = T_l k0(rho_l) + S_{l+1}.
    The +1 is the next layer's trained bias; the output layer w has none. S1: (n, n) -> (n, n).
    """
    S, T = S1, S1
    for l in range(1, depth + 1):
        Nk1, k0 = relu_layer(S)
        S = Nk1 + (1.0 if l < depth else 0.0)  # S_{l+1}
        T = T * k0 + S  # T_{l+1}
    return T


def fcn_ntk(X: Tensor, depth: int) -> Tensor:
    """The seed FCN's NTK K^FC(X, X): X (n, d) -> (n, n) float64 (DESIGN §1)."""
    return fcn_ntk_from_gram(augmented_gram(X), depth)


# --- the ResNet kernel ------------------------------------------------------------------------


def resnet_ntk_from_gram(S0: Tensor, depth: int, alpha: float) -> Tensor:
    """K^Res from S_0 = x~.x~' (DESIGN §1).

    Forward, l = 1..L: S_l = S_{l-1} + alpha^2 N_{l-1} k1(rho_{l-1}).
    Backward, P_L = 1: P_{l-1} = P_l (1 + alpha^2 k0(rho_{l-1})).
    K^Res = S_L (w) + sum_l alpha^2 P_l [N_{l-1} k1(rho_{l-1}) (V_l) + k0(rho_{l-1}) S_{l-1} (W_l)]
            + P_0 S_0 (A and b).
    Every term is homogeneous of degree one in each of x~ and x~', so K^Res(D S0 D) = D K^Res D for
    a positive diagonal D: the paper's K = |x~| r(phi(x), phi(x')) |x~'|. S0: (n, n) -> (n, n).
    """
    a2 = alpha * alpha
    S, layers = [S0], []
    for _ in range(depth):
        Nk1, k0 = relu_layer(S[-1])  # of S_{l-1}
        layers.append((Nk1, k0))
        S.append(S[-1] + a2 * Nk1)  # S_l
    K, P = S[depth].clone(), torch.ones_like(S0)  # from w; P_L = 1
    for l in range(depth, 0, -1):
        Nk1, k0 = layers[l - 1]
        K += a2 * P * (Nk1 + k0 * S[l - 1])  # from V_l and W_l
        P = P * (1.0 + a2 * k0)  # P_{l-1}
    return K + P * S0  # from A and b


def resnet_ntk(X: Tensor, depth: int, alpha: float = 1.0) -> Tensor:
    """The seed ResNet's NTK K^Res(X, X): X (n, d) -> (n, n) float64 (DESIGN §1)."""
    return resnet_ntk_from_gram(augmented_gram(X), depth, alpha)


def analytic_ntk(arch: str, X: Tensor, depth: int, alpha: float = 1.0) -> Tensor:
    """The infinite-width NTK of ``arch`` on X.

    Args:
        arch: "fcn" or "resnet".
        X: (n, d) inputs, any dtype and device.
        depth: L, hidden layers (fcn) or residual blocks (resnet), >= 1.
        alpha: residual branch scale (resnet only), > 0. Default 1.

    Returns:
        K(X, X), (n, n) float64 on the CPU.
    """
    _check(arch, X, depth, alpha)
    return fcn_ntk(X, depth) if arch == "fcn" else resnet_ntk(X, depth, alpha)


def _check(arch: str, X: Tensor, depth: int, alpha: float) -> None:
    if arch not in ("fcn", "resnet"):
        raise ConfigError(f"model.arch = {arch!r}: unknown architecture; use 'fcn' or 'resnet'")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ConfigError(f"model.depth = {depth!r}: must be an integer >= 1")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"model.alpha = {alpha!r}: must be a finite number > 0")
    if X.ndim != 2 or X.shape[0] < 1:
        raise DataError(f"inputs X have shape {tuple(X.shape)}: expected (n, d) with n >= 1")
    if not bool(torch.isfinite(X).all()):
        raise DataError("inputs X contain NaN or inf: clean or normalize the data")


# --- spectrum, bound and stability ------------------------------------------------------------


def _eigvals(K: Tensor) -> Tensor:
    return torch.linalg.eigvalsh(K.detach().to(device="cpu", dtype=torch.float64))  # ascending


def lambda0(K: Tensor) -> float:
    """lambda0 = lambda_min(K), float64 eigvalsh (DESIGN §1, "Bound")."""
    return float(_eigvals(K)[0])


def lambda_max(K: Tensor) -> float:
    """lambda_max(K), float64 eigvalsh."""
    return float(_eigvals(K)[-1])


def bound(K: Tensor) -> float:
    """The paper's divergence bound lambda0 / (2 n^2) (Theorem "Divergence of NTK")."""
    n = K.shape[0]
    return lambda0(K) / (2.0 * n * n)


def stability_limits(K: Tensor) -> dict[str, float]:
    """Largest stable full-batch GD learning rates at initialization (DESIGN §1).

    The loss's curvature in f is 1 (squared loss) or at most 1/4 (cross-entropy), so the limits are
    2 / lambda_max and 8 / lambda_max.
    """
    top = lambda_max(K)
    return {"mse": 2.0 / top, "cross_entropy": 8.0 / top}


@dataclass(frozen=True)
class NTKReference:
    """The analytic kernel on the training points and the numbers derived from it."""

    K: Tensor  # (n, n) float64, CPU
    lambda0: float  # lambda_min(K)
    lambda_max: float
    bound: float  # lambda0 / (2 n^2)
    lr_limit_mse: float  # 2 / lambda_max
    lr_limit_ce: float  # 8 / lambda_max
    max_abs: float  # max |K|, sets the numerical resolution of kernel differences


def ntk_reference(arch: str, X: Tensor, depth: int, alpha: float = 1.0) -> NTKReference:
    """K = analytic_ntk(arch, X, depth, alpha) with lambda0, lambda_max, bound and GD limits."""
    K = analytic_ntk(arch, X, depth, alpha)
    eig = _eigvals(K)
    low, top, n = float(eig[0]), float(eig[-1]), K.shape[0]
    return NTKReference(
        K=K,
        lambda0=low,
        lambda_max=top,
        bound=low / (2.0 * n * n),
        lr_limit_mse=2.0 / top,
        lr_limit_ce=8.0 / top,
        max_abs=float(K.abs().max()),
    )
