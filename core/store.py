"""The one module that knows the store: where it lives, its layout, atomic writes, attempts.json.

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
    <storage>/<sweep>/report/                              the aggregator's output (local stores)

A trial's files are written once, where its task runs, and read where they are: nothing copies
them. Every file appears whole or not at all: on a POSIX filesystem it is written to a temporary
name in the same directory and renamed; on an object store an object appears whole when its
upload completes. A trial writes its data first and ``summary.json`` last, so a summary means a
whole trial. ``dashboards`` reads ``trials/*/`` with ``pyarrow.dataset`` on the same filesystem
(:func:`trajectory_files`, :data:`TRAJECTORY_PARTITIONING`) and the summaries as JSON.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
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
    "t_leave", "drift_smooth_sup", "stationary_t", "flip_jump_max", "t_stay",
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


# --- where the store lives -------------------------------------------------------------------

STORE_SCHEMES = ("file", "s3", "gs", "gcs")  # what --storage accepts besides a plain path
S3_TIMEOUTS = {"connect_timeout": 10.0, "request_timeout": 60.0}  # seconds; the SDK's are minutes
S3_ATTEMPTS = 4  # one request, then three retries with the SDK's backoff


def _umask() -> int:
    """The process umask, read without changing it where Linux exposes it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file: colleagues may read the store


@lru_cache(maxsize=16)
def _filesystem(scheme: str, netloc: str, env: tuple[str, ...]) -> pafs.FileSystem:
    """One filesystem per (scheme, bucket, AWS settings); S3 with bounded timeouts and retries.

    ``env`` is the AWS variables' values, so a changed endpoint or key makes a new client.
    """
    if scheme == "s3":
        endpoint = env[0] or env[1]  # AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL
        return pafs.S3FileSystem(
            endpoint_override=endpoint or None, allow_delayed_open=True,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
            **S3_TIMEOUTS,
        )  # fmt: skip
    return pafs.FileSystem.from_uri(f"{scheme}://{netloc}")[0]


AWS_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "AWS_PROFILE")  # fmt: skip


class StorePath:
    """A file or directory of the store, on a local disk or an object store (pyarrow.fs).

    Behaves like the few ``pathlib.Path`` methods the project needs (``/``, ``name``,
    ``parent``, ``exists``, ``is_file``, ``is_dir``, ``iterdir``, ``read_bytes``,
    ``read_text``, ``unlink``, ``mkdir``); writes go through :meth:`write_bytes`, which is
    atomic. ``str()`` gives the URI (``s3://bucket/key``) or, locally, the plain path, which
    :func:`locate` turns back into the same place on any node.
    """

    __slots__ = ("fs", "path", "scheme")

    def __init__(self, fs: pafs.FileSystem, path: str, scheme: str = "") -> None:
        self.fs, self.path, self.scheme = fs, path.rstrip("/") or "/", scheme

    @property
    def local(self) -> bool:
        return not self.scheme

    def __str__(self) -> str:
        return self.path if self.local else f"{self.scheme}://{self.path}"

    def __repr__(self) -> str:
        return f"StorePath({str(self)!r})"

    def __fspath__(self) -> str:
        if not self.local:
            raise TypeError(f"{self} is in an object store, not a local path")
        return self.path

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Path):  # a local path compares with the same plain path
            return self.local and self.path == str(other)
        return isinstance(other, StorePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, name: str) -> StorePath:
        return StorePath(self.fs, f"{self.path.rstrip('/')}/{name}", self.scheme)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> StorePath:
        head = self.path.rsplit("/", 1)[0]
        return StorePath(self.fs, head or "/", self.scheme)

    def _type(self) -> pafs.FileType:
        return self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def iterdir(self) -> list[StorePath]:
        """The entries just below this directory (empty when it does not exist)."""
        selector = pafs.FileSelector(self.path, allow_not_found=True)
        return [StorePath(self.fs, i.path, self.scheme) for i in self.fs.get_file_info(selector)]

    def walk(self) -> list[pafs.FileInfo]:
        """Every file and directory below this one, in one listing (a request per 1,000 keys
        on S3); empty when it does not exist."""
        selector = pafs.FileSelector(self.path, allow_not_found=True, recursive=True)
        return self.fs.get_file_info(selector)

    def read_bytes(self) -> bytes:
        if self.local:
            return Path(self.path).read_bytes()
        with self.fs.open_input_stream(self.path) as fh:
            return fh.read()

    def read_text(self) -> str:
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Atomic write: a temporary file and a rename locally; one upload on an object store."""
        if not self.local:
            with self.fs.open_output_stream(self.path) as fh:
                fh.write(data)
            return
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode())

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        """Create the directory (an object store has none to create: a no-op there)."""
        if self.local:
            Path(self.path).mkdir(parents=parents, exist_ok=exist_ok)

    def move(self, target: StorePath) -> None:
        """Rename (a copy and a delete on an object store)."""
        if self.local:
            Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        self.fs.move(self.path, target.path)


def locate(where: str | Path | StorePath) -> StorePath:
    """The store location of a path or URI: ``s3://bucket/key``, ``gs://...``, ``file:///abs``,
    or a plain path (made absolute, ``~`` expanded)."""
    if isinstance(where, StorePath):
        return where
    text = str(where)
    if "://" not in text or text.startswith("file://"):
        local = Path(text.removeprefix("file://")).expanduser().absolute()
        return StorePath(pafs.LocalFileSystem(), str(local))
    parts = urlsplit(text)
    if parts.query:  # options in the URI itself: pyarrow parses them
        fs, path = pafs.FileSystem.from_uri(text)
        return StorePath(fs, path, parts.scheme)
    env = tuple(os.environ.get(k, "") for k in AWS_VARIABLES)
    fs = _filesystem(parts.scheme, parts.netloc, env)
    return StorePath(fs, f"{parts.netloc}{parts.path}", parts.scheme)


# --- atomic files ----------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path | StorePath, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (see :meth:`StorePath.write_bytes`)."""
    locate(path).write_bytes(data)


