"""The Ray Data path reduces the same Parquet dataset to the same per-trial rows as pyarrow."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import dashboards
from bench.aggregate import SyntheticGroup, saturating, write_sweep
from dashboards._raydata import trajectory_pass_ray
from dashboards._read import iter_trajectories, open_store
from dashboards._tables import trajectory_pass


@pytest.fixture
def local_ray():
    """One small local Ray for the whole test (the aggregator reuses a running one)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_data_pass_equals_local_pass(tmp_path, local_ray):
    sweep = tmp_path / "s"
    write_sweep(sweep, [
        SyntheticGroup(widths=(64, 256), seeds=(0, 1), epochs=300, log_points=40),
        SyntheticGroup(loss="mse", lr=0.02, widths=(64, 256), seeds=(0,), epochs=300,
                       log_points=40, drift=saturating()),
    ])  # fmt: skip
    st = open_store(sweep)
    bounds = dict(zip(st.summary["trial_id"], st.summary["bound"], strict=True))
    local, local_curves = trajectory_pass(iter_trajectories(st.trajectory), bounds)
    ray, ray_curves = trajectory_pass_ray(sweep / "dataset" / "trajectory", bounds)
    local = local.sort_values("trial_id", ignore_index=True)
    pd.testing.assert_frame_equal(local, ray[local.columns], check_dtype=False)
    assert local_curves.keys() == ray_curves.keys()
    for tid, block in local_curves.items():
        np.testing.assert_array_equal(block, ray_curves[tid])
    # the whole aggregation on the Ray engine gives the same verdicts
    a = dashboards.aggregate(sweep, tmp_path / "a", figures=False)
    b = dashboards.aggregate(sweep, tmp_path / "b", engine="ray", figures=False)
    pd.testing.assert_frame_equal(a.verdict, b.verdict)
