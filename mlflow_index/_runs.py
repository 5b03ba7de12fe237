"""One trial's MLflow run, built from its trial directory: params, histories, metrics, tags, files.

A trial's params, history rows, summary metrics and tags go in as few ``log_batch`` calls as
MLflow's limits allow (one for a smoke trial), since every MLflow call commits on its own.
Histories are thinned to ``MAX_HISTORY_ROWS`` evenly spread rows so that the UI stays readable
and a trial's upload stays within seconds over HTTP; trajectory.parquet, logged as an artifact,
keeps every row.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, Run, RunTag

from core import TrialStatus, config_from_dict, encode_value, flatten
from core import store as st

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# per-row metric histories, at step = the trajectory step (plain GD: t = step * lr; gradient
# flow: steps are adaptive, so t itself is a history); the resolution columns (flips,
# near_kink, drift_smooth, step_jump, flip_jump) let the UI show what limits a verdict, and
# gap_avg (gradient flow) the gap that does not depend on the chattering units
HISTORY_KEYS = ("loss", "accuracy", "gap", "drift", "lambda_min", "theta_inf", "theta_l2",
                "f_abs_min", "flips", "near_kink", "drift_smooth", "step_jump", "flip_jump",
                "t", "gap_avg")  # fmt: skip
# "loss" is never null (rows are recorded only while it is finite), so its history tells which
# rows reached the server
SENTINEL = "loss"
MAX_METRICS = 1000  # MLflow's per-log_batch limit on metrics
MAX_PARAMS = 100  # ... on params, and on tags
MAX_ENTITIES = 1000  # ... on metrics + params + tags
MAX_PARAM_LEN = 6000  # MLflow's param value limit
MAX_TAG_LEN = 5000  # below MLflow's 8000, room for the UI
MAX_HISTORY_ROWS = 2000  # rows sent per trial, evenly thinned (~2 s over HTTP); the store keeps all
# Tracked rows are log-spaced in t, so on MLflow's linear step axis they bunch at the left. The
# series under LOG_T_PREFIX repeat each row at step = round(LOG_T_SCALE * log10 t) (0: t = 1,
# 3000: t = 1e3, -1000: t = 0.1): evenly spread, the same decade the same width. The bound rides
# on both axes, and drift/bound, gap/bound cross 1 where the kernel reaches the bound.
LOG_T_SCALE = 1000
LOG_T_PREFIX = "log10t/"
LOG_T_KEYS = ("loss", "drift", "gap")
TRIAL_FILES = (st.CONFIG, st.SUMMARY, st.TRAJECTORY)
# MLflow's run status per trial status ("overflow": the old name of diverged)
RUN_STATUS = {TrialStatus.COMPLETED: "FINISHED", TrialStatus.DIVERGED: "FINISHED",
              "overflow": "FINISHED", TrialStatus.FAILED: "FAILED",
              TrialStatus.STOPPED: "KILLED"}  # fmt: skip


def read_config(tdir: st.StorePath) -> dict[str, Any] | None:
    """The trial's config.yaml as a dict; None when the trial failed before writing it."""
    try:
        text = (tdir / st.CONFIG).read_text()
    except FileNotFoundError:
        return None
    # libyaml's loader when present: ~0.2 ms a config against ~2 ms for the pure-Python one
    return yaml.load(text, Loader=YAML_LOADER)


def run_name(config: Mapping[str, Any] | None, tid: str) -> str:
    """``fcn-m256-L3-cross_entropy-s0-1a2b3c``: readable in the UI, unique by the id suffix."""
    if not config:
        return tid
    m, t = config.get("model", {}), config.get("train", {})
    return (f"{m.get('arch')}-m{m.get('width')}-L{m.get('depth')}-{t.get('loss')}"
            f"-s{config.get('seed')}-{tid[:6]}")  # fmt: skip


def _param_value(value: Any) -> str:
    return str(encode_value(value, keep_none=False))[:MAX_PARAM_LEN]


@dataclasses.dataclass
class TrialEntities:
    """What a trial's run gets besides its files (see :func:`trial_entities`)."""

    status: str  # MLflow run status
    params: list[Param]
    rows: list[list[Metric]]  # history points, one list per trajectory row, in step order
    metrics: list[Metric]  # summary metrics
    tags: list[RunTag]  # the logged tag last


