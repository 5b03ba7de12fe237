"""The store's layout: file names, the trajectory and summary schemas, trial directories,
summaries and attempts.json. Re-exported by :mod:`core.store`."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ._path import StorePath, Where, atomic_write_text, locate, read_json, write_json, write_table

SCHEMA_VERSION = "1"
TRIALS = "trials"
CONFIG = "config.yaml"
SUMMARY = "summary.json"
TRAJECTORY = "trajectory.parquet"
ATTEMPTS = "attempts.json"
SPEC = "spec.yaml"
ERROR_CHARS = 20_000  # tracebacks beyond this are cut (summary.json stays small)

TRAJECTORY_SCHEMA = pa.schema(
    [
        ("step", pa.int64()),  # full-batch GD step s
        ("t", pa.float64()),  # gradient-flow time s * lr
        ("loss", pa.float64()),  # training loss (summed over points, penalty excluded)
        ("accuracy", pa.float64()),  # training accuracy
        ("f", pa.list_(pa.float64())),  # f_t(x_i) on the n training points
        ("f_probe", pa.list_(pa.float64())),  # f_t on the probe points (may be empty)
        ("f_abs_min", pa.float64()),  # min_i |f_t(x_i)|
        ("gap", pa.float64()),  # max_ij |K_t - K| against the analytic K (null if untracked)
        ("drift", pa.float64()),  # max_ij |K_t - K_0|
        ("lambda_min", pa.float64()),  # lambda_min(K_t)
        ("kernel", pa.list_(pa.float64())),  # K_t at the stored pairs (see kernel_pairs)
        ("theta_inf", pa.float64()),  # ||theta_t - theta_0||_inf
        ("theta_l2", pa.float64()),  # ||theta_t - theta_0||_2
        ("flips", pa.int64()),  # ReLU activations whose sign differs from t = 0
        ("h", pa.float64()),  # the step size in use (lr for plain GD; adaptive for gradient flow)
        ("drift_smooth", pa.float64()),  # max|K(theta_t, pattern_0) - K_0|: the flip-free drift
        ("step_jump", pa.float64()),  # largest one-step kernel jump since the previous row
        ("flip_jump", pa.float64()),  # largest kernel change per activation flip in one step
        ("step_flips", pa.int64()),  # most activation flips (both ways) in one step
        ("near_kink", pa.int64()),  # pre-activations with |h| < 1e-9
        ("gap_avg", pa.float64()),  # gradient flow: gap of K_t averaged over [t 10^-0.1, t]
    ]
)

# summary.json keys and their types in the one-row summary a reader builds per trial
SUMMARY_FLOATS = (
    "lambda0", "bound", "gap_init", "gap_sup", "drift_sup", "t_exceed", "lambda_min_emp_min",
    "f_abs_min_final", "theta_inf_final", "loss_final", "wall_s", "lambda_max", "max_K",
    "resolution", "loss_init", "accuracy_final", "step_jump_max", "t_max", "horizon_t",
    "t_leave", "drift_smooth_sup", "stationary_t", "flip_jump_max", "t_stay", "t_leave_avg",
    "t_stay_avg",
)  # fmt: skip
SUMMARY_INTS = ("steps", "resumed_from_step", "overflow_step", "diverged_step", "n",
                "tracked_rows", "flips_final", "near_kink_max", "rejected_steps",
                "step_flips_max")  # fmt: skip
SUMMARY_STRINGS = ("trial_id", "status", "device", "dtype", "error")
# any other scalar key of summary.json is read with the type JSON gives it; lists are not read


class AttemptStatus(str, Enum):
    """What became of one attempt of a trial (attempts.json); a trial's own outcome is
    :class:`core._status.TrialStatus`, which an attempt that ran to its end copies.

    RUNNING: open; its task may still be running.
    LOST: its worker, node or driver died before it ended (closed by the next driver).
    FAILED: the driver saw the task die for good (a system failure).
    """

    RUNNING = "running"
    LOST = "lost"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


# --- trajectories ----------------------------------------------------------------------------


def trajectory_table(
    rows: Mapping[str, Sequence[Any]], meta: Mapping[str, Any] | None = None
) -> pa.Table:
    """A trajectory table from column lists, with JSON metadata under ``ntkdiv.*`` keys.

    The columns of :data:`TRAJECTORY_SCHEMA` come first (null where ``rows`` lacks one); any
    other column of ``rows`` follows with the type pyarrow infers.
    """
    n = len(rows["step"])
    fields = list(TRAJECTORY_SCHEMA)
    cols = {f.name: pa.array(rows.get(f.name, [None] * n), f.type) for f in fields}
    for name, values in rows.items():
        if name not in cols:
            cols[name] = pa.array(values)
    table = pa.table(cols)
    md = {b"ntkdiv.schema_version": SCHEMA_VERSION.encode()}
    for key, value in (meta or {}).items():
        md[f"ntkdiv.{key}".encode()] = json.dumps(value).encode()
    return table.replace_schema_metadata(md)


def write_trajectory(path: str | Path | StorePath, table: pa.Table) -> None:
    """Atomic write of a trial's trajectory table (see :data:`TRAJECTORY_SCHEMA`)."""
    write_table(path, table)


