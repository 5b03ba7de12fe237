"""Data sets: the seed's circle, the sphere, digits and MNIST (IDX files written here)."""

from __future__ import annotations

import dataclasses
import gzip
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from core import ConfigError, DataConfig, DataError, config_from_dict, make_dataset
from tests.tolerance import EXACT_F64, assert_close


def data(**fields) -> DataConfig:
    """The data config of these fields, validated as a trial config's ``data`` section."""
    return config_from_dict({"data": fields}).data


def rows_of(X: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in X.numpy()}


def at(path: Path) -> str:
    """A regex matching the path literally, for ``pytest.raises(match=...)``."""
    return re.escape(str(path))


def angles_of(X: torch.Tensor) -> np.ndarray:
    return np.mod(np.arctan2(X[:, 1].numpy(), X[:, 0].numpy()), 2 * np.pi)


# --- circle -------------------------------------------------------------------------------------


def test_circle_is_the_seeds_six_points():
    ds = make_dataset(data(kind="circle", n=6, d=2))
    i = np.arange(1, 7)
    expected = np.stack([np.cos(i * np.pi / 3), np.sin(i * np.pi / 3)], axis=1)
    assert_close(ds.X, expected, EXACT_F64, "x_i = (cos(i pi/3), sin(i pi/3))")
    assert ds.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert ds.X.dtype == ds.y.dtype == torch.float64
    assert ds.X_probe.shape == (0, 2)


def test_circle_antipodal_points_have_opposite_labels():
    ds = make_dataset(data(kind="circle", n=10))
    for i in range(5):
        assert_close(ds.X[i], -ds.X[i + 5], EXACT_F64, "antipode")
        assert ds.y[i] != ds.y[i + 5]


def test_circle_needs_d_2():
    with pytest.raises(ConfigError, match="data.d.*3"):
        make_dataset(data(kind="circle", d=3))


@pytest.mark.parametrize("n,p", [(6, 6), (6, 3), (6, 4), (6, 12), (5, 7), (2, 1)])
def test_circle_probes_are_evenly_spaced_and_off_the_training_points(n, p):
    ds = make_dataset(data(kind="circle", n=n, n_probe=p))
    assert ds.X_probe.shape == (p, 2)
    assert_close(ds.X_probe.norm(dim=1), np.ones(p), EXACT_F64, "probes on the circle")
    steps = np.diff(np.sort(angles_of(ds.X_probe)))
    assert_close(steps, np.full(p - 1, 2 * np.pi / p), EXACT_F64, "even spacing")
    distances = torch.cdist(ds.X_probe, ds.X)  # (p, n)
    assert distances.min() > 1e-3


def test_circle_probes_are_the_midpoints_when_as_many_as_points():
    ds = make_dataset(data(kind="circle", n=6, n_probe=6))
    expected = np.sort(np.mod(2 * np.pi * (np.arange(1, 7) + 0.5) / 6, 2 * np.pi))
    assert_close(np.sort(angles_of(ds.X_probe)), expected, EXACT_F64, "midpoint angles")


def test_requested_dtype_and_device():
    ds = make_dataset(data(kind="circle", n_probe=2), dtype=torch.float32, device="cpu")
    assert ds.X.dtype == ds.y.dtype == ds.X_probe.dtype == torch.float32
    assert ds.X.device.type == "cpu"


def test_dataset_is_frozen():
    ds = make_dataset(data())
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]


# --- sphere -------------------------------------------------------------------------------------


def test_sphere_points_are_unit_vectors_with_both_labels():
    ds = make_dataset(data(kind="sphere", n=40, d=7, seed=3, n_probe=5))
    assert ds.X.shape == (40, 7) and ds.X_probe.shape == (5, 7)
    assert_close(ds.X.norm(dim=1), np.ones(40), EXACT_F64, "|x| = 1")
    assert set(ds.y.tolist()) == {0.0, 1.0}
    assert not rows_of(ds.X) & rows_of(ds.X_probe)


def test_sphere_points_are_on_the_sphere_before_normalization():
    ds = make_dataset(data(kind="sphere", n=30, d=4, n_probe=3, normalize="none"))
    assert_close(ds.X.norm(dim=1), np.ones(30), EXACT_F64, "raw |x| = 1")
    assert_close(ds.X_probe.norm(dim=1), np.ones(3), EXACT_F64, "raw |x_probe| = 1")


def test_sphere_is_deterministic_in_the_seed():
    a = make_dataset(data(kind="sphere", n=20, d=5, seed=1))
    b = make_dataset(data(kind="sphere", n=20, d=5, seed=1))
    c = make_dataset(data(kind="sphere", n=20, d=5, seed=2))
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    assert not torch.equal(a.X, c.X)


def test_sphere_training_set_does_not_depend_on_the_probes():
    a = make_dataset(data(kind="sphere", n=12, d=4, seed=5))
    b = make_dataset(data(kind="sphere", n=12, d=4, seed=5, n_probe=9))
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)


