"""Layers that pair a finite network's forward map with its infinite-width kernel map.

As in neural-tangents, each layer is one object whose two methods share its hyperparameters:

- ``apply(a, run)``: the finite map on a batch, a (n, in) -> (n, out), drawing its trained
  tensors from ``run`` (the network's linear maps in forward order);
- ``kernel(k)``: the map of the pair k = (S, T) of the same representation at infinite width:
  S its covariance (the paper's Sigma) and T its tangent kernel (the paper's Theta).

Convention (DESIGN §1, the seed's parametrization, every parameter N(0, 1)): S and T are per
unit for pre-activations h = W a + b, and summed over units for the scaled representations
a = sqrt(2/m) relu(h), a = z / sqrt(m) and the residual stream (their 1/sqrt(m) factors keep the
sums finite). The inputs x are summed: S = x.x', T = 0. A network is a tuple of layers; ``serial``
runs it forward and ``serial_kernel`` composes its kernel maps, so the net and its kernel follow
from the same definition (core/_arch.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class Kernel:
    """S and T of one representation on n points: both (n, n) float64."""

    S: Tensor
    T: Tensor


@dataclass
class LinearMap:
    """One trained linear map y = W u (+ b) evaluated on a batch of n points.

    u: (n, in) its input; y: (n, out) its output, on the autograd path to f, so that
    ``torch.autograd.grad(f.sum(), y)`` is df/dy per point. ``bias``: the map has a trained bias.
    ``hidden``: y is a ReLU pre-activation (its sign pattern is the activation pattern).
    """

    u: Tensor
    y: Tensor
    bias: bool
    hidden: bool
    weight: Tensor | None = None  # the trained W (out, in): dL/dW = G^T diag(dL/df) U
    bias_param: Tensor | None = None  # the trained b (out,), if the map has one


@dataclass
class Run:
    """One forward pass: the trained tensors still to use, the maps so far, the ReLU patterns.

    ``patterns`` (n, H) bool, H the summed width of the ReLU layers: when given, the ReLUs use
    this fixed activation pattern instead of h > 0 (the network with frozen activations).
    """

    params: Iterator[tuple[Tensor, Tensor | None]]
    patterns: Tensor | None = None
    maps: list[LinearMap] = field(default_factory=list)
    relus: int = 0  # ReLU layers applied so far (each one's slice of the patterns)


# --- the ReLU's dual maps (arc-cosine functions) ----------------------------------------------


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


# --- layers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dense:
    """h = W a (+ b), W (out, in) and b (out,) drawn N(0, 1), no 1/sqrt(fan-in) (DESIGN §1).

    Kernel: S_h = S_a (+ 1 for the bias), T_h = T_a + S_h (the trained W and b add S_h).
    ``out``: the output width, None for the network's width m (1 for the readout f = w . a).
    """

    bias: bool
    out: int | None = None

    def shapes(self, fan_in: int, width: int) -> list[tuple[int, ...]]:
        """Shapes of the trained tensors: W (out, in), then b (out,) if the layer has one."""
        out = width if self.out is None else self.out
        return [(out, fan_in), (out,)] if self.bias else [(out, fan_in)]

    def apply(self, a: Tensor, run: Run, feeds_relu: bool = False) -> Tensor:
        W, b = next(run.params)
        h = F.linear(a, W, b)  # (n, out)
        run.maps.append(LinearMap(a, h, self.bias, feeds_relu, W, b))
        return h

    def kernel(self, k: Kernel) -> Kernel:
        S = k.S + 1.0 if self.bias else k.S
        return Kernel(S, k.T + S)


@dataclass(frozen=True)
class Relu:
    """a = sqrt(2/m) relu(h) for h of width m (DESIGN §1).

    Kernel: S_a = N k1(rho), T_a = k0(rho) T_h, with rho = S_h / N (:func:`relu_layer`).
    """

    def apply(self, h: Tensor, run: Run, feeds_relu: bool = False) -> Tensor:
        m = h.shape[1]
        if run.patterns is None:
            r = F.relu(h)
        else:  # the frozen pattern of this layer: relu(h) -> h * pattern
            r = h * run.patterns[:, run.relus * m : (run.relus + 1) * m].to(h.dtype)
        run.relus += 1
        return math.sqrt(2.0 / m) * r  # (n, m)

    def kernel(self, k: Kernel) -> Kernel:
        Nk1, k0 = relu_layer(k.S)
        return Kernel(Nk1, k.T * k0)


@dataclass(frozen=True)
class Rescale:
    """a = z / sqrt(m) for z of width m: the summed kernel of a is the per-unit kernel of z."""

    def apply(self, z: Tensor, run: Run, feeds_relu: bool = False) -> Tensor:
        return (1.0 / math.sqrt(z.shape[1])) * z

    def kernel(self, k: Kernel) -> Kernel:
        return k


@dataclass(frozen=True)
class Residual:
    """a + (alpha / sqrt(m)) v, v = branch(a) of width m (DESIGN §1, the ResNet's blocks).

    Kernel: S + alpha^2 S_v, T + alpha^2 T_v (the branch's V is independent of the stream).
    """

    alpha: float
    branch: tuple[Layer, ...]

    def apply(self, a: Tensor, run: Run, feeds_relu: bool = False) -> Tensor:
        v = serial(self.branch, a, run)  # (n, m)
        return a + (self.alpha * (1.0 / math.sqrt(a.shape[1]))) * v

    def kernel(self, k: Kernel) -> Kernel:
        kv, a2 = serial_kernel(self.branch, k), self.alpha * self.alpha
        return Kernel(k.S + a2 * kv.S, k.T + a2 * kv.T)


Layer = Dense | Relu | Rescale | Residual


def serial(layers: Sequence[Layer], a: Tensor, run: Run) -> Tensor:
    """Apply the layers in order to a (n, in); each Dense records its LinearMap in ``run``."""
    for i, layer in enumerate(layers):
        feeds_relu = i + 1 < len(layers) and isinstance(layers[i + 1], Relu)
        a = layer.apply(a, run, feeds_relu)
    return a


def serial_kernel(layers: Sequence[Layer], k: Kernel) -> Kernel:
    """Compose the layers' kernel maps in order."""
    for layer in layers:
        k = layer.kernel(k)
    return k


def dense_layers(layers: Sequence[Layer]) -> list[Dense]:
    """The Dense layers in forward order (residual branches included): one per trained map."""
    out: list[Dense] = []
    for layer in layers:
        if isinstance(layer, Residual):
            out.extend(dense_layers(layer.branch))
        elif isinstance(layer, Dense):
            out.append(layer)
    return out


def param_shapes(layers: Sequence[Layer], d: int, width: int) -> list[list[tuple[int, ...]]]:
    """Per Dense layer in forward order, the shapes of its trained tensors, for inputs (n, d)."""
    shapes, fan_in = [], d
    for dense in dense_layers(layers):
        shapes.append(dense.shapes(fan_in, width))
        fan_in = shapes[-1][0][0]
    return shapes
