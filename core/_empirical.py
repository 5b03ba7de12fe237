"""The empirical NTK K(x, x') = <grad_theta f(x), grad_theta f(x')>, exactly and cheaply.

Every trained parameter of the seed's networks sits in a linear map y = W u (+ b), whose
per-sample gradient is (df/dy) u^T. Hence (DESIGN §1)

    K(x, x') = sum over maps of <G(x), G(x')> * (<u(x), u(x')> [+ 1 if the map has a bias]),

with G = df/dy. One forward pass and one backward pass of sum_i f(x_i) give every u and G for all
points (the points do not interact, so the backward pass returns each point's own df/dy).
Cost: O(n m L) retained features and O(n^2 m) per map; no n x P Jacobian is ever formed.

``jacobian_ntk`` contracts the full Jacobian with torch.func; it is the tests' reference only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ._errors import ConfigError
from ._models import SeedNet

Tensor = torch.Tensor


@dataclass(frozen=True)
class EmpiricalNTK:
    """The empirical kernel, the outputs and the ReLU activation pattern from one pass."""

    K: Tensor  # (n, n), the model's dtype and device
    f: Tensor  # (n,) detached outputs
    patterns: Tensor  # (n, H) bool, y > 0 of every hidden map, H = sum of their widths
    near_kink: int = 0  # hidden pre-activations with |y| < NEAR_KINK (parked at the kink)


@dataclass(frozen=True)
class _Features:
    """Per-map inputs U (n_b, in), output gradients G (n_b, out) and bias flags of one block,
    with each map's trained tensors (W, b or None), which the fused gradient of ``_flow`` uses."""

    U: list[Tensor]
    G: list[Tensor]
    bias: list[bool]
    weights: list[Tensor | None]
    bias_params: list[Tensor | None]


NEAR_KINK = 1e-9  # |pre-activation| below this counts as parked at the ReLU kink


def _block_features(
    model: SeedNet, X: Tensor, frozen: Tensor | None = None
) -> tuple[_Features, Tensor, Tensor, int]:
    """One forward and one backward of f.sum() over the points X (n_b, d).

    Returns the block's features, f (n_b,), the activation pattern (n_b, H) and the count of
    near-kink pre-activations. ``frozen`` (n_b, H) bool fixes the activation pattern (see
    ``SeedNet.forward_maps``). The autograd graph is freed on return; only the features,
    O(n_b m L), are kept.
    """
    with torch.enable_grad():
        f, maps = model.forward_maps(X, frozen)
        G = torch.autograd.grad(f.sum(), [mp.y for mp in maps])
    U = [mp.u.detach() for mp in maps]
    hidden = [mp.y.detach() for mp in maps if mp.hidden]
    patterns = torch.cat([y > 0 for y in hidden], dim=1)
    near = int(sum(int((y.abs() < NEAR_KINK).sum()) for y in hidden))
    feats = _Features(U, list(G), [mp.bias for mp in maps], [mp.weight for mp in maps],
                      [mp.bias_param for mp in maps])  # fmt: skip
    return feats, f.detach(), patterns, near


def _kernel_block(a: _Features, b: _Features) -> Tensor:
    """sum over maps of (G_a G_b^T) * (U_a U_b^T [+ 1]): the (n_a, n_b) kernel block."""
    K = torch.zeros(a.U[0].shape[0], b.U[0].shape[0], dtype=a.U[0].dtype, device=a.U[0].device)
    for Ua, Ga, Ub, Gb, bias in zip(a.U, a.G, b.U, b.G, a.bias, strict=True):
        UU = Ua @ Ub.T  # (n_a, n_b), O(n_a n_b in)
        if bias:
            UU += 1.0
        K.addcmul_(Ga @ Gb.T, UU)  # O(n_a n_b out)
    return K


def ntk_with_patterns(
    model: SeedNet, X: Tensor, block_size: int | None = None, frozen: Tensor | None = None
) -> EmpiricalNTK:
    """The empirical NTK, f and the activation pattern on X, from one forward + backward pass.

    Args:
        model: a network from ``build_model`` (it must provide ``forward_maps``).
        X: (n, d) points; moved to the model's dtype and device.
        block_size: points per forward/backward pass (None: all at once). The autograd graph then
            holds block_size points; the retained features stay O(n m L).
        frozen: (n, H) bool activation pattern to hold fixed (None: the network's own), e.g. the
            pattern at t = 0, whose kernel minus K_0 is the drift without activation flips.

    Returns:
        EmpiricalNTK with K (n, n) in the model's dtype/device, f (n,), patterns (n, H) bool.
    """
    if block_size is not None and (isinstance(block_size, bool) or int(block_size) < 1):
        raise ConfigError(f"track.ntk_block = {block_size!r}: must be an integer >= 1 or None")
    p = next(model.parameters())
    X = X.to(device=p.device, dtype=p.dtype)
    n = X.shape[0]
    step = n if block_size is None else int(block_size)
    spans = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    blocks = [_block_features(model, X[s], None if frozen is None else frozen[s]) for s in spans]
    K = torch.empty(n, n, dtype=p.dtype, device=p.device)
    for i, (si, (fi, *_)) in enumerate(zip(spans, blocks, strict=True)):
        for sj, (fj, *_) in zip(spans[i:], blocks[i:], strict=True):  # upper triangle
            block = _kernel_block(fi, fj)  # (n_i, n_j)
            K[si, sj], K[sj, si] = block, block.T
    K = 0.5 * (K + K.T)  # exact symmetry: BLAS may round K_ij and K_ji differently
    f = torch.cat([b[1] for b in blocks])
    patterns = torch.cat([b[2] for b in blocks])
    near = sum(b[3] for b in blocks)
    return EmpiricalNTK(K=K, f=f, patterns=patterns, near_kink=near)


def empirical_ntk(model: SeedNet, X: Tensor, block_size: int | None = None) -> Tensor:
    """The empirical NTK K(X, X) by the per-linear-map identity: (n, n), the model's dtype/device.

    Args:
        model: a network from ``build_model``.
        X: (n, d) points.
        block_size: points per forward/backward pass (None: all at once); caps the autograd graph.
    """
    return ntk_with_patterns(model, X, block_size).K


def jacobian_ntk(model: nn.Module, X: Tensor) -> Tensor:
    """J J^T with J the full (n, P) Jacobian, via torch.func (functional_call + vmap(jacrev)).

    The tests' reference: it materializes n x P numbers, so it is never used in production.
    X: (n, d) -> K (n, n) in the model's dtype/device.
    """
    p = next(model.parameters())
    X = X.to(device=p.device, dtype=p.dtype)
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f_one(theta: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(model, theta, (x[None],))[0]

    J = vmap(jacrev(f_one), in_dims=(None, 0))(params, X)  # {name: (n, *shape)}
    K = torch.zeros(X.shape[0], X.shape[0], dtype=p.dtype, device=p.device)
    for Jp in J.values():
        Jp = Jp.reshape(X.shape[0], -1)  # (n, P_k)
        K += Jp @ Jp.T
    return K
