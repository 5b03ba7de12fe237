"""The infinite-width NTKs of the seed's networks (DESIGN §1), the bound and the GD limits.

The kernels are the composed kernel maps of the layers that also define the finite networks
(core/_arch.py, core/_layers.py).

Symbols follow DESIGN §1 and the paper (Yu, Tian, Chen, ICLR 2025, section "Neural Tangent
Kernel"): S is a covariance (the paper's Sigma), T the FCN's tangent kernel (the paper's Theta),
P the ResNet's backward covariance, N(x, x') = sqrt(S(x, x) S(x', x')) and rho = S / N.
Every kernel is computed in float64 on the CPU, whatever the input's dtype and device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._arch import check_arch, fcn, layers_of, resnet
from ._errors import DataError
from ._layers import Kernel, serial_kernel
from ._size import check_kernel_fits

Tensor = torch.Tensor


def augmented_gram(X: Tensor) -> Tensor:
    """x~ . x~' = x . x' + 1 with x~ = (x, 1): X (n, d) -> (n, n) float64."""
    X = X.detach().to(device="cpu", dtype=torch.float64)
    return X @ X.T + 1.0


def fcn_ntk_from_gram(S1: Tensor, depth: int) -> Tensor:
    """K^FC = T_{L+1} from S_1 = x.x' + 1 (DESIGN §1; the paper's Theta recursion).

    T_1 = S_1; for l = 1..L: S_{l+1} = N_l k1(rho_l) + [l < L], T_{l+1} = T_l k0(rho_l) + S_{l+1}.
    The +1 is the next layer's trained bias; the output layer w has none. These are the kernel
    maps of the FCN's layers after the first (core/_arch.py). S1: (n, n) -> (n, n).
    """
    return serial_kernel(fcn(depth)[1:], Kernel(S1, S1)).T


def resnet_ntk_from_gram(S0: Tensor, depth: int, alpha: float) -> Tensor:
    """K^Res from S_0 = x~.x~' (DESIGN §1): the kernel maps of the ResNet's layers after (A, b).

    Forward, l = 1..L: S_l = S_{l-1} + alpha^2 N_{l-1} k1(rho_{l-1}) and
    T_l = T_{l-1} + alpha^2 [k0(rho_{l-1}) (T_{l-1} + S_{l-1}) + N_{l-1} k1(rho_{l-1})], T_0 = S_0;
    K^Res = T_L + S_L. Unrolled, this is the backward form of DESIGN §1: with P_L = 1 and
    P_{l-1} = P_l (1 + alpha^2 k0(rho_{l-1})),
    K^Res = S_L (w) + sum_l alpha^2 P_l [N_{l-1} k1(rho_{l-1}) (V_l) + k0(rho_{l-1}) S_{l-1} (W_l)]
            + P_0 S_0 (A and b).
    Every term is homogeneous of degree one in each of x~ and x~', so K^Res(D S0 D) = D K^Res D for
    a positive diagonal D: the paper's K = |x~| r(phi(x), phi(x')) |x~'|. S0: (n, n) -> (n, n).
    """
    return serial_kernel(resnet(depth, alpha)[2:], Kernel(S0, S0)).T


def analytic_ntk(arch: str, X: Tensor, depth: int, alpha: float = 1.0) -> Tensor:
    """The infinite-width NTK of ``arch`` on X: the kernel maps of its layers (core/_arch.py).

    Args:
        arch: "fcn" or "resnet".
        X: (n, d) inputs, any dtype and device.
        depth: L, hidden layers (fcn) or residual blocks (resnet), 1..MAX_DEPTH.
        alpha: residual branch scale (resnet only), > 0. Default 1.

    Returns:
        K(X, X), (n, n) float64 on the CPU.
    """
    check_arch(arch, depth, alpha)
    _check_inputs(X)
    check_kernel_fits(arch, X.shape[0], depth)
    X = X.detach().to(device="cpu", dtype=torch.float64)
    gram = X @ X.T  # (n, n): the inputs' kernel, S = x.x', T = 0
    return serial_kernel(layers_of(arch, depth, alpha), Kernel(gram, torch.zeros_like(gram))).T


def _check_inputs(X: Tensor) -> None:
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
