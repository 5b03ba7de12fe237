"""``ntkdiv sync STORE``: rebuild a sweep's MLflow runs from its store (the store is the truth)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core import ConfigError, read_yaml
from core import store as st


def spec_defaults(sweep_dir: st.Where) -> dict[str, Any]:
    """``tracking_uri`` and ``experiment`` from the ``mlflow:`` section of the sweep's
    ``spec.yaml``, with the raw spec under ``spec``; empty when there is no spec.yaml."""
    path = st.spec_path(sweep_dir)
    if not path.is_file():
        return {}
    raw = read_yaml(path)
    section = raw["mlflow"] if isinstance(raw.get("mlflow"), dict) else {}
    return {
        "spec": raw,
        "tracking_uri": section.get("tracking_uri"),
        "experiment": section.get("experiment"),
    }


def sweep_dir_arg(store: str) -> st.StorePath:
    """The STORE argument as a sweep directory; anything else is a ConfigError."""
    path = st.locate(store)
    if not st.is_sweep_dir(path):
        raise ConfigError(
            f"sync STORE = {store!r} is not a sweep directory (no trials/ or spec.yaml in it); "
            "pass <storage>/<sweep>"
        )
    return path


def cmd_sync(args: argparse.Namespace) -> int:
    """Log every trial of the sweep that MLflow does not hold as it is now; print how many.

    The URI and experiment default to the spec's (``mlflow.tracking_uri``, ``mlflow.experiment``,
    else the sweep name), as ``ntkdiv sweep`` used them.
    """
    from mlflow_index import DEFAULT_TRACKING_URI, MlflowLogger, TrackingUnavailable

    sweep_dir = sweep_dir_arg(args.store)
    st.repair(sweep_dir, lambda line: print(line, file=sys.stderr))  # MLflow reads no corrupt file
    spec = spec_defaults(sweep_dir)
    uri = args.tracking_uri or spec.get("tracking_uri") or DEFAULT_TRACKING_URI
    experiment = args.experiment or spec.get("experiment")
    logger = MlflowLogger(uri, experiment, sweep_dir.name, sweep_dir)
    start = time.monotonic()
    try:
        logger.ensure_parent(spec.get("spec"))
        logged = logger.sync()
        report = sweep_dir / "report" / "verdict.txt"
        if sweep_dir.local and report.is_file():  # the parent ends with the report it has
            logger.log_report(Path(report.parent.path), report.read_text())
        else:  # no report to attach: the parent still ends, never left RUNNING
            logger.finish()
    except TrackingUnavailable as err:
        print(f"ntkdiv: error: {err}; the store is intact, sync again later", file=sys.stderr)
        return 3
    wall = time.monotonic() - start
    print(f"logged {logged} trial(s) of sweep {sweep_dir.name} to {logger.tracking_uri} "
          f"(experiment {logger.experiment}) in {wall:.1f} s")  # fmt: skip
    print(logger.ui_hint())
    return 0
