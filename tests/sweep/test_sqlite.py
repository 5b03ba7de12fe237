"""The local sqlite store's one-transaction writer against MLflow's own API (``create_run``,
``log_batch``, ``set_terminated``): the same trial logged both ways reads back the same through
``MlflowClient``."""

from __future__ import annotations

import logging
import math
import sqlite3

from mlflow import MlflowClient

from core import config_from_dict, run_trial, trial_id
from core import store as st
from sweep._mlflow import MlflowLogger
from sweep._sqlite import NewRun, RunWriter, latest_rows, stored_value


def make_trials(sweep) -> list[str]:
    """A completed cross-entropy trial and an overflowed one (inf and NaN in its rows)."""
    cfgs = [
        {"model": {"arch": "fcn", "width": 32, "depth": 2}, "data": {"kind": "circle", "n": 6},
         "train": {"loss": "cross_entropy", "lr": 0.1, "epochs": 30}, "track": {"log_points": 12}},
        {"model": {"width": 32, "depth": 2}, "train": {"loss": "mse", "lr": 1e6, "epochs": 40},
         "track": {"log_points": 15}},
    ]  # fmt: skip
    tids = []
    for raw in cfgs:
        cfg = config_from_dict(raw)
        run_trial(cfg, st.trial_dir(sweep, trial_id(cfg)))
        tids.append(trial_id(cfg))
    # non-finite summary values, as the store writes them, to test MLflow's mapping of them
    path = st.trial_dir(sweep, tids[1]) / "summary.json"
    st.write_json(path, {**st.read_json(path), "x_inf": "inf", "x_ninf": "-inf", "x_nan": "nan"})
    return tids


def read_back(client: MlflowClient, run_id: str) -> dict:
    """Everything a user sees of a trial run, minus what differs between two stores."""
    run = client.get_run(run_id)
    metrics = {k: (math.nan if math.isnan(v) else v) for k, v in run.data.metrics.items()}
    histories = {
        key: [(m.step, m.value if not math.isnan(m.value) else "nan")
              for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in run.data.metrics
    }  # fmt: skip
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.parentRunId"}
    info = run.info
    assert info.artifact_uri.endswith(f"/{info.run_id}/artifacts")
    assert info.start_time <= info.end_time
    artifacts = sorted(a.path for a in client.list_artifacts(run_id))
    return {"status": info.status, "name": info.run_name, "user": info.user_id,
            "stage": info.lifecycle_stage, "experiment": info.experiment_id,
            "params": run.data.params, "tags": tags, "histories": histories,
            "metrics": {k: repr(v) for k, v in metrics.items()}, "artifacts": artifacts,
            "found": [r.info.run_id for r in client.search_runs(
                [info.experiment_id], f"tags.trial_id = '{tags['trial_id']}'")]}  # fmt: skip


def test_fresh_runs_read_back_the_same_as_through_log_batch(tmp_path):
    sweep = tmp_path / "store" / "same"
    tids = make_trials(sweep)
    seen = {}
    for way in ("sql", "api"):
        uri = f"sqlite:///{tmp_path}/{way}.db"
        logger = MlflowLogger(uri, None, "same", sweep)
        if way == "api":
            logger.writer = None
        ids = [logger.log_trial(t) for t in tids]
        client = MlflowClient(uri)
        seen[way] = [read_back(client, i) for i in ids]
        for i, s in zip(ids, seen[way], strict=True):
            assert s.pop("found") == [i]  # the search that finds a trial's run finds it
        # and a second log_trial finds them logged: nothing is sent again
        assert [logger.log_trial(t) for t in tids] == ids
    assert seen["sql"] == seen["api"]
    overflow = seen["sql"][1]
    assert overflow["tags"]["ntkdiv.status"] == "overflow"
    assert [overflow["metrics"][k] for k in ("x_inf", "x_ninf", "x_nan")] == [
        "1.7976931348623157e+308", "-1.7976931348623157e+308", "nan"]  # fmt: skip
    rows = st.read_trajectory(st.trial_dir(sweep, tids[0]) / "trajectory.parquet").num_rows
    assert len(seen["sql"][0]["histories"]["loss"]) == rows > 5


def test_store_with_other_tables_falls_back_to_mlflows_api(tmp_path, caplog):
    sweep = tmp_path / "store" / "other"
    tid = make_trials(sweep)[0]
    uri = f"sqlite:///{tmp_path}/m.db"
    MlflowClient(uri).search_experiments()  # creates MLflow's tables
    with sqlite3.connect(tmp_path / "m.db") as db:
        db.execute("ALTER TABLE metrics ADD COLUMN extra INTEGER")
    with caplog.at_level(logging.WARNING, logger="sweep._sqlite"):
        run_id = MlflowLogger(uri, None, "other", sweep).log_trial(tid)
    assert "differ from 3.17" in caplog.text
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ntkdiv.logged"]
    assert len(list((tmp_path / "mlartifacts").iterdir())) == 1  # no orphaned artifacts
    rows = st.read_trajectory(st.trial_dir(sweep, tid) / "trajectory.parquet").num_rows
    assert len(MlflowClient(uri).get_metric_history(run_id, "loss")) == rows


def new_run(experiment_id: str, run_id: str = "a" * 32, **fields) -> NewRun:
    raw = {"run_id": run_id, "experiment_id": experiment_id, "name": "r",
           "artifact_uri": f"file:///nowhere/{run_id}/artifacts", "start_ms": 1, "end_ms": 2,
           "status": "FINISHED", "tags": [("mlflow.runName", "r"), ("k", "v")],
           "params": [("p", "1")], "metrics": [("loss", 1.0, 1, 0)]}  # fmt: skip
    return NewRun(**{**raw, **fields})


def test_a_run_is_written_whole_or_not_at_all(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.create_experiment("x")
    writer = RunWriter(tmp_path / "m.db")
    # a duplicate tag key violates the tags' primary key after the run row went in
    assert not writer.create(new_run(exp, tags=[("mlflow.runName", "r"), ("k", "1"), ("k", "2")]))
    assert not client.search_runs([exp])  # rolled back: no run, no half of one
    assert writer.create(new_run(exp))
    assert not writer.create(new_run(exp))  # the same run id again
    client.delete_experiment(exp)
    assert not writer.create(new_run(exp, run_id="b" * 32))  # not an active experiment
    client.restore_experiment(exp)
    (run,) = client.search_runs([exp])
    assert (run.info.run_id, run.info.status, run.data.params) == ("a" * 32, "FINISHED", {"p": "1"})
    assert run.data.metrics == {"loss": 1.0} and run.info.run_name == "r"


def test_stored_values_and_latest_rule_follow_mlflow():
    assert stored_value(math.nan) == (0.0, 1)
    assert stored_value(math.inf) == (1.7976931348623157e308, 0)
    assert stored_value(-math.inf) == (-1.7976931348623157e308, 0)
    assert stored_value(2.5) == (2.5, 0)
    # (key, value, timestamp, step, is_nan): the step first, then the time, then the value
    rows = [("a", 1.0, 5, 0, 0), ("a", 3.0, 5, 2, 0), ("a", 2.0, 9, 2, 0), ("b", 7.0, 1, 1, 0),
            ("b", 7.0, 1, 1, 1), ("c", 1.0, 9, 0, 0), ("c", 2.0, 1, 3, 0)]  # fmt: skip
    assert latest_rows(rows) == [("a", 2.0, 9, 2, 0), ("b", 7.0, 1, 1, 0), ("c", 2.0, 1, 3, 0)]
