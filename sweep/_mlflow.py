"""The MLflow adapter: one parent run per sweep, one child run per trial, rebuilt from the store.

This is the only module that imports mlflow (``sweep._sqlite`` writes MLflow's sqlite tables
directly, for new runs, and imports nothing of it). It wraps :class:`mlflow.MlflowClient` (no global
``mlflow.start_run`` state: one driver logs many runs) and reads everything it logs from the
store, which is always written first. MLflow is the index people browse; ``ntkdiv sync`` can
rebuild it at any time.

Runs are found by tags before any is created, so retries, resumes and a second sync reuse them:

- parent: ``ntkdiv.sweep=<name>``, ``ntkdiv.role=parent``;
- child: ``trial_id=<id>``, ``ntkdiv.sweep=<name>``, ``ntkdiv.role=trial``, ``mlflow.parentRunId``.

A child is marked logged by the tag ``ntkdiv.logged`` = hash of its summary.json. Logging again
with the same summary is a no-op. A changed summary (a failed or stopped trial that later
completed) is logged again without duplicating a metric step:

- metric histories: only trajectory steps above the run's last logged step are added (the last
  step is read back from the server's ``loss`` history, so an interrupted upload resumes exactly);
  rows of the old attempt stay as they were logged (resume is bitwise-equivalent, so they agree);
- summary metrics: logged at step = the run's log generation (0, 1, ...), so MLflow shows the
  newest value and keeps one point per generation.

A trial's params, history rows, summary metrics and tags go in as few ``log_batch`` calls as
MLflow's limits allow (one for a smoke trial), since every MLflow call commits on its own.
Against a local sqlite store (the default) two things more (``sweep._sqlite``): the file runs in
WAL mode with ``synchronous=NORMAL``, so a commit waits for no fsync; and a new trial's whole
run (row, status, tags, params, histories) is written in one transaction instead of through
``create_run`` + ``log_batch`` + ``set_terminated``, whose ORM work was most of the cost. A smoke
trial then costs ~4-6 ms idle, against ~35-45 ms through the API on the loaded 2-core machine
(``ntkdiv bench sweep``). Against a local ``mlflow server``: a 1000-metric ``log_batch`` takes
0.1-0.4 s, a 2000-row trial ~2 s; a repeated ``log_trial`` (nothing to do) takes one search, ~40 ms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.utils.file_utils import local_file_uri_to_path
from mlflow.utils.uri import append_to_uri_path
from requests.exceptions import RequestException

from core import ConfigError, DataError
from core import store as st
from core._config import config_from_dict, flatten
from sweep._sqlite import NewRun, RunWriter, sqlite_file, use_wal

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# per-row metric histories, at step = the trajectory step; t = step * lr is left to the store
# (the run's params give lr): one key less is ~10% less of log_batch's work, most of logging
HISTORY_KEYS = ("loss", "accuracy", "gap", "drift", "lambda_min", "theta_inf", "theta_l2",
                "f_abs_min", "flips")  # fmt: skip
# "loss" is never null (rows are recorded only while it is finite), so its history tells which
# rows reached the server
SENTINEL = "loss"
MAX_METRICS = 1000  # MLflow's per-log_batch limit on metrics
MAX_PARAMS = 100  # ... on params, and on tags
MAX_ENTITIES = 1000  # ... on metrics + params + tags
MAX_PARAM_LEN = 6000  # MLflow's param value limit
MAX_TAG_LEN = 5000  # below MLflow's 8000, room for the UI
MAX_HISTORY_ROWS = 2000  # rows sent per trial, evenly thinned (~2 s over HTTP); the store keeps all
FIGURE_SUFFIXES = (".png", ".svg", ".html", ".pdf")
TRIAL_FILES = ("config.yaml", "summary.json", "trajectory.parquet")
RUN_STATUS = {"completed": "FINISHED", "overflow": "FINISHED", "failed": "FAILED",
              "stopped": "KILLED"}  # fmt: skip
HEALTH_TIMEOUT_S = 5.0
# A dead server should fail a call in seconds, not after MLflow's default 7 retries with
# exponential backoff (minutes). The store holds everything, so a later sync catches up.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
                 # set_terminated would otherwise print two links per run and fetch the run again
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                 "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip


class TrackingUnavailable(Exception):
    """The tracking server or store cannot be reached, or wrote nothing. The store is intact."""


F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def guarded(tracking_uri: str) -> Iterator[None]:
    """Check the server first, and map MLflow/HTTP/file errors to :class:`TrackingUnavailable`."""
    check_reachable(tracking_uri)
    try:
        yield
    except (MlflowException, RequestException, OSError) as err:
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise TrackingUnavailable(f"MLflow at {tracking_uri}: {first[:300]}") from err


def _tracking(method: F) -> F:
    """Run a logger method under :func:`guarded`."""

    @functools.wraps(method)
    def wrapper(self: MlflowLogger, *args: Any, **kwargs: Any) -> Any:
        with guarded(self.tracking_uri):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def check_reachable(tracking_uri: str) -> None:
    """GET <uri>/health for an http(s) URI; any HTTP answer counts, no answer raises quickly."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered: a proxy without /health is still a server
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(
            f"MLflow server {tracking_uri} is unreachable ({reason})"
        ) from None


