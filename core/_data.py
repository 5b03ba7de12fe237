"""Data sets: the seed's circle points, random points on the sphere, digits and MNIST.

``make_dataset(cfg)`` turns a data config (one type per kind, core/_config.py) into a
:class:`Dataset` of training points X (n, d), labels y (n,) in {0., 1.} and untrained probe
points X_probe (p, d). The MNIST files are read by core/_idx.py.

Kinds (``data.kind``):

- ``circle``: the seed's synthetic points x_i = (cos(2 pi i/n), sin(2 pi i/n)), i = 1..n, with
  labels alternating from 0 at i = 1, so (0,1,0,1,0,1) for n = 6 (antipodal points have opposite
  labels when n/2 is odd). ``data.d`` must be 2. The probes sit at evenly spaced angles
  2 pi (j/p + 1/(2 lcm(n, p))), j = 0..p-1: offset by half a step of the grid common to the
  training and probe angles, so no probe lands on a training point (p = n gives the midpoints).
- ``sphere``: n points uniform on S^{d-1} (Gaussian vectors, normalized), then n labels
  Bernoulli(1/2), then the probes, all from one ``torch.Generator`` seeded with ``data.seed``.
  ``data.d`` >= 2. Should every label come out equal (probability 2^{1-n}), the last one is
  flipped, so both classes are always present. The training set does not depend on
  ``data.n_probe``.
- ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), d = 64.
- ``mnist``: the MNIST training set read from ``data.path`` (IDX files, optionally gzipped, in
  the folder itself or in a torchvision layout ``MNIST/raw/`` or ``raw/``), d = 784.

For digits and mnist ``data.d`` is ignored (the image size fixes d). ``data.classes`` is either two
distinct digits [a, b] (a -> label 0, b -> label 1) or ``"parity"`` (odd -> 1, even -> 0, the
seed's MNIST task). The n training points are drawn with a seeded permutation, class-balanced
where the classes allow (n//2 of label 0, the rest of label 1), and shuffled; the probes are
further points of the same classes, balanced the same way, never in the training set.

Normalization (``data.normalize``), applied after selection, to training points and probes alike:

- ``unit`` (default): every x scaled to unit Euclidean norm. The analytic kernels are stated for
  points on the sphere, and the bound lambda0/(2 n^2) is then comparable across data sets.
- ``standardize``: per-feature zero mean and unit variance, with the statistics of the training
  points (features constant on them are set to 0), then every vector divided by sqrt(d_eff),
  d_eff the number of non-constant features, so the mean squared norm over the training points
  is exactly 1.
- ``none``: raw coordinates; pixel values are scaled to [0, 1] (digits / 16, MNIST / 255).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from ._config import CircleData, DataConfig, DigitsData, MnistData, SphereData
from ._errors import ConfigError, DataError
from ._idx import load_mnist

PIXEL_MAX = {"digits": 16.0, "mnist": 255.0}


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no boolean equality
class Dataset:
    """Training points, their labels and the probe points of one trial.

    Attributes:
        X: (n, d) training inputs, normalized as ``data.normalize`` says.
        y: (n,) labels, 0. or 1., in the same dtype as X.
        X_probe: (p, d) untrained points whose outputs are tracked; p may be 0.
        name: short identifier, e.g. ``digits[parity] n=100 seed=0``.
        description: one line: what the points are, how many of each class, the normalization.
    """

    X: torch.Tensor
    y: torch.Tensor
    X_probe: torch.Tensor
    name: str
    description: str


def make_dataset(cfg: DataConfig, dtype=torch.float64, device="cpu") -> Dataset:
    """Build the data set that ``cfg`` describes (see the module docstring for each kind).

    Args:
        cfg: the ``data`` section of a trial config.
        dtype: dtype of X, y and X_probe (default float64).
        device: where the tensors live (default cpu); they are built on the CPU first, so the
            points are the same on every device.

    Returns:
        A :class:`Dataset` with X (n, d), y (n,) and X_probe (n_probe, d).

    Raises:
        ConfigError: a field that does not fit the kind (circle with d != 2, n larger than the
            available points, bad classes).
        DataError: a missing, unreadable or corrupt MNIST file.
    """
    if isinstance(cfg, CircleData):  # float64 numpy: (n, d), (n,), (p, d), a phrase
        X, y, X_probe, what = _circle(cfg)
    elif isinstance(cfg, SphereData):
        X, y, X_probe, what = _sphere(cfg)
    else:
        X, y, X_probe, what = _images(cfg)
    X, X_probe = normalize(X, X_probe, cfg.normalize, PIXEL_MAX.get(cfg.kind, 1.0))
    n0, n1 = int((y == 0).sum()), int((y == 1).sum())
    description = (
        f"{what}: {n0} of class 0, {n1} of class 1, {_NORM_PHRASE[cfg.normalize]}; "
        f"{X_probe.shape[0]} probe points"
    )

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)

    return Dataset(tensor(X), tensor(y), tensor(X_probe), _name(cfg), description)


def _name(cfg: DataConfig) -> str:
    if isinstance(cfg, CircleData):
        return f"circle n={cfg.n} d={cfg.d}"
    if isinstance(cfg, SphereData):
        return f"sphere n={cfg.n} d={cfg.d} seed={cfg.seed}"
    classes = cfg.classes if cfg.classes == "parity" else f"{cfg.classes[0]}v{cfg.classes[1]}"
    return f"{cfg.kind}[{classes}] n={cfg.n} seed={cfg.seed}"


# --- normalization ----------------------------------------------------------------------------

_NORM_PHRASE = {
    "unit": "each x scaled to unit norm",
    "standardize": "features standardized on the training points, then divided by sqrt(d_eff)",
    "none": "raw coordinates (pixels scaled to [0, 1])",
}


def normalize(
    X: np.ndarray, X_probe: np.ndarray, how: str, pixel_max: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Normalize training points X (n, d) and probes X_probe (p, d) with training statistics.

    ``pixel_max`` is the raw value of a white pixel (1 for continuous data); ``none`` divides by
    it, and the other modes are invariant to it.
    """
    X, X_probe = X / pixel_max, X_probe / pixel_max
    if how == "unit":
        return _unit(X), _unit(X_probe)
    if how == "standardize":
        mean, std = X.mean(axis=0), X.std(axis=0)  # population std: mean |x|^2 is then exact
        live = std > 0
        scale = np.where(live, std, 1.0) * math.sqrt(max(int(live.sum()), 1))

        def standardize(A: np.ndarray) -> np.ndarray:
            return np.where(live, A - mean, 0.0) / scale  # (k, d)

        return standardize(X), standardize(X_probe)
    return X, X_probe


