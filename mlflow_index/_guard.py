"""The MLflow guard of a sweep or search driver: MLflow when enabled and reachable, else nothing.

The store holds everything; MLflow is the index people browse. So an unreachable tracking server
warns once and pauses logging for the rest of the run, and the next ``ntkdiv sweep`` or
``ntkdiv sync`` backfills it. Each method is the logger's method of the same name, timed (for
``ntkdiv bench sweep``) and guarded; it returns None when logging is off or paused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core import store as st


class MlflowGuard:
    """Wraps :class:`mlflow_index.MlflowLogger` for one driver run.

    Args:
        tracking_uri: MLflow URI; None: logging is off (the spec's ``mlflow.enabled: false``).
        experiment, sweep_name, sweep_dir: as for :class:`MlflowLogger`.
        note: prints one line for the user (the warning when MLflow becomes unavailable).
    """

    def __init__(self, tracking_uri: str | None, experiment: str, sweep_name: str,
                 sweep_dir: st.StorePath, note: Callable[[str], None]) -> None:  # fmt: skip
        self.logger: Any = None
        self.note = note
        self.paused = self.warned = False
        # seconds per method, for the benchmark; "open": making the client (a new sqlite file
        # gets MLflow's tables then: ~1.5 s, once)
        self.seconds: dict[str, float] = {}
        self._unavailable: type[Exception] = RuntimeError
        if tracking_uri is not None:
            from ._client import TrackingUnavailable
            from ._logger import MlflowLogger

            self._unavailable = TrackingUnavailable
            t0 = time.perf_counter()
            self.logger = MlflowLogger(tracking_uri, experiment, sweep_name, sweep_dir)
            self.seconds["open"] = time.perf_counter() - t0

    def ensure_parent(self, spec_dict: Mapping[str, Any]) -> str | None:
        """The sweep's parent run id (created if missing, with the spec)."""
        return self._call("ensure_parent", lambda log: log.ensure_parent(spec_dict))

    def sync(self) -> int | None:
        """Backfill every trial that MLflow does not hold as the store has it now."""
        return self._call("sync", lambda log: log.sync())

    def log_trial(self, trial_id: str) -> str | None:
        """Log one finished trial; its child run id."""
        return self._call("log_trial", lambda log: log.log_trial(trial_id))

    def log_report(
        self, report_dir: Path, verdict_text: str, headline: Mapping[str, float] | None = None
    ) -> None:
        """Attach the aggregator's report (and its headline numbers) to the parent run and
        finish it."""
        self._call("log_report", lambda log: log.log_report(report_dir, verdict_text, headline))

    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run terminated (FINISHED when no report is logged; KILLED or FAILED
        when the sweep stopped early: the next run sets it RUNNING again and finishes it)."""
        self._call("finish", lambda log: log.finish(status))

    def retry_sync(self) -> None:
        """One more try at the end of the run, after a pause (a server that came back)."""
        if self.logger is not None and self.paused:
            self.paused = False
            self.sync()

    def _call(self, name: str, method: Callable[[Any], Any]) -> Any:
        if self.logger is None or self.paused:
            return None
        t0 = time.perf_counter()
        try:
            return method(self.logger)
        except self._unavailable as err:
            self.paused = True
            if not self.warned:
                self.warned = True
                self.note(f"ntkdiv: warning: MLflow unavailable ({err}); the store has "
                          "everything, and the next 'ntkdiv sweep' or 'ntkdiv sync' backfills "
                          "MLflow")  # fmt: skip
            return None
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
