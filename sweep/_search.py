"""``ntkdiv search SPEC.yaml``: an Optuna search for the laziest configuration, on Ray.

The driver, top to bottom:
1. validate the spec and its ``search:`` section, and every corner of the space against the base
   config (nothing is created before all of it passed: no study, no store, no MLflow run);
2. connect to Ray, open (or resume) the study;
3. keep ``parallel`` trials running: ask Optuna, run ``core.run_trial`` on Ray with the exact
   pruning monitor, publish each finished trial to the store and MLflow like any sweep trial,
   tell Optuna, and rewrite the best value that the monitors read;
4. return the study's trials (``SearchResult``); ``ntkdiv/_search.py`` prints the best
   configurations with their rerun commands, the candidates below the bound, and the compute
   saved by pruning.

A driver killed mid-search leaves RUNNING trials in the study; the next run resubmits exactly
those (their trials resume from their checkpoints) before asking for new ones, so no trial is
lost or counted twice.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from core import (
    DONE,
    ConfigError,
    TrialConfig,
    apply_overrides,
    config_from_dict,
    trial_id,
)
from core import store as st

from ._dispatch import system_failure
from ._prepare import check_address, check_inputs, check_storage, prepare_store, sweep_lease
from ._resources import plan_resources
from ._runner import open_tracking, ray_adapter, store_failed
from ._search_spec import (
    PruneMonitor,
    SearchSpec,
    direction,
    objective_value,
    parse_search,
)
from ._spec import SweepSpec, spec_to_dict

WAIT_S = 0.5


# --- configs from Optuna params ---------------------------------------------------------------


def config_for(spec: SweepSpec, params: dict[str, Any]) -> TrialConfig:
    """The base config with the sampled values set at their dotted keys."""
    base = spec.base if isinstance(spec.base, dict) else {}
    return config_from_dict(apply_overrides(base, params))


def corners(search: SearchSpec) -> list[dict[str, Any]]:
    """One assignment per end of every range and per categorical choice (validated up front)."""
    points = []
    for key, p in search.space.items():
        if p.type == "categorical":
            points += [{key: c} for c in p.choices or []]
        else:
            assert p.low is not None and p.high is not None  # checked by Param
            cast = int if p.type.endswith("int") else float
            points += [{key: cast(p.low)}, {key: cast(p.high)}]
    return points


def check_space(spec: SweepSpec, search: SearchSpec) -> list[TrialConfig]:
    """Every corner of the space gives a valid config (errors name the search key)."""
    configs = []
    for point in corners(search):
        key, value = next(iter(point.items()))
        try:
            configs.append(config_for(spec, point))
        except ConfigError as err:
            raise ConfigError(f"sweep spec field 'search.space.{key}' = {value!r}: {err}") from None
    return configs


# --- the study --------------------------------------------------------------------------------


@dataclass
class SearchResult:
    study_name: str
    storage: str
    sweep_dir: st.StorePath
    objective: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    exit_code: int = 0


@dataclass
class _Running:
    tid: str
    numbers: list[int]  # Optuna trials waiting on this trial_id (duplicates share one run)
    config: TrialConfig
    before: int  # attempts recorded before this submission


class _Driver:
    """Ask, submit, collect, tell: the search loop's state."""

    def __init__(self, spec, search, study, ray, cluster, tracking, prune, note) -> None:
        from ._optuna import distribution

        self.spec, self.search, self.study, self.cluster = spec, search, study, cluster
        self.ray = ray  # the Ray adapter, sweep._ray
        self.tracking, self.prune, self.note = tracking, prune, note
        self.sweep_dir = spec.sweep_dir()
        self.space = {k: distribution(p.type, p.low, p.high, p.choices)
                      for k, p in search.space.items()}  # fmt: skip
        self.best_path = st.search_file(self.sweep_dir, f"{study_name(spec, search)}.best.json")
        self.pending: dict[Any, _Running] = {}
        self.last_line = ""

    # --- best value, read by every monitor ----------------------------------------------------

    def write_best(self) -> None:
        values = [t["value"] for t in self.study.trials() if t["state"] == "COMPLETE"]
        values = [v for v in values if v is not None]
        pick = min if self.search.objective == "min_drift_ratio" else max
        st.write_json(self.best_path, {"best": pick(values) if values else None})

    # --- submitting -------------------------------------------------------------------------

    def submit(self, number: int, params: dict[str, Any]) -> None:
        try:
            config = config_for(self.spec, params)
        except ConfigError as err:
            self.study.set_attr(number, "error", str(err))
            self.study.tell(number, None)
            return
        tid = trial_id(config)
        self.study.set_attr(number, "trial_id", tid)
        for run in self.pending.values():
            if run.tid == tid:  # the sampler repeated a config: share the running trial
                run.numbers.append(number)
                return
        request = plan_resources(self.spec, [config], self.cluster, self.note)[tid]
        bound = _bound(config)
        monitor = (PruneMonitor(self.best_path, bound, self.search.objective)
                   if self.prune else None)  # fmt: skip
        tdir = st.trial_dir(self.sweep_dir, tid)
        handle = self.ray.submit(config.model_dump(mode="json"), tdir, request,
                                 retries=self.spec.retries, monitor=monitor,
                                 name=f"search-{number}")  # fmt: skip
        self.pending[handle] = _Running(tid, [number], config, len(st.read_attempts(tdir)))

    def run(self) -> None:
        """Trials a lost driver left running first, then ask and tell until the study is full."""
        self.write_best()
        self.resubmit_running()
        self.fill()
        while self.pending:
            self.collect()
            self.fill()
            self.progress()

    def resubmit_running(self) -> None:
        """Trials a killed driver left RUNNING: ask them again and run them (they resume from
        their checkpoints)."""
        for number, params in self.study.requeue_lost(self.space):
            self.submit(number, params)

    def fill(self) -> None:
        while len(self.pending) < self.search.parallel and self.asked() < self.search.n_trials:
            number, params = self.study.ask(self.space)
            self.submit(number, params)

    def asked(self) -> int:
        return len(self.study.trials())

    def progress(self) -> None:
        states = [t["state"] for t in self.study.trials()]
        done = sum(s in ("COMPLETE", "PRUNED", "FAIL") for s in states)
        text = (f"search: {done}/{self.search.n_trials} done ({states.count('PRUNED')} pruned, "
                f"{states.count('FAIL')} failed), {len(self.pending)} running")  # fmt: skip
        if self.last_line != text:
            self.last_line = text
            self.note(text)

    # --- collecting -------------------------------------------------------------------------

    def collect(self) -> None:
        finished, _ = self.ray.wait(list(self.pending), WAIT_S)
        for handle in finished:
            run = self.pending.pop(handle)
            try:
                summary = self.ray.result(handle)
            except self.ray.SystemFailure as err:
                tdir = st.trial_dir(self.sweep_dir, run.tid)
                summary = system_failure(tdir, run.config, run.before, str(err))
            self.finish(run, summary)

    def finish(self, run: _Running, summary: dict[str, Any]) -> None:
        status = summary.get("status")
        run_id = self.tracking.log_trial(run.tid)
        for number in run.numbers:
            if run_id:
                self.study.set_attr(number, "mlflow_run_id", run_id)
            self.tell(number, run, summary, status)
        self.write_best()

    def tell(self, number: int, run: _Running, summary: dict[str, Any], status: Any) -> None:
        epochs = run.config.train.epochs
        self.study.set_attr(number, "epochs", epochs)
        self.study.set_attr(number, "steps", int(summary.get("steps") or 0))
        self.study.set_attr(number, "status", str(status))
        if status == "stopped":
            bound = objective_value(summary, self.search.objective)
            self.study.set_attr(number, "objective_bound", bound)
            self.study.tell(number, bound, pruned=True, step=int(summary.get("steps") or 0))
        elif status in DONE and summary.get("drift_sup") is not None:
            self.study.tell(number, objective_value(summary, self.search.objective))
        else:
            self.study.set_attr(number, "error", str(summary.get("error"))[-2000:])
            self.study.tell(number, None)


