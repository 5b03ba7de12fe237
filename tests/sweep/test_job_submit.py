"""``ray job submit -- ntkdiv sweep sweeps/smoke.yaml`` end to end on a local Ray head.

A real Ray head (token auth, 2 CPUs) and a real ``mlflow server``: the job must fill the store
with one summary per trial and MLflow with one parent and one child run per trial; submitting
again must run nothing and log nothing new.

The head runs as ``ray start --head --block`` in a session of its own and is stopped through its
pid and process group: ``ray stop`` would stop every Ray cluster on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweep._spec import expand, load_spec
from tests.conftest import free_port, running_mlflow_server

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's ray, mlflow and ntkdiv
JOB_TIMEOUT_S = 900
# large local state stays out of the upload (.git and .gitignore'd paths are skipped by Ray)
EXCLUDES = [".venv", "runs", "ntkdiv-store", "mlflow.db", "mlruns", "mlartifacts", "*.pt"]

pytestmark = pytest.mark.slow


def snapshot(dst: Path) -> Path:
    """A copy of the checkout to submit: both submissions then see the same code and spec."""
    skip = shutil.ignore_patterns(".git", "*_cache", "__pycache__", "*.egg-info", ".tmp", *EXCLUDES)
    return Path(shutil.copytree(REPO, dst, ignore=skip))


def _env() -> dict[str, str]:
    """Token auth for every Ray client; the venv first on PATH for the head and the job."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    return {**env, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}


def _ray(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM ``ray start --block`` (it stops what it started), then its process group."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        time.sleep(1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


@contextlib.contextmanager
def ray_head(temp_dir: Path, *extra: str) -> Iterator[str]:
    """A 2-CPU Ray head on 127.0.0.1 with every port free-picked (``extra``: more ``ray start``
    options); yields the job address."""
    assert _ray("get-auth-token", "--generate").returncode == 0  # token mode needs one
    dash = free_port()
    ports = [
        "--ray-client-server-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--metrics-export-port",
        "--runtime-env-agent-port",
    ]
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(free_port()),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
           "--node-ip-address", "127.0.0.1", "--num-cpus", "2", "--temp-dir", str(temp_dir),
           "--min-worker-port", "0", "--max-worker-port", "0", *extra]  # fmt: skip
    for flag in ports:
        cmd += [flag, str(free_port())]
    with (temp_dir.parent / "ray-head.log").open("wb") as log:
        proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.monotonic() + 180
        while _ray("job", "list", "--address", address).returncode != 0:
            assert proc.poll() is None, (temp_dir.parent / "ray-head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Ray head did not answer within 180 s"
            time.sleep(2)
        yield address
    finally:
        _stop(proc)


def submit(address: str, repo: Path, storage: Path, uri: str) -> subprocess.CompletedProcess:
    runtime_env = {"excludes": EXCLUDES, "env_vars": {"PYTHONUNBUFFERED": "1"}}
    return _ray(
        "job", "submit", "--address", address, "--working-dir", str(repo),
        "--runtime-env-json", json.dumps(runtime_env), "--",
        "ntkdiv", "sweep", "sweeps/smoke.yaml", "--storage", str(storage),
        "--tracking-uri", uri, "--quiet",
        timeout=JOB_TIMEOUT_S,
    )  # fmt: skip


def summaries(storage: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime_ns for p in sorted(storage.glob("*/trials/*/summary.json"))}


def sweep_runs(uri: str) -> tuple[list, list]:
    """(parents, children) over every experiment of the server."""
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, "tags.`ntkdiv.role` = 'parent'")
    children = client.search_runs(exps, "tags.`ntkdiv.role` = 'trial'")
    return parents, children


def test_ray_job_submit_runs_the_smoke_sweep_once():
    with tempfile.TemporaryDirectory(prefix="nj", dir="/tmp") as short:  # Unix sockets: short
        tmp = Path(short)
        (tmp / "ray").mkdir()
        storage = tmp / "store"
        repo = snapshot(tmp / "repo")
        n_trials = len(expand(load_spec(repo / "sweeps" / "smoke.yaml")))
        with running_mlflow_server(tmp / "mlflow") as uri, ray_head(tmp / "ray") as address:
            first = submit(address, repo, storage, uri)
            assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
            assert "succeeded" in first.stdout + first.stderr
            done = summaries(storage)
            assert len(done) == n_trials == len(list(storage.glob("smoke/trials/*")))
            for path in done:
                assert json.loads(path.read_text())["status"] in ("completed", "diverged")
            parents, children = sweep_runs(uri)
            assert len(parents) == 1 and len(children) == len(done)
            client = MlflowClient(uri)
            assert client.get_experiment(parents[0].info.experiment_id).name == "smoke"
            assert parents[0].info.status == "FINISHED"  # the report closed it
            report = {f.path for f in client.list_artifacts(parents[0].info.run_id, "report")}
            assert "report/report.html" in report
            for run in children:
                assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
                assert client.get_metric_history(run.info.run_id, "drift")
                names = {f.path for f in client.list_artifacts(run.info.run_id)}
                assert {"config.yaml", "summary.json", "trajectory.parquet"} <= names

            again = submit(address, repo, storage, uri)
            assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
            assert summaries(storage) == done  # nothing ran again
            parents2, children2 = sweep_runs(uri)
            assert len(parents2) == 1 and len(children2) == len(children)
            assert {r.data.tags["ntkdiv.generation"] for r in children2} == {"0"}


def test_a_node_runs_only_the_cpu_trials_whose_memory_fits_together(tmp_path):
    """Each CPU trial reserves its memory estimate (Ray's ``memory`` resource): on a 2-CPU head
    offering memory for 1.5 trials, the two trials of a sweep run one after the other (their
    attempts do not overlap), where CPUs alone would let them run together."""
    import yaml

    from core import config_from_dict, cpu_memory_bytes

    base = {"model": {"arch": "fcn", "width": 64, "depth": 2}, "data": {"kind": "circle", "n": 6},
            "train": {"loss": "cross_entropy", "lr": 0.1, "epochs": 3000},
            "track": {"log_points": 10}}  # fmt: skip
    need = cpu_memory_bytes(config_from_dict(base))
    spec = {"name": "mem", "base": base, "grid": {"seed": [0, 1]},
            "resources": {"cpus_per_trial": 1}, "mlflow": {"enabled": False}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="nm", dir="/tmp") as short:  # Unix sockets: short
        tmp = Path(short)
        (tmp / "ray").mkdir()
        repo = snapshot(tmp / "repo")
        (repo / "mem.yaml").write_text(yaml.safe_dump(spec))
        storage = tmp / "store"
        with ray_head(tmp / "ray", "--memory", str(int(1.5 * need))) as address:
            proc = _ray("job", "submit", "--address", address, "--working-dir", str(repo),
                        "--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--",
                        "ntkdiv", "sweep", "mem.yaml", "--storage", str(storage), "--quiet",
                        "--no-aggregate", timeout=JOB_TIMEOUT_S)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        spans = []
        for path in sorted(storage.glob("mem/trials/*/attempts.json")):
            (attempt,) = json.loads(path.read_text())["attempts"]
            assert attempt["status"] == "completed"
            spans.append((attempt["start"], attempt["end"]))
        assert len(spans) == 2
        (a0, a1), (b0, b1) = sorted(spans)
        assert a1 <= b0, f"the trials ran together: {spans}"
