"""The one module that imports Ray: connecting, the trial task, submitting and waiting.

Trials are plain Ray *tasks*, not Ray Tune trials: a warm task costs milliseconds, while Tune
measured about 3 s per trial here (DESIGN §4), and small-width trials last seconds.

Failures come in two kinds:
- system failures (a worker or node dies): Ray re-executes the task up to ``max_retries`` times,
  and the new attempt resumes from the trial's checkpoint in the store;
- exceptions in trial code: caught in the task, recorded as a ``failed`` summary with the
  traceback, never retried in the same sweep run (``retry_exceptions=False``);
- an OSError (the store: a full disk, an object store that stopped answering) is the store's
  failure, not the trial's: the task raises it, the driver stops the sweep with one line
  (:func:`result` raises it), and the trial's own retries are untouched.

Every attempt is recorded in ``<trial_dir>/attempts.json`` (start, end, node, pid, status; see
``core.store``), which the driver reads to count retries and which tests read to see when trials
ran.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ray
import ray.exceptions

from core import ConfigError, first_line
from core import store as st

from ._prepare import check_reachable

if TYPE_CHECKING:
    from ._resources import Request

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours of Ray's task names in its error text
PROBE_TIMEOUT_S = 120.0  # waiting for a GPU node to answer (an autoscaler may be adding one)
PROGRESS_EVERY_S = 30.0  # how often a running trial records how far it got (attempts.json)


class SystemFailure(Exception):
    """A trial's task died for good (node or worker lost after every retry, or cancelled)."""


# --- the trial task ------------------------------------------------------------------------


def execute_trial(
    config_dict: dict[str, Any], trial_dir: str, threads: int, monitor: Any = None
) -> dict[str, Any]:
    """The body of a trial task: ``core.run_trial(config, trial_dir, resume=True)``.

    Args:
        config_dict: the full trial config (``TrialConfig.model_dump``).
        trial_dir: ``<storage>/<sweep>/trials/<trial_id>``: an absolute path or a URI.
        threads: torch threads; fixed so that a resumed run reduces in the same order.
        monitor: optional early-stopping callable handed to run_trial (the Optuna search).

    Returns:
        The summary; trial-code exceptions become a ``failed`` summary with the traceback.
    """
    gpus = [str(g) for g in ray.get_gpu_ids()]
    if not gpus:  # no GPU share: device "auto" must not pick a GPU that another trial holds
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    from core import config_from_dict, run_trial

    config = config_from_dict(config_dict)
    tdir = st.locate(trial_dir)
    tdir.mkdir()
    index = st.begin_attempt(tdir, node=ray.get_runtime_context().get_node_id(),
                             node_ip=ray.util.get_node_ip_address(), gpus=gpus)  # fmt: skip
    torch.set_num_threads(threads)
    logging.getLogger("ntkdiv").setLevel(logging.ERROR)  # the driver printed the lr warnings
    t0 = time.monotonic()
    try:
        summary = run_trial(config, tdir, resume=True,
                            monitor=AttemptProgress(tdir, index, monitor))  # fmt: skip
    except OSError:  # the store (a full disk, an object store down): a system failure
        raise
    except Exception:  # trial code: recorded, the sweep goes on
        summary = st.failed_summary(config, tdir, traceback.format_exc(), time.monotonic() - t0)
    st.end_attempt(tdir, index, summary["status"], run_s=time.monotonic() - t0)
    return summary


class AttemptProgress:
    """The monitor a trial task hands to ``run_trial``: at most every ``PROGRESS_EVERY_S`` it
    records the last tracked step and t in the trial's open attempt (the driver's progress line
    shows them), then asks ``inner`` (the search's pruning monitor, if any) whether to stop."""

    def __init__(self, tdir: st.StorePath, index: int, inner: Any = None) -> None:
        self.tdir, self.index, self.inner = tdir, index, inner
        self.last = -math.inf

    def __call__(self, rows: dict[str, list[Any]]) -> bool:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            st.attempt_progress(self.tdir, self.index, int(rows["step"][-1]),
                                float(rows["t"][-1]))  # fmt: skip
        return bool(self.inner(rows)) if self.inner is not None else False


_cpu_task = ray.remote(execute_trial)
# A GPU worker keeps its CUDA context and cached blocks after a task; one task per worker process
# returns them, so packed shares stay honest (Ray's own default for GPU tasks).
_gpu_task = ray.remote(max_calls=1)(execute_trial)


def store_env(trial_dir: st.StorePath) -> dict[str, Any]:
    """Task options that let a worker reach an object store: the driver's AWS variables.

    A job's tasks get the job's runtime environment, not the driver's process environment; nodes
    that carry their own credentials (instance roles, their own variables) need none of this.
    """
    env = {k: os.environ[k] for k in st.AWS_VARIABLES if os.environ.get(k)}
    return {"runtime_env": {"env_vars": env}} if env and not trial_dir.local else {}


