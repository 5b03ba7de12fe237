"""A real sweep aggregates, and its report opens in headless Chromium.

The sweep is ``sweeps/smoke.yaml`` through ``ntkdiv sweep`` when both exist; otherwise the same
kind of grid is driven trial by trial with ``core.run_trial`` into the store's layout
(real training, real trajectories, the real store), so the aggregator is tested either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dashboards
from core import config_from_dict, run_trial, store, trial_id
from dashboards._read import find_sweeps

from .test_report import DATA_IMG, assert_not_blank, screenshot

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "sweeps" / "smoke.yaml"
VERDICTS = {v.value for v in dashboards.Verdict}


def _via_runner(storage: Path) -> Path:
    ntkdiv = Path(sys.executable).with_name("ntkdiv")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    proc = subprocess.run([str(ntkdiv), "sweep", str(SMOKE), "--storage", str(storage),
                           "--tracking-uri", f"sqlite:///{storage}/mlflow.db", "--quiet"],
                          capture_output=True, text=True, timeout=1500, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Conclusions:" in proc.stdout  # ntkdiv sweep ends with the aggregator's verdict
    (sweep_dir,) = find_sweeps(storage)
    return sweep_dir


def _direct(storage: Path) -> Path:
    sweep_dir = storage / "smoke"
    for loss, lr in (("cross_entropy", 0.1), ("mse", 0.02)):
        for width in (32, 64, 128):
            for seed in (0, 1):
                cfg = config_from_dict({
                    "model": {"arch": "fcn", "width": width, "depth": 3},
                    "train": {"loss": loss, "lr": lr, "epochs": 300},
                    "track": {"log_points": 40}, "seed": seed,
                })  # fmt: skip
                tid = trial_id(cfg)
                run_trial(cfg, store.trial_dir(sweep_dir, tid))
    return sweep_dir


@pytest.mark.slow
def test_smoke_sweep_aggregates_and_report_opens(tmp_path):
    runner = (ROOT / "sweep" / "_runner.py").is_file() and SMOKE.is_file()
    sweep_dir = _via_runner(tmp_path / "store") if runner else _direct(tmp_path / "store")
    result = dashboards.aggregate(sweep_dir, tmp_path / "report")
    assert len(result.verdict) >= 2 and set(result.verdict["verdict"]) <= VERDICTS
    assert (result.verdict["n_seeds"] > 0).all()
    assert not [n for n in result.notes if "summary" in n]  # summary and trajectory agree
    assert {"gap_init", "drift_sup", "drift_sup_horizon", "t_exceed"} <= set(
        result.fits["quantity"]
    )
    page = result.html.read_text()
    assert len(DATA_IMG.findall(page)) == len(result.figures) >= 7
    png = tmp_path / "report.png"
    screenshot(result.html, png, tmp_path)
    assert_not_blank(png)