def resolve_uri(tracking_uri: str | None) -> str:
    """The URI to use: the argument, else MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def make_client(tracking_uri: str) -> MlflowClient:
    """A client with short HTTP retries (unless the environment sets its own)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # a new sqlite file would print "Creating initial MLflow database tables..." on every run of
    # a fresh store; its warnings and errors still show
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=tracking_uri)  # creates a sqlite file and its tables
    use_wal(tracking_uri)
    return client


def _artifact_location(tracking_uri: str) -> str | None:
    """Next to a local sqlite file (``<dir>/mlartifacts``), not in the current directory."""
    db = sqlite_file(tracking_uri)
    # None: a server decides (--default-artifact-root / --artifacts-destination)
    return None if db is None else (db.parent / "mlartifacts").as_uri()


def _quoted(value: str, field: str) -> str:
    if "'" in value or "\\" in value:
        raise ConfigError(f"{field} = {value!r}: quotes and backslashes are not allowed")
    return f"'{value}'"


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _as_float(value: Any) -> float | None:
    """A metric value from JSON (``"inf"`` strings are how the store writes infinities)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return None


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) or value is None else value
    return str(text)[:MAX_PARAM_LEN]


def run_name(config: Mapping[str, Any] | None, tid: str) -> str:
    """``fcn-m256-L3-cross_entropy-s0-1a2b3c``: readable in the UI, unique by the id suffix."""
    if not config:
        return tid
    m, t = config.get("model", {}), config.get("train", {})
    return (f"{m.get('arch')}-m{m.get('width')}-L{m.get('depth')}-{t.get('loss')}"
            f"-s{config.get('seed')}-{tid[:6]}")  # fmt: skip


class MlflowLogger:
    """Logs one sweep's store to MLflow: a parent run and one child run per trial.

    Args:
        tracking_uri: MLflow URI (None: MLFLOW_TRACKING_URI, else ``sqlite:///mlflow.db``).
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
        tracking_uri: str | None,
        experiment: str | None,
        sweep_name: str,
        sweep_dir: str | Path,
    ) -> None:
        self.tracking_uri = resolve_uri(tracking_uri)
        self.experiment = experiment or sweep_name
        self.sweep_name = sweep_name
        self.sweep_dir = Path(sweep_dir)
        self._sweep_q = _quoted(sweep_name, "sweep name")
        self.client = make_client(self.tracking_uri)
        db = sqlite_file(self.tracking_uri)
        # a new trial's whole run in one sqlite transaction, instead of MLflow's ORM work
        self.writer = RunWriter(db) if db is not None else None
        self._experiment_id: str | None = None
        self._artifact_root = ""  # the experiment's artifact location
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
                        self.experiment, _artifact_location(self.tracking_uri)
                    )
                exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise TrackingUnavailable(f"could not create experiment {self.experiment!r}")
            if exp.lifecycle_stage == "deleted":
                raise ConfigError(
                    f"MLflow experiment {self.experiment!r} is deleted; restore it "
                    "(mlflow experiments restore) or choose another --experiment"
                )
            self._experiment_id = exp.experiment_id
            self._artifact_root = exp.artifact_location
        return self._experiment_id

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
        return f if tid is None else f"{f} AND tags.trial_id = {_quoted(tid, 'trial_id')}"

    def trial_runs(self) -> dict[str, Run]:
        """trial_id -> child run, for every child of this sweep (the oldest if duplicated)."""
        out: dict[str, Run] = {}
        for run in self.search(self._trial_filter()):
            out.setdefault(run.data.tags.get("trial_id", ""), run)
        return out

    # --- the parent ---------------------------------------------------------------------------

    @_tracking
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
        else:
            tags = {"ntkdiv.sweep": self.sweep_name, "ntkdiv.role": "parent",
                    "ntkdiv.storage": str(self.sweep_dir.resolve())}  # fmt: skip
            run_id = self.client.create_run(self.experiment_id(), tags=tags,
                                            run_name=self.sweep_name).info.run_id  # fmt: skip
        self._parent_id = run_id
        if spec_dict is None and (self.sweep_dir / "spec.yaml").is_file():
            spec_dict = yaml.safe_load((self.sweep_dir / "spec.yaml").read_text()) or {}
        if spec_dict is not None:
            plain = json.loads(json.dumps(dict(spec_dict), default=str))  # Paths, tuples, enums
            text = yaml.safe_dump(plain, sort_keys=False)
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            if tags.get("ntkdiv.spec_hash") != digest:
                self.client.log_text(run_id, text, "spec.yaml")
                self.client.set_tag(run_id, "ntkdiv.spec_hash", digest)
        return run_id

    def _parent(self) -> str:
        return self._parent_id or self._ensure_parent(None)

    @_tracking
    def finish(self, status: str = "FINISHED") -> None:
        """Mark the parent run terminated (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(self._parent(), status)

    @_tracking
    def log_report(self, report_dir: str | Path, verdict_text: str) -> None:
        """Attach the aggregator's report to the parent run and finish it.

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
        self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, "FINISHED")

    # --- the children -------------------------------------------------------------------------

    @_tracking
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
        if not (tdir / "summary.json").is_file():
            raise DataError(f"trial dir {tdir} has no summary.json; nothing to log yet")
        digest = file_hash(tdir / "summary.json")
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
        run_id = self._write_new(tdir, config, digest, tags, name)
        if run_id is None:
            run = self.client.create_run(self.experiment_id(), tags=tags, run_name=name)
            write_trial(self.client, run, tdir, config, digest, fresh=True)
            run_id = run.info.run_id
        if self._with_run is not None:
            self._with_run.add(trial_id)
        return run_id

    def _write_new(
        self, tdir: Path, config: dict | None, digest: str, tags: dict[str, str], name: str
    ) -> str | None:
        """A new trial's whole run in one sqlite transaction (:class:`RunWriter`), artifacts
        first; its id, or None when the store is not a local sqlite file or the writer could
        not (nothing is left behind then)."""
        if self.writer is None or self.writer.unusable:
            return None
        experiment_id = self.experiment_id()
        run_id = uuid.uuid4().hex  # as MLflow makes them
        artifact_uri = append_to_uri_path(self._artifact_root, run_id, "artifacts")
        summary = st.read_json(tdir / "summary.json")
        repo = get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)
        log_trial_artifacts(repo, tdir, summary)
        e = trial_entities(tdir, config, summary, digest, after_step=-1, generation=0)
        now = int(time.time() * 1000)
        new = NewRun(run_id, experiment_id, name, artifact_uri, now, now, e.status,
                     [*tags.items(), ("mlflow.runName", name), *((t.key, t.value) for t in e.tags)],
                     [(p.key, p.value) for p in e.params],
                     [(m.key, m.value, m.timestamp, m.step) for m in e.all_metrics()])  # fmt: skip
        if self.writer.create(new):
            return run_id
        if urllib.parse.urlparse(artifact_uri).scheme in ("", "file"):  # local: no orphans
            shutil.rmtree(Path(local_file_uri_to_path(artifact_uri)).parent, ignore_errors=True)
        return None

    @_tracking
    def sync(self) -> int:
        """Log every trial whose summary exists and is not yet logged as it is now.

        Returns:
            How many trials were logged (unchanged ones are skipped with no upload).
        """
        trials = self.sweep_dir / "trials"
        if not trials.is_dir():
            return 0
        self._parent()
        runs = self.trial_runs()  # one search for all, instead of one per trial
        self._with_run = set(runs)  # later log_trial calls skip the search for new trials
        logged = 0
        for tdir in sorted(trials.iterdir()):
            if not (tdir / "summary.json").is_file():
                continue  # running, or never started: the runner logs it when it ends
            run = runs.get(tdir.name)
            if run is None or run.data.tags.get("ntkdiv.logged") != file_hash(
                tdir / "summary.json"
            ):
                self._log_trial(tdir.name, run, lookup=False)
                logged += 1
        return logged


