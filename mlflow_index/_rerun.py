"""``ntkdiv rerun``'s side of MLflow: read a logged trial's config and summary, log the rerun."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from core import ConfigError
from core import store as st

from ._client import DEFAULT_TRACKING_URI, file_hash, guarded, make_client
from ._runs import read_config, run_name, write_trial


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
    uri = tracking_uri or DEFAULT_TRACKING_URI
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
    uri = tracking_uri or DEFAULT_TRACKING_URI
    with guarded(uri):
        client = make_client(uri)
        out = st.locate(out_dir)
        config = read_config(out)
        tid = st.read_json(out_dir / st.SUMMARY)["trial_id"]
        tags = {"rerun_of": source.run_id, "trial_id": tid, "ntkdiv.role": "rerun"}
        run = client.create_run(source.experiment_id, tags=tags,
                                run_name=f"rerun-{run_name(config, tid)}")  # fmt: skip
        write_trial(client, run, out, config, file_hash(out / st.SUMMARY), fresh=True)
        return run.info.run_id
