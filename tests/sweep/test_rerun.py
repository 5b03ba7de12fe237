"""``ntkdiv rerun RUN_ID`` against a real ``mlflow server``: a logged trial reruns bit for bit."""

from __future__ import annotations

import math
import uuid

from mlflow import MlflowClient
from mlflow.entities import Param

from core import config_from_dict, run_trial, trial_id
from core import store as st
from mlflow_index import MlflowLogger
from ntkdiv._rerun import RTOL, comparison, same
from ntkdiv.cli import main


def logged_trial(mlflow_server, tmp_path) -> tuple[str, dict]:
    """A small real trial in a sweep store, logged as a child run; returns (run id, summary)."""
    sweep = tmp_path / f"sweep-{uuid.uuid4().hex[:8]}"
    cfg = config_from_dict({
        "model": {"arch": "resnet", "width": 32, "depth": 2},
        "train": {"loss": "cross_entropy", "lr": 0.05, "epochs": 40},
        "track": {"log_points": 10},
    })  # fmt: skip
    summary = run_trial(cfg, st.trial_dir(sweep, trial_id(cfg)))
    logger = MlflowLogger(mlflow_server, f"exp-{uuid.uuid4().hex[:8]}", sweep.name, sweep)
    return logger.log_trial(trial_id(cfg)), summary


def test_rerun_reproduces_a_logged_run_exactly(mlflow_server, tmp_path, capsys):
    run_id, summary = logged_trial(mlflow_server, tmp_path)
    out = tmp_path / "rerun"
    code = main(["rerun", run_id, "--tracking-uri", mlflow_server, "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "MATCH: exact (bitwise) comparison: same device (cpu) and dtype (float64)" in text
    assert "NO" not in text.split()
    assert st.read_json(out / "summary.json")["drift_sup"] == summary["drift_sup"]
    client = MlflowClient(mlflow_server)
    exp = client.get_run(run_id).info.experiment_id
    reruns = client.search_runs([exp], f"tags.rerun_of = '{run_id}'")
    assert len(reruns) == 1
    assert reruns[0].data.tags["trial_id"] == summary["trial_id"]
    assert reruns[0].data.metrics["drift_sup"] == summary["drift_sup"]


def test_rerun_falls_back_to_params_without_config_artifact(mlflow_server, tmp_path, capsys):
    """A run logged elsewhere with only params (no config.yaml) still reruns and matches."""
    run_id, summary = logged_trial(mlflow_server, tmp_path)
    client = MlflowClient(mlflow_server)
    exp = client.get_run(run_id).info.experiment_id
    bare = client.create_run(exp).info.run_id
    params = client.get_run(run_id).data.params
    client.log_batch(bare, params=[Param(k, v) for k, v in params.items()])
    code = main(["rerun", bare, "--tracking-uri", mlflow_server, "--out", str(tmp_path / "r")])
    text = capsys.readouterr().out
    assert code == 0
    assert "(config from params)" in text
    assert st.read_json(tmp_path / "r" / "summary.json")["trial_id"] == summary["trial_id"]


def test_unknown_run_id_is_one_line_and_exit_2(mlflow_server, tmp_path, capsys):
    code = main(["rerun", "0" * 32, "--tracking-uri", mlflow_server, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "not found" in err
    assert not (tmp_path / "x").exists()


def test_comparison_modes():
    assert same(0.1, 0.1, None) and not same(0.1, math.nextafter(0.1, 1.0), None)
    assert same(1.0, 1.0 + 5e-7, RTOL["float64"]) and not same(1.0, 1.0 + 5e-6, RTOL["float64"])
    assert same(float("nan"), float("nan"), None) and same("inf", float("inf"), None)
    assert same(None, None, None) and not same(None, 0.0, None)
    rows, ok = comparison({"status": "completed", "drift_sup": 2.0}, {"status": "overflow",
                          "drift_sup": 2.0}, None)  # fmt: skip
    assert not ok and [r[3] for r in rows] == [False, True]
