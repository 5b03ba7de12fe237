"""Where the store lives: a path or URI as a StorePath on its pyarrow filesystem; atomic
writes; whether this process can write there. Re-exported by :mod:`core.store`."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

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


REMOTE_READERS = 32  # files read at once from an object store (each read is one request)
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

    def __eq__(self, other: object) -> bool:  # a local one equals Path(self), not a Path
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

    def write_bytes(self, data: bytes | memoryview) -> None:
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


def readers(where: StorePath) -> int:
    """How many files to read at once there: request latency dominates on an object store,
    file opens and decoding (2 cores) on a local disk."""
    return 2 if where.local else REMOTE_READERS


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


Where = str | Path | StorePath  # what the functions below accept for a sweep or trial directory


# --- atomic files ----------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path | StorePath, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` whole or not at all (see :meth:`StorePath.write_bytes`)."""
    locate(path).write_bytes(data)


def remove_partial_writes(directory: str | Path | StorePath) -> None:
    """Delete the temporary files that writers killed mid-write left in ``directory`` (a
    SIGKILL skips the cleanup of :meth:`StorePath.write_bytes`). Call it only
    where no other process writes (a trial's directory when its attempt starts): a checkpoint's
    leftover is as large as the checkpoint, and a few of them fill a small disk. Object stores
    leave none (an upload appears whole or not at all)."""
    where = locate(directory)
    if where.local:  # a missing directory globs to nothing
        for leftover in Path(where.path).glob(".*.tmp"):
            leftover.unlink(missing_ok=True)


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
    return read_parsed(path, json.loads)


T = TypeVar("T")
TORN_READS = 5  # reads of a file whose bytes do not parse, while they keep changing
TORN_PAUSE_S = 0.05  # between two of them


def read_parsed(
    path: str | Path | StorePath,
    parse: Callable[[bytes], T],
    errors: tuple[type[BaseException], ...] = (ValueError,),
) -> T:
    """``parse(the file's bytes)``, read again while they do not parse and differ between reads.

    An object store answers a read with a HEAD (the object's size) and a ranged GET, so an
    object overwritten between the two comes back torn: the new version cut to the old size, or
    the new version and stray bytes (SeaweedFS: a quarter of the reads of an attempts.json that
    another process rewrote in a loop). A torn read is a moment's; a damaged file reads the
    same bytes twice, and then ``parse``'s error (one of ``errors``) is raised. A local file is
    replaced whole (a rename), so only a damaged one is read twice.

    Raises:
        FileNotFoundError: the file is not there (or was deleted between two reads).
        OSError: the store failed.
    """
    where = locate(path)
    data = where.read_bytes()
    for _ in range(TORN_READS - 1):
        try:
            return parse(data)
        except errors:
            time.sleep(TORN_PAUSE_S)
            again = where.read_bytes()
            if again == data:
                raise
            data = again
    return parse(data)


def json_number(value: Any) -> float | None:
    """A number as :func:`write_json` stored it: ints and floats, and the ``"inf"`` / ``"-inf"``
    strings it writes for infinities, as a float; None for anything else (None, booleans,
    other strings)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) or value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def write_table(path: str | Path | StorePath, table: pa.Table) -> None:
    """Atomic Parquet write of one table, with a CRC per data page: a reader that verifies them
    (:func:`core.store.read_table_checked`) tells damaged data from good data, which Parquet
    alone would decode silently into other numbers."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_page_checksum=True)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


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