def test_sphere_always_has_both_classes():
    """With n = 2 half the raw draws are single-class; the flip rule must fix every one."""
    for seed in range(40):
        ds = make_dataset(data(kind="sphere", n=2, d=3, seed=seed))
        assert sorted(ds.y.tolist()) == [0.0, 1.0], seed


def test_sphere_points_are_uniform():
    """The mean of uniform points on S^2 is 0 (std per coordinate 1/sqrt(3 n))."""
    ds = make_dataset(data(kind="sphere", n=30000, d=3, seed=0))
    assert ds.X.mean(dim=0).abs().max() < 5 / math.sqrt(3 * 30000)
    assert abs(ds.y.mean().item() - 0.5) < 5 * 0.5 / math.sqrt(30000)


def test_sphere_needs_d_at_least_2():
    with pytest.raises(ConfigError, match="data.d"):
        make_dataset(data(kind="sphere", n=5, d=1))


# --- digits -------------------------------------------------------------------------------------


def digit_of_rows(X_raw: torch.Tensor) -> np.ndarray:
    """The true digit of each (normalize: none) row, found in scikit-learn's table."""
    bunch = load_digits()
    lookup = {row.tobytes(): t for row, t in zip(bunch.data / 16.0, bunch.target, strict=True)}
    return np.array([lookup[row.tobytes()] for row in X_raw.numpy()])


def test_digits_parity_labels_and_balance():
    ds = make_dataset(data(kind="digits", n=101, classes="parity", normalize="none", n_probe=9))
    assert ds.X.shape == (101, 64) and ds.X_probe.shape == (9, 64)
    assert (ds.y == 0).sum() == 50 and (ds.y == 1).sum() == 51
    assert np.array_equal(ds.y.numpy(), digit_of_rows(ds.X) % 2)
    assert not rows_of(ds.X) & rows_of(ds.X_probe)
    assert set(digit_of_rows(ds.X_probe) % 2) == {0, 1}


def test_digits_two_classes_map_to_0_and_1():
    ds = make_dataset(data(kind="digits", n=30, classes=[8, 3], normalize="none"))
    digits = digit_of_rows(ds.X)
    assert set(digits) == {3, 8}
    assert np.array_equal(ds.y.numpy(), (digits == 3).astype(float))
    assert ds.y.sum() == 15


def test_digits_first_points_mix_the_classes():
    ds = make_dataset(data(kind="digits", n=100))
    assert 0 < ds.y[:10].sum() < 10


def test_digits_are_deterministic_in_the_seed():
    a = make_dataset(data(kind="digits", n=40, seed=7, n_probe=4))
    b = make_dataset(data(kind="digits", n=40, seed=7, n_probe=4))
    c = make_dataset(data(kind="digits", n=40, seed=8, n_probe=4))
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y) and torch.equal(a.X_probe, b.X_probe)
    assert not torch.equal(a.X, c.X)


def test_digits_ignore_data_d():
    assert make_dataset(data(kind="digits", n=10, d=5)).X.shape == (10, 64)


@pytest.mark.parametrize("classes", [[3, 8], [8, 3]])
def test_digits_fill_from_the_larger_class_when_one_runs_out(classes):
    """Digit 3 has 183 images and digit 8 has 174: all 357 can be used, not more."""
    ds = make_dataset(data(kind="digits", n=357, classes=classes))
    sizes = {3: 183, 8: 174}
    assert ds.X.shape == (357, 64)
    assert (ds.y == 0).sum() == sizes[classes[0]] and (ds.y == 1).sum() == sizes[classes[1]]
    with pytest.raises(ConfigError, match="'data.n' = 358.*357"):
        make_dataset(data(kind="digits", n=358, classes=[3, 8]))
    with pytest.raises(ConfigError, match="'data.n_probe' = 10"):
        make_dataset(data(kind="digits", n=350, classes=[3, 8], n_probe=10))


@pytest.mark.parametrize("classes", [[3, 3], [3], [3, 8, 1], [3, 10], [-1, 2]])
def test_digits_reject_bad_classes(classes):
    with pytest.raises(ConfigError, match=r"data\.classes"):
        make_dataset(data(kind="digits", n=10, classes=classes))


# --- normalization ------------------------------------------------------------------------------


def test_unit_normalization_puts_every_point_on_the_sphere():
    ds = make_dataset(data(kind="digits", n=50, n_probe=5, normalize="unit"))
    assert_close(ds.X.norm(dim=1), np.ones(50), EXACT_F64, "|x| = 1")
    assert_close(ds.X_probe.norm(dim=1), np.ones(5), EXACT_F64, "|x_probe| = 1")
    assert "unit norm" in ds.description