def _bound(config: TrialConfig) -> float:
    from core import prepare

    return prepare(config)[1].bound


def study_name(spec: SweepSpec, search: SearchSpec) -> str:
    return search.study or spec.name


def _storage_url(search: SearchSpec) -> str:
    """Create the parent folder of a local sqlite or journal file."""
    url = search.storage
    for prefix in ("sqlite:///", "journal://"):
        if url.startswith(prefix):
            Path(url.removeprefix(prefix)).expanduser().absolute().parent.mkdir(
                parents=True, exist_ok=True
            )
    return url


def run_search(
    spec: SweepSpec,
    *,
    address: str | None = None,
    prune: bool = True,
    num_cpus: int | None = None,
    stream: TextIO | None = None,
    wait: bool = False,
) -> SearchResult:
    """Run (or resume) the search of ``spec``; see the module docstring.

    Raises:
        SweepBusy: another live driver (a search or a sweep of the same name) holds the sweep's
            lease, and ``wait`` is False.
        StoreError: the store failed (what finished is kept).
    """
    t0 = time.monotonic()
    stream = stream or sys.stderr
    search = load_search(spec)
    check_inputs(check_space(spec, search))
    check_storage(spec)

    def note(text: str) -> None:
        print(text, file=stream, flush=True)

    check_address(address)  # bad input: refused before the lease creates the sweep dir
    _ray = ray_adapter(address)
    from ._optuna import Study

    name, study, parent, status = study_name(spec, search), None, None, "FINISHED"
    try:
        with sweep_lease(spec.sweep_dir(), note, wait):  # one driver per sweep directory
            cluster = _ray.connect(address, num_cpus)  # before MLflow: a bad address, no trace
            tracking = open_tracking(spec, note)
            study = Study.open(name, _storage_url(search), direction(search.objective),
                               search.sampler, search.seed)  # fmt: skip
            prepare_store(spec, [p.name for p in st.trial_dirs(spec.sweep_dir())])
            parent = tracking.ensure_parent(spec_to_dict(spec))
            _Driver(spec, search, study, _ray, cluster, tracking, prune, note).run()
    except OSError as err:  # the store itself: stop cleanly, keep what finished
        status = "FAILED"
        kept = None if study is None else sum(t["state"] in ("COMPLETE", "PRUNED")
                                              for t in study.trials())  # fmt: skip
        raise store_failed(spec.sweep_dir(), kept, err, "search") from None
    except BaseException as err:  # Ctrl-C or anything else: the parent run says so
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        raise
    finally:
        if parent is not None:
            tracking.finish(status)  # the next run sets it RUNNING again
        _ray.shutdown()
    return SearchResult(name, search.storage, spec.sweep_dir(), search.objective, study.trials(),
                        time.monotonic() - t0)  # fmt: skip


def load_search(spec: SweepSpec) -> SearchSpec:
    if spec.search is None:
        raise ConfigError(f"sweep spec '{spec.name}' has no 'search:' section; add one")
    return parse_search(spec.search)
