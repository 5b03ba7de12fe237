"""A local Ray cluster made by ``ray.init`` (the sweep's own, sweep/_ray.py) listens on loopback
only, checked with ``ss -ltnp`` while a task has run: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER is 0 when
``ray`` is imported (Ray's documented environment variable; no private argument or constant).
The sweep's cluster also states Ray's default authentication mode (RAY_AUTH_MODE=token), so Ray
prints no notice that it chose it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster._procs import descendants, is_loopback, listening

REPO = Path(__file__).parents[2]

# the sweep's local ray.init call, after one of the two ways of keeping the node on loopback
SCRIPT = """
import json, logging, os, sys
if sys.argv[1] == "env":
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported
if sys.argv[1] == "sweep":  # what `ntkdiv sweep` without --address does, then its connect
    from sweep._runner import ray_adapter
    ray_adapter(None).connect(None, 1)
import ray
if sys.argv[1] == "env":
    ray.init(address="local", num_cpus=1, include_dashboard=False,
             logging_level=logging.WARNING)
node_ip = ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote())
print(json.dumps({"node_ip": node_ip}), flush=True)
sys.stdin.readline()
ray.shutdown()
"""


def local_cluster_sockets(mode: str) -> tuple[str, list[tuple[str, int, int]], str]:
    """(node IP, listening sockets of the driver and every process below it, the driver's
    stderr) for ``mode``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), mode], cwd=REPO, env=env, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-3000:]
        node_ip = json.loads(line)["node_ip"]
        sockets = listening(set(descendants(proc.pid)))
        _, err = proc.communicate("\n", timeout=120)  # the script shuts Ray down and exits
    finally:
        if proc.poll() is None:
            proc.kill()
    return node_ip, sockets, err


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("mode", ["env", "sweep"])
def test_local_ray_init_listens_on_loopback_only(mode):
    node_ip, sockets, err = local_cluster_sockets(mode)
    assert node_ip == "127.0.0.1"
    # Ray's notice on the mode it picked: printed for a bare ray.init, not for the sweep's
    assert ("Token authentication is enabled" in err) == (mode == "env"), err[-3000:]
    assert len({pid for _, _, pid in sockets}) >= 3  # gcs, raylet, agents, the task's worker
    exposed = [s for s in sockets if not is_loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"
