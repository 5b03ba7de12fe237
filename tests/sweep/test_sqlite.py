"""The local sqlite store's one-transaction writer against MLflow's own ``log_batch`` path: the
same trial logged both ways reads back the same through ``MlflowClient``."""

from __future__ import annotations

import logging
import math
import sqlite3

from mlflow import MlflowClient

from core import config_from_dict, run_trial, trial_id
from core import store as st
from sweep._mlflow import MlflowLogger
from sweep._sqlite import FreshRunWriter, latest_rows, stored_value


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
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return {"status": run.info.status, "ended": run.info.end_time is not None,
            "params": run.data.params, "tags": tags, "histories": histories,
            "metrics": {k: repr(v) for k, v in metrics.items()}}  # fmt: skip


def test_fresh_runs_read_back_the_same_as_through_log_batch(tmp_path):
    sweep = tmp_path / "store" / "same"
    tids = make_trials(sweep)
    seen = {}
    for way in ("sql", "log_batch"):
        uri = f"sqlite:///{tmp_path}/{way}.db"
        logger = MlflowLogger(uri, None, "same", sweep)
        if way == "log_batch":
            logger._fresh_writer = None
        ids = [logger.log_trial(t) for t in tids]
        client = MlflowClient(uri)
        seen[way] = [read_back(client, i) for i in ids]
        # and a second log_trial finds them logged: nothing is sent again
        assert [logger.log_trial(t) for t in tids] == ids
    assert seen["sql"] == seen["log_batch"]
    overflow = seen["sql"][1]
    assert overflow["tags"]["ntkdiv.status"] == "overflow"
    assert [overflow["metrics"][k] for k in ("x_inf", "x_ninf", "x_nan")] == [
        "1.7976931348623157e+308", "-1.7976931348623157e+308", "nan"]  # fmt: skip
    rows = st.read_trajectory(st.trial_dir(sweep, tids[0]) / "trajectory.parquet").num_rows
    assert len(seen["sql"][0]["histories"]["loss"]) == rows > 5


def test_store_with_other_tables_falls_back_to_log_batch(tmp_path, caplog):
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
    rows = st.read_trajectory(st.trial_dir(sweep, tid) / "trajectory.parquet").num_rows
    assert len(MlflowClient(uri).get_metric_history(run_id, "loss")) == rows


def test_a_conflict_writes_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("x"), tags={"trial_id": "abc"})
    writer = FreshRunWriter(tmp_path / "m.db")
    rid = run.info.run_id
    ok = writer.write(rid, "FINISHED", 1, [("p", "1")], [("loss", 1.0, 1, 0)], [("trial_id", "x")])
    assert not ok  # the tag exists: the transaction is rolled back whole
    after = client.get_run(rid)
    assert after.info.status == "RUNNING" and not after.data.params and not after.data.metrics
    assert not writer.write("0" * 32, "FINISHED", 1, [], [("loss", 1.0, 1, 0)], [])  # no run
    assert writer.write(rid, "FAILED", 2, [("p", "1")], [("loss", 1.0, 1, 0)], [("t", "v")])
    assert client.get_run(rid).info.status == "FAILED"


def test_stored_values_and_latest_rule_follow_mlflow():
    assert stored_value(math.nan) == (0.0, 1)
    assert stored_value(math.inf) == (1.7976931348623157e308, 0)
    assert stored_value(-math.inf) == (-1.7976931348623157e308, 0)
    assert stored_value(2.5) == (2.5, 0)
    # (key, value, timestamp, step, is_nan): the step first, then the time, then the value
    rows = [("a", 1.0, 5, 0, 0), ("a", 3.0, 5, 2, 0), ("a", 2.0, 9, 2, 0), ("b", 7.0, 1, 1, 0),
            ("b", 7.0, 1, 1, 1), ("c", 1.0, 9, 0, 0), ("c", 2.0, 1, 3, 0)]  # fmt: skip
    assert latest_rows(rows) == [("a", 2.0, 9, 2, 0), ("b", 7.0, 1, 1, 0), ("c", 2.0, 1, 3, 0)]
