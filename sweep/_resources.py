"""What each trial asks Ray for: CPUs, and a GPU share sized from its memory estimate."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import core
from core import ConfigError, TrialConfig, trial_id

from ._spec import SweepSpec


def plan_resources(
    spec: SweepSpec, configs: list[TrialConfig], cluster: Any, note: Callable[[str], None]
) -> dict[str, tuple[float, float]]:
    """trial_id -> (num_cpus, num_gpus) for each trial, checked against the cluster.

    Args:
        cluster: a ``sweep._ray.Cluster`` (local or not, the CPUs and GPUs it offers now).
        note: prints one line for the user (a trial bigger than a GPU, a cluster without GPUs).
    """
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
