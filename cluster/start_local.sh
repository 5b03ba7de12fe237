#!/usr/bin/env bash
# A local Ray head node and an MLflow tracking server for ntkdiv, both on 127.0.0.1 only.
#
#   cluster/start_local.sh start    start both in the background, wait until both answer,
#                                   print the environment to export
#   cluster/start_local.sh stop     stop both (only the processes this script started, by pid)
#   cluster/start_local.sh status   say whether each one runs
#   cluster/start_local.sh env      print the environment to export again
#
# Settings (environment variables, [default]):
#   NTKDIV_LOCAL_DIR    state: pid files, logs, mlflow.db, MLflow artifacts
#                       [${XDG_STATE_HOME:-~/.local/state}/ntkdiv]
#   RAY_GCS_PORT        Ray head (GCS) port, the address drivers connect to [6379]
#   RAY_DASHBOARD_PORT  Ray dashboard and job-submission port [8265]
#   MLFLOW_PORT         MLflow server port [5000]
#   MLFLOW_WORKERS      MLflow server worker processes [2]
#   NUM_CPUS            CPUs Ray may schedule on [all]
#   NUM_GPUS            GPUs Ray may schedule on [all detected]
#   RAY_TEMP_DIR        Ray's session root; keep it short, Unix socket paths live under it
#                       [/tmp/ray]
#   START_TIMEOUT       seconds to wait for both services to answer [120]
#
# Ray's other ports (client server, dashboard agent, metrics, runtime-env agent, workers) are
# picked free at start: their fixed defaults clash when two clusters share a machine. Every port
# listens on 127.0.0.1 only (check with `ss -ltnp`). The team stack (PostgreSQL, S3, MLflow on
# PostgreSQL) is `python -m cluster.stack start`; this script is the simple case.
#
# Token authentication: the head starts with RAY_AUTH_MODE=token and the token in
# ~/.ray/auth_token (generated if missing). Every client (ray job submit, ray status, a driver)
# then needs RAY_AUTH_MODE=token, or it fails with "Missing authentication token".
set -euo pipefail

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
}

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Use the project's virtualenv when ray / mlflow are not on PATH.
if ! command -v ray >/dev/null 2>&1 && [[ -x "$repo_root/.venv/bin/ray" ]]; then
    PATH="$repo_root/.venv/bin:$PATH"
fi

state_dir=${NTKDIV_LOCAL_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/ntkdiv}
gcs_port=${RAY_GCS_PORT:-6379}
dashboard_port=${RAY_DASHBOARD_PORT:-8265}
mlflow_port=${MLFLOW_PORT:-5000}
mlflow_workers=${MLFLOW_WORKERS:-2}
ray_temp_dir=${RAY_TEMP_DIR:-/tmp/ray}
start_timeout=${START_TIMEOUT:-120}
export RAY_AUTH_MODE=token
# `ray start --node-ip-address 127.0.0.1` alone still binds the GCS, raylet, agents, client server
# and metrics to this machine's reachable address or to all interfaces (Ray replaces a loopback
# node address with the reachable one); with this set to 0 it keeps 127.0.0.1 and every Ray
# server listens on loopback only.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

ray_pid_file="$state_dir/ray.pid"
mlflow_pid_file="$state_dir/mlflow.pid"
env_file="$state_dir/env.sh"

die() {
    echo "start_local.sh: $*" >&2
    exit 1
}

require() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool not found on PATH (pip install -e . installs ray and mlflow)"
    done
}

# Services start in a session of their own where setsid exists (not on macOS): their pid is then
# also the id of a process group that holds all their children. Both setsid and env exec the
# command, so $! is the service's own pid.
detach="setsid"
command -v setsid >/dev/null 2>&1 || detach="env"

