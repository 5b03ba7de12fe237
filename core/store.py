"""The one module that knows the store: its layout, atomic writes, trajectories, attempts.json.

Layout of a store (a directory on a local or shared filesystem)::

    <storage>/<sweep>/spec.yaml                            the sweep spec, as run
    <storage>/<sweep>/trials/<trial_id>/config.yaml        full resolved config
    <storage>/<sweep>/trials/<trial_id>/summary.json       DESIGN §3 keys (+ extras)
    <storage>/<sweep>/trials/<trial_id>/trajectory.parquet one row per tracked step
    <storage>/<sweep>/trials/<trial_id>/checkpoint.pt      last checkpoint (weights_only-safe)
    <storage>/<sweep>/trials/<trial_id>/attempts.json      every attempt: start, end, node, status
    <storage>/<sweep>/search/<study>.best.json             an Optuna search's best value so far
    <storage>/<sweep>/report/                              the aggregator's output

A trial's files are written once, where its task runs, and read where they are: nothing copies
them. Every write goes to a temporary name in the same directory, then is renamed, so a crash
never leaves a half-written file, and rewriting a trajectory replaces it whole: a step appears
at most once per trial. ``dashboards`` reads ``trials/*/`` with ``pyarrow.dataset``
(:func:`trajectory_files`, :func:`TRAJECTORY_PARTITIONING`) and the summaries as JSON.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

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
    ]
)

# summary.json keys and their types in the one-row summary a reader builds per trial
SUMMARY_FLOATS = (
    "lambda0", "bound", "gap_init", "gap_sup", "drift_sup", "t_exceed", "lambda_min_emp_min",
    "f_abs_min_final", "theta_inf_final", "loss_final", "wall_s", "lambda_max", "max_K",
    "resolution", "loss_init", "accuracy_final", "step_jump_max", "t_max", "horizon_t",
    "t_leave", "drift_smooth_sup", "stationary_t", "flip_jump_max",
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


# --- atomic files ----------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Atomic text write (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(path: str | Path, obj: Mapping[str, Any]) -> None:
    """Atomic JSON write with sorted keys (byte-stable for identical content)."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def write_table(path: str | Path, table: pa.Table) -> None:
    """Atomic Parquet write of one table."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


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


def write_trajectory(path: str | Path, table: pa.Table) -> None:
    """Atomic write of a trial's trajectory table (see :data:`TRAJECTORY_SCHEMA`)."""
    write_table(path, table)


def read_trajectory(path: str | Path) -> pa.Table:
    return pq.read_table(path)


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


def trials_root(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / TRIALS


def trial_dir(sweep_dir: str | Path, trial_id: str) -> Path:
    return trials_root(sweep_dir) / trial_id


def spec_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / SPEC


def search_file(sweep_dir: str | Path, name: str) -> Path:
    """A file of the sweep's Optuna search (``<sweep>/search/<name>``)."""
    return Path(sweep_dir) / "search" / name


def is_sweep_dir(path: str | Path) -> bool:
    """A directory that holds a sweep: its ``trials/`` or its ``spec.yaml``."""
    return trials_root(path).is_dir() or spec_path(path).is_file()


def trial_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every trial directory of a sweep, sorted by trial id (empty when there is none)."""
    root = trials_root(sweep_dir)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def trajectory_files(sweep_dir: str | Path) -> list[str]:
    """Paths of the sweep's trajectory files, sorted by trial id."""
    return [str(p / TRAJECTORY) for p in trial_dirs(sweep_dir) if (p / TRAJECTORY).is_file()]


# trial ids are hex digits; an explicit string type stops "0123..." from being read as an integer
TRAJECTORY_PARTITIONING = ds.partitioning(pa.schema([("trial_id", pa.string())]))


def read_summary(tdir: Path) -> dict[str, Any] | None:
    """The trial's summary.json; None while it has none (running, lost, never started)."""
    path = Path(tdir) / SUMMARY
    return read_json(path) if path.is_file() else None


def trial_status(tdir: Path) -> str | None:
    """The status in the trial's summary.json, None without one."""
    summary = read_summary(tdir)
    return None if summary is None else summary.get("status")


def write_spec(sweep_dir: str | Path, text: str) -> None:
    """Create ``<sweep>/trials`` and write ``<sweep>/spec.yaml``."""
    trials_root(sweep_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec_path(sweep_dir), text)


def failed_summary(config: Any, tdir: Path, error: str, wall_s: float) -> dict[str, Any]:
    """Write ``summary.json`` with status ``failed`` and ``error`` (and config.yaml if missing)."""
    from ._config import trial_id
    from ._overrides import config_to_yaml

    tdir = Path(tdir)
    if not (tdir / CONFIG).exists():  # readers take the trial's keys from here
        atomic_write_text(tdir / CONFIG, config_to_yaml(config))
    summary = {"trial_id": trial_id(config), "status": "failed", "error": error[-ERROR_CHARS:],
               "wall_s": wall_s, "dtype": config.dtype, "device": None, "steps": None}  # fmt: skip
    write_json(tdir / SUMMARY, summary)
    return summary


# --- attempts.json ---------------------------------------------------------------------------


def read_attempts(tdir: Path) -> list[dict[str, Any]]:
    """The recorded attempts of a trial, oldest first (empty if it never started)."""
    path = Path(tdir) / ATTEMPTS
    return list(read_json(path).get("attempts", [])) if path.exists() else []


def _write_attempts(tdir: Path, attempts: list[dict[str, Any]]) -> None:
    write_json(Path(tdir) / ATTEMPTS, {"attempts": attempts})


def begin_attempt(tdir: Path, **where: Any) -> int:
    """Append an open attempt (start time, host, pid and ``where``); return its index."""
    attempts = read_attempts(tdir)
    attempts.append({"start": time.time(), "end": None, "status": str(AttemptStatus.RUNNING),
                     "host": socket.gethostname(), "pid": os.getpid(), **where})  # fmt: skip
    _write_attempts(tdir, attempts)
    return len(attempts) - 1


def end_attempt(tdir: Path, index: int | None, status: str, **extra: Any) -> None:
    """Close attempt ``index`` (or append a closed one when None) with its final status."""
    attempts = read_attempts(tdir)
    if index is None or index >= len(attempts):
        attempts.append({"start": None, "host": None, "pid": None})
        index = len(attempts) - 1
    attempts[index].update({"end": time.time(), "status": str(status), **extra})
    _write_attempts(tdir, attempts)


def close_open_attempts(tdir: Path, start: int = 0, stop: int | None = None) -> None:
    """Mark the attempts ``start:stop`` still open as lost (their process is gone)."""
    for i, attempt in enumerate(read_attempts(tdir)[start:stop], start):
        if attempt.get("end") is None:
            end_attempt(tdir, i, AttemptStatus.LOST)


def failures(tdir: Path) -> int:
    """How many attempts of the trial ended ``failed``."""
    return sum(1 for a in read_attempts(tdir) if a.get("status") == "failed")
