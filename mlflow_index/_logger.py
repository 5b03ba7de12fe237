"""The sweep's MLflow index: one parent run per sweep, one child run per trial, from the store.

The store is always written first; this logger reads a trial directory and mirrors it. Runs are
found by tags before any is created, so retries, resumes and a second sync reuse them:

- parent: ``ntkdiv.sweep=<name>``, ``ntkdiv.role=parent``;
- child: ``trial_id=<id>``, ``ntkdiv.sweep=<name>``, ``ntkdiv.role=trial``, ``mlflow.parentRunId``.

A child is marked logged by the tag ``ntkdiv.logged`` = hash of its summary.json. Logging again
with the same summary is a no-op. A changed summary (a failed or stopped trial that later
completed) is logged again without duplicating a metric step:

- metric histories: only trajectory steps above the run's last logged step are added (the last
  step is read back from the server's ``loss`` history, so an interrupted upload resumes exactly);
- summary metrics: logged at step = the run's log generation (0, 1, ...), so MLflow shows the
  newest value and keeps one point per generation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException

from core import ConfigError, DataError
from core import store as st

from ._client import (
    TrackingUnavailable,
    artifact_location,
    file_hash,
    make_client,
    quoted,
    tracked,
)
from ._runs import (
    MAX_METRICS,
    MAX_PARAM_LEN,
    MAX_PARAMS,
    MAX_TAG_LEN,
    read_config,
    run_name,
    trial_times,
    write_trial,
)

# The experiment tag MLflow's UI reads as the experiment's kind; "custom_model_development" is
# its "Machine learning" kind, whose experiment page opens on the runs table (the GenAI kind
# opens on traces). MLflow 3.17's UI derives the kind from its workflow type instead (the query
# parameter below, else the last one the browser chose, by default GenAI), so runs_url names it.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
WORKFLOW_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default


class MlflowLogger:
    """Logs one sweep's store to MLflow: a parent run and one child run per trial.

    Args:
        tracking_uri: MLflow URI (a sqlite file, a server http://HOST:5000, ...).
        experiment: experiment name (None: the sweep name, as the sweep spec's default);
            created if missing.
        sweep_name: the sweep's name (tag ``ntkdiv.sweep``).
        sweep_dir: ``<storage>/<sweep>``, whose ``trials/<trial_id>/`` are logged.

    Construction makes no network call (MLflow does create a sqlite URI's file then); every
    method checks the server first and raises :class:`TrackingUnavailable` within seconds when
    it is down. The store is never written here.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str | None,
        sweep_name: str,
        sweep_dir: st.Where,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment or sweep_name
        self.sweep_name = sweep_name
        self.sweep_dir = st.locate(sweep_dir)
        self._sweep_q = quoted(sweep_name, "sweep name")
        self.client = make_client(self.tracking_uri)
        self._experiment_id: str | None = None
        self._parent_id: str | None = None
        # trial ids with a child run, known from the last sync's search plus the runs created
        # since; None before any sync. A trial outside it needs no search of its own.
        self._with_run: set[str] | None = None

    # --- lookups ------------------------------------------------------------------------------

    def experiment_id(self) -> str:
        """The experiment's id, creating it (race-safe) with a local artifact root if needed."""
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                # another process may create it first: then creating fails and we read theirs
                with contextlib.suppress(MlflowException):
                    self.client.create_experiment(
                        self.experiment, artifact_location(self.tracking_uri)
                    )
                exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise TrackingUnavailable(f"could not create experiment {self.experiment!r}")
            if exp.lifecycle_stage == "deleted":
                raise ConfigError(
                    f"MLflow experiment {self.experiment!r} is deleted; restore it "
                    "(mlflow experiments restore) or choose another --experiment"
                )
            if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG,
                                               EXPERIMENT_KIND)  # fmt: skip
            self._experiment_id = exp.experiment_id
        return self._experiment_id

    @tracked
    def runs_url(self) -> str | None:
        """The UI page of the experiment's runs table, for a server URI (None for a file or
        sqlite URI: ``mlflow ui --backend-store-uri URI`` serves it at its own address)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        return self.ui_runs_url(self.tracking_uri.rstrip("/"))

    def ui_hint(self) -> str:
        """One line on where the runs table is: the page itself for a server; for a local
        store, the command that serves it and the page."""
        try:
            url = self.runs_url()
            if url is not None:
                return f"mlflow: {url}"
            page = self.ui_runs_url(LOCAL_UI)
        except TrackingUnavailable as err:
            return f"mlflow: {err}; 'ntkdiv sync' backfills it later"
        mlflow = Path(sys.executable).with_name("mlflow")
        return (f"mlflow: {mlflow} ui --backend-store-uri {self.tracking_uri} --port "
                f"{LOCAL_UI.rsplit(':', 1)[1]}, then open {page}")  # fmt: skip

    @tracked
    def ui_runs_url(self, base: str) -> str:
        """``base/#/experiments/<id>/runs?workflowType=machine_learning``: the runs table."""
        return f"{base}/#/experiments/{self.experiment_id()}/runs?{WORKFLOW_QUERY}"

    def search(self, filter_string: str) -> list[Run]:
        """Every active run of the experiment that matches, oldest first (all pages)."""
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id()], filter_string, max_results=1000,
                order_by=["attributes.start_time ASC"], page_token=token,
            )  # fmt: skip
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _trial_filter(self, tid: str | None = None) -> str:
        f = f"tags.`ntkdiv.sweep` = {self._sweep_q} AND tags.`ntkdiv.role` = 'trial'"
        return f if tid is None else f"{f} AND tags.trial_id = {quoted(tid, 'trial_id')}"

    def trial_runs(self) -> dict[str, Run]:
        """trial_id -> child run, for every child of this sweep (the oldest if duplicated)."""
        out: dict[str, Run] = {}
        for run in self.search(self._trial_filter()):
            out.setdefault(run.data.tags.get("trial_id", ""), run)
        return out

    # --- the parent ---------------------------------------------------------------------------

    @tracked
    def ensure_parent(self, spec_dict: Mapping[str, Any] | None = None) -> str:
        """The sweep's parent run id, found by tags or created; logs the spec as spec.yaml.

        Without ``spec_dict``, ``<sweep_dir>/spec.yaml`` is logged when it exists.
        """
        return self._ensure_parent(spec_dict)

    def _ensure_parent(self, spec_dict: Mapping[str, Any] | None) -> str:
        found = self.search(f"tags.`ntkdiv.sweep` = {self._sweep_q} "
                            "AND tags.`ntkdiv.role` = 'parent'")  # fmt: skip
        if found:
            run_id = found[0].info.run_id
            tags = found[0].data.tags
            if found[0].info.status in ("KILLED", "FAILED"):  # an interrupted run, resumed
                self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {"ntkdiv.sweep": self.sweep_name, "ntkdiv.role": "parent",
                    "ntkdiv.storage": str(self.sweep_dir)}  # fmt: skip
            run_id = self.client.create_run(self.experiment_id(), tags=tags,
                                            run_name=self.sweep_name).info.run_id  # fmt: skip
        self._parent_id = run_id
        spec_file = st.spec_path(self.sweep_dir)
        if spec_dict is None and spec_file.is_file():
            spec_dict = yaml.safe_load(spec_file.read_text()) or {}
        if spec_dict is not None:
            plain = json.loads(json.dumps(dict(spec_dict), default=str))  # Paths, tuples, enums
            text = yaml.safe_dump(plain, sort_keys=False)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            if tags.get("ntkdiv.spec_hash") != digest:
                self.client.log_text(run_id, text, st.SPEC)
                self._log_grid(run_id, plain)
                self.client.set_tag(run_id, "ntkdiv.spec_hash", digest)
        return run_id

    def _log_grid(self, run_id: str, spec: Mapping[str, Any]) -> None:
        """The spec's grid as params ``grid.<dotted key>`` (+ ``zip``, ``name``, ``retries``).

        MLflow refuses to change a param, so a key whose value changed since (a grid edited
        under the same sweep name) is kept as it was and named in the tag ``ntkdiv.grid_changed``.
        """
        wanted = {f"grid.{k}": json.dumps(v) for k, v in (spec.get("grid") or {}).items()}
        for key in ("zip", "exclude"):
            if spec.get(key):
                wanted[key] = json.dumps(spec[key])
        wanted["name"] = str(spec.get("name", self.sweep_name))
        have = self.client.get_run(run_id).data.params
        new = [Param(k, v[:MAX_PARAM_LEN]) for k, v in wanted.items() if k not in have]
        changed = sorted(k for k, v in wanted.items() if k in have and have[k] != v[:MAX_PARAM_LEN])
        for i in range(0, len(new), MAX_PARAMS):
            self.client.log_batch(run_id, params=new[i : i + MAX_PARAMS])
        if changed:
            self.client.set_tag(run_id, "ntkdiv.grid_changed", ", ".join(changed)[:MAX_TAG_LEN])

    def _parent(self) -> str:
        return self._parent_id or self._ensure_parent(None)

    @tracked
    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run terminated (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(self._parent(), status)

    @tracked
    def log_report(
        self,
        report_dir: str | Path,
        verdict_text: str,
        headline: Mapping[str, float] | None = None,
    ) -> None:
        """Attach the aggregator's report to the parent run and finish it.

        ``headline``: the report's headline numbers (trial counts, rows per verdict), logged as
        the parent's metrics at step = the number of times a report was logged before.

        Every file under ``report_dir`` (report.html, figures/*.png, verdict/fits/trials as
        Parquet and CSV, verdict.txt) goes under the artifact folder ``report/``; the verdict
        text also becomes the run's description (the ``mlflow.note.content`` tag) and the tag
        ``ntkdiv.verdict``.
        """
        run_id = self._parent()
        report_dir = Path(report_dir)
        if report_dir.is_dir():
            self.client.log_artifacts(run_id, str(report_dir), "report")
        self.client.log_text(run_id, verdict_text, "verdict.txt")
        note = f"```\n{verdict_text[: MAX_TAG_LEN - 10]}\n```"
        tags = [RunTag("mlflow.note.content", note),
                RunTag("ntkdiv.verdict", verdict_text[:MAX_TAG_LEN])]  # fmt: skip
        metrics = []
        if headline:
            run = self.client.get_run(run_id)
            step = int(run.data.tags.get("ntkdiv.reports", "0"))
            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, step) for k, v in headline.items()]
            tags.append(RunTag("ntkdiv.reports", str(step + 1)))
        for i in range(0, max(len(metrics), 1), MAX_METRICS - MAX_PARAMS):
            self.client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS - MAX_PARAMS],
                                  tags=tags if i == 0 else [])  # fmt: skip
        self.client.set_terminated(run_id, "FINISHED")

    # --- the children -------------------------------------------------------------------------

    @tracked
    def log_trial(self, trial_id: str) -> str:
        """Log ``<sweep_dir>/trials/<trial_id>/`` into its child run; return the run id.

        A no-op when the run already holds this summary (tag ``ntkdiv.logged``). The run is
        looked up by its tags first, except after a :meth:`sync` for a trial that had no run
        then and got none from this logger since (the sweep driver syncs at its start, so a new
        trial costs no search). A run another process creates meanwhile is then not seen, and
        the trial gets a second run; the oldest is the one found from then on.
        """
        return self._log_trial(trial_id, None, lookup=True)

    def _log_trial(self, trial_id: str, run: Run | None, lookup: bool) -> str:
        tdir = st.trial_dir(self.sweep_dir, trial_id)
        if not (tdir / st.SUMMARY).is_file():
            raise DataError(f"trial dir {tdir} has no summary.json; nothing to log yet")
        digest = file_hash(tdir / st.SUMMARY)
        if run is None and lookup and (self._with_run is None or trial_id in self._with_run):
            found = self.search(self._trial_filter(trial_id))
            run = found[0] if found else None
        if run is not None and run.data.tags.get("ntkdiv.logged") == digest:
            return run.info.run_id
        config = read_config(tdir)
        if run is not None:
            write_trial(self.client, run, tdir, config, digest, fresh=False)
            return run.info.run_id
        tags = {"trial_id": trial_id, "ntkdiv.sweep": self.sweep_name, "ntkdiv.role": "trial",
                "mlflow.parentRunId": self._parent()}  # fmt: skip
        name = run_name(config, trial_id)
        start = trial_times(tdir, st.read_json(tdir / st.SUMMARY))[0]
        run = self.client.create_run(self.experiment_id(), start_time=start, tags=tags,
                                     run_name=name)  # fmt: skip
        write_trial(self.client, run, tdir, config, digest, fresh=True)
        run_id = run.info.run_id
        if self._with_run is not None:
            self._with_run.add(trial_id)
        return run_id

    @tracked
    def sync(self) -> int:
        """Log every trial whose summary exists and is not yet logged as it is now.

        Returns:
            How many trials were logged (unchanged ones are skipped with no upload).
        """
        tdirs = [t for t in st.trial_dirs(self.sweep_dir) if (t / st.SUMMARY).is_file()]
        if not st.trials_root(self.sweep_dir).is_dir():
            return 0
        self._parent()
        runs = self.trial_runs()  # one search for all, instead of one per trial
        self._with_run = set(runs)  # later log_trial calls skip the search for new trials
        logged = 0
        for tdir in tdirs:  # without a summary: running or never started, logged when it ends
            run = runs.get(tdir.name)
            if run is None or run.data.tags.get("ntkdiv.logged") != file_hash(tdir / st.SUMMARY):
                self._log_trial(tdir.name, run, lookup=False)
                logged += 1
        return logged
