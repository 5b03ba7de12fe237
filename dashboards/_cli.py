"""``ntkdiv aggregate STORE [--out DIR] [--tracking-uri URI]``.

STORE is a sweep directory ``<storage>/<sweep>``, or a storage root: then every sweep directory
just below it is aggregated, each into its own report (``<sweep>/report``, or ``DIR/<sweep>``).
With ``--tracking-uri`` each report is attached to its sweep's MLflow parent run (through
``sweep._mlflow``, imported only then: dashboards itself never imports mlflow).

Exit codes: 0 done; 2 bad input (not a store, incompatible schemas); 3 the reports were written
but MLflow could not be reached (log them later with the same command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._aggregate import aggregate
from ._read import find_sweeps


def log_to_mlflow(tracking_uri: str, sweep_dir: Path, report_dir: Path, text: str) -> None:
    """Attach the report to the sweep's parent run (the experiment comes from spec.yaml)."""
    from sweep._mlflow import MlflowLogger
    from sweep._sync import spec_defaults

    experiment = spec_defaults(sweep_dir).get("experiment")
    logger = MlflowLogger(tracking_uri, experiment, sweep_dir.name, sweep_dir)
    logger.log_report(report_dir, text)


def cmd_aggregate(args: argparse.Namespace) -> int:
    """Aggregate each sweep under ``args.store``, print its verdict, optionally log to MLflow."""
    sweeps = find_sweeps(Path(args.store))
    out = Path(args.out) if args.out else None
    # --engine/--address are read when the parser defines them (see docs/aggregation.md)
    engine = getattr(args, "engine", None) or "arrow"
    address = getattr(args, "address", None)
    code = 0
    for sweep_dir in sweeps:
        report_dir = None if out is None else (out if len(sweeps) == 1 else out / sweep_dir.name)
        if len(sweeps) > 1:
            print(f"== sweep {sweep_dir.name}", flush=True)
        result = aggregate(sweep_dir, report_dir, engine=engine, address=address)
        print(result.verdict_text)
        print(f"report: {result.html}", flush=True)
        if args.tracking_uri:
            code = max(code, _log(args.tracking_uri, sweep_dir, result))
    return code


def _log(tracking_uri: str, sweep_dir: Path, result) -> int:
    from sweep._mlflow import TrackingUnavailable

    try:
        log_to_mlflow(tracking_uri, sweep_dir, result.report_dir, result.verdict_text)
    except TrackingUnavailable as err:
        print(f"ntkdiv: error: {err}; the report is in {result.report_dir}", file=sys.stderr)
        return 3
    print(f"logged the report to the parent run of sweep {sweep_dir.name} at {tracking_uri}")
    return 0