def atomic_write_text(path: str | Path | StorePath, text: str) -> None:
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


def write_json(path: str | Path | StorePath, obj: Mapping[str, Any]) -> None:
    """Atomic JSON write with sorted keys (byte-stable for identical content)."""
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path | StorePath) -> dict[str, Any]:
    return json.loads(locate(path).read_bytes())


def write_table(path: str | Path | StorePath, table: pa.Table) -> None:
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

Where = str | Path | StorePath  # what the functions below accept for a sweep or trial directory


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


def trajectory_files(sweep_dir: Where) -> list[str]:
    """Paths of the sweep's trajectory files on its filesystem, sorted by trial id."""
    root = trials_root(sweep_dir)
    found = trial_files(sweep_dir)
    return [f"{root.path}/{tid}/{TRAJECTORY}" for tid in sorted(found) if TRAJECTORY in found[tid]]


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
    from ._config import trial_id
    from ._overrides import config_to_yaml

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


# --- can this process write the store? -------------------------------------------------------

_S3_HINTS = (  # (what the SDK's error says, what to tell the user)
    ("NETWORK_CONNECTION", "no S3 endpoint answers; check AWS_ENDPOINT_URL ({endpoint})"),
    ("INVALID_ACCESS_KEY_ID", "the access key is refused; check AWS_ACCESS_KEY_ID"),
    ("SIGNATURE_DOES_NOT_MATCH", "the secret key is refused; check AWS_SECRET_ACCESS_KEY"),
    (
        "ACCESS_DENIED",
        "access denied: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and "
        "that they may {what} there",
    ),
    ("NO_SUCH_BUCKET", "the bucket does not exist; create it first"),
)


def _explain(err: OSError, what: str) -> str:
    text = str(err)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    for code, hint in _S3_HINTS:
        if code in text:
            return hint.format(endpoint=endpoint or "unset: the AWS default", what=what)
    return text.splitlines()[0] if text else type(err).__name__


