"""The in-flight trials of one sweep run: submit each to Ray, collect each as it finishes.

A finished trial is counted and logged to MLflow (its files are already in the store, written
by its task). A task that died for good (a system failure after Ray's retries) gets a
``failed`` summary written here, so that the store says what happened to every trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from core import DONE, TrialConfig, TrialStatus
from core import store as st
from mlflow_index import MlflowGuard

from ._prepare import last_line
from ._progress import Counts, Progress

if TYPE_CHECKING:
    from ._resources import Request

WAIT_S = 0.5  # ray.wait timeout: how often the progress line is refreshed
RUNNING_SCAN_S = 2.0  # how often attempts.json of unfinished trials is read for "running"
SHOWN = 2  # running trials whose progress the progress line names


@dataclass
class Outcome:
    """What the trials of this run did."""

    counts: Counts
    dispatch_start: float = 0.0  # time.time() at the first submission (attempts use that clock)
    dispatch_s: float = 0.0  # from the first submission to the last result
    trial_s: dict[str, float] = field(default_factory=dict)  # this run's trials: run_s of each
    failed: dict[str, str] = field(default_factory=dict)  # trial_id -> last line of the error


@dataclass
class Dispatch:
    """Submits trials and collects them; ``before`` counts each trial's earlier attempts."""

    sweep_dir: st.StorePath
    configs: dict[str, TrialConfig]
    outcome: Outcome
    ray: ModuleType  # the Ray adapter, sweep._ray (imported once Ray is needed)
    before: dict[str, int] = field(default_factory=dict)
    handles: dict[Any, str] = field(default_factory=dict)  # handle -> trial_id
    last_scan: float = 0.0
    note: Callable[[str], None] = print  # one line for the user (quarantined files)

    def submit(self, plan: dict[str, Request], retries: int) -> None:
        """Start every trial's task with its resources from ``plan``."""
        self.outcome.dispatch_start = time.time()
        for tid, config in self.configs.items():
            tdir = st.trial_dir(self.sweep_dir, tid)
            self.before[tid] = len(self._attempts(tdir))
            m = config.model
            name = f"trial {tid} {m.arch} m={m.width} {config.train.loss}"
            handle = self.ray.submit(config.model_dump(mode="json"), tdir, plan[tid],
                                     retries=retries, name=name)  # fmt: skip
            self.handles[handle] = tid

    def collect(self, tracking: MlflowGuard, progress: Progress) -> None:
        """Wait for every submitted trial; log each as it finishes."""
        if not self.handles:
            return
        progress.update(force=True)
        while self.handles:
            ready, _ = self.ray.wait(list(self.handles), WAIT_S)
            for handle in ready:
                self._finish(handle, tracking)
            every = RUNNING_SCAN_S * max(1.0, len(self.handles) / 500)  # files on a shared FS
            if time.monotonic() - self.last_scan > every or ready:
                self.outcome.counts.running, progress.detail = self._running()
                self.last_scan = time.monotonic()
            progress.update()
        self.outcome.dispatch_s = time.time() - self.outcome.dispatch_start
        progress.close()

    def _finish(self, handle: Any, tracking: MlflowGuard) -> None:
        tid = self.handles.pop(handle)
        tdir = st.trial_dir(self.sweep_dir, tid)
        try:
            summary = self.ray.result(handle)
        except self.ray.SystemFailure as err:
            summary = system_failure(tdir, self.configs[tid], self.before[tid], str(err),
                                     self.note)  # fmt: skip
        for moved in summary.get("quarantined") or []:
            self.note(f"ntkdiv: warning: trial {tid}: {moved}")
        first = self.before[tid]
        attempts = self._attempts(tdir)[first:]
        # earlier attempts of this run died with their node
        st.close_open_attempts(tdir, first, first + len(attempts) - 1)
        tracking.log_trial(tid)
        c, status = self.outcome.counts, summary.get("status")
        c.retried += len(attempts) > 1
        if status in DONE:
            if status == TrialStatus.COMPLETED:
                c.completed += 1
            else:
                c.diverged += 1
            self.outcome.trial_s[tid] = float(attempts[-1].get("run_s") or 0.0) if attempts else 0
        else:
            c.failed += 1
            self.outcome.failed[tid] = last_line(summary.get("error"))

    def _running(self) -> tuple[int, str]:
        """How many unfinished trials of this run have an open attempt, and how far the first
        ``SHOWN`` of them got (both read from attempts.json)."""
        running, far = 0, list[str]()
        for tid in self.handles.values():
            attempts = self._attempts(st.trial_dir(self.sweep_dir, tid))[self.before[tid] :]
            if attempts and attempts[-1].get("end") is None:
                running += 1
                got = attempts[-1].get("progress")
                if isinstance(got, dict):
                    far.append(how_far(tid, self.configs[tid], got))
        more = f" (+{len(far) - SHOWN} more)" if len(far) > SHOWN else ""
        return running, "; ".join(far[:SHOWN]) + more

    def _attempts(self, tdir: st.StorePath) -> list[dict[str, Any]]:
        return st.checked_attempts(tdir, self.note)


def how_far(tid: str, config: TrialConfig, progress: dict[str, Any]) -> str:
    """``<id> at t = 48.2 of 1e+40`` (a gradient-flow trial) or ``<id> at step 1,200 of
    20,000`` (gradient descent): a running trial's last tracked row, from its attempt."""
    t_max = config.train.t_max
    if t_max is not None:
        return f"{tid[:8]} at t = {float(progress.get('t', 0.0)):.3g} of {t_max:.3g}"
    return f"{tid[:8]} at step {int(progress.get('step', 0)):,} of {config.train.epochs:,}"


def system_failure(
    tdir: st.StorePath,
    config: TrialConfig,
    before: int,
    error: str,
    note: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The summary of a trial whose task died for good: its own summary if it finished (only
    the reply was lost), else a ``failed`` one written now, with its last open attempt (of
    those after the first ``before``) closed as failed by the driver (``by: driver``: it does
    not count against the trial's retries)."""
    summary, problem = st.read_json_checked(tdir / st.SUMMARY)
    if problem is not None:
        st.quarantine_noted(tdir / st.SUMMARY, problem, note, "replaced by the system failure's")
    if summary is not None and summary.get("status") in DONE:
        return summary
    attempts = st.checked_attempts(tdir, note)
    open_ = [i for i, a in enumerate(attempts) if a.get("end") is None and i >= before]
    st.end_attempt(tdir, open_[-1] if open_ else None, "failed", by="driver", error=error)
    return st.failed_summary(config, tdir, f"system failure: {error}", 0.0)
