"""``ntkdiv aggregate STORE [--out DIR] [--tracking-uri URI]``.

STORE is a sweep directory ``<storage>/<sweep>``, or a storage root: then every sweep directory
just below it is aggregated, each into its own report (``<sweep>/report``, or ``DIR/<sweep>``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from ._aggregate import aggregate
from ._read import find_sweeps


def _experiment(sweep_dir: Path) -> str | None:
    """The MLflow experiment named in the sweep's spec.yaml, if any (else the logger's default)."""
    spec = sweep_dir / "spec.yaml"
    if not spec.is_file():
        return None
    raw = yaml.safe_load(spec.read_text()) or {}
    mlflow = raw.get("mlflow") if isinstance(raw.get("mlflow"), dict) else {}
    return mlflow.get("experiment") or raw.get("experiment")


def log_to_mlflow(tracking_uri: str, sweep_dir: Path, report_dir: Path, text: str) -> None:
    """Attach the report to the sweep's MLflow parent run (dashboards never imports mlflow)."""
    from sweep._mlflow import MlflowLogger

    logger = MlflowLogger(tracking_uri, _experiment(sweep_dir), sweep_dir.name, sweep_dir)
    logger.log_report(report_dir, text)


def cmd_aggregate(args: argparse.Namespace) -> int:
    """Aggregate each sweep under ``args.store``, print its verdict, optionally log to MLflow."""
    sweeps = find_sweeps(Path(args.store))
    out = Path(args.out) if args.out else None
    engine = getattr(args, "engine", None) or "arrow"
    for sweep_dir in sweeps:
        report_dir = None if out is None else (out if len(sweeps) == 1 else out / sweep_dir.name)
        if len(sweeps) > 1:
            print(f"== sweep {sweep_dir.name}", flush=True)
        result = aggregate(sweep_dir, report_dir, engine=engine)
        print(result.verdict_text)
        print(f"report: {result.html}", flush=True)
        if args.tracking_uri:
            log_to_mlflow(args.tracking_uri, sweep_dir, result.report_dir, result.verdict_text)
    return 0