def check_writable(where: Where) -> str | None:
    """Why this process cannot create and delete files under ``where`` (None: it can).

    On an object store: the endpoint answers, the credentials are accepted, the bucket exists,
    and a probe object can be written under the prefix and deleted. Nothing stays behind.
    """
    loc = locate(where)
    if loc.local:
        probe = Path(loc.path)
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            return f"{probe} is not a writable directory"
        return None
    bucket = loc.path.split("/", 1)[0]
    try:
        if loc.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            return f"bucket '{bucket}' does not exist; create it first"
    except OSError as err:
        return _explain(err, "read")
    probe_file = loc / f".ntkdiv-probe-{os.getpid()}-{time.time_ns()}"
    try:
        probe_file.write_bytes(b"")
        probe_file.unlink(missing_ok=True)
    except OSError as err:
        return _explain(err, "write")
    return None


# --- corrupt files: checked, then moved aside ------------------------------------------------

QUARANTINE = "quarantine"
CHECKPOINT = "checkpoint.pt"


def corrupt_reason(path: Where) -> str | None:
    """Why a trial file cannot be read (None: it reads, or it is not there).

    ``*.json``: JSON that parses to a mapping (``summary.json`` with a ``status``,
    ``attempts.json`` with an ``attempts`` list); ``*.parquet``: a readable Parquet footer (one
    small read: the data pages are not checked). Other names are not checked.

    Raises:
        OSError: the store itself failed (not the file's content).
    """
    where = locate(path)
    if where.name.endswith(".json"):
        return read_json_checked(where)[1]
    try:
        if where.name.endswith(".parquet"):
            pq.read_metadata(where.path, filesystem=where.fs)
    except FileNotFoundError:
        return None
    except (ValueError, pa.ArrowInvalid) as err:  # not Parquet, truncated
        return _first_line(err)
    return None


def read_json_checked(path: Where) -> tuple[dict[str, Any] | None, str | None]:
    """(the file's mapping, None), or (None, why it is corrupt); (None, None) when absent.

    Raises:
        OSError: the store itself failed.
    """
    where = locate(path)
    try:
        value = json.loads(where.read_bytes())
    except FileNotFoundError:
        return None, None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        return None, _first_line(err)
    problem = _json_problem(where.name, value)
    return (None, problem) if problem else (value, None)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _json_problem(name: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"a {type(value).__name__}, not a mapping"
    if name == SUMMARY and not isinstance(value.get("status"), str):
        return "no status"
    if name == ATTEMPTS and not isinstance(value.get("attempts"), list):
        return "no attempts list"
    return None


def quarantine_dir(tdir: Where) -> StorePath:
    """Where a trial's corrupt files go: ``<sweep>/quarantine/<trial_id>`` for a trial of a sweep,
    else ``<out_dir>/quarantine`` (a trial run on its own)."""
    tdir = locate(tdir)
    if tdir.parent.name == TRIALS:
        return tdir.parent.parent / QUARANTINE / tdir.name
    return tdir / QUARANTINE


def quarantine(path: Where) -> StorePath:
    """Move a corrupt trial file aside, never deleting it; returns where it went.

    The target is ``quarantine_dir(trial)/<name>.<UTC time>``: a file quarantined twice keeps
    both copies.
    """
    source = locate(path)
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    target = quarantine_dir(source.parent) / f"{source.name}.{stamp}"
    source.move(target)
    return target


# --- the sweep's lease: one driver at a time -------------------------------------------------

LEASE = "lease.json"
HEARTBEAT_S = 10.0  # how often a live driver rewrites its lease
STALE_BEATS = 3  # a lease whose heartbeat is this many beats old belongs to a dead driver
LEASE_SETTLE_S = 1.0  # object stores: the pause before reading a written lease back


class LeaseHeld(Exception):
    """Another live driver holds the sweep's lease; ``lease`` is its lease.json."""

    def __init__(self, lease: dict[str, Any]) -> None:
        super().__init__(describe_lease(lease))
        self.lease = lease


def lease_path(sweep_dir: Where) -> StorePath:
    return locate(sweep_dir) / LEASE


def read_lease(sweep_dir: Where) -> dict[str, Any] | None:
    """The sweep's lease.json; None when there is none or it is unreadable (a torn or foreign
    file cannot name a live driver)."""
    try:
        value = json.loads(lease_path(sweep_dir).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        return None
    return value if isinstance(value, dict) and "token" in value else None


def describe_lease(lease: Mapping[str, Any]) -> str:
    since = lease.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
            if isinstance(since, (int, float)) else "?")  # fmt: skip
    return f"host {lease.get('host')}, pid {lease.get('pid')}, since {when}"


def lease_stale(lease: Mapping[str, Any], now: float | None = None) -> bool:
    """A dead driver's lease: its heartbeat is ``STALE_BEATS`` beats old, or it names a process
    of this host that no longer exists."""
    now = time.time() if now is None else now
    beat = lease.get("heartbeat")
    every = float(lease.get("every_s") or HEARTBEAT_S)
    if not isinstance(beat, (int, float)) or now - beat > STALE_BEATS * every:
        return True
    if lease.get("host") == socket.gethostname() and isinstance(lease.get("pid"), int):
        return not _pid_alive(lease["pid"])
    return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    try:  # a zombie is dead
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def acquire_lease(
    sweep_dir: Where, every_s: float = HEARTBEAT_S
) -> tuple[dict[str, Any], dict | None]:
    """Take the sweep's lease for this process: (the lease, the stale one it replaced or None).

    Locally the lease file is created with an exclusive link, so of two drivers exactly one
    wins; a stale lease is first renamed away (one rename succeeds). On an object store, which
    has no exclusive create, the lease is written and read back after a pause: the last writer
    holds it, and the other driver sees that and refuses.

    Raises:
        LeaseHeld: a live driver holds it.
        OSError: the store failed.
    """
    where = lease_path(sweep_dir)
    now = time.time()
    lease = {"token": f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}",
             "host": socket.gethostname(), "pid": os.getpid(), "since": now, "heartbeat": now,
             "every_s": every_s}  # fmt: skip
    old = read_lease(sweep_dir)
    if old is not None and not lease_stale(old):
        raise LeaseHeld(old)
    if where.local:
        _take_local(where, lease, old)
    else:
        write_json(where, lease)
        time.sleep(LEASE_SETTLE_S)
        held = read_lease(sweep_dir)
        if held is None or held.get("token") != lease["token"]:
            raise LeaseHeld(held or {})
    return lease, old


