"""The MLflow index of the store: the only package that imports mlflow, through its public
client API. The store is the truth; every run here is rebuilt from a trial directory.

- ``_client``: the client, the reachability check, :class:`TrackingUnavailable`;
- ``_runs``: one trial's run (params, histories, summary metrics, tags, files) from its directory;
- ``_logger``: :class:`MlflowLogger`, a sweep's parent run and its children, rebuilt from the store;
- ``_guard``: :class:`MlflowGuard`, a driver's logger that warns once and pauses when MLflow is
  down (the next sweep or ``ntkdiv sync`` backfills);
- ``_rerun``: what ``ntkdiv rerun`` reads from a logged run and how it logs the rerun.

mlflow itself is imported on first use of a name below (a sweep with MLflow off never loads it).

Cost: a smoke trial's run is one ``create_run``, three artifact copies, one ``set_terminated``
and one ``log_batch``; a 2,000-row trial sends two ``log_batch`` calls of <= 1,000 metrics.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the type checker sees; at run time, __getattr__ below
    from ._client import DEFAULT_TRACKING_URI, TrackingUnavailable, check_reachable
    from ._guard import MlflowGuard
    from ._logger import MlflowLogger
    from ._rerun import SourceRun, fetch_source_run, log_rerun
    from ._runs import MAX_HISTORY_ROWS, pack_batches

_LAZY = {"DEFAULT_TRACKING_URI": "._client", "TrackingUnavailable": "._client",
         "check_reachable": "._client", "MlflowGuard": "._guard", "MlflowLogger": "._logger",
         "SourceRun": "._rerun", "fetch_source_run": "._rerun", "log_rerun": "._rerun",
         "MAX_HISTORY_ROWS": "._runs", "pack_batches": "._runs"}  # fmt: skip
__all__ = ["DEFAULT_TRACKING_URI", "MAX_HISTORY_ROWS", "MlflowGuard", "MlflowLogger", "SourceRun",
           "TrackingUnavailable", "check_reachable", "fetch_source_run", "log_rerun",
           "pack_batches"]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'mlflow_index' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
