"""Process helpers for the local stack: free ports, detached services, stop by pid, readiness.

Every service runs in a session of its own (``start_new_session``), so its pid is also the id of
a process group that holds its children; stopping signals the pid, then that group, and nothing
else on the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class StackError(RuntimeError):
    """A service failed to start or stop; the message names it, its log and the fix."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that is free right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def alive(pid: int | None) -> bool:
    """True if ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def group_pids(pgid: int) -> list[int]:
    """Live pids whose process group is ``pgid`` (the service and what it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def spawn(
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
    cwd: Path | None = None,
) -> int:
    """Start ``argv`` detached, its output in ``log``; returns its pid (that of argv[0] itself)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    return proc.pid


def stop(pid: int | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Stop the service ``pid``: ``sig`` to it, then TERM and KILL to its process group.

    Returns True if it was running. Only ``pid`` and its own group are signalled.
    """
    if not alive(pid):
        return False
    assert pid is not None
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for last in (signal.SIGTERM, signal.SIGKILL):
        if not group_pids(pid) and not alive(pid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, last)
        end = time.monotonic() + 5
        while group_pids(pid) and time.monotonic() < end:
            time.sleep(0.2)
    return True


def http_status(url: str, timeout: float = 5.0) -> int | None:
    """The HTTP status of GET ``url``; None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {log})"


def wait_for(name: str, pid: int, log: Path, ready: Callable[[], bool], timeout: float) -> float:
    """Poll ``ready`` until it holds; raise if ``pid`` dies or after ``timeout`` s.

    Returns the seconds waited."""
    start = time.monotonic()
    while True:
        try:
            if ready():
                return time.monotonic() - start
        except Exception:  # a service still starting answers with anything
            pass
        waited = time.monotonic() - start
        if not alive(pid):
            raise StackError(f"{name} exited during start-up; log {log}:\n{tail(log)}")
        if waited > timeout:
            raise StackError(
                f"{name} did not answer within {timeout:.0f} s; log {log}:\n{tail(log)}\n"
                "(raise --timeout, or look for a port in use in the log)"
            )
        time.sleep(1.0)


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (children, their children...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += parents.get(p, [])
    return found


def listening(pids: set[int] | list[int]) -> list[tuple[str, int, int]]:
    """(local address, port, pid) of every listening TCP socket of ``pids``, from ``ss -ltnp``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        addr, _, port = fields[3].rpartition(":")
        for pid in {int(p) for p in re.findall(r"pid=(\d+),", line)} & set(pids):
            found.append((addr.strip("[]"), int(port), pid))
    return found


def is_loopback(addr: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address."""
    addr = addr.removeprefix("::ffff:")
    return addr.startswith("127.") or addr == "::1"
