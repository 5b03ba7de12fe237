"""``run_sweep(spec)``: validate, dispatch every trial to Ray, log to MLflow; return the result.

The run, top to bottom:
1. validate the spec, every grid point, every trial's data and kernel (``_prepare``: nothing is
   created before all of it passed);
2. take the sweep's lease (``<sweep>/lease.json``: one driver at a time) and settle each trial
   from the store (done, out of retries, pending; corrupt files quarantined);
3. connect to Ray (``--address``, ``RAY_ADDRESS``, or a local cluster) and size the resources
   (``_resources``);
4. write ``<storage>/<name>/spec.yaml``, close the attempts a lost driver left open, submit the
   pending trials (``run_trial`` resumes from their checkpoints; ``_dispatch``);
5. as trials finish, log each to MLflow (``mlflow_index.MlflowGuard``).

Killing the driver loses nothing that a rerun cannot redo: trials write the store themselves,
and MLflow is backfilled from it. Aggregation is the caller's (``ntkdiv._commands``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TextIO

from core import ConfigError, StoreError, TrialConfig, first_line, trial_id
from core import store as st
from mlflow_index import MlflowGuard

from ._dispatch import Dispatch, Outcome
from ._prepare import (
    Settled,
    check_address,
    check_inputs,
    check_reachable,
    check_storage,
    last_line,
    prepare_store,
    settle,
    sweep_lease,
)
from ._progress import Counts, Progress
from ._resources import plan_resources
from ._spec import SweepSpec, expand, spec_to_dict


@dataclass
class SweepResult:
    """What a sweep run did (also what ``bench/sweep.py`` measures)."""

    sweep_dir: st.StorePath
    counts: Counts
    exit_code: int  # 0: every trial completed or diverged; 1: some failed
    wall_s: float  # the whole run, Ray start included
    dispatch_start: float = 0.0  # time.time() at the first submission (attempts use that clock)
    dispatch_s: float = 0.0  # from the first submission to the last result
    # seconds in MLflow calls, per method; "open": making the client (a new store's tables)
    mlflow_s: dict[str, float] = field(default_factory=dict)
    trial_s: dict[str, float] = field(default_factory=dict)  # this run's trials: run_s of each
    failed: dict[str, str] = field(default_factory=dict)  # trial_id -> last line of the error
    tracking: MlflowGuard | None = None  # for the report, when the caller aggregates
    trial_ids: list[str] = field(default_factory=list)  # the spec's own grid, for its report


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    quiet: bool = False,
    stream: TextIO | None = None,
    retry_failed: bool = False,
    wait: bool = False,
) -> SweepResult:
    """Run (or resume) a sweep; see the module docstring.

    Args:
        address: a Ray cluster (default RAY_ADDRESS, else a local cluster).
        num_cpus, num_gpus: size a local cluster only.
        quiet: no progress line; stream: where progress and warnings go (default stderr).
        retry_failed: rerun trials out of retries too (``ntkdiv sweep --retry-failed``).
        wait: when another driver runs the sweep, wait for it instead of refusing.

    Raises:
        SweepBusy: another live driver holds the sweep's lease (and ``wait`` is False).
        StoreError: the store failed mid-sweep (what finished is kept).
    """
    t_start = time.monotonic()
    if spec.search is not None and not spec.grid:  # its sweep dir belongs to the search
        raise ConfigError(
            f"sweep spec '{spec.name}' has a search: section and no grid; run it with "
            "'ntkdiv search SPEC'"
        )
    configs = expand(spec)
    warnings = check_inputs(configs)
    check_storage(spec)
    check_address(address)  # refused before the lease makes the sweep dir (Ray not imported)
    progress = Progress(Counts(total=len(configs)), stream or sys.stderr, quiet)
    outcome = Outcome(progress.counts)
    try:
        with sweep_lease(spec.sweep_dir(), progress.message, wait):
            tracking = _run(spec, configs, warnings, progress, outcome, address, num_cpus,
                            num_gpus, retry_failed)  # fmt: skip
    except OSError as err:  # the store itself: stop cleanly, keep what finished
        progress.close()
        c = outcome.counts
        raise store_failed(spec.sweep_dir(), c.earlier + c.completed + c.diverged, err) from None
    tracking.retry_sync()
    c = outcome.counts
    return SweepResult(
        spec.sweep_dir(), c, 0 if c.earlier + c.completed + c.diverged == c.total else 1,
        time.monotonic() - t_start, outcome.dispatch_start, outcome.dispatch_s,
        tracking.seconds, outcome.trial_s, outcome.failed, tracking,
        [trial_id(config) for config in configs],
    )  # fmt: skip


def _run(spec: SweepSpec, configs: list[TrialConfig], warnings: list[str], progress: Progress,
         outcome: Outcome, address: str | None, num_cpus: int | None, num_gpus: int | None,
         retry_failed: bool) -> MlflowGuard:  # fmt: skip
    """Steps 2-5 of the module docstring, under the sweep's lease; the MLflow guard used."""
    _ray = ray_adapter(address)
    states = settle(spec.sweep_dir(), configs, None if retry_failed else spec.retries,
                    progress.message)  # fmt: skip
    todo = {trial_id(c): c for c in configs if states[trial_id(c)] is Settled.PENDING}
    _earlier(spec.sweep_dir(), states, outcome)
    cluster = _ray.connect(address, num_cpus, num_gpus) if todo else None
    if not todo and address:
        check_reachable(address)  # the same answer for a bad address, work or no work
    tracking: MlflowGuard | None = None
    try:
        plan = plan_resources(spec, list(todo.values()), cluster, progress.message) if todo else {}
        prepare_store(spec, list(states), progress.message)
        for text in warnings:
            progress.message(f"ntkdiv: warning: {text}")
        dispatch = Dispatch(spec.sweep_dir(), todo, outcome, _ray, note=progress.message)
        dispatch.submit(plan, spec.retries)  # workers start while MLflow gets ready
        tracking = open_tracking(spec, progress.message)  # creates a sqlite file: not earlier
        tracking.ensure_parent(spec_to_dict(spec))
        tracking.sync()  # backfill: trials a lost driver never logged
        dispatch.collect(tracking, progress)
    except BaseException as err:  # Ctrl-C, a store that failed: the parent run says so
        if tracking is not None:
            tracking.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        _ray.shutdown()
    return tracking