def test_standardize_uses_training_statistics():
    ds = make_dataset(data(kind="digits", n=60, n_probe=6, normalize="standardize"))
    raw = make_dataset(data(kind="digits", n=60, n_probe=6, normalize="none"))
    live = raw.X.std(dim=0) > 0
    d_eff = int(live.sum())
    assert_close(ds.X.mean(dim=0), np.zeros(64), EXACT_F64, "zero mean")
    assert_close(ds.X[:, live].std(dim=0, unbiased=False), np.full(d_eff, d_eff**-0.5))
    assert torch.all(ds.X[:, ~live] == 0) and torch.all(ds.X_probe[:, ~live] == 0)
    assert_close((ds.X**2).sum(dim=1).mean(), 1.0, EXACT_F64, "mean |x|^2 = 1")
    expected = (raw.X_probe - raw.X.mean(dim=0)) / (raw.X.std(dim=0, unbiased=False) * d_eff**0.5)
    assert_close(ds.X_probe[:, live], expected[:, live], EXACT_F64, "probes use train stats")
    assert "standardized" in ds.description


def test_none_scales_pixels_to_the_unit_interval():
    ds = make_dataset(data(kind="digits", n=80, normalize="none"))
    assert ds.X.min() == 0 and ds.X.max() == 1
    assert "raw" in ds.description


def test_description_names_the_classes_and_counts():
    ds = make_dataset(data(kind="digits", n=20, classes=[1, 7]))
    assert "digit 1 (0) vs digit 7 (1)" in ds.description
    assert "10 of class 0, 10 of class 1" in ds.description
    assert "\n" not in ds.description


# --- MNIST from IDX files -----------------------------------------------------------------------


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: Path, count: int = 120, gz: bool = False, seed: int = 0) -> np.ndarray:
    """Write a small IDX pair; return the images (count, 28, 28) uint8. Labels are i % 10."""
    folder.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(seed).integers(1, 256, size=(count, 28, 28), dtype=np.uint8)
    labels = (np.arange(count) % 10).astype(np.uint8)
    for name, blob in [
        ("train-images-idx3-ubyte", idx_bytes(images, 2051)),
        ("train-labels-idx1-ubyte", idx_bytes(labels, 2049)),
    ]:
        path = folder / (name + ".gz" if gz else name)
        path.write_bytes(gzip.compress(blob) if gz else blob)
    return images


@pytest.mark.parametrize("layout", ["", "MNIST/raw", "raw"])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, layout, gz):
    images = write_mnist(tmp_path / layout, gz=gz)
    cfg = data(kind="mnist", path=str(tmp_path), n=40, n_probe=10, normalize="none")
    ds = make_dataset(cfg)
    assert ds.X.shape == (40, 784) and ds.X_probe.shape == (10, 784)
    index = {(img / 255.0).tobytes(): i for i, img in enumerate(images.reshape(-1, 784))}
    rows = [index[r.tobytes()] for r in ds.X.numpy()]
    assert np.array_equal(ds.y.numpy(), np.array(rows) % 10 % 2)
    assert ds.y.sum() == 20
    probes = [index[r.tobytes()] for r in ds.X_probe.numpy()]
    assert not set(rows) & set(probes)


def test_mnist_two_digits_and_unit_norm(tmp_path):
    write_mnist(tmp_path, count=200)
    ds = make_dataset(data(kind="mnist", path=str(tmp_path), n=30, classes=[4, 9]))
    assert ds.y.sum() == 15
    assert_close(ds.X.norm(dim=1), np.ones(30), EXACT_F64, "|x| = 1")
    with pytest.raises(ConfigError, match="'data.n' = 41"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=41, classes=[4, 9]))


def test_mnist_missing_path_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{at(missing)}.*does not exist"):
        make_dataset(data(kind="mnist", path=str(missing), n=10))


def test_mnist_without_path_is_a_config_error():
    with pytest.raises(ConfigError, match="data.path"):
        make_dataset(data(kind="mnist", n=10))


def test_mnist_folder_without_the_files(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(DataError, match=f"{at(tmp_path)}.*train-labels-idx1-ubyte"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=10))


def test_mnist_bad_magic(tmp_path):
    write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">I", 2051) + labels.read_bytes()[4:])
    with pytest.raises(DataError, match=f"{at(labels)}.*magic number 2051, expected 2049"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=10))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_truncated_images(tmp_path, gz):
    write_mnist(tmp_path, gz=gz)
    images = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    blob = gzip.decompress(images.read_bytes()) if gz else images.read_bytes()
    blob = blob[:5000]
    images.write_bytes(gzip.compress(blob) if gz else blob)
    with pytest.raises(DataError, match=f"{at(images)} is truncated"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=10))


def test_mnist_truncated_gzip_stream(tmp_path):
    write_mnist(tmp_path, gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:300])
    with pytest.raises(DataError, match=f"{at(images)} cannot be read"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=10))


def test_mnist_header_only_file_is_truncated(tmp_path):
    write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">I", 2049))
    with pytest.raises(DataError, match=f"{at(labels)} is truncated"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=10))


def test_mnist_image_and_label_counts_must_agree(tmp_path):
    write_mnist(tmp_path, count=120)
    labels = np.zeros(100, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    with pytest.raises(DataError, match="120 images but .* 100 labels"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=10))


def test_mnist_labels_must_be_digits(tmp_path):
    write_mnist(tmp_path, count=20)
    labels = np.full(20, 11, dtype=np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels, 2049))
    with pytest.raises(DataError, match="label 11"):
        make_dataset(data(kind="mnist", path=str(tmp_path), n=10))