def submit(
    config_dict: dict[str, Any],
    trial_dir: st.StorePath,
    request: Request,
    *,
    retries: int,
    monitor: Any = None,
    name: str = "trial",
) -> Any:
    """Start one trial task; returns an opaque handle for :func:`wait` and :func:`result`.

    ``request.memory`` is reserved as Ray's ``memory`` resource: a node starts the task only
    while the reservations of the tasks it runs leave room for it.
    """
    task = _gpu_task if request.gpus > 0 else _cpu_task
    threads = max(1, int(request.cpus))
    memory = {"memory": request.memory} if request.memory > 0 else {}
    return task.options(
        num_cpus=request.cpus, num_gpus=request.gpus, max_retries=retries,
        retry_exceptions=False, name=name, **memory, **store_env(trial_dir),
    ).remote(config_dict, str(trial_dir), threads, monitor)  # fmt: skip


def wait(handles: list[Any], timeout_s: float) -> tuple[list[Any], list[Any]]:
    """Split handles into (finished, pending), waiting up to ``timeout_s`` for one to finish."""
    if not handles:
        return [], []
    return ray.wait(handles, num_returns=1, timeout=timeout_s, fetch_local=True)


def result(handle: Any) -> dict[str, Any]:
    """The summary of a finished task.

    Raises:
        SystemFailure: the task died for good (one line saying how).
        OSError: the task raised one (the store failed under it): one line, the error and the
            task.
    """
    try:
        return ray.get(handle)
    except ray.exceptions.RayError as err:
        lines = [ANSI.sub("", ln).strip() for ln in str(err).strip().splitlines()]
        lines = [ln for ln in lines if ln]
        if isinstance(err, ray.exceptions.RayTaskError) and isinstance(err, OSError):
            # the task raised an OSError (Ray keeps its type): the store failed under the trial,
            # and the driver stops as when its own write fails (kept: what finished)
            where = f"{lines[-1]}, in {lines[0]}" if lines else "OSError in a trial task"
            raise OSError(where) from None
        raise SystemFailure(f"{type(err).__name__}: {lines[0] if lines else ''}") from None


# --- the cluster ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """What the driver connected to."""

    address: str  # the GCS address, or "local" for a cluster started here
    local: bool  # started by this process (dies with it); no autoscaler
    cpus: float  # CPUs offered now
    gpus: float  # GPUs offered now (an autoscaling cluster may add more)
    memory: float = math.inf  # bytes of Ray's ``memory`` resource on its largest live node


def connect(address: str | None = None, num_cpus: int | None = None,
            num_gpus: int | None = None) -> Cluster:  # fmt: skip
    """Connect to ``address`` (else ``RAY_ADDRESS``), or start a local cluster.

    A local cluster is started explicitly (``address="local"``), never by attaching to whatever
    cluster the machine ran last; it dies with this process, and listens on 127.0.0.1 when
    ``sweep._runner.ray_adapter`` imported Ray.

    Raises:
        ConfigError: nothing answers at the address, or Ray refuses the connection.
    """
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target is not None:
        check_reachable(target)
        try:
            ray.init(address=target, logging_level=logging.WARNING)
        except Exception as err:  # noqa: BLE001 - Ray raises several types; one line for the user
            raise ConfigError(
                f"--address / RAY_ADDRESS = {target!r}: cannot connect ({first_line(err)}); "
                "with token "
                "authentication set RAY_AUTH_MODE=token"
            ) from None
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, num_gpus=num_gpus,
                 include_dashboard=False, logging_level=logging.WARNING)  # fmt: skip
    res = ray.cluster_resources()
    memory = max((float(node["Resources"].get("memory", 0.0)) for node in ray.nodes()
                  if node.get("Alive")), default=0.0)  # fmt: skip
    return Cluster(target or "local", target is None, float(res.get("CPU", 0.0)),
                   float(res.get("GPU", 0.0)), memory or math.inf)  # fmt: skip


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def _probe() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


def probe_gpu_memory(timeout_s: float = PROBE_TIMEOUT_S) -> int | None:
    """Total memory of a GPU of the cluster, in bytes, read by a tiny task on a GPU worker.

    Returns None when no GPU worker answers within ``timeout_s`` or its GPU has no CUDA (GPUs
    declared to Ray without devices, as in tests).
    """
    ref = ray.remote(_probe).options(num_cpus=0, num_gpus=0.01, max_retries=0).remote()
    ready, _ = ray.wait([ref], timeout=timeout_s)
    if not ready:
        ray.cancel(ref, force=True)
        return None
    return ray.get(ref)