# --- writing one trial's run --------------------------------------------------------------------


def read_config(tdir: Path) -> dict[str, Any] | None:
    """The trial's config.yaml as a dict; None when the trial failed before writing it."""
    path = tdir / "config.yaml"
    # libyaml's loader when present: ~0.2 ms a config against ~2 ms for the pure-Python one
    return yaml.load(path.read_text(), Loader=YAML_LOADER) if path.is_file() else None


@dataclasses.dataclass
class TrialEntities:
    """What a trial's run gets besides its artifacts (see :func:`trial_entities`)."""

    status: str  # MLflow run status
    params: list[Param]
    rows: list[list[Metric]]  # history points, one list per trajectory row, in step order
    metrics: list[Metric]  # summary metrics
    tags: list[RunTag]  # the logged tag last

    def all_metrics(self) -> list[Metric]:
        return [*(m for row in self.rows for m in row), *self.metrics]


def trial_entities(
    tdir: Path,
    config: dict | None,
    summary: Mapping[str, Any],
    digest: str,
    after_step: int,
    generation: int,
    with_params: bool = True,
) -> TrialEntities:
    """The params (flattened config), the history rows above ``after_step``, the summary
    metrics at step ``generation`` and the tags, ``ntkdiv.logged`` = ``digest`` last."""
    params = []
    if config is not None and with_params:
        params = [Param(k, _param_value(v)) for k, v in flatten(config_from_dict(config)).items()]
    rows: list[list[Metric]] = []
    if (tdir / "trajectory.parquet").is_file():
        rows = history_rows(st.read_trajectory(tdir / "trajectory.parquet"), after_step)
    metrics, tags = summary_entities(summary, generation)
    tags.append(RunTag("ntkdiv.logged", digest))
    status = RUN_STATUS.get(str(summary.get("status")), "FINISHED")
    return TrialEntities(status, params, rows, metrics, tags)


