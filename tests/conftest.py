"""Shared fixtures: a real ``mlflow server`` on 127.0.0.1 and one run of the smoke sweep, each
started once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench._mlflow_server import free_port, running_mlflow_server

__all__ = ["free_port", "running_mlflow_server"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real ``mlflow server`` on 127.0.0.1, shared by the session.

    Tests share it: use a unique experiment or sweep name per test.
    """
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@dataclass(frozen=True)
class SmokeSweep:
    """One run of ``ntkdiv sweep sweeps/smoke.yaml`` (the README's main job) for the session."""

    storage: Path
    sweep_dir: Path  # <storage>/smoke
    tracking_uri: str  # the session's mlflow server; experiment "smoke"
    code: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def smoke_sweep(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> SmokeSweep:
    """The smoke sweep, run once through the ``ntkdiv`` console script, logged to the session's
    MLflow server. Tests read it and must not change it (aggregate into their own folders)."""
    root = tmp_path_factory.mktemp("smoke")
    ntkdiv = Path(sys.executable).with_name("ntkdiv")
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    proc = subprocess.run([str(ntkdiv), "sweep", str(REPO / "sweeps" / "smoke.yaml"),
                           "--storage", str(root / "store"), "--tracking-uri", mlflow_server,
                           "--quiet"], capture_output=True, text=True, timeout=1500, env=env,
                          cwd=root)  # fmt: skip
    return SmokeSweep(root / "store", root / "store" / "smoke", mlflow_server, proc.returncode,
                      proc.stdout, proc.stderr)  # fmt: skip
