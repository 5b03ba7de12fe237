"""Sizes of a trial: parameter count, memory estimates, and the limits checked before it starts.

Every limit is checked when a :class:`TrialConfig` is validated, so that a config too large for
any machine fails with one line naming the field, before data or networks are built:

- ``model.depth`` <= MAX_DEPTH (core/_arch.py): one kernel recursion step and one net layer each;
- ``memory_bytes(config)`` <= MAX_TRIAL_BYTES: parameters (width, depth, input dimension) and
  n x n kernels (data.n + data.n_probe) together;
- seeds in [0, 2^63 - 1] (core/_config.py).

Where a trial will run, :func:`check_machine` compares the estimates with the memory of that
device (and of the host, where the analytic kernel is computed); the sweep's planning uses
:func:`gpu_memory_bytes` for a GPU trial's share and :func:`cpu_memory_bytes` for a CPU trial's
memory.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from ._arch import n_params
from ._errors import ConfigError

if TYPE_CHECKING:
    from ._config import TrialConfig

MAX_TRIAL_BYTES = 2**40  # 1 TiB: more than any one machine this project runs on
CUDA_CONTEXT_BYTES = 500 * 2**20  # per process: the CUDA context plus cuBLAS workspaces
ALLOCATOR_MARGIN = 1.25  # PyTorch's caching allocator rounds blocks up and fragments
PROCESS_BYTES = 400 * 2**20  # a CPU trial's process before its tensors (0.30 GiB measured)
HOST_MARGIN = 1.1  # measured CPU peaks above the estimate: +1% (m = 8192) to +5% (m = 4096)


def parameter_count(config: TrialConfig) -> int:
    """P, the trained parameters of the trial's network, at the data's real input dimension.

    d is ``data.d`` for circle and sphere, 64 for digits and 784 for MNIST (the image size).
    """
    m = config.model
    return n_params(m.arch, config.data.input_dim, m.width, m.depth)


def _bytes_per_number(config: TrialConfig) -> int:
    return 8 if config.dtype == "float64" else 4


def training_bytes(config: TrialConfig) -> int:
    """Peak bytes of the tensors of one training run on its device (no allocator margin).

    Terms (b = bytes per number of the dtype, n points incl. probes, M linear maps):
    - 4 P b: theta, theta_0, the gradients, and one P-sized temporary (theta - theta_0 in the
      tracker, or the weight-decay term), all resident at the peak;
    - 6 n m L b: the autograd graph of one training step (inputs, pre-activations, masks, grads);
    - 2 n m M b + n m L: the kernel's retained features U and G per map, and the ReLU patterns;
    - 3 n^2 M b: per-map kernel blocks and their temporaries.
    """
    b = _bytes_per_number(config)
    m, L = config.model.width, config.model.depth
    n = config.data.n + config.data.n_probe
    maps = L + 1 if config.model.arch == "fcn" else 2 * L + 2
    tensors = 4 * parameter_count(config) * b + 6 * n * m * L * b
    if config.track.kernel:
        tensors += 2 * n * m * maps * b + n * m * L + 3 * n * n * maps * b
    return tensors


def kernel_bytes(arch: str, n: int, depth: int) -> int:
    """Peak bytes of the analytic kernel of ``arch`` on n points (float64, on the CPU).

    Each layer's kernel map holds the pair (S, T) and ~6 temporaries of (n, n); the ResNet's
    blocks hold their branch's pair too, so both stay within 8 (n, n) arrays plus one per block
    in flight.
    """
    held = 8 if arch == "fcn" else 10
    return 8 * held * n * n


def analytic_bytes(config: TrialConfig) -> int:
    """Peak bytes of the analytic kernel on the trial's training points (see kernel_bytes)."""
    return kernel_bytes(config.model.arch, config.data.n, config.model.depth)