def _take_local(where: StorePath, lease: dict[str, Any], old: dict | None) -> None:
    path = Path(where.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # stale or unreadable: move it away; of two takers one rename succeeds
        _retire_local(path, lease["token"], old)
    fd, tmp = tempfile.mkstemp(prefix=f".{LEASE}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(lease, fh, indent=2, sort_keys=True)
        os.chmod(tmp, FILE_MODE)
        os.link(tmp, path)  # fails when the file exists: exclusive
    except FileExistsError:
        raise LeaseHeld(read_lease(where.parent) or old or {}) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _retire_local(path: Path, token: str, old: Mapping[str, Any] | None) -> None:
    """Rename the stale lease away; if what was renamed is a fresh lease (another driver took
    over between our read and our rename), put it back and refuse."""
    aside = path.with_name(f".{LEASE}.{token}.old")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        return
    try:
        moved = json.loads(aside.read_bytes())
    except ValueError:
        moved = None
    if isinstance(moved, dict) and old is not None and moved.get("token") != old.get("token"):
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        aside.unlink(missing_ok=True)
        raise LeaseHeld(moved)
    aside.unlink(missing_ok=True)


def refresh_lease(sweep_dir: Where, lease: dict[str, Any]) -> bool:
    """Rewrite the heartbeat; False when the lease is no longer this driver's (taken over)."""
    held = read_lease(sweep_dir)
    if held is not None and held.get("token") != lease["token"]:
        return False
    lease["heartbeat"] = time.time()
    write_json(lease_path(sweep_dir), lease)
    return True


def release_lease(sweep_dir: Where, lease: Mapping[str, Any]) -> None:
    """Delete the lease if it is still this driver's."""
    held = read_lease(sweep_dir)
    if held is not None and held.get("token") == lease["token"]:
        lease_path(sweep_dir).unlink(missing_ok=True)