def write_trial(
    client: MlflowClient, run: Run, tdir: Path, config: dict | None, digest: str, fresh: bool
) -> None:
    """Artifacts and status, then params, metric histories, summary metrics and tags packed into
    as few ``log_batch`` calls as MLflow's limits allow, the ``logged`` tag in the last one.

    Args:
        fresh: the run was just created (else only the rows it lacks are sent, and the
            summary metrics get the next generation).

    Each MLflow call commits its own transactions (a ``log_batch`` one per entity kind, plus
    one), so a smoke trial goes in one ``log_batch``: 8 sqlite commits in all, not 14.
    """
    run_id = run.info.run_id
    summary = st.read_json(tdir / "summary.json")
    repo = get_artifact_repository(run.info.artifact_uri, tracking_uri=client.tracking_uri)
    log_trial_artifacts(repo, tdir, summary)
    last = -1 if fresh else last_logged_step(client, run_id)
    generation = 0 if fresh else int(run.data.tags.get("ntkdiv.generation", "-1")) + 1
    e = trial_entities(tdir, config, summary, digest, last, generation,
                       with_params=fresh or not run.data.params)  # fmt: skip
    # before the logged tag: a run marked logged always carries its final status
    client.set_terminated(run_id, e.status)
    for batch in pack_batches(e.params, e.rows, e.metrics, e.tags):
        client.log_batch(run_id, metrics=batch["metrics"], params=batch["params"],
                         tags=batch["tags"])  # fmt: skip


