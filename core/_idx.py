"""The MNIST training set from IDX files (optionally gzipped), flat or in a torchvision layout.

IDX: a big-endian uint32 magic (0x0800 + number of dims: 2049 labels, 2051 images), one
big-endian uint32 per dimension, then the product of the dims bytes of unsigned data.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np

from ._errors import ConfigError, DataError

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
IDX_MAGIC = {"images": 2051, "labels": 2049}  # unsigned-byte data with 3 dims / 1 dim


def load_mnist(path: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Read the MNIST training set: images (N, rows, cols) uint8 and labels (N,) int64."""
    images_path, labels_path = find_mnist_files(path)
    images = read_idx(images_path, IDX_MAGIC["images"])  # (N, rows, cols)
    labels = read_idx(labels_path, IDX_MAGIC["labels"]).astype(np.int64)  # (N,)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds "
            f"{labels.shape[0]} labels; the two files must come from the same set"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path} holds label {labels.max()}, outside 0..9")
    return images, labels, f"MNIST training images from {path}"


def find_mnist_files(path: str | None) -> tuple[Path, Path]:
    """Locate the MNIST training IDX pair under ``path`` (plain or .gz, flat or torchvision)."""
    if path is None:
        raise ConfigError(
            "config field 'data.path' = None: data.kind mnist needs a folder holding "
            "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
        )
    root = Path(path)
    if not root.is_dir():
        state = "is not a directory" if root.exists() else "does not exist"
        raise DataError(
            f"MNIST path {path} {state}; set data.path to a folder holding "
            f"{MNIST_FILES[0]}[.gz] and {MNIST_FILES[1]}[.gz] (or a torchvision MNIST folder)"
        )
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        images, labels = (_plain_or_gz(folder / name) for name in MNIST_FILES)
        if images is not None and labels is not None:
            return images, labels
    raise DataError(
        f"MNIST path {path} holds no {MNIST_FILES[0]}[.gz] and {MNIST_FILES[1]}[.gz] "
        "(looked in it, in MNIST/raw/ and in raw/); point data.path at the folder that has them"
    )


def _plain_or_gz(file: Path) -> Path | None:
    gz = file.with_name(file.name + ".gz")
    return file if file.is_file() else gz if gz.is_file() else None


def read_idx(file: Path, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file (optionally gzipped) into an array of its dims.

    The header is a big-endian uint32 magic (0x0800 + number of dims: 2049 labels, 2051 images)
    followed by one big-endian uint32 per dimension; the data are the product of the dims bytes.
    """
    raw = _read_bytes(file)
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        seen = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else "none"
        raise DataError(f"{file} is not an IDX file: magic number {seen}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{file} is truncated: {len(raw)} bytes, shorter than its header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{file} is {state}: {len(raw)} bytes, expected {expected} for dims {dims}; "
            "download the file again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_bytes(file: Path) -> bytes:
    try:
        data = file.read_bytes()
        return gzip.decompress(data) if file.suffix == ".gz" else data
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{file} cannot be read: {err}") from None
