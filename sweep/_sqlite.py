"""The local sqlite tracking store: WAL mode, and a new trial's run in one transaction.

MLflow's default store is a sqlite file. Two costs dominate logging to it:

- commits: every MLflow call commits, and sqlite's default journal waits for fsyncs at each.
  :func:`use_wal` switches the file to write-ahead logging with ``synchronous=NORMAL``;
- ORM work: ``create_run``, ``set_terminated`` and ``log_batch`` each go through MLflow's
  SQLAlchemy models (~55 us per metric on this machine, plus reads of the run back). A smoke
  trial cost ~35-45 ms that way on the loaded 2-core machine. :class:`RunWriter` writes a new
  trial's whole run (the run row with its final status, tags, params, metric histories and
  latest metrics) with ``executemany`` in one transaction instead.

The writer follows MLflow 3.17's tables, checked column by column on first use. A store whose
tables differ, a busy file, an experiment that is not active or any conflict writes nothing and
returns False, and the caller falls back to MLflow's API. It writes the rows that MLflow's
``create_run`` + ``log_batch`` + ``set_terminated`` would (same run columns, NaN and inf mapped
as MLflow maps them, the same latest-metric rule), which tests/sweep/test_sqlite.py checks by
logging one trial both ways and comparing what ``MlflowClient`` reads back. A run that exists
already (a resumed upload), a rerun and a tracking server go through MLflow's API.

A run appears whole or not at all: a crash before the commit leaves no half-logged run, only
its copied artifacts, and the next sweep or ``ntkdiv sync`` logs the trial again.

This module does not import mlflow: it speaks SQL to the file, and ``sweep._mlflow`` (the adapter)
decides when.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy
import sqlalchemy.pool

log = logging.getLogger(__name__)

# the columns each table must have exactly (MLflow 3.17)
TABLES = {
    "runs": {
        "run_uuid",
        "name",
        "source_type",
        "source_name",
        "entry_point_name",
        "user_id",
        "status",
        "start_time",
        "end_time",
        "source_version",
        "lifecycle_stage",
        "artifact_uri",
        "experiment_id",
        "deleted_time",
    },
    "metrics": {"key", "value", "timestamp", "run_uuid", "step", "is_nan"},
    "latest_metrics": {"key", "value", "timestamp", "step", "is_nan", "run_uuid"},
    "params": {"key", "value", "run_uuid"},
    "tags": {"key", "value", "run_uuid"},
}
MAX_FLOAT = 1.7976931348623157e308  # how MLflow stores +-inf (SQL has no infinities)
BUSY_TIMEOUT_S = 30.0


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` URI; None for any other URI."""
    if not tracking_uri.startswith("sqlite:///") or "?" in tracking_uri:
        return None
    return Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve()


# --- WAL ------------------------------------------------------------------------------------------


def use_wal(tracking_uri: str) -> None:
    """Switch a local sqlite store to write-ahead logging, with one fsync per checkpoint.

    Every MLflow call commits, and a commit in sqlite's default rollback-journal mode waits
    for several fsyncs; in WAL mode with ``synchronous=FULL`` (sqlite's default) it waits for
    one, and with ``synchronous=NORMAL`` for none: the WAL is synced at checkpoints only. A
    process crash then loses nothing; a power cut may lose the last commits but never corrupts
    the file, and the store (written first) backfills them on the next sweep or sync. On the
    loaded 2-core machine a smoke trial's run cost ~90 ms in WAL with FULL and ~35-45 ms with
    NORMAL. The file keeps WAL mode; ``synchronous`` is per connection, so every pooled
    connection to this file is switched when it is checked out (see :func:`_relaxed_sync`).
    Readers (``mlflow ui``) no longer block the sweep's writes either. Best effort: a store
    that is busy or read-only keeps its mode.
    """
    db = sqlite_file(tracking_uri)
    if db is None or not db.is_file():
        return
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(db, timeout=1)) as c,
    ):
        if c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal":
            if not _WAL_FILES:
                sqlalchemy.event.listen(sqlalchemy.pool.Pool, "checkout", _relaxed_sync)
            _WAL_FILES.add(os.path.realpath(db))


# realpaths of the sqlite stores that use_wal switched to WAL in this process
_WAL_FILES: set[str] = set()


