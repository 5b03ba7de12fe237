"""The seed's two networks (DESIGN §1) in the seed's parametrization, every trained map exposed.

FCN, L hidden layers of width m:
    a_0 = x;  a_l = sqrt(2/m) relu(W_l a_{l-1} + b_l), l = 1..L;  f = w . a_L
ResNet, L residual blocks of width m:
    a_0 = (A x + b)/sqrt(m);  h_l = W_l a_{l-1};  t_l = sqrt(2/m) relu(h_l);
    a_l = a_{l-1} + (alpha/sqrt(m)) V_l t_l;  f = w . a_L

Every parameter is drawn N(0, 1). The ResNet's block biases are fixed at 0 and are not parameters
(that keeps its kernel homogeneous in x~ = (x, 1)). Every trained parameter sits in one linear map
y = W u (+ b); ``forward_maps`` returns each map's (u, y), all that the empirical NTK needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import ConfigError

ARCHS = ("fcn", "resnet")


@dataclass
class LinearMap:
    """One trained linear map y = W u (+ b) evaluated on a batch of n points.

    u: (n, in) its input; y: (n, out) its output, on the autograd path to f, so that
    ``torch.autograd.grad(f.sum(), y)`` is df/dy per point. ``bias``: the map has a trained bias.
    ``hidden``: y is a ReLU pre-activation (its sign pattern is the activation pattern).
    """

    u: torch.Tensor
    y: torch.Tensor
    bias: bool
    hidden: bool
    weight: torch.Tensor | None = None  # the trained W (out, in): dL/dW = G^T diag(dL/df) U
    bias_param: torch.Tensor | None = None  # the trained b (out,), if the map has one


def _param(*shape: int) -> nn.Parameter:
    """An uninitialized float64 parameter: the N(0, 1) draw is always made in float64."""
    return nn.Parameter(torch.empty(*shape, dtype=torch.float64))


class SeedNet(nn.Module):
    """Shared parts: N(0, 1) initialization from a seed, and ``forward`` = f of ``forward_maps``."""

    arch: str

    def __init__(self, d: int, width: int, depth: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.d, self.width, self.depth, self.alpha = d, width, depth, alpha

    def reset_parameters(self, seed: int) -> None:
        """Draw every parameter N(0, 1) on the CPU in float64, in ``parameters()`` order, so the
        initialization depends on ``seed`` alone (CPU and CUDA, float32 and float64 start alike)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))

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
        raise NotImplementedError


def _relu(h: torch.Tensor, patterns: torch.Tensor | None, layer: int) -> torch.Tensor:
    """relu(h) (n, m), or h masked by layer ``layer``'s slice of a frozen pattern (n, L m)."""
    if patterns is None:
        return F.relu(h)
    m = h.shape[1]
    return h * patterns[:, layer * m : (layer + 1) * m].to(h.dtype)


class FCN(SeedNet):
    """The seed's fully connected network; W_l, b_l and w trained, no output bias."""

    arch = "fcn"

    def __init__(self, d: int, width: int, depth: int, alpha: float = 1.0) -> None:
        super().__init__(d, width, depth, alpha)
        fan_in = [d] + [width] * (depth - 1)
        self.W = nn.ParameterList(_param(width, k) for k in fan_in)
        self.b = nn.ParameterList(_param(width) for _ in range(depth))
        self.w = _param(1, width)

    def forward_maps(
        self, X: torch.Tensor, patterns: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[LinearMap]]:
        """f (n,) and the L + 1 trained maps (W_l, b_l)..., w, for X (n, d); see SeedNet."""
        scale = math.sqrt(2.0 / self.width)
        maps: list[LinearMap] = []
        a = X  # a_0 = x, no 1/sqrt(d)
        for layer, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            h = F.linear(a, W, b)  # (n, m) pre-activation
            maps.append(LinearMap(a, h, bias=True, hidden=True, weight=W, bias_param=b))
            a = scale * _relu(h, patterns, layer)  # (n, m)
        y = F.linear(a, self.w)  # (n, 1)
        maps.append(LinearMap(a, y, bias=False, hidden=False, weight=self.w))
        return y[:, 0], maps


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

    def forward_maps(
        self, X: torch.Tensor, patterns: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[LinearMap]]:
        """f (n,) and the 2L + 2 trained maps (A, b), (W_l, V_l)..., w for X (n, d); see SeedNet."""
        inv_sqrt_m = 1.0 / math.sqrt(self.width)
        relu_scale = math.sqrt(2.0 / self.width)
        branch = self.alpha * inv_sqrt_m
        z = F.linear(X, self.A, self.b)  # (n, m)
        maps = [LinearMap(X, z, bias=True, hidden=False, weight=self.A, bias_param=self.b)]
        a = inv_sqrt_m * z  # a_0
        for layer, (W, V) in enumerate(zip(self.W, self.V, strict=True)):
            h = F.linear(a, W)  # (n, m) pre-activation, no bias
            t = relu_scale * _relu(h, patterns, layer)  # (n, m)
            v = F.linear(t, V)  # (n, m)
            maps += [
                LinearMap(a, h, bias=False, hidden=True, weight=W),
                LinearMap(t, v, bias=False, hidden=False, weight=V),
            ]
            a = a + branch * v  # a_l
        y = F.linear(a, self.w)  # (n, 1)
        maps.append(LinearMap(a, y, bias=False, hidden=False, weight=self.w))
        return y[:, 0], maps


def n_params(arch: str, d: int, width: int, depth: int) -> int:
    """Trained parameters: FCN d m + m + (L-1)(m^2 + m) + m; ResNet d m + m + 2 L m^2 + m."""
    m, L = width, depth
    if arch == "fcn":
        return d * m + m + (L - 1) * (m * m + m) + m
    return d * m + m + 2 * L * m * m + m


def _check(arch: str, d: int, width: int, depth: int, alpha: float, dtype: torch.dtype) -> None:
    if arch not in ARCHS:
        raise ConfigError(f"model.arch = {arch!r}: unknown architecture; use 'fcn' or 'resnet'")
    for name, value in (("data.d", d), ("model.width", width), ("model.depth", depth)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} = {value!r}: must be an integer >= 1")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"model.alpha = {alpha!r}: must be a finite number > 0")
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
    net = (FCN if arch == "fcn" else ResNet)(d, width, depth, float(alpha))
    net.reset_parameters(seed)
    return net.to(device=device, dtype=dtype)