def read_trajectory(path: str | Path | StorePath) -> pa.Table:
    where = locate(path)
    return pq.read_table(where.path, filesystem=where.fs)


def trajectory_meta(table_or_schema: pa.Table | pa.Schema) -> dict[str, Any]:
    """Decode the ``ntkdiv.*`` schema metadata of a trajectory table (or its schema)."""
    schema = table_or_schema if isinstance(table_or_schema, pa.Schema) else table_or_schema.schema
    out = {}
    for key, value in (schema.metadata or {}).items():
        k = key.decode()
        if k.startswith("ntkdiv."):
            try:
                out[k[7:]] = json.loads(value)
            except json.JSONDecodeError:
                out[k[7:]] = value.decode()
    return out


# --- the sweep layout ------------------------------------------------------------------------


def trials_root(sweep_dir: Where) -> StorePath:
    return locate(sweep_dir) / TRIALS


def trial_dir(sweep_dir: Where, trial_id: str) -> StorePath:
    return trials_root(sweep_dir) / trial_id


def spec_path(sweep_dir: Where) -> StorePath:
    return locate(sweep_dir) / SPEC


def search_file(sweep_dir: Where, name: str) -> StorePath:
    """A file of the sweep's Optuna search (``<sweep>/search/<name>``)."""
    return locate(sweep_dir) / "search" / name


def is_sweep_dir(path: Where) -> bool:
    """A directory that holds a sweep: its ``trials/`` or its ``spec.yaml``."""
    return trials_root(path).is_dir() or spec_path(path).is_file()


def trial_dirs(sweep_dir: Where) -> list[StorePath]:
    """Every trial directory of a sweep, sorted by trial id (empty when there is none)."""
    root = trials_root(sweep_dir)
    return sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)


def trial_files(sweep_dir: Where) -> dict[str, dict[str, int]]:
    """trial_id -> {file name: size} for every trial directory under ``trials/`` (empty ones
    too), in one listing."""
    root = trials_root(sweep_dir)
    out: dict[str, dict[str, int]] = {}
    for info in root.walk():
        rel = info.path[len(root.path) + 1 :].split("/")
        if len(rel) == 1 and info.type == pafs.FileType.Directory:
            out.setdefault(rel[0], {})
        elif len(rel) == 2 and info.type == pafs.FileType.File:
            out.setdefault(rel[0], {})[rel[1]] = info.size
    return out


def trajectory_files(
    sweep_dir: Where, found: dict[str, dict[str, int]] | None = None
) -> dict[str, int]:
    """Path on the sweep's filesystem -> size in bytes of each trajectory file, sorted by trial
    id; from ``found`` (a :func:`trial_files` listing) when given, else from a new listing."""
    root = trials_root(sweep_dir)
    found = trial_files(sweep_dir) if found is None else found
    return {f"{root.path}/{tid}/{TRAJECTORY}": found[tid][TRAJECTORY]
            for tid in sorted(found) if TRAJECTORY in found[tid]}  # fmt: skip


