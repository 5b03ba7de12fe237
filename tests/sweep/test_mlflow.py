"""MlflowLogger against a real ``mlflow server``: runs found before created, no duplicate steps,
an unreachable server loses nothing, ``ntkdiv sync`` backfills."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from core import config_from_dict, config_to_yaml, flatten, run_trial, trial_id
from core import store as st
from mlflow_index import MlflowLogger, TrackingUnavailable, pack_batches
from ntkdiv.cli import main
from tests.conftest import free_port

HISTORY = ("loss", "accuracy", "gap", "drift", "lambda_min", "theta_inf", "theta_l2", "f_abs_min",
           "flips")  # fmt: skip


def small_config(**train):
    return config_from_dict({
        "model": {"arch": "fcn", "width": 32, "depth": 2},
        "data": {"kind": "circle", "n": 6},
        "train": {"loss": "cross_entropy", "lr": 0.1, "epochs": 30, **train},
        "track": {"log_points": 12},
    })  # fmt: skip


def make_trial(sweep_dir: Path, **train) -> str:
    cfg = small_config(**train)
    run_trial(cfg, st.trial_dir(sweep_dir, trial_id(cfg)))
    return trial_id(cfg)


def write_failed(sweep_dir: Path, with_config: bool = True, **train) -> str:
    """A trial that raised: a 'failed' summary (and its config unless it failed before that)."""
    cfg = small_config(**train)
    tid = trial_id(cfg)
    tdir = st.trial_dir(sweep_dir, tid)
    if with_config:
        st.atomic_write_text(tdir / "config.yaml", config_to_yaml(cfg))
    error = 'Traceback (most recent call last):\n  File "x.py", line 7\nRuntimeError: worker died\n'

    st.write_json(tdir / "summary.json", {"trial_id": tid, "status": "failed", "error": error})
    return tid


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sweep(tmp_path) -> Path:
    return tmp_path / unique("sweep")


def runs_of(client: MlflowClient, experiment: str, sweep_name: str, role: str):
    exp = client.get_experiment_by_name(experiment)
    f = f"tags.`ntkdiv.sweep` = '{sweep_name}' AND tags.`ntkdiv.role` = '{role}'"
    return client.search_runs([exp.experiment_id], f)


def steps_of(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_parent_and_children_are_created_once(mlflow_server, sweep):
    tids = [make_trial(sweep, lr=0.1), make_trial(sweep, lr=0.05)]
    exp = unique("exp")
    logger = MlflowLogger(mlflow_server, exp, sweep.name, sweep)
    parent = logger.ensure_parent({"name": sweep.name, "grid": {"model.width": [32]}})
    first = [logger.log_trial(t) for t in tids]
    # a new logger (as after a driver restart) finds the same runs
    again = MlflowLogger(mlflow_server, exp, sweep.name, sweep)
    assert again.ensure_parent({"name": sweep.name, "grid": {"model.width": [32]}}) == parent
    assert [again.log_trial(t) for t in tids] == first
    client = MlflowClient(mlflow_server)
    assert len(runs_of(client, exp, sweep.name, "parent")) == 1
    children = runs_of(client, exp, sweep.name, "trial")
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(tids)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent}
    rows = pq.read_table(st.trial_dir(sweep, tids[0]) / "trajectory.parquet").column("step")
    for key in HISTORY:
        assert steps_of(client, first[0], key) == rows.to_pylist(), key


def test_child_holds_params_metrics_and_artifacts(mlflow_server, sweep):
    tid = make_trial(sweep)
    logger = MlflowLogger(mlflow_server, unique("exp"), sweep.name, sweep)
    run = MlflowClient(mlflow_server).get_run(logger.log_trial(tid))
    flat = flatten(small_config())
    assert run.data.params["model.width"] == "32"
    assert set(run.data.params) == set(flat)
    summary = st.read_json(st.trial_dir(sweep, tid) / "summary.json")
    assert run.data.metrics["drift_sup"] == summary["drift_sup"]
    assert run.data.metrics["lambda0"] == summary["lambda0"]
    assert run.data.tags["ntkdiv.status"] == "completed"
    assert run.info.status == "FINISHED"
    names = {f.path for f in MlflowClient(mlflow_server).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "trajectory.parquet"} <= names


def test_changed_summary_relogs_without_duplicate_steps(mlflow_server, sweep):
    """A trial stopped mid-way is logged, then resumed to the end: one point per step."""
    cfg = small_config(epochs=60)
    tid, tdir = trial_id(cfg), st.trial_dir(sweep, trial_id(cfg))
    run_trial(cfg, tdir, monitor=lambda rows: len(rows["step"]) >= 5)
    logger = MlflowLogger(mlflow_server, unique("exp"), sweep.name, sweep)
    run_id = logger.log_trial(tid)
    client = MlflowClient(mlflow_server)
    assert len(steps_of(client, run_id, "loss")) == 5
    assert client.get_run(run_id).info.status == "KILLED"
    summary = run_trial(cfg, tdir)
    assert summary["status"] == "completed" and summary["resumed_from_step"] is not None
    assert logger.log_trial(tid) == run_id
    full = pq.read_table(tdir / "trajectory.parquet").column("step").to_pylist()
    for key in HISTORY:
        assert steps_of(client, run_id, key) == full, key
    assert steps_of(client, run_id, "drift_sup") == [0, 1]  # one point per log generation
    assert client.get_run(run_id).data.metrics["drift_sup"] == summary["drift_sup"]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_failed_trial_is_logged_with_its_error(mlflow_server, sweep, tmp_path):
    tid = write_failed(sweep)
    logger = MlflowLogger(mlflow_server, unique("exp"), sweep.name, sweep)
    client = MlflowClient(mlflow_server)
    run = client.get_run(logger.log_trial(tid))
    assert run.info.status == "FAILED"
    assert run.data.tags["ntkdiv.status"] == "failed"
    assert run.data.tags["ntkdiv.error"] == "RuntimeError: worker died"
    error = client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))
    assert 'File "x.py", line 7' in Path(error).read_text()
    # the retry succeeds: the same run is completed, with its histories
    run_trial(small_config(), st.trial_dir(sweep, tid))
    assert logger.log_trial(tid) == run.info.run_id
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    assert len(steps_of(client, run.info.run_id, "loss")) > 0


def test_trial_that_failed_before_its_config_is_logged(mlflow_server, sweep):
    tid = write_failed(sweep, with_config=False)
    logger = MlflowLogger(mlflow_server, unique("exp"), sweep.name, sweep)
    run = MlflowClient(mlflow_server).get_run(logger.log_trial(tid))
    assert run.info.status == "FAILED" and run.info.run_name == tid
    assert run.data.params == {}


def test_second_call_uploads_nothing(mlflow_server, sweep):
    tid = make_trial(sweep)
    logger = MlflowLogger(mlflow_server, unique("exp"), sweep.name, sweep)
    run_id = logger.log_trial(tid)
    assert logger.log_trial(tid) == run_id
    assert logger.sync() == 0
    client = MlflowClient(mlflow_server)
    assert client.get_run(run_id).data.tags["ntkdiv.generation"] == "0"
    assert steps_of(client, run_id, "drift_sup") == [0]


def test_down_server_fails_fast_loses_nothing_and_sync_backfills(mlflow_server, sweep):
    tids = [make_trial(sweep, lr=0.1), write_failed(sweep, lr=0.02)]
    before = {t: (st.trial_dir(sweep, t) / "summary.json").read_bytes() for t in tids}
    exp = unique("exp")
    down = MlflowLogger(f"http://127.0.0.1:{free_port()}", exp, sweep.name, sweep)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        down.log_trial(tids[0])
    with pytest.raises(TrackingUnavailable):
        down.sync()
    assert time.monotonic() - start < 10.0
    assert {t: (st.trial_dir(sweep, t) / "summary.json").read_bytes() for t in tids} == before
    live = MlflowLogger(mlflow_server, exp, sweep.name, sweep)
    assert live.sync() == 2
    assert live.sync() == 0
    assert len(runs_of(MlflowClient(mlflow_server), exp, sweep.name, "trial")) == 2


def test_sync_command_backfills_and_rejects_a_non_sweep_dir(mlflow_server, sweep, tmp_path, capsys):
    make_trial(sweep)
    exp = unique("exp")
    st.atomic_write_text(
        sweep / "spec.yaml", f"name: {sweep.name}\nmlflow: {{experiment: {exp}}}\n"
    )
    assert main(["sync", str(sweep), "--tracking-uri", mlflow_server]) == 0
    assert "logged 1 trial(s)" in capsys.readouterr().out
    assert main(["sync", str(sweep), "--tracking-uri", mlflow_server]) == 0
    assert "logged 0 trial(s)" in capsys.readouterr().out
    parent = runs_of(MlflowClient(mlflow_server), exp, sweep.name, "parent")[0]
    names = {f.path for f in MlflowClient(mlflow_server).list_artifacts(parent.info.run_id)}
    assert "spec.yaml" in names
    (tmp_path / "empty").mkdir()
    assert main(["sync", str(tmp_path / "empty"), "--tracking-uri", mlflow_server]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_sync_command_with_server_down_exits_3(sweep, capsys):
    make_trial(sweep)
    assert main(["sync", str(sweep), "--tracking-uri", f"http://127.0.0.1:{free_port()}"]) == 3
    assert "store is intact" in capsys.readouterr().err


def test_report_goes_to_the_parent(mlflow_server, sweep, tmp_path):
    make_trial(sweep)
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    st.atomic_write_text(report / "report.html", "<html>verdict</html>")
    st.atomic_write_bytes(report / "figures" / "drift.png", b"\x89PNG\r\n")
    st.atomic_write_text(report / "verdict.csv", "group,width,verdict\na,32,holds\n")
    exp = unique("exp")
    logger = MlflowLogger(mlflow_server, exp, sweep.name, sweep)
    logger.log_report(report, "width 32: holds")
    client = MlflowClient(mlflow_server)
    parent = runs_of(client, exp, sweep.name, "parent")[0]
    names = {f.path for f in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/verdict.csv", "report/figures"} <= names
    assert parent.data.tags["ntkdiv.verdict"] == "width 32: holds"
    assert parent.info.status == "FINISHED"


def test_local_sqlite_store_keeps_artifacts_next_to_it(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "store" / "local"
    tid = make_trial(sweep)
    capfd.readouterr()
    logger = MlflowLogger(f"sqlite:///{tmp_path}/db/mlflow.db", None, "local", sweep)
    run_id = logger.log_trial(tid)
    assert "Creating initial MLflow database tables" not in capfd.readouterr().err
    assert logger.experiment == "local"  # the sweep name, as the spec's default
    assert list((tmp_path / "db" / "mlartifacts").rglob("summary.json"))
    assert not (tmp_path / "mlruns").exists()
    assert steps_of(MlflowClient(f"sqlite:///{tmp_path}/db/mlflow.db"), run_id, "loss")


def test_after_sync_a_new_trial_gets_one_run(mlflow_server, sweep):
    """Sync's search stands in for each new trial's own; the run made is still found again."""
    old = make_trial(sweep, lr=0.1)
    exp = unique("exp")
    logger = MlflowLogger(mlflow_server, exp, sweep.name, sweep)
    assert logger.sync() == 1
    new = make_trial(sweep, lr=0.05)
    run_id = logger.log_trial(new)
    assert logger.log_trial(new) == run_id
    assert logger.sync() == 0
    runs = runs_of(MlflowClient(mlflow_server), exp, sweep.name, "trial")
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted([old, new])


def test_batches_keep_rows_whole_and_tags_last():
    rows = [[Metric(f"k{j}", 1.0, 0, i) for j in range(9 + i % 2)] for i in range(250)]
    params = [Param(f"p{i}", "1") for i in range(130)]
    tags = [RunTag("ntkdiv.status", "completed"), RunTag("ntkdiv.logged", "abc")]
    summary = [Metric(f"s{i}", 1.0, 0, 0) for i in range(30)]
    batches = pack_batches(params, rows, summary, tags)
    for b in batches:
        assert len(b["metrics"]) <= 1000 and len(b["params"]) <= 100 and len(b["tags"]) <= 100
        assert len(b["metrics"]) + len(b["params"]) + len(b["tags"]) <= 1000
    assert batches[-1]["tags"] == tags and batches[-1]["metrics"][-30:] == summary
    assert sum(len(b["params"]) for b in batches) == 130
    sent = [m for b in batches for m in b["metrics"]][:-30]
    assert sent == [m for row in rows for m in row]  # in step order
    for b in batches[:-1]:  # a call ends where a row ends
        last = b["metrics"][-1]
        assert last == rows[last.step][-1]
    assert len(batches) == 3  # 130 params, 2375 points, 30 + 2 summary: no call wasted
    # a short history: the params that no call carries go first, in calls of their own
    short = pack_batches(params * 3, rows[:2], summary, tags)
    assert [len(b["params"]) for b in short] == [100, 100, 90, 100]
    assert short[-1]["tags"] == tags and len(short[-1]["metrics"]) == 19 + 30


def test_diverged_trial_logs_non_finite_values(mlflow_server, sweep):
    cfg = config_from_dict({"model": {"width": 32, "depth": 2},
                            "train": {"loss": "mse", "lr": 1e6, "epochs": 40},
                            "track": {"log_points": 15}})  # fmt: skip
    summary = run_trial(cfg, st.trial_dir(sweep, trial_id(cfg)))
    assert summary["status"] == "diverged"
    logger = MlflowLogger(mlflow_server, unique("exp"), sweep.name, sweep)
    run = MlflowClient(mlflow_server).get_run(logger.log_trial(trial_id(cfg)))
    assert run.data.tags["ntkdiv.status"] == "diverged"
    assert run.data.metrics["diverged_step"] == summary["diverged_step"]