def _relaxed_sync(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """Pool checkout hook: ``synchronous=NORMAL`` on a connection to a store in ``_WAL_FILES``.

    Checked once per connection (other databases of the process, e.g. an Optuna study, are
    left as they are); a connection opened before its file went WAL is checked again later.
    """
    if record.info.get("ntkdiv.sync") or not isinstance(dbapi_conn, sqlite3.Connection):
        return
    files = {os.path.realpath(row[2]) for row in dbapi_conn.execute("PRAGMA database_list")
             if row[1] == "main" and row[2]}  # fmt: skip
    if files & _WAL_FILES and relax_sync(dbapi_conn):
        record.info["ntkdiv.sync"] = True


def relax_sync(conn: sqlite3.Connection) -> bool:
    """``synchronous=NORMAL`` on a connection to a WAL file (see :func:`use_wal`); True if set."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        return False
    conn.execute("PRAGMA synchronous=NORMAL")
    return True


# --- a new run's rows -----------------------------------------------------------------------------


def stored_value(value: float) -> tuple[float, int]:
    """``(value, is_nan)`` as MLflow stores a metric value: NaN as 0 with the flag, inf as the
    largest finite float of its sign."""
    if math.isnan(value):
        return 0.0, 1
    if math.isinf(value):
        return math.copysign(MAX_FLOAT, value), 0
    return value, 0


def latest_rows(metrics: Sequence[tuple]) -> list[tuple]:
    """One ``(key, value, timestamp, step, is_nan)`` per key: the point with the largest
    ``(step, timestamp, value)``, the first of equals (MLflow's latest-metric rule)."""
    latest: dict[str, tuple] = {}
    for key, value, ts, step, is_nan in metrics:
        old = latest.get(key)
        if old is None or (step, ts, value) > (old[3], old[2], old[1]):
            latest[key] = (key, value, ts, step, is_nan)
    return list(latest.values())


@dataclasses.dataclass(frozen=True)
class NewRun:
    """A finished run, as the rows MLflow keeps for it.

    Attributes:
        run_id: 32 hex digits, as MLflow makes them (``uuid4().hex``).
        experiment_id: an active experiment of the store.
        name: the run name (also the ``mlflow.runName`` tag, which ``tags`` must carry).
        artifact_uri: ``<experiment artifact location>/<run_id>/artifacts``, already written.
        start_ms, end_ms: ms since the epoch.
        status: MLflow run status (``FINISHED``, ``FAILED``, ``KILLED``).
        tags, params: ``(key, value)``; values within MLflow's length limits.
        metrics: ``(key, value, timestamp_ms, step)``, in logging order.
    """

    run_id: str
    experiment_id: str
    name: str
    artifact_uri: str
    start_ms: int
    end_ms: int
    status: str
    tags: Sequence[tuple[str, str]]
    params: Sequence[tuple[str, str]]
    metrics: Sequence[tuple[str, float, int, int]]


class RunWriter:
    """Writes a whole new run into a local MLflow sqlite file in one transaction.

    Args:
        db: the sqlite file of the tracking store.
    """

    def __init__(self, db: Path) -> None:
        self.db = Path(db)
        self._schema_ok: bool | None = None  # checked on the first write
        self._conn: sqlite3.Connection | None = None  # kept: opening one costs ~0.7 ms
        self._lock = threading.Lock()

    def create(self, run: NewRun) -> bool:
        """The run row, its tags, params, metrics and latest metrics; all or nothing.

        Returns:
            True when written. False when nothing was written: the tables are not MLflow
            3.17's, the file is busy past the timeout, the experiment is not active, or the
            run id exists; the caller then logs through MLflow's API.
        """
        metrics = []
        for key, v, ts, step in run.metrics:
            value, is_nan = stored_value(float(v))
            metrics.append((key, value, ts, step, is_nan))
        with self._lock:
            try:
                conn = self._connect()
                return self._schema(conn) and self._insert(conn, run, metrics)
            except sqlite3.Error as err:
                log.debug("sqlite fast path for run %s not taken: %s", run.run_id, err)
                self.close()
                return False

    @property
    def unusable(self) -> bool:
        """The store's tables were found to differ from MLflow 3.17's."""
        return self._schema_ok is False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            # autocommit mode, so that BEGIN IMMEDIATE below opens the one transaction
            conn = sqlite3.connect(self.db, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
            relax_sync(conn)
            self._conn = conn
        return self._conn

    def _schema(self, conn: sqlite3.Connection) -> bool:
        if self._schema_ok is None:
            cols = {t: {row[1] for row in conn.execute(f"PRAGMA table_info({t})")}
                    for t in (*TABLES, "experiments")}  # fmt: skip
            self._schema_ok = all(cols[t] == want for t, want in TABLES.items()) and (
                cols["experiments"] >= {"experiment_id", "lifecycle_stage"}
            )
            if not self._schema_ok:
                log.warning("%s: MLflow tables differ from 3.17's; logging through MLflow's "
                            "API (slower) instead", self.db)  # fmt: skip
        return self._schema_ok

    @staticmethod
    def _insert(conn: sqlite3.Connection, run: NewRun, metrics: list[tuple]) -> bool:
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock now: no deadlock midway
        try:
            stage = conn.execute("SELECT lifecycle_stage FROM experiments WHERE experiment_id = ?",
                                 (int(run.experiment_id),)).fetchone()  # fmt: skip
            if stage is None or stage[0] != "active":
                conn.execute("ROLLBACK")
                return False
            # the columns MLflow's create_run fills for a run made by MlflowClient.create_run
            conn.execute(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                "user_id, status, start_time, end_time, source_version, lifecycle_stage, "
                "artifact_uri, experiment_id, deleted_time) "
                "VALUES (?, ?, 'UNKNOWN', '', '', 'unknown', ?, ?, ?, '', 'active', ?, ?, NULL)",
                (run.run_id, run.name, run.status, run.start_ms, run.end_ms, run.artifact_uri,
                 int(run.experiment_id)),
            )  # fmt: skip
            rid = run.run_id
            for table, pairs in (("tags", run.tags), ("params", run.params)):
                conn.executemany(f"INSERT INTO {table} (key, value, run_uuid) VALUES (?, ?, ?)",
                                 [(k, v, rid) for k, v in pairs])  # fmt: skip
            for table, points in (("metrics", metrics), ("latest_metrics", latest_rows(metrics))):
                conn.executemany(
                    f"INSERT INTO {table} (key, value, timestamp, step, is_nan, run_uuid) "
                    "VALUES (?, ?, ?, ?, ?, ?)", [(*m, rid) for m in points])  # fmt: skip
            conn.execute("COMMIT")
            return True
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            raise
