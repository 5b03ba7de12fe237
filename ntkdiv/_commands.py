"""The commands that compose the packages: ``ntkdiv sweep`` (sweep -> aggregate -> report) and
``ntkdiv aggregate`` (aggregate -> report, optionally logged to MLflow).

This is the one place where sweep meets dashboards: ``run_sweep`` returns its result,
``dashboards.aggregate`` reads the store, and the MLflow guard attaches the report to the sweep's
parent run. dashboards never imports sweep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from core import NtkdivError
from core import store as st
from sweep import Stage, SweepResult, SweepSpec, load_spec, run_sweep


def sweep_with_report(spec: SweepSpec, *, aggregate: bool = True,
                      **kwargs: Any) -> tuple[SweepResult, Any]:  # fmt: skip
    """Run the sweep, then aggregate it and log the report to its MLflow parent run.

    Returns:
        (the sweep's result, the ``dashboards.AggregateResult`` or None when not aggregated or
        when aggregation failed; the exit code is then 1 and a warning is printed).
    """
    res = run_sweep(spec, **kwargs)
    tracking = res.tracking
    if not aggregate:
        if tracking is not None:
            tracking.finish()
        return res, None
    stream = kwargs.get("stream") or sys.stderr
    try:
        report = aggregate_once(res.sweep_dir, None, stream, quiet=bool(kwargs.get("quiet")),
                                only=res.trial_ids)  # fmt: skip
    except NtkdivError as err:  # the trials are in the store: `ntkdiv aggregate` can redo it
        print(f"ntkdiv: warning: aggregation failed: {err}", file=stream)
        res.exit_code = 1
        if tracking is not None:
            tracking.finish()
        return res, None
    if tracking is not None:
        tracking.log_report(report.report_dir, report.verdict_text, headline(report))
        res.mlflow_s = tracking.seconds
    return res, report


def aggregate_once(sweep_dir: Any, out: Path | None, stream: TextIO, quiet: bool = False,
                   only: list[str] | None = None) -> Any:  # fmt: skip
    """``dashboards.aggregate``, unless the report on disk was built from the same inputs
    (``_report_cache``): then that report, read back. Progress goes to ``stream``."""
    from dashboards import aggregate

    from . import _report_cache as cache

    local = cache.local_dir(sweep_dir)
    report_dir = out if out is not None else (local / "report" if local else None)
    if local is not None and report_dir is not None:
        kept = cache.unchanged(local, report_dir)
        if kept is not None:
            if not quiet:
                print(f"report: unchanged since the store last changed, kept ({report_dir})",
                      file=stream, flush=True)  # fmt: skip
            return kept
    with Stage(f"aggregating {sweep_dir.name}", stream, quiet):
        result = aggregate(sweep_dir, out, only=only)
    if local is not None:
        cache.remember(local, Path(result.report_dir))
    return result


def headline(report: Any) -> dict[str, float]:
    """The report's headline numbers, for the parent run's metrics: trials by status, usable
    trials, and (group, width) rows by direct and by drift verdict."""
    trials, verdict = report.trials, report.verdict
    out = {"trials": float(len(trials))}
    if "usable" in trials:
        out["trials_usable"] = float(trials["usable"].sum())
    if "status" in trials:
        for status, n in trials["status"].astype(str).value_counts().items():
            out[f"trials_{status}"] = float(n)
    for column, prefix in (("direct", "rows_direct"), ("verdict", "rows_verdict")):
        if column in verdict:
            for value, n in verdict[column].astype(str).value_counts().items():
                out[f"{prefix}/{value}"] = float(n)
    return out


def cmd_sweep(args: argparse.Namespace) -> int:
    """``ntkdiv sweep``: exit 0 when every trial completed or diverged, 1 if any failed."""
    spec = load_spec(args.spec, storage=args.storage, tracking_uri=args.tracking_uri)
    res, report = sweep_with_report(spec, address=args.address, aggregate=not args.no_aggregate,
                                    quiet=args.quiet, retry_failed=args.retry_failed,
                                    wait=args.wait)  # fmt: skip
    final_report(res, spec.name, sys.stdout)
    if report is not None:
        print(report.verdict_text)
        print(f"report: {report.html}")
    if res.tracking is not None and res.tracking.logger is not None:
        print(res.tracking.logger.ui_hint())
    return res.exit_code


def cmd_aggregate(args: argparse.Namespace) -> int:
    """``ntkdiv aggregate STORE [--out DIR] [--tracking-uri URI]``.

    STORE is a sweep directory, or a storage root: then each sweep directory just below it is
    aggregated into its own report (``<sweep>/report``, or ``DIR/<sweep>``). With
    ``--tracking-uri`` each report is attached to its sweep's MLflow parent run.

    Returns:
        0 done; 3 the reports were written but MLflow could not be reached (bad input raises
        a ``NtkdivError``: exit 2).
    """
    from dashboards import find_sweeps

    sweeps = find_sweeps(args.store)
    out = Path(args.out) if args.out else None
    code = 0
    for i, sweep_dir in enumerate(sweeps, 1):
        report_dir = None if out is None else (out if len(sweeps) == 1 else out / sweep_dir.name)
        if len(sweeps) > 1:
            print(f"== sweep {sweep_dir.name} ({i}/{len(sweeps)})", flush=True)
        result = aggregate_once(sweep_dir, report_dir, sys.stderr)
        print(result.verdict_text)
        print(f"report: {result.html}", flush=True)
        if args.tracking_uri:
            code = max(code, _log_report(args.tracking_uri, sweep_dir, result))
    return code


def _log_report(tracking_uri: str, sweep_dir: st.StorePath, result: Any) -> int:
    """Attach a report to the sweep's parent run (the experiment comes from spec.yaml)."""
    from mlflow_index import MlflowLogger, TrackingUnavailable

    from ._sync import spec_defaults

    experiment = spec_defaults(sweep_dir).get("experiment")
    try:
        logger = MlflowLogger(tracking_uri, experiment, sweep_dir.name, sweep_dir)
        logger.log_report(result.report_dir, result.verdict_text, headline(result))
    except TrackingUnavailable as err:
        print(f"ntkdiv: error: {err}; the report is in {result.report_dir}", file=sys.stderr)
        return 3
    print(f"logged the report to the parent run of sweep {sweep_dir.name} at {tracking_uri}")
    return 0


def final_report(res: SweepResult, name: str, out: TextIO) -> None:
    """The closing lines of a sweep on stdout: counts and failures.

    ``res`` is a ``sweep.SweepResult``.
    """
    c = res.counts
    print(f"sweep {name}: {c.total} trials: {c.earlier} from earlier runs, {c.completed} "
          f"completed, {c.diverged} diverged, {c.failed} failed, {c.retried} retried "
          f"({res.wall_s:.1f} s); store {res.sweep_dir}", file=out)  # fmt: skip
    for tid, line in list(res.failed.items())[:10]:
        print(f"  failed {tid}: {line}", file=out)
    if len(res.failed) > 10:
        print(f"  ... and {len(res.failed) - 10} more (summary.json 'error' in each)", file=out)
