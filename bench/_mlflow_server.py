"""A local ``mlflow server`` process (sqlite + local artifacts) for tests and ``ntkdiv bench``.

It listens on 127.0.0.1 only, runs in its own process group, and is stopped with it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MLFLOW_START_TIMEOUT_S = 120.0  # ~7 s on an idle 2-core machine; much more under load


def free_port() -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (uvicorn workers included), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def _start(root: Path, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
           "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]  # fmt: skip
    # the job consumers (huey) are not needed for tracking and outlive a plain SIGTERM
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with (root / "server.log").open("ab") as log:  # the child keeps its own copy of the fd
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)  # fmt: skip


class MlflowServer:
    """An ``mlflow server`` (sqlite + local artifacts under ``root``), started on construction.

    Construction does not wait: :meth:`uri` does, until the server answers, so a caller can do
    other work while it starts. A lost race for the port (another process took it) is retried
    on a new port.
    """

    def __init__(self, root: Path, attempts: int = 3) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.attempts = root, attempts
        self._launch()

    def _launch(self) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = _start(self.root, int(self.url.rsplit(":", 1)[1]))

    def uri(self) -> str:
        """The server's URI, once it answers (raises RuntimeError if it never does)."""
        for attempt in range(1, self.attempts + 1):
            deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
            while (self.proc.poll() is None and time.monotonic() < deadline
                   and not _healthy(self.url)):  # fmt: skip
                time.sleep(0.25)
            if self.proc.poll() is None and _healthy(self.url):
                return self.url
            _stop(self.proc)
            if attempt < self.attempts:
                self._launch()
        tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"mlflow server did not become healthy at {self.url}:\n{tail}")

    def stop(self) -> None:
        _stop(self.proc)


@contextlib.contextmanager
def running_mlflow_server(root: Path, attempts: int = 3) -> Iterator[str]:
    """Start ``mlflow server`` (sqlite + local artifacts under ``root``); yield its URI."""
    server = MlflowServer(root, attempts)
    try:
        yield server.uri()
    finally:
        server.stop()