def check_kernel_fits(arch: str, n: int, depth: int) -> None:
    """Raise :class:`ConfigError` when the analytic kernel of n points exceeds host memory."""
    need, host = kernel_bytes(arch, n, depth), host_memory_bytes()
    if need > host:
        raise ConfigError(
            f"data.n = {n}: the analytic kernel of {n} points needs about {_gib(need)}, more "
            f"than the {_gib(host)} of this machine's memory; lower data.n"
        )


def check_params_fit(n_parameters: int, device: torch.device | str | None) -> None:
    """Raise :class:`ConfigError` when n parameters cannot be drawn (float64, on the CPU) or
    held on ``device``; the draw needs 8 bytes per parameter on the host."""
    need, host = 8 * n_parameters, host_memory_bytes()
    where, have = "this machine's memory", host
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_properties(dev).total_memory
        where, have = (f"GPU {dev}", gpu) if gpu < host else (where, host)
    if need > have:
        raise ConfigError(
            f"model.width: the network's {n_parameters:,} parameters need about {_gib(need)}, "
            f"more than the {_gib(have)} of {where}; lower model.width or model.depth"
        )


def memory_bytes(config: TrialConfig) -> int:
    """Estimated peak bytes of one trial: the larger of training and the analytic kernel."""
    return max(training_bytes(config), analytic_bytes(config))


def gpu_memory_bytes(config: TrialConfig) -> int:
    """Estimated peak GPU memory of one trial, in bytes.

    training_bytes times ALLOCATOR_MARGIN, plus CUDA_CONTEXT_BYTES for the worker process.
    """
    return int(ALLOCATOR_MARGIN * training_bytes(config)) + CUDA_CONTEXT_BYTES


def cpu_memory_bytes(config: TrialConfig) -> int:
    """Estimated peak host memory of one trial's process on a CPU, in bytes.

    memory_bytes times HOST_MARGIN, plus PROCESS_BYTES (Python, torch and the libraries). The
    sweep reserves it as Ray's ``memory`` resource, so a node starts only the trials whose
    estimates fit in it together.
    """
    return int(HOST_MARGIN * memory_bytes(config)) + PROCESS_BYTES


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:,.1f} GiB"


def check_fits(
    config: TrialConfig, available_bytes: int, where: str = "this machine", need: int | None = None
) -> None:
    """Raise :class:`ConfigError` when ``need`` (default :func:`memory_bytes`) exceeds
    ``available_bytes``; the message names the sizes, the memory of ``where`` and the fix."""
    need = memory_bytes(config) if need is None else need
    if need > available_bytes:
        raise ConfigError(
            f"model.width={config.model.width}, model.depth={config.model.depth}, "
            f"data.n={config.data.n}, data.n_probe={config.data.n_probe} need about "
            f"{_gib(need)} ({parameter_count(config):,} parameters), more than the "
            f"{_gib(available_bytes)} of {where}; lower model.width or data.n"
        )


def check_sizes(config: TrialConfig) -> None:
    """The limits every trial config meets (see the module docstring); raise ValueError if not.

    ValueError, not ConfigError: it is raised inside pydantic validation, which reports it as
    one line of :func:`core.format_validation`.
    """
    try:
        check_fits(config, MAX_TRIAL_BYTES, "the limit MAX_TRIAL_BYTES")
    except ConfigError as err:
        raise ValueError(str(err)) from None


def host_memory_bytes() -> int:
    """Physical memory of this machine, in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_machine(config: TrialConfig, device: torch.device) -> None:
    """Raise :class:`ConfigError` when the trial cannot fit on ``device`` of this machine.

    On CUDA the training tensors (:func:`gpu_memory_bytes`) are checked against the GPU's memory
    and the analytic kernel (:func:`analytic_bytes`, always on the CPU) against the host's; on the
    CPU both (:func:`memory_bytes`) against the host's.
    """
    host = host_memory_bytes()
    if device.type == "cuda":
        gpu = torch.cuda.get_device_properties(device).total_memory
        check_fits(config, gpu, f"GPU {device}", need=gpu_memory_bytes(config))
        check_fits(config, host, "this machine's memory", need=analytic_bytes(config))
    else:
        check_fits(config, host, "this machine's memory")