def open_tracking(spec: SweepSpec, note: Callable[[str], None]) -> MlflowGuard:
    """The MLflow guard of a sweep or search run (off when the spec says ``enabled: false``)."""
    uri = spec.mlflow.tracking_uri if spec.mlflow.enabled else None
    return MlflowGuard(uri, spec.experiment, spec.name, spec.sweep_dir(), note)


def ray_adapter(address: str | None) -> ModuleType:
    """The Ray adapter (``sweep._ray``), importing Ray now.

    A sweep or search without ``--address`` or ``RAY_ADDRESS`` starts its own cluster: Ray's
    documented variable ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ``ray`` is imported,
    keeps every server of it on 127.0.0.1 (docs/cluster.md, "What listens where"), and
    ``RAY_AUTH_MODE=token`` (unless set otherwise) states the mode Ray picks for a new local
    cluster anyway, token authentication, so Ray does not print a notice that it picked it before
    every sweep. A process that imported ``ray`` before gets Ray's own choices.
    """
    if address is None and not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    from . import _ray

    return _ray


def store_failed(sweep_dir: st.StorePath, kept: int | None, err: OSError,
                 command: str = "sweep") -> StoreError:  # fmt: skip
    """One line: what failed, what is kept (``kept`` None: not counted), what to type once the
    store answers again."""
    first = first_line(err, limit=1000)
    count = "" if kept is None else f"{kept} "
    return StoreError(
        f"the store {sweep_dir} failed mid-{command} ({first}); the {command} stopped, and the "
        f"{count}finished trial(s) are kept there; free space or bring the store back, then run "
        f"the same 'ntkdiv {command}' again: it resumes the rest from their checkpoints"
    )


def _earlier(sweep_dir: st.StorePath, states: dict[str, Settled], outcome: Outcome) -> None:
    """Count trials settled by earlier runs: done ones, and failed ones out of retries."""
    for tid, state in states.items():
        if state is Settled.DONE:
            outcome.counts.earlier += 1
        elif state is Settled.EXHAUSTED:
            outcome.counts.failed += 1
            summary = st.read_summary(st.trial_dir(sweep_dir, tid)) or {}
            outcome.failed[tid] = last_line(summary.get("error")) + " (out of retries)"
