"""The one package that knows the store: where it lives, its layout, atomic writes, attempts.json.

Its parts: ``_path`` (StorePath, locate, atomic writes, the write probe), ``_layout`` (file
names, schemas, trial directories, summaries, attempts), ``_faults`` (quarantine, repair, the
lease); everything is used as ``core.store.NAME``.

A store is a directory on any filesystem pyarrow speaks: a local or shared POSIX path
(``/data/store``, ``file:///data/store``) or an object store (``s3://bucket/prefix``,
``gs://bucket/prefix``). :func:`locate` turns such a string into a :class:`StorePath`, and every
function here takes one (or a plain path). S3 takes its endpoint and credentials from the
standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``).

Layout::

    <storage>/<sweep>/spec.yaml                            the sweep spec, as run
    <storage>/<sweep>/trials/<trial_id>/config.yaml        full resolved config
    <storage>/<sweep>/trials/<trial_id>/summary.json       DESIGN §3 keys (+ extras)
    <storage>/<sweep>/trials/<trial_id>/trajectory.parquet one row per tracked step
    <storage>/<sweep>/trials/<trial_id>/checkpoint.pt      last checkpoint (weights_only-safe)
    <storage>/<sweep>/trials/<trial_id>/attempts.json      every attempt: start, end, node, status
    <storage>/<sweep>/search/<study>.best.json             an Optuna search's best value so far
    <storage>/<sweep>/lease.json                           the driver that runs the sweep now
    <storage>/<sweep>/quarantine/<trial_id>/               corrupt trial files, moved aside
    <storage>/<sweep>/report/                              the aggregator's output (local stores)

A trial's files are written once, where its task runs, and read where they are: nothing copies
them. Every file appears whole or not at all: on a POSIX filesystem it is written to a temporary
name in the same directory and renamed (a writer killed in between leaves the temporary file;
the trial removes such leftovers when it runs again, :func:`remove_partial_writes`); on an
object store an object appears whole when its upload completes. A trial writes its data first
and ``summary.json`` last, so a summary means a whole trial. ``dashboards`` reads ``trials/*/``
with ``pyarrow.dataset`` on the same filesystem (:func:`trajectory_files`,
:data:`TRAJECTORY_PARTITIONING`) and the summaries as JSON.
"""

from __future__ import annotations

from ._faults import (
    CHECKPOINT,
    HEARTBEAT_S,
    LEASE,
    LEASE_SETTLE_S,
    QUARANTINE,
    RERUN,
    STALE_BEATS,
    LeaseHeld,
    acquire_lease,
    checked_attempts,
    corrupt_reason,
    describe_lease,
    lease_path,
    lease_stale,
    quarantine,
    quarantine_dir,
    quarantine_noted,
    read_json_checked,
    read_lease,
    read_table_checked,
    refresh_lease,
    release_lease,
    repair,
)
from ._layout import (
    ATTEMPTS,
    CONFIG,
    ERROR_CHARS,
    SCHEMA_VERSION,
    SPEC,
    SUMMARY,
    SUMMARY_FLOATS,
    SUMMARY_INTS,
    SUMMARY_STRINGS,
    TRAJECTORY,
    TRAJECTORY_PARTITIONING,
    TRAJECTORY_SCHEMA,
    TRIALS,
    AttemptStatus,
    attempt_progress,
    begin_attempt,
    close_open_attempts,
    end_attempt,
    failed_summary,
    failures,
    is_sweep_dir,
    read_attempts,
    read_summary,
    read_trajectory,
    search_file,
    spec_path,
    trajectory_files,
    trajectory_meta,
    trajectory_table,
    trial_dir,
    trial_dirs,
    trial_files,
    trial_status,
    trials_root,
    write_spec,
    write_trajectory,
)
from ._path import (
    AWS_VARIABLES,
    FILE_MODE,
    S3_ATTEMPTS,
    S3_TIMEOUTS,
    STORE_SCHEMES,
    StorePath,
    Where,
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    json_number,
    locate,
    read_json,
    readers,
    remove_partial_writes,
    write_json,
    write_table,
)

__all__ = [
    "ATTEMPTS",
    "AWS_VARIABLES",
    "AttemptStatus",
    "CHECKPOINT",
    "CONFIG",
    "ERROR_CHARS",
    "FILE_MODE",
    "HEARTBEAT_S",
    "LEASE",
    "LEASE_SETTLE_S",
    "LeaseHeld",
    "QUARANTINE",
    "RERUN",
    "S3_ATTEMPTS",
    "S3_TIMEOUTS",
    "SCHEMA_VERSION",
    "SPEC",
    "STALE_BEATS",
    "STORE_SCHEMES",
    "SUMMARY",
    "SUMMARY_FLOATS",
    "SUMMARY_INTS",
    "SUMMARY_STRINGS",
    "StorePath",
    "TRAJECTORY",
    "TRAJECTORY_PARTITIONING",
    "TRAJECTORY_SCHEMA",
    "TRIALS",
    "Where",
    "acquire_lease",
    "atomic_write_bytes",
    "atomic_write_text",
    "attempt_progress",
    "begin_attempt",
    "checked_attempts",
    "check_writable",
    "close_open_attempts",
    "corrupt_reason",
    "describe_lease",
    "end_attempt",
    "failed_summary",
    "failures",
    "is_sweep_dir",
    "json_number",
    "lease_path",
    "lease_stale",
    "locate",
    "readers",
    "quarantine",
    "quarantine_dir",
    "quarantine_noted",
    "read_attempts",
    "read_json",
    "read_json_checked",
    "read_table_checked",
    "read_lease",
    "read_summary",
    "read_trajectory",
    "refresh_lease",
    "release_lease",
    "remove_partial_writes",
    "repair",
    "search_file",
    "spec_path",
    "trajectory_files",
    "trajectory_meta",
    "trajectory_table",
    "trial_dir",
    "trial_dirs",
    "trial_files",
    "trial_status",
    "trials_root",
    "write_json",
    "write_spec",
    "write_table",
    "write_trajectory",
]