def trial_entities(
    tdir: st.StorePath,
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
    if (tdir / st.TRAJECTORY).is_file():
        bound = st.json_number(summary.get("bound"))
        rows = history_rows(st.read_trajectory(tdir / st.TRAJECTORY), after_step, bound)
    metrics, tags = summary_entities(summary, generation)
    tags.append(RunTag("ntkdiv.logged", digest))
    status = RUN_STATUS.get(str(summary.get("status")), "FINISHED")
    return TrialEntities(status, params, rows, metrics, tags)


def write_trial(
    client: MlflowClient,
    run: Run,
    tdir: st.StorePath,
    config: dict | None,
    digest: str,
    fresh: bool,
) -> None:
    """Files and status, then params, metric histories, summary metrics and tags packed into as
    few ``log_batch`` calls as MLflow's limits allow, the ``logged`` tag in the last one.

    Args:
        fresh: the run was just created (else only the rows it lacks are sent, and the
            summary metrics get the next generation).
    """
    run_id = run.info.run_id
    summary = st.read_json(tdir / st.SUMMARY)
    log_trial_files(client, run_id, tdir, summary)
    last = -1 if fresh else last_logged_step(client, run_id)
    generation = 0 if fresh else int(run.data.tags.get("ntkdiv.generation", "-1")) + 1
    e = trial_entities(tdir, config, summary, digest, last, generation,
                       with_params=fresh or not run.data.params)  # fmt: skip
    # before the logged tag: a run marked logged always carries its final status
    client.set_terminated(run_id, e.status, end_time=trial_times(tdir, summary)[1])
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


def history_rows(table: Any, after_step: int, bound: float | None = None) -> list[list[Metric]]:
    """The metric points of each row above ``after_step``, in step order, thinned to
    ``MAX_HISTORY_ROWS``; null entries are skipped.

    A row's points: the ``HISTORY_KEYS`` and ``bound`` at step = the trajectory step, and the
    ``LOG_T_PREFIX`` series at step = ``round(LOG_T_SCALE * log10 t)`` (rows with t > 0, one row
    per log step), with ``drift_over_bound`` and ``gap_over_bound`` there.
    """
    keys = [k for k in HISTORY_KEYS if k in table.column_names]  # older stores lack some
    cols = {k: table.column(k).to_pylist() for k in ("step", *keys)}
    rows = [i for i, s in enumerate(cols["step"]) if s > after_step]
    rows = [rows[i] for i in _thin([cols["step"][r] for r in rows], MAX_HISTORY_ROWS)]
    now = int(time.time() * 1000)
    out: list[list[Metric]] = []
    seen: set[int] = set()
    for r in rows:
        step = int(cols["step"][r])
        values = {k: float(cols[k][r]) for k in keys if cols[k][r] is not None}
        if bound is not None:
            values["bound"] = bound
        row = [Metric(k, v, now, step) for k, v in values.items()]
        t = values.get("t", 0.0)
        log_step = round(LOG_T_SCALE * math.log10(t)) if math.isfinite(t) and t > 0 else None
        if log_step is not None and log_step not in seen:
            seen.add(log_step)
            row += [Metric(LOG_T_PREFIX + k, v, now, log_step) for k, v in _log_t_values(values)]
        out.append(row)
    return out


def _log_t_values(values: Mapping[str, float]) -> list[tuple[str, float]]:
    """(key, value) of one row's log-t series: the kept keys, the bound and the two ratios."""
    out = [(k, values[k]) for k in (*LOG_T_KEYS, "bound") if k in values]
    bound = values.get("bound")
    if bound is not None and bound > 0:
        out += [(f"{k}_over_bound", values[k] / bound) for k in ("drift", "gap") if k in values]
    return out


def trial_times(tdir: st.Where, summary: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(start, end) of the trial in ms since the epoch, for its run's duration.

    From attempts.json: the first attempt's start and the last attempt's end, so a resumed trial
    spans all its attempts. A trial without attempts (``ntkdiv run``) ends when its summary.json
    was written and starts ``wall_s`` earlier. None where unknown (MLflow then takes the time of
    the call).
    """
    attempts = st.read_attempts(tdir)
    starts = [a["start"] for a in attempts if isinstance(a.get("start"), (int, float))]
    ends = [a["end"] for a in attempts if isinstance(a.get("end"), (int, float))]
    ms = lambda s: int(round(s * 1000))  # noqa: E731
    if starts and ends:
        return ms(min(starts)), ms(max(max(ends), min(starts)))
    wall = st.json_number(summary.get("wall_s"))
    end = _written_at(tdir)
    if end is None or wall is None or not math.isfinite(wall):
        return (ms(min(starts)) if starts else None), None
    return ms(min(starts) if starts else end - wall), ms(end)


def _written_at(tdir: st.Where) -> float | None:
    """When the trial's summary.json was last written (a local store only), else None."""
    if not getattr(tdir, "local", True):
        return None
    try:
        return os.stat(os.fspath(tdir) + "/" + st.SUMMARY).st_mtime
    except OSError:
        return None


def summary_entities(summary: Mapping[str, Any], gen: int) -> tuple[list[Metric], list[RunTag]]:
    """Numeric summary keys as metrics at step ``gen``; status, generation, device, dtype and
    the error's last line as tags."""
    now = int(time.time() * 1000)
    metrics = []
    for key, value in summary.items():
        v = st.json_number(value)
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
    groups: list[tuple[list[Metric], list[RunTag]]] = [(row, []) for row in rows]
    for group_metrics, group_tags in [*groups, (metrics, tags)]:
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


def log_trial_files(
    client: MlflowClient, run_id: str, tdir: st.StorePath, summary: Mapping
) -> None:
    """config.yaml, summary.json, trajectory.parquet, and error.txt for a failed trial (files
    in an object store pass through a temporary local copy: MLflow logs local files)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name in TRIAL_FILES:
            try:
                local = Path(tdir / name) if tdir.local else Path(tmp) / name
                if not tdir.local:
                    local.write_bytes((tdir / name).read_bytes())
            except FileNotFoundError:
                continue
            if local.is_file():
                client.log_artifact(run_id, str(local))
        error = summary.get("error")
        if error:
            (Path(tmp) / "error.txt").write_text(str(error))
            client.log_artifact(run_id, str(Path(tmp) / "error.txt"))
