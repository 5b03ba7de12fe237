"""A multi-node Ray cluster on one Linux machine with no shared disk between its nodes.

Each node is a network namespace joined to a bridge by a veth pair, on a private /24 that
``Subnet.up`` creates and ``Subnet.down`` removes; its processes run in a mount namespace of
their own with a fresh tmpfs on /tmp (Ray's sessions, spilled objects, anything a task writes
there) and on /dev/shm (the object store), so no node sees another's files. The bridge holds
address .1: services started there (SeaweedFS S3, MLflow) are reachable over the subnet only.
Needs root (``ip netns``, ``unshare --mount``); every node is stopped by the pid of its own
``ray start --block``, whose process group holds the node's processes.

    net = Subnet.create()              # 10.211.X.0/24, bridge at 10.211.X.1
    head = net.add_node("head", 11)    # namespace with address 10.211.X.11
    pid = net.start_ray(head, ["--head", "--port", "6379", ...])
    net.run_in(pid, ["python", "driver.py"])  # the node's network and mount namespaces
    net.down()                         # stops every node, removes namespaces and links
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster._procs import StackError, alive, descendants, group_pids, spawn, stop, tail
from cluster._services import tool

# each node: fresh /tmp and /dev/shm, then exec the node's command (its pid stays the same)
PRIVATE_TMP = "mount -t tmpfs -o size=4g tmpfs /tmp && mount -t tmpfs -o size=2g tmpfs /dev/shm"


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise StackError(f"ip {' '.join(args)} failed: {done.stderr.strip()} (needs root)")


@dataclass
class Node:
    name: str  # the network namespace
    address: str  # its address on the subnet
    pid: int | None = None  # its `ray start --block`


@dataclass
class Subnet:
    tag: str  # short, unique on the machine: names the bridge, the veths, the namespaces
    prefix: str  # the /24's first three octets, "10.211.X"
    log_dir: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"ntkbr{self.tag}"

    @property
    def gateway(self) -> str:
        """The bridge's address, where the subnet's services listen."""
        return f"{self.prefix}.1"

    @classmethod
    def create(cls, log_dir: Path) -> Subnet:
        """A bridge on a free 10.211.X.0/24 (X from this pid), up, with address .1."""
        routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
        for i in range(250):
            third = (os.getpid() + i) % 250 + 1
            if f"10.211.{third}." not in routes:
                break
        net = cls(tag=f"{third}", prefix=f"10.211.{third}", log_dir=log_dir)
        ip("link", "add", net.bridge, "type", "bridge")
        ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        return net

    def add_node(self, name: str, host: int) -> Node:
        """Namespace ``ntk{tag}{name}`` with ``{prefix}.{host}`` on a veth to the bridge."""
        node = Node(name=f"ntk{self.tag}{name}", address=f"{self.prefix}.{host}")
        outer, inner = f"ntkv{self.tag}h{host}", "eth0"
        ip("netns", "add", node.name)
        self.nodes.append(node)
        ip("link", "add", outer, "type", "veth", "peer", "name", f"ntkp{self.tag}h{host}")
        ip("link", "set", f"ntkp{self.tag}h{host}", "netns", node.name)
        ip("-n", node.name, "link", "set", f"ntkp{self.tag}h{host}", "name", inner)
        ip("link", "set", outer, "master", self.bridge, "up")
        ip("-n", node.name, "addr", "add", f"{node.address}/24", "dev", inner)
        ip("-n", node.name, "link", "set", inner, "up")
        ip("-n", node.name, "link", "set", "lo", "up")
        return node

    def start_ray(
        self, node: Node, args: list[str], env: dict[str, str], timeout: float = 180, tries: int = 2
    ) -> int:
        """``ray start --block ARGS`` in ``node``'s namespaces, waited for until the node is up;
        returns (and keeps) its pid. Ray gives a raylet 30 s (fixed) to register with the GCS,
        which a loaded machine can miss: ``ray start`` then exits, and is tried again."""
        for attempt in range(1, tries + 1):
            pid = self._spawn_ray(node, args, env)
            log = self.log_dir / f"{node.name}.log"
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if "Ray runtime started" in log.read_text(errors="replace"):
                    return pid
                if not alive(pid):
                    break
                time.sleep(1)
            stop(pid, timeout=10)
            if attempt == tries:
                raise StackError(f"Ray on {node.name} did not start; log {log}:\n{tail(log)}")
        raise AssertionError("unreachable")

    def _spawn_ray(self, node: Node, args: list[str], env: dict[str, str]) -> int:
        argv = [
            "ip", "netns", "exec", node.name, "unshare", "--mount", "--propagation", "private",
            "sh", "-c", f'{PRIVATE_TMP} && exec "$@"', node.name,
            tool("ray"), "start", "--block", "--disable-usage-stats",
            "--node-ip-address", node.address, *args,
        ]  # fmt: skip
        log = self.log_dir / f"{node.name}.log"

        node.pid = spawn(argv, log, env=env)
        return node.pid

    def run_in(self, node: Node, argv: list[str], **popen) -> subprocess.Popen:
        """``argv`` in the network and mount namespaces of ``node``'s running Ray."""
        if node.pid is None:
            raise StackError(f"node {node.name} runs no Ray")
        enter = ["nsenter", "--target", str(node.pid), "--net", "--mount", "--"]
        return subprocess.Popen(enter + argv, **popen)

    def kill(self, node: Node) -> list[int]:
        """SIGKILL every process of ``node``: its ray start's process group and every process
        below it (Ray's workers run in sessions of their own, outside that group; a worker
        left alive would finish its task after its node "died"). Returns the pids."""
        if not node.pid:
            return []
        pids = sorted(set(group_pids(node.pid)) | set(descendants(node.pid)))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def down(self) -> None:
        """Stop every node by its pid, then remove the namespaces (their veths go with them)
        and the bridge."""
        for node in reversed(self.nodes):
            stop(node.pid, timeout=15)
        for node in self.nodes:
            subprocess.run(["ip", "netns", "del", node.name], capture_output=True)
            host = node.address.rsplit(".", 1)[1]
            subprocess.run(["ip", "link", "del", f"ntkv{self.tag}h{host}"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
