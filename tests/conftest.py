"""Shared fixtures: a real ``mlflow server`` on 127.0.0.1 and one run of the smoke sweep, each
started once per session.

The server takes ~10 s to start (imports, then its database's migrations), so once collection
shows that a test will use it, it starts in the background while the tests before that one run;
the fixture waits for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench._mlflow_server import MlflowServer, free_port, running_mlflow_server

__all__ = ["free_port", "running_mlflow_server"]
REPO = Path(__file__).resolve().parents[1]
_SERVER = pytest.StashKey[MlflowServer]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the session's mlflow server now when a selected test will use it."""
    if any("mlflow_server" in getattr(item, "fixturenames", ()) for item in session.items):
        root = Path(tempfile.mkdtemp(prefix="ntkdiv-mlflow-"))
        session.config.stash[_SERVER] = MlflowServer(root)


def pytest_sessionfinish(session: pytest.Session) -> None:
    server = session.config.stash.get(_SERVER, None)
    if server is not None:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(request: pytest.FixtureRequest) -> str:
    """URI of a real ``mlflow server`` on 127.0.0.1, shared by the session (started at the end
    of collection; stopped when the session ends).

    Tests share it: use a unique experiment or sweep name per test.
    """
    server = request.config.stash.get(_SERVER, None)
    if server is None:  # collection did not see a user (e.g. requested dynamically)
        server = MlflowServer(Path(tempfile.mkdtemp(prefix="ntkdiv-mlflow-")))
        request.config.stash[_SERVER] = server
    return server.uri()


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
