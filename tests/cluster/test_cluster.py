"""cluster/: the launcher config, the RayJob, the runtime env, start_local.sh and the commands
they (and docs/cluster.md) tell people to run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.runtime_env import RuntimeEnv

from cluster._procs import descendants, is_loopback, listening
from ntkdiv.cli import build_parser

REPO = Path(__file__).parents[2]
CLUSTER = REPO / "cluster"
SCRIPT = CLUSTER / "start_local.sh"
TORCH_PIN = "torch==2.13.0"
GPU_INSTANCE_FAMILIES = ("p3", "p4", "p5", "p6", "g4", "g5", "g6")  # AWS GPU instance families
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


# --- ntkdiv commands quoted in the files --------------------------------------------------------

SUBCOMMANDS = "run|ntk|sweep|sync|rerun|search|aggregate|bench|docs"
# not preceded by a backtick: `ntkdiv sweep` in prose names the command, it is no command line
COMMAND = re.compile(rf"(?<![\w/.~`-])ntkdiv (?:{SUBCOMMANDS})\b[^;|&`)]*")


def shell_lines(text: str) -> list[str]:
    """Logical lines: leading comment markers removed, backslash continuations joined."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = re.sub(r"^\s*#\s?", "", raw).rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return lines


def strings_in(node) -> list[str]:
    """Every string value of a parsed YAML document (entrypoints, command lists)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings_in(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings_in(v)]
    return [node] if isinstance(node, str) else []


def commands_in(text: str) -> list[str]:
    lines = shell_lines(text)
    return [" ".join(m.group(0).split()) for line in lines for m in COMMAND.finditer(line)]


def fenced_blocks(markdown: str) -> str:
    return "\n".join(re.findall(r"```[a-z]*\n(.*?)```", markdown, flags=re.S))


def quoted_commands() -> list[tuple[str, str]]:
    """(file, command) for every ntkdiv command in the cluster files and the doc's code blocks.

    start_local.sh is left out: it prints a template (``ntkdiv sweep SPEC --address ...``).
    """
    found = []
    for name in ("ray-cluster.yaml", "rayjob.yaml", "runtime_env.yaml"):
        text = (CLUSTER / name).read_text()
        values = "\n".join(strings_in(yaml.safe_load(text)))
        found += [(name, c) for c in commands_in(text) + commands_in(values)]
    doc = fenced_blocks((REPO / "docs" / "cluster.md").read_text())
    found += [("docs/cluster.md", c) for c in commands_in(doc)]
    return found


def test_every_file_quotes_an_ntkdiv_command():
    files = {name for name, _ in quoted_commands()}
    assert files == {"ray-cluster.yaml", "rayjob.yaml", "runtime_env.yaml", "docs/cluster.md"}


QUOTED = quoted_commands()


@pytest.mark.parametrize(
    "where,command", QUOTED, ids=[f"{w}:{i}" for i, (w, _) in enumerate(QUOTED)]
)
def test_quoted_command_parses_and_its_files_exist(where, command):
    argv = shlex.split(command, comments=True)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `{command}` does not parse with the ntkdiv CLI")
    for field in ("spec", "config"):
        path = getattr(args, field, None)
        if path is not None:
            assert (REPO / path).is_file(), f"{where}: `{command}` names {path}, not in the repo"
    storage = getattr(args, "storage", None)
    if storage is not None and args.command == "search":  # Optuna's storage, a database URL
        assert storage.startswith(("postgresql://", "sqlite:///", "$OPTUNA_STORAGE")), storage
    elif storage is not None:  # a relative store would land in the job's temporary directory
        absolute = ("/", "$PWD/", "s3://", "$NTKDIV_STORE")
        assert storage.startswith(absolute), f"{where}: --storage {storage} is relative"


# --- the cluster launcher -----------------------------------------------------------------------


def test_launcher_config_passes_rays_own_validation():
    validate_config(prepare_config(load("ray-cluster.yaml")))


def test_launcher_has_a_cpu_head_and_gpu_workers():
    cfg = load("ray-cluster.yaml")
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "trials must not land on the head"
    assert not head["node_config"]["InstanceType"].startswith(GPU_INSTANCE_FAMILIES)
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    gpu = [t for t in workers if t["node_config"]["InstanceType"].startswith(GPU_INSTANCE_FAMILIES)]
    assert gpu and all(t["max_workers"] > 0 for t in gpu)
    assert cfg["max_workers"] >= max(t["max_workers"] for t in gpu)


def test_launcher_pins_torch_and_ray_and_installs_the_project():
    cfg = load("ray-cluster.yaml")
    for key in ("head_setup_commands", "worker_setup_commands"):
        commands = " ".join(cfg[key])
        assert f"install --quiet {TORCH_PIN}" in commands, key
        assert f'"ray[default]=={ray.__version__}"' in commands, key
        assert "-e ~/ntkdiv" in commands, key
    assert cfg["file_mounts"]["~/ntkdiv"] == "."


def test_launcher_enables_token_authentication_on_every_node():
    cfg = load("ray-cluster.yaml")
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token ray start" in c for c in start), key


def test_launcher_commands_are_valid_bash():
    cfg = load("ray-cluster.yaml")
    keys = [k for k in cfg if k.endswith("_commands")]
    for command in (c for k in keys for c in cfg[k]):
        result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0, f"{command!r}: {result.stderr}"


# --- the KubeRay RayJob -------------------------------------------------------------------------

RAYJOB_SPEC_FIELDS = {  # RayJobSpec, KubeRay v1.5
    "activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint",
    "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "jobId", "managedBy",
    "metadata", "rayClusterSpec", "runtimeEnvYAML", "shutdownAfterJobFinishes", "submissionMode",
    "submitterConfig", "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished",
}  # fmt: skip
RAYCLUSTER_SPEC_FIELDS = {  # RayClusterSpec, KubeRay v1.5
    "authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions",
    "headGroupSpec", "headServiceAnnotations", "managedBy", "rayVersion", "suspend",
    "workerGroupSpecs",
}  # fmt: skip


def test_rayjob_is_a_rayjob_that_shuts_down():
    job = load("rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert DNS_1123.match(job["metadata"]["name"])
    assert set(job["spec"]) <= RAYJOB_SPEC_FIELDS
    assert job["spec"]["entrypoint"].startswith("ntkdiv sweep sweeps/width_scaling.yaml")
    assert job["spec"]["shutdownAfterJobFinishes"] is True


def test_rayjob_cluster_has_a_gpu_worker_group_and_token_auth():
    cluster = load("rayjob.yaml")["spec"]["rayClusterSpec"]
    assert set(cluster) <= RAYCLUSTER_SPEC_FIELDS
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["authOptions"] == {"mode": "token"}
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = cluster["workerGroupSpecs"]
    for group in groups:
        assert DNS_1123.match(group["groupName"])
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    limits = [c["resources"]["limits"] for g in groups for c in g["template"]["spec"]["containers"]]
    assert any(lim.get("nvidia.com/gpu", 0) > 0 for lim in limits)


def test_rayjob_ray_start_params_are_strings():
    """KubeRay's rayStartParams is map[string]string: a bare 0 would be rejected."""
    cluster = load("rayjob.yaml")["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())


def test_rayjob_images_carry_the_ray_version():
    cluster = load("rayjob.yaml")["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
    assert images and all(cluster["rayVersion"] in image for image in images)


def test_rayjob_runtime_env_is_a_valid_runtime_env():
    runtime_env = yaml.safe_load(load("rayjob.yaml")["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/home/ray/ntkdiv"  # the checkout inside the image
    RuntimeEnv(**{**runtime_env, "working_dir": str(REPO)})  # validation wants it to exist here
    assert "RAY_AUTH_MODE" not in runtime_env.get("env_vars", {})


# --- the runtime env ----------------------------------------------------------------------------


def test_runtime_env_file_is_a_valid_runtime_env():
    runtime_env = load("runtime_env.yaml")
    RuntimeEnv(**runtime_env)
    assert runtime_env["working_dir"] == "."
    assert "pip" not in runtime_env, "nodes have the dependencies; a pip list rebuilds them per job"
    assert "RAY_AUTH_MODE" not in runtime_env["env_vars"], "read at process start, not per job"


# --- start_local.sh -----------------------------------------------------------------------------


def run_script(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_start_local_is_valid_bash_with_strict_mode():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_start_local_help_and_bad_subcommand():
    assert run_script("--help").returncode == 0
    result = run_script("restart")
    assert result.returncode == 2 and "start" in result.stderr


def test_start_local_status_without_a_cluster(tmp_path):
    env = {**os.environ, "NTKDIV_LOCAL_DIR": str(tmp_path)}
    result = run_script("status", env=env)
    assert result.returncode == 0
    assert "Ray head: stopped" in result.stdout and "MLflow server: stopped" in result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_env(tmp_path):
    """Environment for a private cluster: own state dir, short Ray temp dir, free ports."""
    ray_tmp = tempfile.mkdtemp(prefix="ntkr", dir="/tmp")  # Unix socket paths must stay short
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        NTKDIV_LOCAL_DIR=str(tmp_path / "state"),
        RAY_TEMP_DIR=ray_tmp,
        RAY_GCS_PORT=str(free_port()),
        RAY_DASHBOARD_PORT=str(free_port()),
        MLFLOW_PORT=str(free_port()),
        NUM_CPUS="2",
        START_TIMEOUT="420",  # a loaded 2-core machine needs minutes for MLflow's imports
    )
    yield env
    run_script("stop", env=env, timeout=120)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_text():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def ray_cli(env: dict, *args: str, timeout: float = 120):
    ray_bin = Path(sys.executable).parent / "ray"
    return subprocess.run([str(ray_bin), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_start_local_starts_both_and_stop_stops_them(local_env):
    env = local_env
    started = run_script("start", env=env, timeout=500)
    assert started.returncode == 0, started.stderr
    assert f"export RAY_ADDRESS=http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}" in started.stdout
    assert "export RAY_AUTH_MODE=token" in started.stdout
    assert "export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0" in started.stdout
    assert f"export MLFLOW_TRACKING_URI=http://127.0.0.1:{env['MLFLOW_PORT']}" in started.stdout

    health = f"http://127.0.0.1:{env['MLFLOW_PORT']}/health"
    with urllib.request.urlopen(health, timeout=10) as response:
        assert response.status == 200 and response.read().strip() == b"OK"
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in started.stdout.splitlines()
        if line.startswith("export ")
    )
    client = {**env, **exports}  # what eval "$(start_local.sh env)" sets
    status = ray_cli(client, "status", "--address", f"127.0.0.1:{env['RAY_GCS_PORT']}")
    assert status.returncode == 0, status.stderr
    assert "2.0 CPU" in status.stdout

    dashboard = f"http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}"
    job = ray_cli(client, "job", "submit", "--address", dashboard, "--", "echo", "job-ran")
    assert job.returncode == 0 and "job-ran" in job.stdout, job.stdout + job.stderr
    refused = ray_cli(env, "job", "submit", "--address", dashboard, "--", "echo", "no")
    assert refused.returncode != 0 and "authentication token" in refused.stdout + refused.stderr

    # every Ray and MLflow server, workers included, listens on loopback only (`ss -ltnp`)
    state = Path(env["NTKDIV_LOCAL_DIR"])
    pids = {p for f in ("ray.pid", "mlflow.pid") for p in descendants(int((state / f).read_text()))}
    sockets = listening(pids)
    assert int(env["RAY_GCS_PORT"]) in {port for _, port, _ in sockets}
    assert int(env["MLFLOW_PORT"]) in {port for _, port, _ in sockets}
    assert len({pid for _, _, pid in sockets}) >= 4  # gcs, raylet, agents, dashboard, mlflow
    exposed = [s for s in sockets if not is_loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"

    stopped = run_script("stop", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert processes_mentioning(env["RAY_TEMP_DIR"]) == []
    assert processes_mentioning(env["NTKDIV_LOCAL_DIR"]) == []
    assert "Ray head: stopped" in run_script("status", env=env).stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_start_local_cleans_up_when_mlflow_cannot_start(local_env):
    """A port already in use: start fails, names the service, and leaves nothing running."""
    env = local_env
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["MLFLOW_PORT"])))
        blocker.listen()
        started = run_script("start", env=env, timeout=400)
    assert started.returncode == 1
    assert "MLflow server" in started.stderr
    assert processes_mentioning(env["RAY_TEMP_DIR"]) == []
    assert processes_mentioning(env["NTKDIV_LOCAL_DIR"]) == []


# --- the MLflow server on Kubernetes ------------------------------------------------------------


def test_mlflow_manifest_runs_the_team_server_behind_a_network_policy():
    from mlflow.cli import server

    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "mlflow.yaml").read_text())}
    assert set(docs) == {"Namespace", "Secret", "Deployment", "Service", "NetworkPolicy"}
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mlflow"] and container["args"][0] == "server"
    params = server.make_context("server", container["args"][1:]).params  # rejects a bad flag
    assert params["backend_store_uri"] == "$(MLFLOW_BACKEND_STORE_URI)"
    assert params["artifacts_destination"].startswith("s3://") and params["serve_artifacts"]
    assert "mlflow.mlflow.svc.cluster.local:5000" in params["allowed_hosts"].split(",")
    env = {e["name"] for e in container["env"]}
    assert {"MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env
    secret = docs["Secret"]["stringData"]
    assert secret["backend-store-uri"].startswith("postgresql://")
    service = docs["Service"]
    assert (service["metadata"]["name"], service["metadata"]["namespace"]) == ("mlflow", "mlflow")
    assert service["spec"]["ports"][0]["port"] == int(params["port"]) == 5000
    # the URI the RayJob logs to is this Service
    assert "http://mlflow.mlflow.svc.cluster.local:5000" in (CLUSTER / "rayjob.yaml").read_text()
    rule = docs["NetworkPolicy"]["spec"]["ingress"][0]["from"][0]
    assert rule["podSelector"]["matchLabels"] == {"ray.io/node-type": "head"}
