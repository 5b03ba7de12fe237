"""run_trial: gradient-flow consistency, determinism, resume after a kill, the seed's Figure 1."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from core import config_from_dict, run_trial
from core.store import trajectory_meta
from tests.tolerance import GRADIENT_FLOW, assert_close


def small(**sections) -> dict:
    base = {
        "model": {"arch": "fcn", "width": 64, "depth": 2},
        "data": {"kind": "circle", "n": 6},
        "train": {"loss": "cross_entropy", "lr": 0.1, "epochs": 50},
        "track": {"log_points": 20},
    }
    for key, value in sections.items():
        base.setdefault(key, {})
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


def kernel_from_row(values, pairs, n) -> np.ndarray:
    K = np.zeros((n, n))
    for (i, j), v in zip(pairs, values, strict=True):
        K[i, j] = K[j, i] = v
    return K


@pytest.mark.parametrize(
    "arch,loss,smoothing",
    [("fcn", "cross_entropy", 0.0), ("resnet", "cross_entropy", 0.1), ("fcn", "mse", 0.0),
     ("resnet", "mse", 0.0)],
)  # fmt: skip
def test_gradient_flow_matches_the_kernel(tmp_path, arch, loss, smoothing):
    """(f_1 - f_0)/lr = -K_0 dL/df within 1%: the loop integrates the kernel ODE."""
    lr = 1e-5
    cfg = config_from_dict(
        small(
            model={"arch": arch, "width": 256, "depth": 2},
            train={"loss": loss, "lr": lr, "epochs": 1, "label_smoothing": smoothing},
            track={"log_points": 2},
        )  # fmt: skip
    )
    run_trial(cfg, tmp_path)
    table = pq.read_table(tmp_path / "trajectory.parquet")
    pairs = trajectory_meta(table)["kernel_pairs"]
    f0, f1 = (np.array(v) for v in table.column("f").to_pylist())
    K0 = kernel_from_row(table.column("kernel").to_pylist()[0], pairs, 6)
    y = np.array([0, 1, 0, 1, 0, 1], dtype=float)
    target = y * (1 - smoothing) + smoothing / 2
    residual = 1 / (1 + np.exp(-f0)) - target if loss == "cross_entropy" else f0 - target
    assert_close((f1 - f0) / lr, -K0 @ residual, GRADIENT_FLOW, "df/dt vs -K r")


def test_same_config_twice_gives_identical_bytes(tmp_path):
    cfg = config_from_dict(small(train={"epochs": 120}))
    a = run_trial(cfg, tmp_path / "a")
    b = run_trial(cfg, tmp_path / "b")
    traj_a = (tmp_path / "a" / "trajectory.parquet").read_bytes()
    assert traj_a == (tmp_path / "b" / "trajectory.parquet").read_bytes()
    a.pop("wall_s"), b.pop("wall_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_finished_trial_is_not_recomputed(tmp_path):
    cfg = config_from_dict(small())
    run_trial(cfg, tmp_path)
    mtime = (tmp_path / "trajectory.parquet").stat().st_mtime_ns
    run_trial(cfg, tmp_path)
    assert (tmp_path / "trajectory.parquet").stat().st_mtime_ns == mtime


def test_a_killed_writers_leftovers_are_removed_when_the_trial_runs_again(tmp_path):
    import tempfile

    # what a writer SIGKILLed between its temporary file and the rename leaves behind
    leftovers = []
    for name, size in (("checkpoint.pt", 1 << 20), ("summary.json", 100)):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=tmp_path)
        os.write(fd, b"\0" * size)
        os.close(fd)
        leftovers.append(Path(tmp))
    (tmp_path / "notes.tmp").write_text("not ours")  # not a temporary name of the store
    summary = run_trial(config_from_dict(small()), tmp_path)
    assert summary["status"] == "completed"
    assert not any(p.exists() for p in leftovers)
    assert (tmp_path / "notes.tmp").exists()


def _write_yaml(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def test_killed_run_resumes_to_the_same_bits(tmp_path):
    raw = small(model={"width": 32}, train={"epochs": 6000}, track={"log_points": 60, "every": 500},
                checkpoint={"every": 400})  # fmt: skip
    cfg_path = _write_yaml(tmp_path / "cfg.yaml", raw)
    killed = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "ntkdiv.cli",
        "run",
        str(cfg_path),
        "--out",
        str(killed),
        "--quiet",
    ]
    # bitwise only at equal torch threads: the killed part runs in a subprocess, the rest here
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "the run finished before it could be killed"
    resumed = run_trial(config_from_dict(raw), killed)
    clean = run_trial(config_from_dict(raw), tmp_path / "clean")
    assert resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] > 0
    clean_bytes = (tmp_path / "clean" / "trajectory.parquet").read_bytes()
    assert (killed / "trajectory.parquet").read_bytes() == clean_bytes
    for key in ("drift_sup", "gap_sup", "loss_final", "theta_inf_final", "t_exceed"):
        assert resumed[key] == clean[key], key


def test_seed_figure_1_at_smoke_size(tmp_path):
    """FCN L=3, m=256, six circle points, 2000 epochs at lr 0.1: outputs diverge, loss vanishes."""
    cfg = config_from_dict(
        small(model={"width": 256, "depth": 3}, train={"epochs": 2000}, track={"log_points": 40})
    )
    summary = run_trial(cfg, tmp_path)
    table = pq.read_table(tmp_path / "trajectory.parquet").to_pydict()
    f_abs_min = np.array(table["f_abs_min"])
    late = f_abs_min[len(f_abs_min) // 2 :]
    assert late[-1] > late[0] > 0 and np.all(np.diff(late) > -1e-9)
    assert summary["loss_final"] < 0.01 * summary["loss_init"]
    assert all(d is not None and np.isfinite(d) for d in table["drift"])
    assert table["drift"][0] == 0.0 and summary["drift_sup"] > summary["bound"]


def test_divergent_lr_is_recorded_as_diverged(tmp_path):
    cfg = config_from_dict(
        small(model={"arch": "resnet"}, train={"loss": "mse", "lr": 1.0, "epochs": 2000})
    )
    summary = run_trial(cfg, tmp_path)
    assert summary["status"] == "diverged"
    assert 0 < summary["diverged_step"] < 2000
    steps = pq.read_table(tmp_path / "trajectory.parquet").column("step").to_pylist()
    assert steps == sorted(set(steps)) and steps[-1] <= summary["diverged_step"]


def test_exploding_parameters_are_diverged_even_when_the_loss_looks_fine(tmp_path):
    """lr = 1e6 under cross-entropy: parameters explode, the ReLUs die and the loss returns to
    n ln 2, all finite; the run is diverged, not completed."""
    cfg = config_from_dict(small(train={"lr": 1e6, "epochs": 300}))
    summary = run_trial(cfg, tmp_path)
    assert summary["status"] == "diverged", summary["theta_inf_final"]
    assert summary["theta_inf_final"] > 1e8


def test_weight_decay_keeps_parameters_closer_to_init(tmp_path):
    base = small(train={"epochs": 400})
    plain = run_trial(config_from_dict(base), tmp_path / "plain")
    decayed = run_trial(
        config_from_dict(small(train={"epochs": 400, "weight_decay": 0.5})), tmp_path / "wd"
    )
    assert decayed["theta_inf_final"] < plain["theta_inf_final"]


def test_cross_entropy_keeps_a_well_classified_points_loss_and_gradient():
    """log(1 + exp(-f)) at f = 40 is exp(-40) ~ 4e-18, not 0: a separated point still pulls."""
    from core import data_loss

    for f_value, y_value in ((40.0, 1.0), (-40.0, 0.0), (90.0, 1.0)):
        f = torch.tensor([f_value], dtype=torch.float64, requires_grad=True)
        y = torch.tensor([y_value], dtype=torch.float64)
        loss = data_loss(f, y, "cross_entropy")
        (grad,) = torch.autograd.grad(loss, f)
        exact = math.exp(-abs(f_value))
        assert loss.item() == pytest.approx(math.log1p(exact), rel=1e-12)
        assert abs(grad.item()) == pytest.approx(exact / (1 + exact), rel=1e-12)
    for f_value, y_value in ((0.3, 1.0), (-2.0, 1.0), (1.5, 0.0)):  # the seed's formula
        f = torch.tensor([f_value], dtype=torch.float64)
        seed = math.log1p(math.exp(-(2 * y_value - 1) * f_value))
        assert data_loss(
            f, torch.tensor([y_value], dtype=torch.float64), "cross_entropy"
        ).item() == (pytest.approx(seed, rel=1e-14))


def test_t_leave_and_t_stay_bracket_a_jittering_crossing():
    from core._crossings import first_leave, last_leave

    rows = {"t": [0.0, 1.0, 10.0, 100.0, 1000.0, 1e4], "gap": [0.1, 0.5, 1.1, 0.9, 1.2, 1.5]}
    assert first_leave(rows, 1.0) == pytest.approx(10 ** (5 / 6))  # 0.5 -> 1.1 over 1..10
    assert last_leave(rows, 1.0) == pytest.approx(10 ** (2 + 1 / 3))  # 0.9 -> 1.2 over 100..1000
    assert last_leave({**rows, "gap": [*rows["gap"][:-1], 0.8]}, 1.0) is None  # back inside
    assert last_leave({**rows, "gap": [0.1, 1.5, 2, 3, 4, 5]}, 1.0) == first_leave(
        {**rows, "gap": [0.1, 1.5, 2, 3, 4, 5]}, 1.0
    )
