"""The seed's two networks (DESIGN §1) as torch modules: parameters, initialization, forward.

The architectures are defined once, as layers, in core/_arch.py; the analytic kernels follow from
the same layers (core/_analytic.py). This module holds the trained tensors and runs the layers.

Every parameter is drawn N(0, 1). The ResNet's block biases are fixed at 0 and are not parameters
(that keeps its kernel homogeneous in x~ = (x, 1)). Every trained parameter sits in one linear map
y = W u (+ b); ``forward_maps`` returns each map's (u, y), all that the empirical NTK needs.
"""

from __future__ import annotations

import torch
from torch import nn

from ._arch import ARCHS, check_arch, layers_of, n_params
from ._errors import ConfigError
from ._layers import LinearMap, Run, serial
from ._size import check_params_fit

__all__ = ["ARCHS", "FCN", "LinearMap", "ResNet", "SeedNet", "build_model"]


def _param(*shape: int) -> nn.Parameter:
    """An uninitialized float64 parameter: the N(0, 1) draw is always made in float64."""
    return nn.Parameter(torch.empty(*shape, dtype=torch.float64))


class SeedNet(nn.Module):
    """Shared parts: N(0, 1) initialization from a seed, and the forward pass of the layers.

    Subclasses hold the trained tensors (their attribute layout fixes ``parameters()`` order,
    hence every initialization, and the checkpoints' keys) and list them per linear map.
    """

    arch: str

    def __init__(self, d: int, width: int, depth: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.d, self.width, self.depth, self.alpha = d, width, depth, alpha
        self.layers = layers_of(self.arch, depth, alpha)

    def reset_parameters(self, seed: int) -> None:
        """Draw every parameter N(0, 1) on the CPU in float64, in ``parameters()`` order, so the
        initialization depends on ``seed`` alone (CPU and CUDA, float32 and float64 start alike)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))

    def linear_params(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(W, b or None) of every linear map, in forward order."""
        raise NotImplementedError

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """f(X): (n, d) -> (n,)."""
        return self.forward_maps(X)[0]

    def forward_maps(
        self, X: torch.Tensor, patterns: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[LinearMap]]:
        """f (n,) and the trained linear maps for X (n, d).

        ``patterns`` (n, H) bool, H = the summed width of the ReLU layers: when given, every ReLU
        uses this fixed activation pattern (relu(h) -> h * pattern) instead of h > 0, which gives
        the network with frozen activations (its kernel, minus K_0, is the drift without flips).
        """
        run = Run(iter(self.linear_params()), patterns)
        y = serial(self.layers, X, run)  # (n, 1)
        return y[:, 0], run.maps


class FCN(SeedNet):
    """The seed's fully connected network; W_l, b_l and w trained, no output bias."""

    arch = "fcn"

    def __init__(self, d: int, width: int, depth: int, alpha: float = 1.0) -> None:
        super().__init__(d, width, depth, alpha)
        fan_in = [d] + [width] * (depth - 1)
        self.W = nn.ParameterList(_param(width, k) for k in fan_in)
        self.b = nn.ParameterList(_param(width) for _ in range(depth))
        self.w = _param(1, width)

    def linear_params(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(W_l, b_l) for l = 1..L, then (w, None)."""
        return [*zip(self.W, self.b, strict=True), (self.w, None)]


class ResNet(SeedNet):
    """The seed's residual network; A, b, W_l, V_l and w trained, block biases fixed at 0."""

    arch = "resnet"

    def __init__(self, d: int, width: int, depth: int, alpha: float = 1.0) -> None:
        super().__init__(d, width, depth, alpha)
        self.A = _param(width, d)
        self.b = _param(width)
        self.W = nn.ParameterList(_param(width, width) for _ in range(depth))
        self.V = nn.ParameterList(_param(width, width) for _ in range(depth))
        self.w = _param(1, width)

    def linear_params(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(A, b), then (W_l, None), (V_l, None) for l = 1..L, then (w, None)."""
        blocks = [(M, None) for W, V in zip(self.W, self.V, strict=True) for M in (W, V)]
        return [(self.A, self.b), *blocks, (self.w, None)]


def _check(arch: str, d: int, width: int, depth: int, alpha: float, dtype: torch.dtype) -> None:
    check_arch(arch, depth, alpha)
    for name, value in (("data.d", d), ("model.width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} = {value!r}: must be an integer >= 1")
    if not dtype.is_floating_point:
        raise ConfigError(f"dtype = {dtype}: must be a floating dtype, e.g. torch.float64")


def build_model(
    arch: str,
    d: int,
    width: int,
    depth: int,
    alpha: float = 1.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> SeedNet:
    """Build the seed's network with N(0, 1) parameters drawn from ``seed``.

    Args:
        arch: "fcn" or "resnet".
        d: input dimension.
        width: m, the width of every hidden layer (>= 1).
        depth: L, hidden layers (fcn) or residual blocks (resnet) (>= 1).
        alpha: residual branch scale (resnet only; > 0). Default 1, the seed's value.
        seed: the only source of randomness of the initialization.
        dtype, device: where the parameters live (drawn on CPU in float64, then moved).

    Returns:
        A module with ``forward(X (n, d)) -> f (n,)`` and ``forward_maps(X) -> (f, maps)``.
    """
    _check(arch, d, width, depth, alpha, dtype)
    check_params_fit(n_params(arch, d, width, depth), device)
    net = (FCN if arch == "fcn" else ResNet)(d, width, depth, float(alpha))
    net.reset_parameters(seed)
    return net.to(device=device, dtype=dtype)
