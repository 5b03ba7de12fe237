"""What each trial asks Ray for: CPUs, a GPU share sized from its memory estimate, and for a CPU
trial its host memory (Ray's ``memory`` resource), so that a node never starts more trials than
fit in its memory together."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import core
from core import ConfigError, TrialConfig, trial_id

from ._spec import SweepSpec


@dataclass(frozen=True)
class Request:
    """What one trial's task asks Ray for."""

    cpus: float
    gpus: float
    memory: int = 0  # bytes of the node's memory (a CPU trial's estimate); 0: none reserved


def plan_resources(
    spec: SweepSpec, configs: list[TrialConfig], cluster: Any, note: Callable[[str], None]
) -> dict[str, Request]:
    """trial_id -> its :class:`Request` for each trial, checked against the cluster.

    Args:
        cluster: a ``sweep._ray.Cluster`` (local or not, the CPUs, GPUs and largest node's
            memory it offers now).
        note: prints one line for the user (a trial bigger than a GPU or than any node's
            memory, a cluster without GPUs).
    """
    shares = _gpu_shares(spec, configs, cluster, note)
    plan: dict[str, Request] = {}
    too_big: list[tuple[int, str, int]] = []  # (estimate, trial_id, width) beyond every node
    for c in configs:
        tid = trial_id(c)
        cpus, gpus = shares[tid]
        need = 0 if gpus > 0 else core.cpu_memory_bytes(c)  # a GPU trial reserves no memory
        if need > cluster.memory:
            too_big.append((need, tid, c.model.width))
        plan[tid] = Request(cpus, gpus, int(min(need, cluster.memory)))
    if too_big:
        need, tid, width = max(too_big)
        note(
            f"{len(too_big)} trial(s) (the largest: {tid}, width {width}) need about "
            f"{need / 2**30:.1f} GiB of memory, more than the {cluster.memory / 2**30:.1f} GiB "
            "Ray offers on its largest node: each runs alone there and may run out of memory"
        )
    return plan


def _gpu_shares(
    spec: SweepSpec, configs: list[TrialConfig], cluster: Any, note: Callable[[str], None]
) -> dict[str, tuple[float, float]]:
    """trial_id -> (num_cpus, num_gpus), checked against the cluster."""
    res = spec.resources
    cpus = res.cpus_per_trial
    if cluster.local and cpus > cluster.cpus:
        raise ConfigError(
            f"sweep spec field 'resources.cpus_per_trial' = {cpus:g}: the local cluster has "
            f"{cluster.cpus:g} CPUs; lower it"
        )
    gpus = res.gpus_per_trial
    if gpus == "auto":
        if cluster.gpus == 0 and (cluster.local or res.gpu_memory_gb is None):
            return {trial_id(c): (cpus, 0.0) for c in configs}  # no GPU: trials run on CPU
        memory = _gpu_memory(spec)
        return {trial_id(c): (cpus, _auto_share(c, memory, note)) for c in configs}
    if gpus > 0 and cluster.gpus == 0:
        if cluster.local:
            raise ConfigError(
                f"sweep spec field 'resources.gpus_per_trial' = {gpus:g}: the local cluster has "
                "no GPU; use 0 or auto"
            )
        note("the Ray cluster offers no GPU now: trials wait until an autoscaler adds GPU nodes")
    return {trial_id(c): (cpus, float(gpus)) for c in configs}


def _gpu_memory(spec: SweepSpec) -> int:
    """Bytes of one GPU: the spec's ``gpu_memory_gb``, else read on a GPU worker."""
    from . import _ray

    gb = spec.resources.gpu_memory_gb
    memory = int(gb * 2**30) if gb else _ray.probe_gpu_memory()
    if memory is None:
        raise ConfigError(
            "sweep spec field 'resources.gpus_per_trial' = 'auto': could not read the GPU "
            "memory (no GPU worker with CUDA answered); set resources.gpu_memory_gb"
        )
    return memory


def _auto_share(config: TrialConfig, memory: int, note: Callable[[str], None]) -> float:
    estimate = core.gpu_memory_bytes(config)
    if estimate > memory:
        note(f"trial {trial_id(config)} (width {config.model.width}) needs about "
             f"{estimate / 2**30:.1f} GiB, more than a GPU's {memory / 2**30:.1f} GiB: "
             "it gets a whole GPU and may run out of memory")  # fmt: skip
    return gpu_fraction(estimate, memory)


def gpu_fraction(estimate_bytes: int, gpu_bytes: int) -> float:
    """The GPU share to request: estimate / memory, rounded up to 1/100, within [0.01, 1].

    Ray never places shares summing above 1 on a GPU, so rounding up keeps the summed estimates
    of the trials packed on one GPU within its memory (``core.gpu_memory_bytes`` estimates).
    """
    share = math.ceil(100 * estimate_bytes / gpu_bytes - 1e-9) / 100
    return min(1.0, max(0.01, share))
