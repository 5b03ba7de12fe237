"""The one module that writes ntkdiv's files: atomic writes, trajectories and the sweep dataset.

Layout of a store (a directory on a local or shared filesystem)::

    <storage>/<sweep>/trials/<trial_id>/config.yaml        full resolved config
    <storage>/<sweep>/trials/<trial_id>/summary.json       DESIGN §3 keys (+ extras)
    <storage>/<sweep>/trials/<trial_id>/trajectory.parquet one row per tracked step
    <storage>/<sweep>/trials/<trial_id>/checkpoint.pt      last checkpoint (weights_only-safe)
    <storage>/<sweep>/dataset/summary/trial_id=<id>/part-0.parquet     one row per trial
    <storage>/<sweep>/dataset/trajectory/trial_id=<id>/part-0.parquet  the trajectory again

The ``dataset/`` tree is a hive-partitioned Parquet dataset that ``dashboards`` reads with
``pyarrow.dataset``. Every write goes to a temporary name in the same directory, then is renamed,
so a crash never leaves a half-written file, and rewriting a trial replaces its partition whole:
a step appears at most once per trial.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"

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
        ("flips", pa.int64()),  # ReLU pattern flips since the previous tracked step
    ]
)


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


def trajectory_table(
    rows: Mapping[str, Sequence[Any]], meta: Mapping[str, Any] | None = None
) -> pa.Table:
    """Build a trajectory table from column lists, with JSON metadata under ``ntkdiv.*`` keys."""
    cols = {name: rows.get(name, [None] * len(rows["step"])) for name in TRAJECTORY_SCHEMA.names}
    table = pa.table(cols, schema=TRAJECTORY_SCHEMA)
    md = {b"ntkdiv.schema_version": SCHEMA_VERSION.encode()}
    for key, value in (meta or {}).items():
        md[f"ntkdiv.{key}".encode()] = json.dumps(value).encode()
    return table.replace_schema_metadata(md)


def write_trajectory(path: str | Path, table: pa.Table) -> None:
    """Atomic write of a trial's trajectory table (see :data:`TRAJECTORY_SCHEMA`)."""
    write_table(path, table)


def read_trajectory(path: str | Path) -> pa.Table:
    return pq.read_table(path)


def trajectory_meta(table: pa.Table) -> dict[str, Any]:
    """Decode the ``ntkdiv.*`` schema metadata of a trajectory table."""
    raw = table.schema.metadata or {}
    out = {}
    for key, value in raw.items():
        k = key.decode()
        if k.startswith("ntkdiv."):
            try:
                out[k[7:]] = json.loads(value)
            except json.JSONDecodeError:
                out[k[7:]] = value.decode()
    return out


# --- the sweep-level dataset -----------------------------------------------------------------


def trial_dir(sweep_dir: str | Path, trial_id: str) -> Path:
    return Path(sweep_dir) / "trials" / trial_id


def _partition(sweep_dir: str | Path, kind: str, trial_id: str) -> Path:
    return Path(sweep_dir) / "dataset" / kind / f"trial_id={trial_id}" / "part-0.parquet"


SUMMARY_FLOATS = (
    "lambda0", "bound", "gap_init", "gap_sup", "drift_sup", "t_exceed", "lambda_min_emp_min",
    "f_abs_min_final", "theta_inf_final", "loss_final", "wall_s", "lambda_max", "max_K",
    "resolution", "loss_init", "accuracy_final",
)  # fmt: skip


def summary_row(summary: Mapping[str, Any], flat_config: Mapping[str, Any]) -> pa.Table:
    """One-row table: the summary's scalar keys plus the flattened config (dotted names)."""
    cols: dict[str, pa.Array] = {}
    for key in SUMMARY_FLOATS:
        v = summary.get(key)
        cols[key] = pa.array([None if v is None else float(v)], pa.float64())
    for key in ("steps", "resumed_from_step", "overflow_step"):
        v = summary.get(key)
        cols[key] = pa.array([None if v is None else int(v)], pa.int64())
    for key in ("status", "device", "dtype", "error"):
        v = summary.get(key)
        cols[key] = pa.array([None if v is None else str(v)], pa.string())
    for key, v in flat_config.items():
        if isinstance(v, (list, tuple, dict)) or v is None:
            v = json.dumps(v)
        cols[key] = pa.array([v])
    return pa.table(cols)


def publish_trial(sweep_dir: str | Path, trial_id: str) -> None:
    """Copy a finished trial into the sweep dataset (summary row + trajectory partition).

    Idempotent: rerunning replaces the partitions whole, so no step is ever duplicated.
    """
    import yaml

    from ._config import config_from_dict, flatten

    tdir = trial_dir(sweep_dir, trial_id)
    summary = read_json(tdir / "summary.json")
    config = config_from_dict(yaml.safe_load((tdir / "config.yaml").read_text()))
    traj = tdir / "trajectory.parquet"
    if traj.exists():
        write_table(_partition(sweep_dir, "trajectory", trial_id), pq.read_table(traj))
    write_table(_partition(sweep_dir, "summary", trial_id), summary_row(summary, flatten(config)))
