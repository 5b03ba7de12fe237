"""Before any trial runs, for ``ntkdiv sweep`` and ``ntkdiv search`` alike.

1. :func:`check_inputs` and :func:`check_storage` validate everything without creating anything
   (bad input leaves no store and no MLflow database);
2. :func:`settle` reads what earlier runs left in the store: done, out of retries, or pending
   (a corrupt trial file is quarantined, and its trial runs again);
3. :func:`prepare_store` writes ``spec.yaml`` and closes the attempts a lost driver left open.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

import core
from core import DONE, ConfigError, NtkdivError, TrialConfig, trial_id
from core import store as st

from ._spec import SweepSpec, spec_to_dict


class Settled(str, Enum):
    """Where a trial stands before a run: DONE (never rerun), EXHAUSTED (failed more often than
    ``retries`` allows; reported, not rerun) or PENDING (to run, resuming its checkpoint)."""

    DONE = "done"
    EXHAUSTED = "exhausted"
    PENDING = "pending"


def check_inputs(configs: list[TrialConfig]) -> list[str]:
    """Build every distinct data set and analytic kernel once; return the lr warnings.

    Raises:
        ConfigError, DataError: a missing data file, a single-class data set, bad kernel pairs.
    """
    seen: dict[str, Any] = {}
    warnings: dict[str, int] = {}
    for config in configs:
        m = config.model  # what prepare() depends on: the data, the analytic kernel, the loss
        key = repr((config.data, m.arch, m.depth, m.alpha, config.train.loss,
                    config.track.kernel_pairs))  # fmt: skip
        if key not in seen:
            seen[key] = core.prepare(config)[1]  # the first use of core's torch side
        text = core.lr_warning(config, seen[key])
        if text:
            warnings[text] = warnings.get(text, 0) + 1
    return [f"{w} ({n} trial{'s' if n > 1 else ''})" for w, n in warnings.items()]


def check_storage(spec: SweepSpec) -> None:
    """The sweep directory can be created and written (locally: without creating it; on an
    object store: a probe object written and deleted)."""
    target = spec.sweep_dir()
    if target.local and target.exists() and not target.is_dir():
        raise ConfigError(f"sweep spec field 'storage': {target} exists and is not a directory")
    problem = st.check_writable(target)
    if problem is not None:
        fix = "pass --storage DIR" if target.local else "fix that, or pass another --storage"
        raise ConfigError(
            f"sweep spec field 'storage' = {spec.storage!r}: cannot write {target} ({problem}); "
            f"{fix}"
        )


def settle(
    sweep_dir: st.Where,
    configs: list[TrialConfig],
    retries: int | None,
    note: Callable[[str], None] = print,
) -> dict[str, Settled]:
    """trial_id -> where it stands, read from the store; ``retries`` None: no trial is out of
    retries (``--retry-failed``).

    Corrupt files are quarantined first (:func:`core.store.repair`), and their trials are
    pending again. Nothing else is written. Call it only while holding the sweep's lease.
    """
    states = {}
    summaries = st.repair(sweep_dir, note)
    for config in configs:
        tid = trial_id(config)
        tdir = st.trial_dir(sweep_dir, tid)
        summary = summaries.get(tid)
        status = None if summary is None else summary.get("status")
        if status in DONE:
            states[tid] = Settled.DONE
        elif status == "failed" and retries is not None and st.failures(tdir) > retries:
            states[tid] = Settled.EXHAUSTED
        else:
            states[tid] = Settled.PENDING
    return states


GRID_KEYS = ("base", "grid", "zip", "exclude")  # what decides a sweep's trials


def grid_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for each grid-defining field of two specs that differs."""
    return [f"{key}: {old.get(key)} -> {new.get(key)}" for key in GRID_KEYS
            if old.get(key) != new.get(key)]  # fmt: skip


def prepare_store(
    spec: SweepSpec, trial_ids: list[str], note: Callable[[str], None] | None = None
) -> None:
    """Write ``spec.yaml`` (creating the sweep directory) and mark the attempts still open in
    ``trial_ids`` lost: one driver runs a sweep at a time, so their processes are gone.

    A spec.yaml from an earlier run with another grid is named in one warning through
    ``note``: the store keeps those trials, the report covers this spec's own.
    """
    sweep_dir = spec.sweep_dir()
    new = spec_to_dict(spec)
    try:
        old = yaml.safe_load(st.spec_path(sweep_dir).read_text()) or {}
    except FileNotFoundError:
        old = None
    changed = grid_changes(old, new) if isinstance(old, dict) else []
    if changed and note is not None:
        shown = "; ".join(changed)
        note(f"ntkdiv: warning: the grid of sweep '{spec.name}' changed since its last run "
             f"({shown[:400]}); the store keeps the earlier trials, this run's report covers "
             f"this spec's {len(trial_ids)} trial(s) only")  # fmt: skip
    st.write_spec(sweep_dir, yaml.safe_dump(new, sort_keys=False))
    for tid in trial_ids:
        st.close_open_attempts(st.trial_dir(sweep_dir, tid))


