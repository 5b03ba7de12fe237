"""The driver of tests/cluster/test_multinode.py, run inside the head node's namespaces.

argv: GCS address, S3 key prefix (a fresh one per run). Environment: AWS_* for the subnet's S3,
MLFLOW_TRACKING_URI for its MLflow server, RAY_AUTH_MODE=token. Writes one JSON object per
line to stdout, after "report: "; after ``{"running_on": ...}`` it waits for a line on stdin
(the test kills that node meanwhile), then reports where Ray ran the retried task.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

import ray
from pyarrow import fs

S3_PREFIX = "ntkdiv/multinode"
REPORT = "report: "  # starts each line the test reads


def s3():
    """The S3 store from the standard AWS variables (AWS_ENDPOINT_URL etc.)."""
    return fs.FileSystem.from_uri("s3://ntkdiv")[0]


def say(**record) -> None:
    print(REPORT + json.dumps(record), flush=True)


@ray.remote(num_cpus=0)
def where() -> str:
    return ray.util.get_node_ip_address()


@ray.remote(num_cpus=0)
def write_tmp(name: str) -> str:
    with open(f"/tmp/{name}", "w") as f:
        f.write("private")
    return ray.util.get_node_ip_address()


@ray.remote(num_cpus=0)
def sees_tmp(name: str) -> bool:
    import os

    return os.path.exists(f"/tmp/{name}")


@ray.remote(num_cpus=0)
def put_object(key: str, data: bytes) -> str:
    with s3().open_output_stream(key) as f:
        f.write(data)
    return ray.util.get_node_ip_address()


@ray.remote(num_cpus=0)
def get_object(key: str) -> tuple[str, bytes]:
    return ray.util.get_node_ip_address(), s3().open_input_stream(key).read()


@ray.remote(num_cpus=0)
def log_run(text: str) -> tuple[str, str, str]:
    """An MLflow run with one artifact, through the subnet's server (its artifact proxy)."""
    import os
    import tempfile

    import mlflow

    mlflow.set_experiment("multinode")
    with mlflow.start_run() as run:
        path = os.path.join(tempfile.mkdtemp(), "note.txt")
        with open(path, "w") as f:
            f.write(text)
        mlflow.log_artifact(path)
    return ray.util.get_node_ip_address(), run.info.experiment_id, run.info.run_id


@ray.remote(num_cpus=1, resources={"worker": 1}, max_retries=3)
def long_task(prefix: str) -> tuple[str, int]:
    """Marks each attempt in S3; the first one then sleeps until its node is killed."""
    node = ray.util.get_node_ip_address()
    store = s3()
    attempts = [i for i in store.get_file_info(fs.FileSelector(prefix, allow_not_found=True))]
    with store.open_output_stream(f"{prefix}/attempt-{len(attempts)}-{node}") as f:
        f.write(b"")
    if not attempts:
        time.sleep(600)
    return node, len(attempts) + 1


def main() -> None:
    address, run = sys.argv[1], sys.argv[2]
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    deadline = time.monotonic() + 120
    while len([n for n in ray.nodes() if n["Alive"]]) < 3 and time.monotonic() < deadline:
        time.sleep(1)
    say(nodes=sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]))
    on = {w: {"resources": {w: 0.01}} for w in ("w1", "w2")}
    say(spread={w: ray.get(where.options(**on[w]).remote()) for w in on})

    name = f"probe-{uuid.uuid4().hex}"
    writer = ray.get(write_tmp.options(**on["w1"]).remote(name))
    seen = {w: ray.get(sees_tmp.options(**on[w]).remote(name)) for w in on}
    say(tmp={"writer": writer, "seen": seen})

    key, data = f"{S3_PREFIX}/{run}/object.bin", uuid.uuid4().bytes * 1000
    put_on = ray.get(put_object.options(**on["w1"]).remote(key, data))
    got_on, got = ray.get(get_object.options(**on["w2"]).remote(key))
    say(s3={"put_on": put_on, "read_on": got_on, "same": got == data, "key": key})

    text = uuid.uuid4().hex
    node, exp, run_id = ray.get(log_run.options(**on["w2"]).remote(text))
    say(mlflow={"node": node, "experiment": exp, "run": run_id, "text": text})

    prefix = f"{S3_PREFIX}/{run}/attempts"
    ref = long_task.remote(prefix)
    store = s3()
    while True:
        marks = store.get_file_info(fs.FileSelector(prefix, allow_not_found=True))
        if marks:
            break
        time.sleep(0.5)
    say(running_on=marks[0].base_name.split("-", 2)[2])
    sys.stdin.readline()
    t0 = time.monotonic()
    node, attempt = ray.get(ref, timeout=240)
    say(retried_on=node, attempt=attempt, seconds=round(time.monotonic() - t0, 1))


if __name__ == "__main__":
    main()
