"""The seed's two architectures (DESIGN §1), each defined once as a tuple of layers.

The finite network (core/_models.py) runs these layers forward and the analytic NTK
(core/_analytic.py) composes their kernel maps, so the two cannot drift apart.

FCN, L hidden layers of width m:
    a_0 = x;  a_l = sqrt(2/m) relu(W_l a_{l-1} + b_l), l = 1..L;  f = w . a_L
ResNet, L residual blocks of width m:
    a_0 = (A x + b)/sqrt(m);  h_l = W_l a_{l-1};  t_l = sqrt(2/m) relu(h_l);
    a_l = a_{l-1} + (alpha/sqrt(m)) V_l t_l;  f = w . a_L
"""

from __future__ import annotations

import math

from ._config import MAX_DEPTH
from ._errors import ConfigError
from ._layers import Dense, Layer, Relu, Rescale, Residual, param_shapes

ARCHS = ("fcn", "resnet")


def fcn(depth: int) -> tuple[Layer, ...]:
    """The FCN: L times (Dense with bias, ReLU), then the readout w (no bias)."""
    return (Dense(bias=True), Relu()) * depth + (Dense(bias=False, out=1),)


def resnet(depth: int, alpha: float = 1.0) -> tuple[Layer, ...]:
    """The ResNet: the input map (A, b) scaled by 1/sqrt(m), L blocks, then the readout w.

    The blocks' biases are fixed at 0 and are not layers' parameters, which keeps the kernel
    homogeneous in x~ = (x, 1).
    """
    block = Residual(float(alpha), (Dense(bias=False), Relu(), Dense(bias=False)))
    return (Dense(bias=True), Rescale()) + (block,) * depth + (Dense(bias=False, out=1),)


def layers_of(arch: str, depth: int, alpha: float = 1.0) -> tuple[Layer, ...]:
    """The layers of ``arch`` ("fcn" or "resnet"); ``alpha`` is used by the ResNet only."""
    return fcn(depth) if arch == "fcn" else resnet(depth, alpha)


def n_params(arch: str, d: int, width: int, depth: int) -> int:
    """Trained parameters: FCN d m + m + (L-1)(m^2 + m) + m; ResNet d m + m + 2 L m^2 + m."""
    shapes = param_shapes(layers_of(arch, depth), d, width)
    return sum(math.prod(s) for layer in shapes for s in layer)


def check_arch(arch: str, depth: int, alpha: float) -> None:
    """Raise :class:`ConfigError` for an unknown arch, a depth not in 1..MAX_DEPTH, a bad alpha."""
    if arch not in ARCHS:
        raise ConfigError(f"model.arch = {arch!r}: unknown architecture; use 'fcn' or 'resnet'")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ConfigError(f"model.depth = {depth!r}: must be an integer in 1..{MAX_DEPTH}")
    ok = isinstance(alpha, (int, float)) and not isinstance(alpha, bool)
    if not (ok and math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"model.alpha = {alpha!r}: must be a finite number > 0")