def last_line(error: Any) -> str:
    """The last non-empty line of an error text (a traceback's names the exception)."""
    lines = [ln for ln in str(error or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "unknown error"


# --- one driver per sweep --------------------------------------------------------------------

WAIT_POLL_S = 2.0  # --wait: how often a queued driver looks at the lease again


class SweepBusy(NtkdivError):
    """Another live driver holds the sweep's lease (exit 2)."""


@contextmanager
def sweep_lease(sweep_dir: st.StorePath, note: Callable[[str], None], wait: bool) -> Iterator[None]:
    """Hold ``<sweep>/lease.json`` while the body runs, refreshing its heartbeat every
    ``core.store.HEARTBEAT_S`` seconds from a thread; released at the end, also on errors.

    A lease whose heartbeat is ``STALE_BEATS`` beats old (or whose driver's pid is gone from this
    host) belongs to a dead driver: it is taken over with a warning.

    Raises:
        SweepBusy: a live driver holds it and ``wait`` is False.
        OSError: the store failed.
    """
    created = _missing_dirs(sweep_dir)
    lease, old = _acquire(sweep_dir, note, wait)
    if old is not None:
        age = time.time() - float(old.get("heartbeat") or 0)
        who = st.describe_lease(old)
        note(f"ntkdiv: warning: took over sweep {sweep_dir} from a driver that stopped ({who}; "
             f"last heartbeat {age:.0f} s ago)")  # fmt: skip
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(sweep_dir, lease, stop, note), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join(timeout=10)
        with contextlib.suppress(OSError):  # a failed store: the lease goes stale, then is taken
            st.release_lease(sweep_dir, lease)
        for path in created:  # bad input found under the lease leaves no empty store behind
            try:
                os.rmdir(path)
            except OSError:  # not empty: the sweep wrote there
                break


def _missing_dirs(sweep_dir: st.StorePath) -> list[str]:
    """The local directories that writing the lease creates, deepest first."""
    if not sweep_dir.local:
        return []
    missing, path = [], Path(sweep_dir.path)
    while not path.exists() and path != path.parent:
        missing.append(str(path))
        path = path.parent
    return missing


def _acquire(sweep_dir: st.StorePath, note: Callable[[str], None], wait: bool) -> Any:
    waiting = False
    while True:
        try:
            return st.acquire_lease(sweep_dir)
        except st.LeaseHeld as held:
            if not wait:
                raise SweepBusy(
                    f"sweep {sweep_dir} is being run by another driver ({held}); let it finish, "
                    "pass --wait to start when it does, or stop that process (a driver that died "
                    f"is taken over once its heartbeat is {st.STALE_BEATS * st.HEARTBEAT_S:.0f} s "
                    "old)"
                ) from None
            if not waiting:
                note(f"ntkdiv: waiting for the driver running sweep {sweep_dir} ({held})")
                waiting = True
            time.sleep(WAIT_POLL_S)


def _heartbeat(sweep_dir: st.StorePath, lease: dict[str, Any], stop: threading.Event,
               note: Callable[[str], None]) -> None:  # fmt: skip
    while not stop.wait(float(lease["every_s"])):
        try:
            if not st.refresh_lease(sweep_dir, lease):
                note(f"ntkdiv: warning: another driver took over sweep {sweep_dir}; this one "
                     "stopped refreshing its lease")  # fmt: skip
                return
        except OSError:  # the store is down: a missed beat; the driver itself will say why
            continue


def check_address(address: str | None) -> None:
    """:func:`check_reachable` for ``address``, else ``RAY_ADDRESS``, when either is set (a
    local cluster needs no check): a bad address is refused before anything is created."""
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        check_reachable(target)


def check_reachable(address: str) -> None:
    """Fail fast: Ray itself retries an unreachable GCS for minutes."""
    if address.startswith(("http://", "https://")):
        raise ConfigError(
            f"--address / RAY_ADDRESS = {address!r} is a dashboard URL; pass the GCS address "
            "HOST:6379 (or ray://HOST:10001)"
        )
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address / RAY_ADDRESS = {address!r}: expected HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ConfigError(
            f"--address / RAY_ADDRESS = {address!r}: no Ray cluster answers "
            f"({err.strerror or err}); start one (cluster/start_local.sh start) or omit "
            "--address for a local cluster"
        ) from None
