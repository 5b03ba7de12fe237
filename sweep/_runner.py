"""``ntkdiv sweep SPEC.yaml``: validate, dispatch every trial to Ray, publish, log, aggregate.

The run, top to bottom:
1. validate: the spec, every grid point, every trial's data and kernel (nothing is created
   before all of it passed: bad input leaves no store, no MLflow database);
2. connect to Ray (``--address``, ``RAY_ADDRESS``, or a local cluster) and size the resources;
3. write ``<storage>/<name>/spec.yaml``; trials whose ``summary.json`` says completed or overflow
   are skipped, the rest are submitted (``run_trial`` resumes from their checkpoints);
4. as trials finish: publish each into the sweep dataset, then log it to MLflow;
5. aggregate, print the verdict table, log the report.

Killing the driver loses nothing that a rerun cannot redo: the store is written first, the
dataset and MLflow are rebuilt from it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from core import ConfigError, TrialConfig, trial_id
from core.store import atomic_write_text, read_json, trial_dir

from ._progress import Counts, Progress, final_report
from ._spec import SweepSpec, expand, gpu_fraction, gpu_memory_bytes, load_spec, spec_to_dict

DONE = ("completed", "overflow")
WAIT_S = 0.5  # ray.wait timeout: how often the progress line is refreshed
RUNNING_SCAN_S = 2.0  # how often attempts.json of unfinished trials is read for "running"


@dataclass
class SweepResult:
    """What a sweep run did (also what ``bench/sweep.py`` measures)."""

    sweep_dir: Path
    counts: Counts
    exit_code: int
    wall_s: float  # the whole run, Ray start and aggregation included
    dispatch_start: float = 0.0  # time.time() at the first submission (attempts use that clock)
    dispatch_s: float = 0.0  # from the first submission to the last result
    # seconds in MLflow calls, per method; "open": making the client (a new store's tables)
    mlflow_s: dict[str, float] = field(default_factory=dict)
    trial_s: dict[str, float] = field(default_factory=dict)  # this run's trials: run_s of each
    failed: dict[str, str] = field(default_factory=dict)  # trial_id -> last line of the error
    aggregate: Any = None


# --- validation (before anything is created) -----------------------------------------------


def check_inputs(configs: list[TrialConfig]) -> list[str]:
    """Build every distinct data set and analytic kernel once; return the lr warnings.

    Raises:
        ConfigError, DataError: a missing data file, a single-class data set, bad kernel pairs.
    """
    from core._trial import lr_warning, prepare

    seen: dict[str, Any] = {}
    warnings: dict[str, int] = {}
    for config in configs:
        m = config.model  # what prepare() depends on: the data, the analytic kernel, the loss
        key = repr((config.data, m.arch, m.depth, m.alpha, config.train.loss,
                    config.track.kernel_pairs))  # fmt: skip
        if key not in seen:
            seen[key] = prepare(config)[1]
        text = lr_warning(config, seen[key])
        if text:
            warnings[text] = warnings.get(text, 0) + 1
    return [f"{w} ({n} trial{'s' if n > 1 else ''})" for w, n in warnings.items()]


def check_storage(spec: SweepSpec) -> None:
    """The sweep directory can be created (checked without creating it)."""
    target = spec.sweep_dir()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"sweep spec field 'storage': {target} exists and is not a directory")
    probe = target
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"sweep spec field 'storage' = {spec.storage!r}: cannot create {target} "
            f"({probe} is not a writable directory); pass --storage DIR"
        )


# --- resources -----------------------------------------------------------------------------


def plan_resources(spec: SweepSpec, configs: list[TrialConfig], cluster: Any,
                   note) -> dict[str, tuple[float, float]]:  # fmt: skip
    """trial_id -> (num_cpus, num_gpus) for each trial, checked against the cluster."""
    from . import _ray

    res = spec.resources
    cpus = res.cpus_per_trial
    if cluster.local and cpus > cluster.cpus:
        raise ConfigError(
            f"sweep spec field 'resources.cpus_per_trial' = {cpus:g}: the local cluster has "
            f"{cluster.cpus:g} CPUs; lower it"
        )
    gpus = res.gpus_per_trial
    if gpus == "auto":
        if cluster.gpus == 0 and (cluster.local or res.gpu_memory_gb is None):
            return {trial_id(c): (cpus, 0.0) for c in configs}  # no GPU: trials run on CPU
        memory = int(res.gpu_memory_gb * 2**30) if res.gpu_memory_gb else _ray.probe_gpu_memory()
        if memory is None:
            raise ConfigError(
                "sweep spec field 'resources.gpus_per_trial' = 'auto': could not read the GPU "
                "memory (no GPU worker with CUDA answered); set resources.gpu_memory_gb"
            )
        return {trial_id(c): (cpus, _auto_share(c, memory, note)) for c in configs}
    if gpus > 0 and cluster.gpus == 0:
        if cluster.local:
            raise ConfigError(
                f"sweep spec field 'resources.gpus_per_trial' = {gpus:g}: the local cluster has "
                "no GPU; use 0 or auto"
            )
        note("the Ray cluster offers no GPU now: trials wait until an autoscaler adds GPU nodes")
    return {trial_id(c): (cpus, float(gpus)) for c in configs}


def _auto_share(config: TrialConfig, memory: int, note) -> float:
    estimate = gpu_memory_bytes(config)
    if estimate > memory:
        note(f"trial {trial_id(config)} (width {config.model.width}) needs about "
             f"{estimate / 2**30:.1f} GiB, more than a GPU's {memory / 2**30:.1f} GiB: "
             "it gets a whole GPU and may run out of memory")  # fmt: skip
    return gpu_fraction(estimate, memory)


# --- MLflow, guarded -----------------------------------------------------------------------


class Tracking:
    """The MLflow logger, or nothing. An unreachable tracking server warns once and pauses
    logging for the rest of the run (the store holds everything; a final ``sync`` retries)."""

    def __init__(self, spec: SweepSpec, note) -> None:
        self.logger, self.note = None, note
        self.paused = self.warned = False
        # per method, for the benchmark; "open": making the client (a new store's tables)
        self.seconds: dict[str, float] = {}
        self.unavailable: type[Exception] = RuntimeError
        if spec.mlflow.enabled:
            from ._mlflow import MlflowLogger, TrackingUnavailable

            self.unavailable = TrackingUnavailable
            t0 = time.perf_counter()  # a new sqlite file gets MLflow's tables: ~1.5 s, once
            self.logger = MlflowLogger(spec.mlflow.tracking_uri, spec.experiment, spec.name,
                                       spec.sweep_dir())  # fmt: skip
            self.seconds["open"] = time.perf_counter() - t0

    def call(self, method: str, *args: Any) -> Any:
        if self.logger is None or self.paused:
            return None
        t0 = time.perf_counter()
        try:
            return getattr(self.logger, method)(*args)
        except self.unavailable as err:
            self.paused = True
            if not self.warned:
                self.warned = True
                self.note(f"ntkdiv: warning: MLflow unavailable ({err}); the store has "
                          "everything, and the next 'ntkdiv sweep' or 'ntkdiv sync' backfills "
                          "MLflow")  # fmt: skip
            return None
        finally:
            self.seconds[method] = self.seconds.get(method, 0.0) + time.perf_counter() - t0

    def retry_sync(self) -> None:
        """One more try at the end of the run, after a pause (a server that came back)."""
        if self.logger is not None and self.paused:
            self.paused = False
            self.call("sync")


# --- the store -----------------------------------------------------------------------------


def _status(tdir: Path) -> str | None:
    path = tdir / "summary.json"
    return read_json(path).get("status") if path.exists() else None


def _failures(attempts: list[dict]) -> int:
    return sum(1 for a in attempts if a.get("status") == "failed")


def _publish_if_stale(sweep_dir: Path, tid: str) -> None:
    """Publish a finished trial whose dataset partition is missing or older than its summary."""
    from core.store import publish_trial

    part = sweep_dir / "dataset" / "summary" / f"trial_id={tid}" / "part-0.parquet"
    summary = trial_dir(sweep_dir, tid) / "summary.json"
    if not part.exists() or part.stat().st_mtime < summary.stat().st_mtime:
        publish_trial(sweep_dir, tid)


def classify(sweep_dir: Path, configs: list[TrialConfig], retries: int) -> dict[str, str]:
    """trial_id -> done | exhausted | pending, read from the store (nothing is written)."""
    from ._ray import read_attempts

    states = {}
    for config in configs:
        tid = trial_id(config)
        tdir = trial_dir(sweep_dir, tid)
        status = _status(tdir)
        if status in DONE:
            states[tid] = "done"
        elif status == "failed" and _failures(read_attempts(tdir)) > retries:
            states[tid] = "exhausted"
        else:
            states[tid] = "pending"
    return states


def repair(sweep_dir: Path, states: dict[str, str]) -> None:
    """Undo what a lost driver left: attempts still open are marked lost (one driver per sweep
    at a time), finished trials missing from the dataset (or stale there) are published."""
    from ._ray import end_attempt, read_attempts

    for tid, state in states.items():
        tdir = trial_dir(sweep_dir, tid)
        for i, attempt in enumerate(read_attempts(tdir)):
            if attempt.get("end") is None:
                end_attempt(tdir, i, "lost")
        if state != "pending":
            _publish_if_stale(sweep_dir, tid)


# --- the run -------------------------------------------------------------------------------


@dataclass
class _Dispatch:
    """The in-flight trials of one run."""

    sweep_dir: Path
    configs: dict[str, TrialConfig]
    before: dict[str, int]  # attempts recorded before this run, per trial
    handles: dict[Any, str] = field(default_factory=dict)  # handle -> trial_id
    last_scan: float = 0.0


def _submit(d: _Dispatch, plan: dict[str, tuple[float, float]], retries: int,
            res: SweepResult) -> None:  # fmt: skip
    from . import _ray

    res.dispatch_start = time.time()
    for tid, config in d.configs.items():
        cpus, gpus = plan[tid]
        tdir = trial_dir(d.sweep_dir, tid)
        d.before[tid] = len(_ray.read_attempts(tdir))
        m = config.model
        name = f"trial {tid} {m.arch} m={m.width} {config.train.loss}"
        handle = _ray.submit(config.model_dump(mode="json"), tdir, num_cpus=cpus, num_gpus=gpus,
                             retries=retries, name=name)  # fmt: skip
        d.handles[handle] = tid


def _finish(d: _Dispatch, handle: Any, res: SweepResult, tracking: Tracking) -> None:
    """Collect one finished trial: its summary (or a system failure), publish, log, count."""
    from core.store import publish_trial

    from . import _ray

    tid = d.handles.pop(handle)
    tdir = trial_dir(d.sweep_dir, tid)
    try:
        summary = _ray.result(handle)
    except _ray.SystemFailure as err:
        summary = _system_failure(d, tid, str(err))
    attempts = _ray.read_attempts(tdir)[d.before[tid] :]
    for i, attempt in enumerate(attempts[:-1]):  # earlier attempts of this run died with a node
        if attempt.get("end") is None:
            _ray.end_attempt(tdir, d.before[tid] + i, "lost")
    publish_trial(d.sweep_dir, tid)
    tracking.call("log_trial", tid)
    c = res.counts
    c.retried += len(attempts) > 1
    status = summary.get("status")
    if status in DONE:
        setattr(c, status, getattr(c, status) + 1)
        res.trial_s[tid] = float(attempts[-1].get("run_s") or 0.0) if attempts else 0.0
    else:
        c.failed += 1
        res.failed[tid] = _last_line(summary.get("error"))


def _system_failure(d: _Dispatch, tid: str, error: str) -> dict[str, Any]:
    from . import _ray

    tdir = trial_dir(d.sweep_dir, tid)
    if _status(tdir) in DONE:  # it finished; only the reply was lost
        return read_json(tdir / "summary.json")
    attempts = _ray.read_attempts(tdir)
    open_ = [i for i, a in enumerate(attempts) if a.get("end") is None and i >= d.before[tid]]
    _ray.end_attempt(tdir, open_[-1] if open_ else None, "failed", by="driver", error=error)
    return _ray.failed_summary(d.configs[tid], tdir, f"system failure: {error}", 0.0)


def _last_line(error: Any) -> str:
    lines = [ln for ln in str(error or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "unknown error"


def _running(d: _Dispatch) -> int:
    """Unfinished trials of this run with an open attempt (read from attempts.json)."""
    from ._ray import read_attempts

    running = 0
    for tid in d.handles.values():
        attempts = read_attempts(trial_dir(d.sweep_dir, tid))[d.before[tid] :]
        running += bool(attempts) and attempts[-1].get("end") is None
    return running


def _collect(d: _Dispatch, res: SweepResult, tracking: Tracking, progress: Progress) -> None:
    """Wait for the submitted trials; publish and log each as it finishes."""
    from . import _ray

    if not d.handles:
        return
    progress.update(force=True)
    while d.handles:
        ready, _ = _ray.wait(list(d.handles), WAIT_S)
        for handle in ready:
            _finish(d, handle, res, tracking)
        every = RUNNING_SCAN_S * max(1.0, len(d.handles) / 500)  # many files on a shared FS
        if time.monotonic() - d.last_scan > every or ready:
            res.counts.running = _running(d)
            d.last_scan = time.monotonic()
        progress.update()
    res.dispatch_s = time.time() - res.dispatch_start
    progress.close()


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    aggregate: bool = True,
    quiet: bool = False,
    stream: TextIO | None = None,
) -> SweepResult:
    """Run (or resume) a sweep; see the module docstring. ``num_cpus``/``num_gpus`` size a
    local cluster only."""
    from . import _ray

    t_start = time.monotonic()
    if spec.search is not None and not spec.grid:  # its sweep dir belongs to the search
        raise ConfigError(
            f"sweep spec '{spec.name}' has a search: section and no grid; run it with "
            "'ntkdiv search SPEC'"
        )
    configs = expand(spec)
    warnings = check_inputs(configs)
    check_storage(spec)
    progress = Progress(Counts(total=len(configs)), stream or sys.stderr, quiet)
    states = classify(spec.sweep_dir(), configs, spec.retries)
    todo = {trial_id(c): c for c in configs if states[trial_id(c)] == "pending"}
    res = SweepResult(spec.sweep_dir(), progress.counts, exit_code=1, wall_s=0.0)
    cluster = None
    if todo:
        cluster = _ray.connect(address, num_cpus, num_gpus)
    elif address:
        _ray.check_reachable(address)  # the same answer for a bad address, work or no work
    try:
        plan = plan_resources(spec, list(todo.values()), cluster, progress.message) if todo else {}
        _prepare_store(spec, states)
        for text in warnings:
            progress.message(f"ntkdiv: warning: {text}")
        _earlier(states, res)
        dispatch = _Dispatch(res.sweep_dir, todo, {})
        _submit(dispatch, plan, spec.retries, res)  # workers start while MLflow gets ready
        tracking = Tracking(spec, progress.message)  # creates a sqlite database: not earlier
        tracking.call("ensure_parent", spec_to_dict(spec))
        tracking.call("sync")  # backfill: trials a lost driver never logged
        _collect(dispatch, res, tracking, progress)
    finally:
        _ray.shutdown()
    _conclude(res, tracking, aggregate, progress)
    res.wall_s = time.monotonic() - t_start
    return res


def _conclude(res: SweepResult, tracking: Tracking, aggregate: bool, progress: Progress) -> None:
    """Exit code, a last MLflow backfill if it was paused, the aggregator and its report."""
    from core import NtkdivError

    tracking.retry_sync()
    c = res.counts
    res.exit_code = 0 if c.earlier + c.completed + c.overflow == c.total else 1
    if not aggregate:
        tracking.call("finish")  # log_report finishes the parent run otherwise
    else:
        from dashboards import aggregate as run_aggregate

        try:
            res.aggregate = run_aggregate(res.sweep_dir)
        except NtkdivError as err:  # the trials are in the store: `ntkdiv aggregate` can redo it
            progress.message(f"ntkdiv: warning: aggregation failed: {err}")
            res.exit_code = 1
        else:
            tracking.call("log_report", res.aggregate.report_dir, res.aggregate.verdict_text)
    res.mlflow_s = tracking.seconds


def _prepare_store(spec: SweepSpec, states: dict[str, str]) -> None:
    sweep_dir = spec.sweep_dir()
    (sweep_dir / "trials").mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(spec_to_dict(spec), sort_keys=False)
    atomic_write_text(sweep_dir / "spec.yaml", text)
    repair(sweep_dir, states)


def _earlier(states: dict[str, str], res: SweepResult) -> None:
    """Count trials settled by earlier runs: done ones, and failed ones out of retries."""
    for tid, state in states.items():
        if state == "done":
            res.counts.earlier += 1
        elif state == "exhausted":
            res.counts.failed += 1
            summary = read_json(trial_dir(res.sweep_dir, tid) / "summary.json")
            res.failed[tid] = _last_line(summary.get("error")) + " (out of retries)"


def cmd_sweep(args: argparse.Namespace) -> int:
    """``ntkdiv sweep``: exit 0 when every trial completed or overflowed, 1 if any failed."""
    spec = load_spec(args.spec, storage=args.storage, tracking_uri=args.tracking_uri)
    res = run_sweep(spec, address=args.address, aggregate=not args.no_aggregate,
                    quiet=args.quiet)  # fmt: skip
    final_report(res, spec.name, sys.stdout)
    return res.exit_code