def last_logged_step(client: MlflowClient, run_id: str) -> int:
    """The highest trajectory step already on the server (-1 when none)."""
    history = client.get_metric_history(run_id, SENTINEL)
    return max((m.step for m in history), default=-1)


def _thin(steps: list[int], keep: int) -> list[int]:
    """Indices of at most ``keep`` rows, evenly spread, always with the last row."""
    if len(steps) <= keep:
        return list(range(len(steps)))
    idx = {round(i * (len(steps) - 1) / (keep - 1)) for i in range(keep)}
    return sorted(idx)


def history_rows(table: Any, after_step: int) -> list[list[Metric]]:
    """The metric points (step = trajectory step) of each row above ``after_step``, in step order,
    thinned to ``MAX_HISTORY_ROWS``; null entries are skipped."""
    cols = {k: table.column(k).to_pylist() for k in ("step", *HISTORY_KEYS)}
    rows = [i for i, s in enumerate(cols["step"]) if s > after_step]
    rows = [rows[i] for i in _thin([cols["step"][r] for r in rows], MAX_HISTORY_ROWS)]
    now = int(time.time() * 1000)
    return [
        [Metric(k, float(cols[k][r]), now, int(cols["step"][r]))
         for k in HISTORY_KEYS if cols[k][r] is not None]
        for r in rows
    ]  # fmt: skip


def summary_entities(summary: Mapping[str, Any], gen: int) -> tuple[list[Metric], list[RunTag]]:
    """Numeric summary keys as metrics at step ``gen``; status, generation, device, dtype and
    the error's last line as tags."""
    now = int(time.time() * 1000)
    metrics = []
    for key, value in summary.items():
        v = _as_float(value)
        if v is not None and key not in HISTORY_KEYS:
            metrics.append(Metric(key, v, now, gen))
    tags = [RunTag("ntkdiv.status", str(summary.get("status"))),
            RunTag("ntkdiv.generation", str(gen))]  # fmt: skip
    for key in ("device", "dtype"):
        if summary.get(key) is not None:
            tags.append(RunTag(f"ntkdiv.{key}", str(summary[key])))
    lines = [ln.strip() for ln in str(summary.get("error") or "").splitlines() if ln.strip()]
    if lines:  # a traceback's last line names the exception; error.txt holds all of it
        tags.append(RunTag("ntkdiv.error", lines[-1][:MAX_TAG_LEN]))
    return metrics[: MAX_METRICS - MAX_PARAMS], tags


def pack_batches(
    params: list[Param], rows: list[list[Metric]], metrics: list[Metric], tags: list[RunTag]
) -> list[dict[str, list]]:
    """``log_batch`` keyword arguments, in order, each within MLflow's per-call limits.

    A history row is never split across calls, and rows go in step order, so the sentinel
    ``loss`` history tells exactly which rows reached the server. The summary metrics and the
    tags (the ``logged`` tag among them) share the last call, so the generation tag lands with
    its metrics and ``logged`` only after everything else. Params ride along, 100 a call.
    """
    params = list(params)
    batches: list[dict[str, list]] = []
    for group_metrics, group_tags in [*((row, []) for row in rows), (metrics, tags)]:
        if not batches or not _fits(batches[-1], len(group_metrics), len(group_tags)):
            take = min(MAX_PARAMS, MAX_ENTITIES - len(group_metrics) - len(group_tags))
            batches.append({"metrics": [], "params": params[:take], "tags": []})
            del params[:take]
        batches[-1]["metrics"] += group_metrics
        batches[-1]["tags"] += group_tags
    # more params than the calls could carry (a short history): the rest go first, on their own
    extra = [{"metrics": [], "params": params[i : i + MAX_PARAMS], "tags": []}
             for i in range(0, len(params), MAX_PARAMS)]  # fmt: skip
    return extra + batches


def _fits(batch: dict[str, list], n_metrics: int, n_tags: int) -> bool:
    m, p = len(batch["metrics"]) + n_metrics, len(batch["params"])
    t = len(batch["tags"]) + n_tags
    return m <= MAX_METRICS and t <= MAX_PARAMS and m + p + t <= MAX_ENTITIES


