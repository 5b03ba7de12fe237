"""Sizes: parameter counts at the data's real input dimension, memory estimates and limits."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import (
    MAX_TRIAL_BYTES,
    ConfigError,
    analytic_ntk,
    build_model,
    check_fits,
    check_machine,
    config_from_dict,
    cpu_memory_bytes,
    gpu_memory_bytes,
    host_memory_bytes,
    load_config,
    memory_bytes,
    parameter_count,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "data, d",
    [
        ({"kind": "circle"}, 2),
        ({"kind": "sphere", "d": 5}, 5),
        ({"kind": "digits", "d": 5}, 64),  # data.d is ignored: the image size fixes d
        ({"kind": "mnist", "path": "/x"}, 784),
    ],
)
@pytest.mark.parametrize("arch", ["fcn", "resnet"])
def test_parameter_count_is_the_networks(data, d, arch):
    config = config_from_dict({"model": {"arch": arch, "width": 7, "depth": 2}, "data": data})
    net = build_model(arch, d, 7, 2)
    assert parameter_count(config) == sum(p.numel() for p in net.parameters())


def test_mnist_config_counts_784_inputs():
    config = load_config(REPO / "configs" / "fig2_mnist.yaml")
    m = 500  # 784 m + m + 2 (m^2 + m) + m
    assert parameter_count(config) == 784 * m + m + 2 * (m * m + m) + m


def test_gpu_estimate_grows_with_width_and_points():
    small = config_from_dict({"model": {"width": 64}})
    wide = config_from_dict({"model": {"width": 128}})
    more = config_from_dict({"model": {"width": 64}, "data": {"n": 12}})
    assert gpu_memory_bytes(small) < gpu_memory_bytes(wide)
    assert gpu_memory_bytes(small) < gpu_memory_bytes(more)


def test_every_example_config_is_within_the_limit():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        assert memory_bytes(load_config(path)) < MAX_TRIAL_BYTES


def test_check_fits_names_the_sizes_and_the_fix():
    config = config_from_dict({"model": {"width": 4096}})
    check_fits(config, memory_bytes(config))
    with pytest.raises(ConfigError, match=r"model.width=4096.*GiB.*lower model.width"):
        check_fits(config, memory_bytes(config) - 1, "the GPU")


def test_check_machine_refuses_what_this_machine_cannot_hold():
    host = host_memory_bytes()
    if host > MAX_TRIAL_BYTES // 4:
        pytest.skip("this machine holds every config under the static limit")
    n = int(math.sqrt(2 * host / 64)) + 1  # the FCN's analytic kernel: ~8 (n, n) float64 arrays
    config = config_from_dict({"data": {"kind": "sphere", "n": n}})
    with pytest.raises(ConfigError, match=f"data.n={n}.*this machine's memory"):
        check_machine(config, torch.device("cpu"))
    check_machine(config_from_dict({}), torch.device("cpu"))


def test_kernel_and_network_beyond_this_machine_fail_before_allocating():
    host = host_memory_bytes()
    n = int(math.sqrt(host / 8)) + 1  # > host bytes for 8 (n, n) float64 arrays
    with pytest.raises(ConfigError, match=f"data.n = {n}.*lower data.n"):
        analytic_ntk("fcn", torch.zeros(n, 2), 1)
    width = host // 8 // 4 + 1  # d m + m + m parameters, 8 bytes each, at d = 2
    with pytest.raises(ConfigError, match="model.width.*parameters need about .* GiB"):
        build_model("fcn", 2, width, 1)


_PEAK = """
import json, sys, tempfile
from bench._common import peak_rss_bytes
import core
config = core.config_from_dict(json.loads(sys.argv[1]))
with tempfile.TemporaryDirectory() as out:
    core.run_trial(config, out)
print(peak_rss_bytes())  # this process's own peak, not pytest's
"""


@pytest.mark.slow  # ~9 s each: a fresh process, torch's import and a 0.13 GiB network
@pytest.mark.parametrize("train", [{"epochs": 2}, {"t_max": 0.3}], ids=["descent", "flow"])
def test_a_trials_peak_memory_is_within_its_cpu_estimate(train):
    """The whole process's peak RSS (run, track, checkpoint) is within cpu_memory_bytes, what a
    sweep reserves for it on a node, and not far below it. At m = 4096 (float64) the network
    is 0.13 GiB: a run holding two more copies of it at its peak (as the checkpoint's copies
    and the tracker's theta - theta_0 did) would exceed the estimate."""
    raw = {"model": {"width": 4096, "depth": 2}, "data": {"kind": "circle", "n": 2},
           "train": {"loss": "cross_entropy", "lr": 0.1, **train}, "dtype": "float64",
           "track": {"log_points": 5}, "checkpoint": {"minutes": 0}}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", _PEAK, json.dumps(raw)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          check=True)  # fmt: skip
    peak, estimate = int(proc.stdout.split()[-1]), cpu_memory_bytes(config_from_dict(raw))
    assert estimate / 2 < peak <= estimate, (peak / 2**30, estimate / 2**30)


def test_sweeps_md_quotes_the_cpu_reservations_from_the_estimate():
    """docs/sweeps.md's "Memory on CPU nodes" figures are cpu_memory_bytes of those configs."""
    text = " ".join((REPO / "docs" / "sweeps.md").read_text().split())
    gib = []
    for width in (8192, 16384):
        config = config_from_dict({"model": {"arch": "fcn", "depth": 2, "width": width},
                                   "data": {"kind": "circle", "n": 2}, "dtype": "float64",
                                   "train": {"t_max": 1e40}})  # fmt: skip
        gib.append(f"{cpu_memory_bytes(config) / 2**30:.1f}")
    assert f"a trial reserves {gib[0]} GiB at m = 8192 and {gib[1]} GiB at m = 16384" in text