def _unit(A: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(A, axis=1, keepdims=True)  # (k, 1)
    if np.any(norms == 0):
        row = int(np.flatnonzero(norms[:, 0] == 0)[0])
        raise DataError(
            f"point {row} is the zero vector and cannot be scaled to unit norm; "
            "use data.normalize: standardize or none"
        )
    return A / norms


# --- synthetic kinds --------------------------------------------------------------------------


def _circle(cfg: CircleData) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    if cfg.d != 2:
        raise ConfigError(f"config field 'data.d' = {cfg.d}: the circle is 2-d; set data.d: 2")
    n, p = cfg.n, cfg.n_probe
    angles = 2 * np.pi * np.arange(1, n + 1) / n  # (n,) the seed's x_i for i = 1..n
    y = (np.arange(n) % 2).astype(np.float64)  # 0 at i = 1, then alternating
    offset = 1 / (2 * math.lcm(n, p)) if p else 0.0  # half a step of the common angle grid
    probe_angles = 2 * np.pi * (np.arange(p) / max(p, 1) + offset)  # (p,)
    what = f"{n} points evenly spaced on the unit circle, labels alternating"
    return _on_circle(angles), y, _on_circle(probe_angles), what


def _on_circle(angles: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (k, 2)


def _sphere(cfg: SphereData) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    g = torch.Generator().manual_seed(cfg.seed)
    X = _gaussian_directions(cfg.n, cfg.d, g)  # (n, d) drawn first: independent of n_probe
    y = (torch.rand(cfg.n, generator=g, dtype=torch.float64) < 0.5).double().numpy()  # (n,)
    if y.min() == y.max():
        y[-1] = 1.0 - y[-1]  # a single-class draw: flip the last label so both classes exist
    X_probe = _gaussian_directions(cfg.n_probe, cfg.d, g)  # (p, d)
    what = f"{cfg.n} points uniform on S^{cfg.d - 1} (seed {cfg.seed}), labels Bernoulli(1/2)"
    return X, y, X_probe, what


def _gaussian_directions(k: int, d: int, g: torch.Generator) -> np.ndarray:
    Z = torch.randn(k, d, generator=g, dtype=torch.float64)  # (k, d)
    return (Z / Z.norm(dim=1, keepdim=True)).numpy()


# --- image kinds: digits and MNIST ------------------------------------------------------------


def _images(cfg: DigitsData | MnistData) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Pick n training and n_probe probe images of the two classes, balanced and seeded."""
    target = _binary_target(cfg)
    pixels, digits, source = load_mnist(cfg.path) if isinstance(cfg, MnistData) else _load_digits()
    labels = target(digits)  # (N,) 0, 1 or -1 for digits outside the two classes
    g = torch.Generator().manual_seed(cfg.seed)
    pools = [_permuted(np.flatnonzero(labels == c), g) for c in (0, 1)]
    counts = _balanced(cfg.n, [len(p) for p in pools], cfg, "data.n")
    # the final shuffle mixes the classes, so the first points are not all of label 0
    train = _permuted(np.concatenate([p[:k] for p, k in zip(pools, counts, strict=True)]), g)
    rest = [p[k:] for p, k in zip(pools, counts, strict=True)]
    probe_counts = _balanced(cfg.n_probe, [len(p) for p in rest], cfg, "data.n_probe")
    probe = _permuted(np.concatenate([p[:k] for p, k in zip(rest, probe_counts, strict=True)]), g)
    d = math.prod(pixels.shape[1:])  # 64 for digits, 784 for MNIST: data.d is ignored
    X = pixels[train].reshape(len(train), d).astype(np.float64)  # (n, d)
    X_probe = pixels[probe].reshape(len(probe), d).astype(np.float64)  # (p, d)
    return X, labels[train].astype(np.float64), X_probe, f"{source}, {_task(cfg)}"


def _binary_target(cfg: DigitsData | MnistData):
    """The map digit -> label (0 or 1, -1 = not used) for ``data.classes`` (already checked)."""
    classes = cfg.classes
    if classes == "parity":
        return lambda digits: (digits % 2).astype(np.int64)
    a, b = classes
    return lambda digits: np.where(digits == a, 0, np.where(digits == b, 1, -1))


def _task(cfg: DigitsData | MnistData) -> str:
    if cfg.classes == "parity":
        return "odd (1) vs even (0) digits"
    return f"digit {cfg.classes[0]} (0) vs digit {cfg.classes[1]} (1)"


def _permuted(idx: np.ndarray, g: torch.Generator) -> np.ndarray:
    return idx[torch.randperm(len(idx), generator=g).numpy()]


def _balanced(k: int, available: list[int], cfg: DigitsData | MnistData, field: str) -> list[int]:
    """Split k points over two classes: k//2 and the rest, moving the excess if one runs out."""
    if k > sum(available):
        value = cfg.n if field == "data.n" else cfg.n_probe
        raise ConfigError(
            f"config field '{field}' = {value}: {cfg.kind} with classes {cfg.classes} has only "
            f"{sum(available)} points left for it; lower {field}"
        )
    k0 = min(k // 2, available[0])
    k1 = min(k - k0, available[1])
    return [k - k1, k1]


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    pixels = bunch.images.astype(np.uint8)  # (1797, 8, 8), values 0..16
    pixels.flags.writeable = False  # cached and shared between calls
    return pixels, bunch.target.astype(np.int64), "scikit-learn 8x8 digits"