# trial ids are hex digits; an explicit string type stops "0123..." from being read as an integer
TRAJECTORY_PARTITIONING = ds.partitioning(pa.schema([("trial_id", pa.string())]))


def read_summary(tdir: Where) -> dict[str, Any] | None:
    """The trial's summary.json; None while it has none (running, lost, never started)."""
    try:
        return read_json(locate(tdir) / SUMMARY)
    except FileNotFoundError:
        return None


def trial_status(tdir: Where) -> str | None:
    """The status in the trial's summary.json, None without one."""
    summary = read_summary(tdir)
    return None if summary is None else summary.get("status")


def write_spec(sweep_dir: Where, text: str) -> None:
    """Create ``<sweep>/trials`` and write ``<sweep>/spec.yaml``."""
    trials_root(sweep_dir).mkdir()
    atomic_write_text(spec_path(sweep_dir), text)


def failed_summary(config: Any, tdir: Where, error: str, wall_s: float) -> dict[str, Any]:
    """Write ``summary.json`` with status ``failed`` and ``error`` (and config.yaml if missing)."""
    from .._config import trial_id
    from .._overrides import config_to_yaml

    tdir = locate(tdir)
    if not (tdir / CONFIG).exists():  # readers take the trial's keys from here
        atomic_write_text(tdir / CONFIG, config_to_yaml(config))
    summary = {"trial_id": trial_id(config), "status": "failed", "error": error[-ERROR_CHARS:],
               "wall_s": wall_s, "dtype": config.dtype, "device": None, "steps": None}  # fmt: skip
    write_json(tdir / SUMMARY, summary)
    return summary


# --- attempts.json ---------------------------------------------------------------------------


def read_attempts(tdir: Where) -> list[dict[str, Any]]:
    """The recorded attempts of a trial, oldest first (empty if it never started)."""
    try:
        return list(read_json(locate(tdir) / ATTEMPTS).get("attempts", []))
    except FileNotFoundError:
        return []


def _write_attempts(tdir: Where, attempts: list[dict[str, Any]]) -> None:
    write_json(locate(tdir) / ATTEMPTS, {"attempts": attempts})


def begin_attempt(tdir: Where, **where: Any) -> int:
    """Append an open attempt (start time, host, pid and ``where``); return its index."""
    attempts = read_attempts(tdir)
    attempts.append({"start": time.time(), "end": None, "status": str(AttemptStatus.RUNNING),
                     "host": socket.gethostname(), "pid": os.getpid(), **where})  # fmt: skip
    _write_attempts(tdir, attempts)
    return len(attempts) - 1


def end_attempt(tdir: Where, index: int | None, status: str, **extra: Any) -> None:
    """Close attempt ``index`` (or append a closed one when None) with its final status."""
    attempts = read_attempts(tdir)
    if index is None or index >= len(attempts):
        attempts.append({"start": None, "host": None, "pid": None})
        index = len(attempts) - 1
    attempts[index].update({"end": time.time(), "status": str(status), **extra})
    _write_attempts(tdir, attempts)


def attempt_progress(tdir: Where, index: int, step: int, t: float) -> None:
    """Record in the open attempt ``index`` how far its trial got (``progress``: the last tracked
    step, its t, and when), for the driver's progress line."""
    attempts = read_attempts(tdir)
    attempts[index]["progress"] = {"step": step, "t": t, "at": time.time()}
    _write_attempts(tdir, attempts)


def close_open_attempts(tdir: Where, start: int = 0, stop: int | None = None) -> None:
    """Mark the attempts ``start:stop`` still open as lost (their process is gone)."""
    for i, attempt in enumerate(read_attempts(tdir)[start:stop], start):
        if attempt.get("end") is None:
            end_attempt(tdir, i, AttemptStatus.LOST)


def failures(tdir: Where) -> int:
    """How many attempts of the trial failed in its own code (a system failure, closed by the
    driver with ``by: driver``, does not count)."""
    return sum(
        1 for a in read_attempts(tdir) if a.get("status") == "failed" and a.get("by") != "driver"
    )
