"""The MLflow parent run of a sweep or a search never stays RUNNING: an interrupted run marks it
KILLED, the next run sets it RUNNING and finishes it, and ``ntkdiv sync`` ends it too (real Ray,
a real sqlite MLflow store, the console script)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._signals import sigint_as_in_a_terminal

NTKDIV = str(Path(sys.executable).with_name("ntkdiv"))


def parent_status(db: Path, name: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`ntkdiv.role` = 'parent'")
    assert len(runs) == 1
    return runs[0].info.status


def interrupt_at_a_checkpoint(argv: list[str], cwd: Path, env: dict, trials: Path) -> None:
    """Start ``argv``; once MLflow's database and a trial's checkpoint exist, press Ctrl-C (its
    process group) and expect exit 130."""
    db = cwd / "mlflow.db"
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=sigint_as_in_a_terminal)  # fmt: skip
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists() and any(trials.glob("*/checkpoint.pt")):
            break
        time.sleep(0.3)
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    time.sleep(2)  # the parent run exists once MLflow is open, right after submission
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=180) == 130


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_interrupted_sweep_marks_its_parent_killed_and_the_next_run_finishes_it(tmp_path):
    db = tmp_path / "mlflow.db"
    spec = {"name": "parent", "storage": str(tmp_path / "store"),
            "mlflow": {"tracking_uri": f"sqlite:///{db}"},
            "base": {"model": {"arch": "fcn", "width": 16, "depth": 2},
                     "data": {"kind": "circle", "n": 4},
                     "train": {"loss": "cross_entropy", "lr": 0.1, "epochs": 20000},
                     "track": {"log_points": 20}, "checkpoint": {"every": 200}},
            "grid": {"seed": [0, 1]}}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}  # fmt: skip
    argv = [NTKDIV, "sweep", "spec.yaml", "--no-aggregate"]
    trials = tmp_path / "store" / "parent" / "trials"
    interrupt_at_a_checkpoint(argv, tmp_path, env, trials)
    assert not list(trials.glob("*/summary.json")), "the trials finished before the interrupt"
    assert parent_status(db, "parent") == "KILLED"
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert parent_status(db, "parent") == "FINISHED"
    fresh = tmp_path / "synced.db"  # sync into an empty store: it creates the parent run
    synced = subprocess.run([NTKDIV, "sync", str(tmp_path / "store" / "parent"), "--tracking-uri",
                             f"sqlite:///{fresh}"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    assert parent_status(fresh, "parent") == "FINISHED"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_interrupted_search_marks_its_parent_killed_and_the_next_run_finishes_it(tmp_path):
    from tests.sweep.test_search import write_spec

    db = tmp_path / "mlflow.db"
    # long enough that no trial ends before the interrupt: with 3,000 epochs a narrow trial of
    # the space finished in seconds, the search ended first, and FINISHED was the right answer
    spec = write_spec(tmp_path, epochs=20000, n_trials=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}  # fmt: skip
    argv = [NTKDIV, "search", str(spec)]
    trials = tmp_path / "store" / "search-smoke" / "trials"
    interrupt_at_a_checkpoint(argv, tmp_path, env, trials)
    assert len(list(trials.glob("*/summary.json"))) < 3, "the search finished before the interrupt"
    assert parent_status(db, "search-smoke") == "KILLED"
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert parent_status(db, "search-smoke") == "FINISHED"
