"""``ntkdiv search``: exact pruning, parallel trials in one study, resume after SIGKILL, bad specs.

Real components: a local Ray cluster, an Optuna sqlite study, the Parquet store, MLflow (sqlite).
"""

from __future__ import annotations

import io
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core import run_trial
from core.store import LEASE, acquire_lease, read_json, release_lease
from ntkdiv._search import report
from ntkdiv.cli import main
from sweep._search import config_for, run_search
from sweep._search_spec import objective_value
from sweep._spec import load_spec

REPO = Path(__file__).parents[2]


def write_spec(tmp_path: Path, epochs: int = 300, n_trials: int = 6, **search) -> Path:
    raw = yaml.safe_load((REPO / "sweeps" / "search_smoke.yaml").read_text())
    raw["storage"] = str(tmp_path / "store")
    raw["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    raw["base"]["train"]["epochs"] = epochs
    raw["search"].update({"n_trials": n_trials, "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
                          **search})  # fmt: skip
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _studied(tmp_path: Path) -> list[tuple]:
    """(number, state) of every trial in the study's sqlite file; none while Optuna is still
    creating its tables (the file exists a moment before them)."""
    con = sqlite3.connect(tmp_path / "optuna.db")
    try:
        return con.execute("select number, state from trials order by number").fetchall()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return []
        raise
    finally:
        con.close()


@pytest.mark.slow
def test_pruning_is_exact_and_trials_run_in_parallel(tmp_path):
    spec = load_spec(write_spec(tmp_path, n_trials=8))
    result = run_search(spec, num_cpus=2)
    states = [t["state"] for t in result.trials]
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 1
    best = min(t["value"] for t in result.trials if t["state"] == "COMPLETE")
    for t in result.trials:
        if t["state"] != "PRUNED":
            continue
        full = run_trial(config_for(spec, t["params"]), tmp_path / f"full-{t['number']}")
        final = objective_value(full, "min_drift_ratio")
        assert final >= best, (t["number"], final, best)
        assert t["user_attrs"]["objective_bound"] <= final + 1e-12  # a true lower bound
    _assert_overlap(result.sweep_dir)
    assert not (Path(result.sweep_dir) / LEASE).exists()  # the search released its lease
    out = io.StringIO()
    report(result, out)
    text = out.getvalue()
    assert f"study {result.study_name} (min_drift_ratio): {len(result.trials)} trials" in text
    assert "compute saved by pruning: " in text and "  #1 trial " in text
    assert "ntkdiv rerun " in text  # the best trials' MLflow runs, to rerun locally
    below = [t["number"] for t in result.trials if t["state"] == "COMPLETE" and t["value"] < 1]
    for number in below:
        assert f"candidate: trial {number} kept drift_sup below the bound up to t = " in text
    if not below:
        assert "no trial stayed below lambda0/(2 n^2) within its horizon" in text


def _assert_overlap(sweep_dir: Path) -> None:
    """At least two trials ran at the same time (from their own attempt records)."""
    spans = []
    for attempts in (Path(sweep_dir) / "trials").glob("*/attempts.json"):
        for a in read_json(attempts)["attempts"]:
            if a.get("end"):
                spans.append((a["start"], a["end"]))
    spans.sort()
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), spans


@pytest.mark.slow
def test_killed_driver_resumes_without_losing_or_doubling_trials(tmp_path):
    spec_path = write_spec(tmp_path, epochs=1500, n_trials=6)
    cmd = [sys.executable, "-m", "ntkdiv.cli", "search", str(spec_path)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if (tmp_path / "optuna.db").exists():
            finished = [s for _, s in _studied(tmp_path) if s != "RUNNING"]
            if len(finished) >= 2:
                break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray cluster it started
    proc.wait()
    before = _studied(tmp_path)
    assert 2 <= len([s for _, s in before if s != "RUNNING"]) < 6, before
    lost = [n for n, s in before if s == "RUNNING"]
    assert main(["search", str(spec_path)]) == 0
    after = _studied(tmp_path)
    assert dict(after).items() >= {n: s for n, s in before if s != "RUNNING"}.items()
    # each lost trial was failed and asked again with its parameters, exactly once
    trials = _optuna_trials(tmp_path)
    again = {t.user_attrs["replaces"]: t for t in trials if "replaces" in t.user_attrs}
    assert sorted(again) == lost
    for number in lost:
        old, new = trials[number], again[number]
        assert old.state.name == "FAIL"
        if "trial_id" in old.user_attrs:  # it was dispatched: the same config resumes
            assert new.params == old.params
            assert new.user_attrs["trial_id"] == old.user_attrs["trial_id"]
        else:  # killed while Optuna wrote its parameters: the written ones are kept
            assert new.params.items() >= old.params.items()
    live = [t for t in trials if t.number not in again]
    assert len(live) == 6  # none lost, none asked twice
    assert all(t.state.name in ("COMPLETE", "PRUNED", "FAIL") for t in live), live
    # the resumed sampler did not replay its first draws
    assert len({tuple(sorted(t.params.items())) for t in live}) == 6
    _assert_one_mlflow_run_per_trial(tmp_path)


def _optuna_trials(tmp_path: Path) -> list:
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def _assert_one_mlflow_run_per_trial(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("search-smoke")
    runs = client.search_runs([exp.experiment_id], "tags.trial_id != ''", max_results=1000)
    tids = [r.data.tags["trial_id"] for r in runs]
    assert len(tids) == len(set(tids))
    on_disk = {p.name for p in (tmp_path / "store" / "search-smoke" / "trials").iterdir()}
    assert set(tids) == on_disk


@pytest.mark.parametrize(
    "space,needle",
    [
        ({"model.width": {"type": "int", "low": 64, "high": 32}}, "empty range"),
        ({"train.lr": {"type": "log_float", "low": -1.0, "high": 0.1}}, "log scale"),
        ({"model.widht": {"type": "int", "low": 8, "high": 64}}, "did you mean 'model.width'"),
        ({"model.width": {"type": "int", "low": 0, "high": 8}}, "model.width"),
    ],
)
def test_bad_search_space_creates_no_study(tmp_path, monkeypatch, capsys, space, needle):
    monkeypatch.chdir(tmp_path)
    spec_path = write_spec(tmp_path)
    raw = yaml.safe_load(spec_path.read_text())
    raw["search"]["space"] = space
    spec_path.write_text(yaml.safe_dump(raw))
    assert main(["search", str(spec_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search.yaml"]


def test_a_search_refuses_while_another_driver_holds_the_sweep(tmp_path, monkeypatch, capsys):
    """One driver per sweep directory, searches included: the second names the first and
    ``--wait``, and touches nothing (no study, no trial, no MLflow run)."""
    monkeypatch.chdir(tmp_path)
    spec_path = write_spec(tmp_path)
    sweep_dir = tmp_path / "store" / "search-smoke"
    lease, _ = acquire_lease(sweep_dir)  # this live process plays the other driver
    try:
        assert main(["search", str(spec_path)]) == 2
    finally:
        release_lease(sweep_dir, lease)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"pid {os.getpid()}, since 20" in line and "--wait" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search.yaml", "store"]
    assert [p.name for p in sweep_dir.iterdir()] == []


def test_compute_saved_counts_only_pruned_steps():
    from ntkdiv._search import compute_saved

    trials = [
        {"state": "COMPLETE", "user_attrs": {"epochs": 100, "steps": 100}},
        {"state": "PRUNED", "user_attrs": {"epochs": 100, "steps": 25}},
    ]
    assert math.isclose(compute_saved(trials), 75 / 200)
