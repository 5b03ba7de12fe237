"""Faults in the store: corrupt files checked and quarantined (:func:`repair`), and the sweep's
lease (one driver at a time). Re-exported by :mod:`core.store`."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .._errors import first_line
from .._status import DONE
from ._layout import ATTEMPTS, SUMMARY, TRAJECTORY, TRIALS, read_attempts, trial_dir, trial_files
from ._path import FILE_MODE, StorePath, Where, locate, read_parsed, readers, write_json

# --- corrupt files: checked, then moved aside ------------------------------------------------

QUARANTINE = "quarantine"
CHECKPOINT = "checkpoint.pt"


def corrupt_reason(path: Where) -> str | None:
    """Why a trial file cannot be read (None: it reads, or it is not there).

    ``*.json``: JSON that parses to a mapping (``summary.json`` with a ``status``,
    ``attempts.json`` with an ``attempts`` list); ``*.parquet``: the whole table decodes, and
    every data page matches its CRC (:func:`read_table_checked`). Other names are not checked.

    Raises:
        OSError: the store itself failed (not the file's content).
    """
    where = locate(path)
    if where.name.endswith(".json"):
        return read_json_checked(where)[1]
    if where.name.endswith(".parquet"):
        return read_table_checked(where)[1]
    return None


def read_table_checked(path: Where) -> tuple[pa.Table | None, str | None]:
    """(the Parquet file's table, None), or (None, why it is corrupt); (None, None) when absent.

    The bytes are read first and decoded from memory, so that a failing store (an OSError while
    reading) is never mistaken for a damaged file: any error while decoding is the file's.
    Pages written with a CRC (``core.store.write_table`` writes one) are verified; a flipped
    bit in their data is found, where plain decoding would return other numbers. A read torn by
    a concurrent rewrite is read again (:func:`read_parsed`).

    Raises:
        OSError: the store itself failed.
    """
    try:
        return read_parsed(path, _decode_table, (Undecodable,)), None
    except FileNotFoundError:
        return None, None
    except Undecodable as err:
        return None, str(err)


class Undecodable(Exception):
    """The bytes read are not the file's format (the file's fault, not the store's)."""


def _decode_table(data: bytes) -> pa.Table:
    try:
        return pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
    except (OSError, ValueError, pa.ArrowException) as err:  # truncated, not Parquet, bad CRC
        raise Undecodable(first_line(err)) from err


def read_json_checked(path: Where) -> tuple[dict[str, Any] | None, str | None]:
    """(the file's mapping, None), or (None, why it is corrupt); (None, None) when absent.
    A read torn by a concurrent rewrite is read again (:func:`read_parsed`).

    Raises:
        OSError: the store itself failed.
    """
    where = locate(path)
    try:
        value = read_parsed(where, json.loads)
    except FileNotFoundError:
        return None, None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        return None, first_line(err)
    problem = _json_problem(where.name, value)
    return (None, problem) if problem else (value, None)


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


RERUN = "the trial will run again, from its checkpoint if it has one"


def quarantine_noted(path: Where, problem: str | None, note: Callable[[str], None],
                     then: str) -> None:  # fmt: skip
    """:func:`quarantine`, said in one line through ``note``: ``problem`` is why the file is
    corrupt (None: it goes with the trial's corrupt trajectory), ``then`` what happens next."""
    source = locate(path)
    target = quarantine(source)
    trial = f"{TRIALS}/{source.parent.name}/{source.name}"
    why = f"is corrupt ({problem})" if problem else f"goes with its corrupt {TRAJECTORY}"
    note(f"ntkdiv: warning: {trial} {why}: moved to {target}; {then}")


def checked_attempts(tdir: Where, note: Callable[[str], None]) -> list[dict[str, Any]]:
    """The trial's attempts; a corrupt attempts.json is quarantined (named in one line) and
    reads as none, so the driver's progress line and counts go on."""
    try:
        return read_attempts(tdir)
    except (ValueError, AttributeError, TypeError):  # not JSON, or not the attempts mapping
        path = locate(tdir) / ATTEMPTS
        quarantine_noted(path, corrupt_reason(path) or "unreadable", note,
                         "its attempt history starts over")  # fmt: skip
        return []


def repair(sweep_dir: Where, note: Callable[[str], None] = print) -> dict[str, Any]:
    """Quarantine the corrupt files of every trial directory; returns trial_id -> its readable
    summary, or None. One listing; only the files it found are read, several trials at once.

    A corrupt ``summary.json`` or ``attempts.json``, or the unreadable ``trajectory.parquet`` of
    a finished trial, is moved aside, and the trial is pending again: it resumes from its
    checkpoint, or starts over. Call it only while holding the sweep's lease (files are moved),
    or before MLflow reads the store (``ntkdiv sync``).
    """
    sweep_dir = locate(sweep_dir)
    files = trial_files(sweep_dir)
    with ThreadPoolExecutor(readers(sweep_dir)) as pool:
        checked = pool.map(lambda tid: _checked(trial_dir(sweep_dir, tid), files[tid], note),
                           files)  # fmt: skip
        return dict(zip(files, checked, strict=True))


def _checked(tdir: StorePath, names: dict[str, int], note: Callable[[str], None]) -> Any:
    """The trial's summary (None without a readable one), after quarantining corrupt files."""
    problem = corrupt_reason(tdir / ATTEMPTS) if ATTEMPTS in names else None
    if problem is not None:
        quarantine_noted(tdir / ATTEMPTS, problem, note, "its attempt history starts over")
    if SUMMARY not in names:
        return None
    summary, problem = read_json_checked(tdir / SUMMARY)
    if problem is not None:
        quarantine_noted(tdir / SUMMARY, problem, note, RERUN)
        return None
    if summary and summary.get("status") in DONE and TRAJECTORY in names:
        problem = corrupt_reason(tdir / TRAJECTORY)
        if problem is not None:
            quarantine_noted(tdir / TRAJECTORY, problem, note, RERUN)
            quarantine_noted(tdir / SUMMARY, None, note, RERUN)  # a summary means a whole trial
            return None
    return summary


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
        value = read_parsed(lease_path(sweep_dir), json.loads)
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) and "token" in value else None


def describe_lease(lease: Mapping[str, Any]) -> str:
    since = lease.get("since")
    when = (time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
            if isinstance(since, (int, float)) else "?")  # fmt: skip
    return f"host {lease.get('host')}, pid {lease.get('pid')}, since {when}"


def lease_stale(lease: Mapping[str, Any], now: float | None = None) -> bool:
    """A dead driver's lease, by this host's clock: its heartbeat is ``STALE_BEATS`` beats old
    (or, from another host, as far in the future: the clocks disagree), or it names a process
    of this host that no longer exists. For another host's lease this is only a suspicion, which
    :func:`acquire_lease` confirms by watching the heartbeat (:func:`still_beating`)."""
    now = time.time() if now is None else now
    beat = lease.get("heartbeat")
    limit = STALE_BEATS * _every(lease)
    if not isinstance(beat, (int, float)) or now - beat > limit:
        return True
    if lease.get("host") == socket.gethostname():
        return isinstance(lease.get("pid"), int) and not _pid_alive(lease["pid"])
    return beat - now > limit


def _every(lease: Mapping[str, Any]) -> float:
    every = lease.get("every_s")
    return float(every) if isinstance(every, (int, float)) and every > 0 else HEARTBEAT_S


def still_beating(sweep_dir: Where, lease: Mapping[str, Any]) -> dict[str, Any] | None:
    """Watch another host's lease for 1.5 of its beats on this host's monotonic clock: the
    lease as it is now if its heartbeat changed meanwhile (its driver lives, whatever the two
    clocks say) or another driver took it; None if it stood still (its driver is dead)."""
    time.sleep(1.5 * _every(lease))
    now = read_lease(sweep_dir)
    if now is None:
        return None
    same = (now.get("token"), now.get("heartbeat")) == (lease.get("token"), lease.get("heartbeat"))
    return None if same else now


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

    A lease that looks stale by this host's clock is taken over at once when its driver ran on
    this host (same clock; or its pid is gone); another host's is watched for 1.5 beats first
    and taken over only if its heartbeat stood still, so that clocks that disagree never hand a
    live driver's sweep to a second one.

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
    if old is not None and old.get("host") != socket.gethostname():  # its clock is not ours
        alive = still_beating(sweep_dir, old)
        if alive is not None:
            raise LeaseHeld(alive)
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
