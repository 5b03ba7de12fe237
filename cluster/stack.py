"""The local team stack: Ray head, PostgreSQL, SeaweedFS S3 and an MLflow server, all on 127.0.0.1.

    python -m cluster.stack start [--dir DIR]   start the four services, wait until each answers,
                                                print the environment to export
    python -m cluster.stack env                 print that environment again
    python -m cluster.stack status              say which services run, with their pids
    python -m cluster.stack stop                stop them, each by its own pid
    python -m cluster.stack purge               stop, then delete the state and the database

MLflow keeps runs in PostgreSQL (database ``mlflow``) and artifacts in S3 (``s3://ntkdiv/mlflow``)
behind its proxy (``--serve-artifacts``), so clients need no S3 credentials for MLflow; Optuna
studies go to the database ``optuna``. Ports are picked free at start and kept in
``DIR/stack.json`` with the pids and the generated credentials (DIR defaults to
``$NTKDIV_STACK_DIR`` or ``~/.local/state/ntkdiv-stack``). Logs are ``DIR/*.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

from cluster import _services as svc
from cluster._procs import StackError, alive, stop

SERVICES = ("postgres", "seaweedfs", "ray", "mlflow")  # start order; stop runs it backwards
BUCKET = "ntkdiv"


def default_dir() -> Path:
    env = os.environ.get("NTKDIV_STACK_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "ntkdiv-stack"


def load_state(state_dir: Path) -> dict | None:
    path = state_dir / "stack.json"
    return json.loads(path.read_text()) if path.is_file() else None


def save_state(state_dir: Path, state: dict) -> None:
    path = state_dir / "stack.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.chmod(tmp, 0o600)  # it holds the generated passwords
    tmp.replace(path)


def new_state(state_dir: Path, num_cpus: int | None) -> dict:
    """Ports, credentials and paths for a fresh stack (nothing started yet)."""
    return {
        "dir": str(state_dir),
        "pgdata": str(svc.pg_data_dir(state_dir)),
        "num_cpus": num_cpus,
        "ports": svc.pick_ports(),
        "pg_password": secrets.token_hex(12),
        "s3_access_key": "ntkdiv",
        "s3_secret_key": secrets.token_hex(16),
        "bucket": BUCKET,
        "pids": {},
    }


def env_lines(state: dict) -> list[str]:
    """``export`` lines for a shell: Ray, MLflow, S3 and Optuna settings of this stack."""
    p = state["ports"]
    return [
        "# ray job submit talks to the dashboard; token mode reads ~/.ray/auth_token",
        f"export RAY_ADDRESS=http://127.0.0.1:{p['ray_dashboard']}",
        "export RAY_AUTH_MODE=token",
        "# clients that dial the GCS (ray status, ray.init) keep 127.0.0.1, where it listens",
        "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0",
        f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{p['mlflow']}",
        f"export AWS_ENDPOINT_URL=http://127.0.0.1:{p['s3']}",
        f"export AWS_ACCESS_KEY_ID={state['s3_access_key']}",
        f"export AWS_SECRET_ACCESS_KEY={state['s3_secret_key']}",
        "export AWS_DEFAULT_REGION=us-east-1",
        f"export OPTUNA_STORAGE={svc.pg_url(state, 'optuna')}",
        f"export NTKDIV_STORE=s3://{state['bucket']}/store",
        f"# GCS address for a driver run here: 127.0.0.1:{p['ray_gcs']}",
        f"# dashboard http://127.0.0.1:{p['ray_dashboard']}   "
        f"MLflow UI http://127.0.0.1:{p['mlflow']}",
    ]


def running(state: dict | None) -> dict[str, int]:
    """The services of ``state`` that run now, name -> pid."""
    if not state:
        return {}
    return {name: pid for name, pid in state["pids"].items() if alive(pid)}


def start(state_dir: Path, num_cpus: int | None = None, timeout: float = 180.0) -> dict:
    """Start the stack in ``state_dir`` (made if missing); returns its state. Idempotent: a stack
    already running there is left as it is."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    state = load_state(state_dir)
    if running(state):
        print(f"already running (state in {state_dir}); 'stop' first to restart", file=sys.stderr)
        assert state is not None
        return state
    state = state or new_state(state_dir, num_cpus)
    if num_cpus is not None:
        state["num_cpus"] = num_cpus
    state["ports"] = svc.pick_ports()  # old ports may be taken by now
    state["pids"] = {}
    save_state(state_dir, state)
    t0 = time.monotonic()
    try:
        # the slow ones start first and come up side by side
        state["pids"]["seaweedfs"] = svc.spawn_seaweedfs(state)
        state["pids"]["ray"] = svc.spawn_ray(state)
        save_state(state_dir, state)
        state["pids"]["postgres"] = svc.start_postgres(state, timeout)
        save_state(state_dir, state)
        state["pids"]["mlflow"] = svc.spawn_mlflow(state)  # S3 is first used by a client
        save_state(state_dir, state)
        svc.wait_seaweedfs(state, timeout)
        svc.wait_ray(state, timeout)
        svc.wait_mlflow(state, timeout)
    except BaseException:
        save_state(state_dir, state)
        stop_all(state)
        raise
    print(f"stack up in {time.monotonic() - t0:.0f} s (state and logs in {state_dir})",
          file=sys.stderr)  # fmt: skip
    return state


def stop_all(state: dict | None) -> list[str]:
    """Stop every service of ``state`` by its pid, in reverse start order; returns report lines."""
    if not state:
        return ["not running (no state)"]
    out = []
    for name in reversed(SERVICES):
        pid = state["pids"].get(name)
        # PostgreSQL's fast shutdown is SIGINT; SIGTERM would wait for clients to leave
        sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
        # weed lingers ~25 s after SIGTERM; its files are whole long before that
        was = stop(pid, sig=sig, timeout=5.0 if name == "seaweedfs" else 30.0)
        out.append(f"{name}: stopped (pid {pid})" if was else f"{name}: not running")
    return out


def purge(state_dir: Path) -> None:
    """Stop the stack and delete its state directory, database cluster and Ray temp dir."""
    state = load_state(state_dir)
    stop_all(state)
    if state:
        shutil.rmtree(state["pgdata"], ignore_errors=True)
        shutil.rmtree(svc.ray_temp_dir(state), ignore_errors=True)
    shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=("start", "stop", "status", "env", "purge"))
    parser.add_argument("--dir", type=Path, default=None, help="state directory")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use [all]")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per service")
    args = parser.parse_args(argv)
    state_dir = (args.dir or default_dir()).resolve()
    state = load_state(state_dir)
    try:
        if args.command == "start":
            print("\n".join(env_lines(start(state_dir, args.num_cpus, args.timeout))))
        elif args.command == "stop":
            print("\n".join(stop_all(state)))
        elif args.command == "purge":
            purge(state_dir)
        elif args.command == "status":
            live = running(state)
            for name in SERVICES:
                pid = live.get(name)
                print(f"{name}: running (pid {pid})" if pid else f"{name}: stopped")
            return 0 if len(live) == len(SERVICES) else 3
        elif not running(state):
            print(f"stack: not running in {state_dir} ('start' it first)", file=sys.stderr)
            return 1
        else:
            print("\n".join(env_lines(state)))
    except StackError as e:
        print(f"stack: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