# A TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The pid in a pid file, if that process is alive.
live_pid() {
    local file=$1 pid
    [[ -f "$file" ]] || return 1
    pid=$(<"$file")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

http_ok() {
    curl --silent --fail --max-time 5 --output /dev/null "$1"
}

ray_answers() {
    ray status --address "127.0.0.1:$gcs_port" >/dev/null 2>&1 &&
        ray job list --address "http://127.0.0.1:$dashboard_port" >/dev/null 2>&1
}

mlflow_answers() {
    http_ok "http://127.0.0.1:$mlflow_port/health"
}

# wait_for NAME PID_FILE LOG CHECK: poll CHECK until it succeeds, the process dies, or time out.
wait_for() {
    local name=$1 pid_file=$2 log=$3 check=$4 waited=0
    until "$check"; do
        if ! live_pid "$pid_file" >/dev/null; then
            tail -n 20 "$log" >&2 || true
            die "$name exited during start-up; full log: $log"
        fi
        if ((waited >= start_timeout)); then
            tail -n 20 "$log" >&2 || true
            die "$name did not answer within ${start_timeout}s; log: $log (raise START_TIMEOUT?)"
        fi
        sleep 2
        waited=$((waited + 2))
    done
}

start_ray() {
    local log="$state_dir/ray.log"
    # a token must exist before a token-mode head starts; this creates ~/.ray/auth_token once
    ray get-auth-token --generate >/dev/null 2>&1 ||
        die "could not create a Ray auth token (ray get-auth-token --generate)"
    local args=(
        --head --block
        --port "$gcs_port"
        --dashboard-host 127.0.0.1 --dashboard-port "$dashboard_port"
        --node-ip-address 127.0.0.1
        --temp-dir "$ray_temp_dir"
        --ray-client-server-port "$(free_port)"
        --dashboard-agent-listen-port "$(free_port)"
        --dashboard-agent-grpc-port "$(free_port)"
        --metrics-export-port "$(free_port)"
        --runtime-env-agent-port "$(free_port)"
        --min-worker-port 0 --max-worker-port 0
        --disable-usage-stats
    )
    [[ -n "${NUM_CPUS:-}" ]] && args+=(--num-cpus "$NUM_CPUS")
    [[ -n "${NUM_GPUS:-}" ]] && args+=(--num-gpus "$NUM_GPUS")
    # --block keeps `ray start` in the foreground; SIGTERM to it stops every process it started,
    # which lets `stop` act on this cluster alone (`ray stop` would stop every cluster here).
    "$detach" ray start "${args[@]}" >"$log" 2>&1 </dev/null &
    echo $! >"$ray_pid_file"
    wait_for "Ray head" "$ray_pid_file" "$log" ray_answers
}

start_mlflow() {
    local log="$state_dir/mlflow.log"
    # uvicorn kills a worker that does not answer its supervisor within 5 s, which a busy
    # machine's start-up exceeds; it then restarts them forever: hence the longer health check
    "$detach" mlflow server \
        --backend-store-uri "sqlite:///$state_dir/mlflow.db" \
        --artifacts-destination "$state_dir/mlartifacts" \
        --host 127.0.0.1 --port "$mlflow_port" \
        --workers "$mlflow_workers" \
        --uvicorn-opts "--timeout-worker-healthcheck 120" >"$log" 2>&1 </dev/null &
    echo $! >"$mlflow_pid_file"
    wait_for "MLflow server" "$mlflow_pid_file" "$log" mlflow_answers
}

write_env() {
    cat >"$env_file" <<EOF
# ray job submit talks to the dashboard; token mode reads ~/.ray/auth_token
export RAY_ADDRESS=http://127.0.0.1:$dashboard_port
export RAY_AUTH_MODE=token
export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port
# clients that dial the GCS (ray status, ray.init, ntkdiv sweep --address) keep 127.0.0.1 with
# this, instead of swapping it for this machine's address, where nothing listens
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
# a driver run here without ray job submit: ntkdiv sweep SPEC --address 127.0.0.1:$gcs_port
# dashboard: http://127.0.0.1:$dashboard_port   MLflow UI: http://127.0.0.1:$mlflow_port
EOF
}

cmd_start() {
    mkdir -p "$state_dir"
    state_dir=$(cd "$state_dir" && pwd) # absolute: the sqlite URI and pid files need it
    ray_pid_file="$state_dir/ray.pid" mlflow_pid_file="$state_dir/mlflow.pid"
    env_file="$state_dir/env.sh"
    require ray mlflow curl python3
    if live_pid "$ray_pid_file" >/dev/null || live_pid "$mlflow_pid_file" >/dev/null; then
        echo "already running (state in $state_dir); 'stop' first to restart" >&2
        cat "$env_file" 2>/dev/null || true
        return 0
    fi
    # if either fails to come up, stop whatever did start
    trap 'status=$?; ((status == 0)) || cmd_stop >/dev/null 2>&1' EXIT
    start_ray
    start_mlflow
    trap - EXIT
    write_env
    echo "Ray head and MLflow server are up (state and logs in $state_dir). Export:" >&2
    cat "$env_file"
}

# stop_pid NAME PID_FILE: SIGTERM the process, then its process group, then SIGKILL after 30 s.
stop_pid() {
    local name=$1 pid_file=$2 pid waited=0
    if ! pid=$(live_pid "$pid_file"); then
        rm -f "$pid_file"
        echo "$name: not running"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < 30)); do
        sleep 1
        waited=$((waited + 1))
    done
    # setsid made the pid a process-group leader: this reaches its children too (mlflow's
    # workers, any Ray process left behind), and only them
    kill -TERM -- "-$pid" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pid_file"
    echo "$name: stopped (pid $pid)"
}

cmd_stop() {
    stop_pid "MLflow server" "$mlflow_pid_file"
    stop_pid "Ray head" "$ray_pid_file"
    rm -f "$env_file"
}

cmd_status() {
    local pid
    if pid=$(live_pid "$ray_pid_file"); then echo "Ray head: running (pid $pid)"; else echo "Ray head: stopped"; fi
    if pid=$(live_pid "$mlflow_pid_file"); then echo "MLflow server: running (pid $pid)"; else echo "MLflow server: stopped"; fi
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cat "$env_file" 2>/dev/null || die "not running (no $env_file)" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