def log_trial_artifacts(repo: ArtifactRepository, tdir: Path, summary: Mapping) -> None:
    """config.yaml, summary.json, trajectory.parquet, figures, and error.txt for a failed trial.

    Written through the run's artifact repository, resolved from the run in hand: the client's
    own ``log_artifact`` fetches the run again first (a ``get_run``, ~20% of a smoke trial's
    logging against a local sqlite store).
    """
    for name in TRIAL_FILES:
        if (tdir / name).is_file():
            repo.log_artifact(str(tdir / name))
    for path in sorted(tdir.iterdir()):
        if path.suffix in FIGURE_SUFFIXES and path.is_file():
            repo.log_artifact(str(path), "figures")
    if (tdir / "figures").is_dir():
        repo.log_artifacts(str(tdir / "figures"), "figures")
    error = summary.get("error")
    if (tdir / "error.txt").is_file():
        repo.log_artifact(str(tdir / "error.txt"))
    elif error:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "error.txt").write_text(str(error))
            repo.log_artifact(str(Path(tmp) / "error.txt"))


# --- reruns ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceRun:
    """What ``ntkdiv rerun`` needs from a logged trial run."""

    run_id: str
    experiment_id: str
    config: dict[str, Any]  # nested config dict (from config.yaml, else from the params)
    summary: dict[str, Any] | None  # summary.json, else the run's latest metrics (None if neither)
    config_source: str  # "config.yaml" or "params"


def _unflatten(params: Mapping[str, str]) -> dict[str, Any]:
    """``{"model.width": "256"}`` -> ``{"model": {"width": 256}}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for key, text in params.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    return out


def _get_run(client: MlflowClient, tracking_uri: str, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ConfigError(f"MLflow run {run_id!r} not found at {tracking_uri}") from None
        raise


def _artifact(client: MlflowClient, run_id: str, name: str, dst: Path) -> Any:
    """The parsed artifact ``name`` (.json or .yaml) of the run; None when it has none."""
    if name not in {f.path for f in client.list_artifacts(run_id)}:
        return None
    text = Path(client.download_artifacts(run_id, name, str(dst))).read_text()
    # not yaml for JSON: YAML 1.1 reads json's "1e-05" as a string
    return json.loads(text) if name.endswith(".json") else yaml.safe_load(text)


def fetch_source_run(tracking_uri: str | None, run_id: str, scratch: Path) -> SourceRun:
    """Read a trial run's config (config.yaml artifact, else its params) and its summary.

    Raises:
        ConfigError: unknown run id, or a run that holds no trial config.
        TrackingUnavailable: the server cannot be reached.
    """
    uri = resolve_uri(tracking_uri)
    with guarded(uri):
        client = make_client(uri)
        run = _get_run(client, uri, run_id)
        config = _artifact(client, run_id, "config.yaml", scratch)
        source = "config.yaml"
        if config is None:
            config, source = _unflatten(run.data.params), "params"
        if not config:
            raise ConfigError(
                f"MLflow run {run_id} holds no trial config (no config.yaml, no params)"
            )
        summary = _artifact(client, run_id, "summary.json", scratch)
        if summary is None and run.data.metrics:
            tags = run.data.tags
            summary = dict(run.data.metrics)
            for key in ("status", "device", "dtype"):
                summary[key] = tags.get(f"ntkdiv.{key}")
        return SourceRun(run_id, run.info.experiment_id, config, summary, source)


def log_rerun(tracking_uri: str | None, source: SourceRun, out_dir: Path) -> str:
    """Log a rerun's trial dir as a new run in the source's experiment, tagged ``rerun_of``."""
    uri = resolve_uri(tracking_uri)
    with guarded(uri):
        client = make_client(uri)
        config = read_config(out_dir)
        tid = st.read_json(out_dir / "summary.json")["trial_id"]
        tags = {"rerun_of": source.run_id, "trial_id": tid, "ntkdiv.role": "rerun"}
        run = client.create_run(source.experiment_id, tags=tags,
                                run_name=f"rerun-{run_name(config, tid)}")  # fmt: skip
        write_trial(client, run, out_dir, config, file_hash(out_dir / "summary.json"), fresh=True)
        return run.info.run_id
