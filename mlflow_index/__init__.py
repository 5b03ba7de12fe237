"""The MLflow adapter: the only package that imports mlflow, through its public client API.

- ``_client``: the client, the reachability check, :class:`TrackingUnavailable`;
- ``_runs``: one trial's run (params, histories, summary metrics, tags, files) from its directory;
- ``_logger``: :class:`MlflowLogger`, a sweep's parent run and its children, rebuilt from the store;
- ``_rerun``: what ``ntkdiv rerun`` reads from a logged run and how it logs the rerun.

Cost: a smoke trial's run is one ``create_run``, three artifact copies, one ``set_terminated``
and one ``log_batch``; a 2,000-row trial sends two ``log_batch`` calls of <= 1,000 metrics.
"""

from ._client import DEFAULT_TRACKING_URI, TrackingUnavailable, check_reachable
from ._logger import MlflowLogger
from ._rerun import SourceRun, fetch_source_run, log_rerun
from ._runs import MAX_HISTORY_ROWS, pack_batches

__all__ = [
    "DEFAULT_TRACKING_URI",
    "MAX_HISTORY_ROWS",
    "MlflowLogger",
    "SourceRun",
    "TrackingUnavailable",
    "check_reachable",
    "fetch_source_run",
    "log_rerun",
    "pack_batches",
]
