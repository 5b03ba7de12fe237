"""``ntkdiv run`` and ``ntkdiv ntk``: the happy path, and bad input that must leave no trace."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from ntkdiv.cli import main

BAD = Path(__file__).parents[1] / "core" / "fixtures" / "bad"
SMALL = ["--set", "model.width=32", "--set", "train.epochs=20", "--quiet"]


def _corrupt_mnist(root: Path) -> Path:
    """An IDX pair whose image file is truncated mid-way."""
    root.mkdir()
    header = struct.pack(">IIII", 2051, 100, 28, 28)
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + b"\0" * 500))
    labels = struct.pack(">II", 2049, 100) + bytes(range(10)) * 10
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return root


BAD_CASES = [
    ("malformed.yaml", "malformed YAML"),
    ("unknown_key.yaml", "did you mean 'model.width'"),
    ("wrong_type.yaml", "model.width"),
    ("width_zero.yaml", "model.width"),
    ("depth_zero.yaml", "model.depth"),
    ("lr_negative.yaml", "train.lr"),
    ("lr_nan.yaml", "train.lr"),
    ("unknown_arch.yaml", "model.arch"),
    ("alpha_zero.yaml", "model.alpha"),
    ("n_one.yaml", "data.n"),
    ("mnist_missing.yaml", "/nonexistent/mnist"),
    ("mnist_corrupt.yaml", "train-images-idx3-ubyte"),
    ("single_class.yaml", "classes"),
    ("overflowing_schedule.yaml", "track"),
    ("unknown_train_key.yaml", "train.lossfn"),
    ("not_a_mapping.yaml", "mapping"),
    ("bad_device.yaml", "device"),
    ("does_not_exist.yaml", "not found"),
]


@pytest.mark.parametrize("name,needle", BAD_CASES)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    name, needle, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    extra = []
    if name == "mnist_corrupt.yaml":
        extra = ["--set", f"data.path={_corrupt_mnist(tmp_path / 'mnist')}"]
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(["run", str(BAD / name), "--out", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntkdiv: error:"), err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_bad_override_key_suggests_the_right_one(tmp_path, capsys):
    code = main(["run", str(BAD / "width_zero.yaml"), "--set", "modle.width=3"])
    assert code == 2
    assert "did you mean 'model.width'" in capsys.readouterr().err


def test_run_writes_the_trial_files(tmp_path, capsys):
    cfg = Path(__file__).parents[2] / "configs" / "fig1_circle.yaml"
    out = tmp_path / "run"
    assert main(["run", str(cfg), *SMALL, "--out", str(out)]) == 0
    assert {"config.yaml", "summary.json", "trajectory.parquet", "checkpoint.pt"} <= {
        p.name for p in out.iterdir()
    }
    assert "drift_sup" in capsys.readouterr().out


def test_run_warns_when_lr_exceeds_the_stability_limit(tmp_path, capsys):
    cfg = Path(__file__).parents[2] / "configs" / "fig1_circle.yaml"
    args = ["run", str(cfg), *SMALL, "--set", "train.loss=mse", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    assert "exceeds the mse stability limit" in capsys.readouterr().err


def test_ntk_prints_lambda0_and_the_bound(capsys):
    cfg = Path(__file__).parents[2] / "configs" / "fig1_circle.yaml"
    assert main(["ntk", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "lambda0     = 1.775534" in out
    assert "bound       = 0.0246" in out


@pytest.mark.parametrize("name", ["fig1_circle.yaml", "resnet_circle.yaml", "fig2_digits.yaml"])
def test_example_configs_run_at_smoke_size(name, tmp_path):
    cfg = Path(__file__).parents[2] / "configs" / name
    args = ["run", str(cfg), *SMALL, "--set", "checkpoint.every=0", "--out", str(tmp_path / "o")]
    assert main(args) == 0


def test_mnist_config_runs_on_a_user_supplied_folder(tmp_path):
    """The MNIST config, pointed at a small valid IDX folder, runs at smoke size."""
    import numpy as np

    root = tmp_path / "mnist"
    root.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    labels = np.arange(200, dtype=np.uint8) % 10
    header = struct.pack(">IIII", 2051, 200, 28, 28)
    (root / "train-images-idx3-ubyte").write_bytes(header + images.tobytes())
    (root / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 200) + labels.tobytes())
    cfg = Path(__file__).parents[2] / "configs" / "fig2_mnist.yaml"
    args = ["run", str(cfg), *SMALL, "--set", f"data.path={root}", "--out", str(tmp_path / "o")]
    assert main(args) == 0
