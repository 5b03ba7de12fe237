"""The trajectory pass on Ray Data, for stores too large for one machine.

This is the one module outside ``sweep/_ray.py`` that imports Ray: the Ray Data reader of the
aggregator. It reads the same hive-partitioned Parquet dataset (``<sweep>/dataset/trajectory``)
with the same projection (scalar columns only), groups rows by ``trial_id`` on the cluster, and
reduces each trial with the very function the local path uses (``_tables.trial_metrics``). Only
one row per trial (metrics + curves on the common log-t grid) comes back to the driver, so the
driver's memory grows with the number of trials, never with their length.

Everything after this pass (verdicts, fits, figures, report) runs on the driver, as locally.
See docs/aggregation.md, "Beyond one machine".
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._read import SCALAR_COLUMNS
from ._tables import CURVES, T_GRID, trial_metrics


def _reduce_trial(group: pd.DataFrame, bounds: dict[str, float]) -> pd.DataFrame:
    """One trial's rows (any order) -> one row of metrics with its curves flattened."""
    group = group.sort_values("t", kind="stable")
    tid = str(group["trial_id"].iloc[0])
    cols = {c: group[c].to_numpy(dtype=float, na_value=np.nan) for c in SCALAR_COLUMNS}
    metrics, curves = trial_metrics(cols, bounds.get(tid, math.nan))
    return pd.DataFrame([{"trial_id": tid, **metrics, "curves": curves.ravel().tolist()}])


def trajectory_pass_ray(
    root: Path, bounds: dict[str, float], address: str | None = None
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Per-trial metrics and curves of every trajectory under ``root``, computed on Ray.

    Args:
        root: ``<sweep>/dataset/trajectory`` (any path Ray Data and pyarrow can read: a shared
            filesystem, s3://, gs://, ...).
        bounds: trial_id -> bound (from the summary rows).
        address: a Ray cluster to join ("auto", "ray://..."); None joins RAY_ADDRESS if set,
            else starts a fresh local instance with 2 CPUs. A running Ray is reused as it is.
    Returns:
        The same (metrics DataFrame, {trial_id: (len(CURVES), len(T_GRID)) curves}) as
        ``_tables.trajectory_pass``.
    """
    import ray
    from ray.data.datasource import Partitioning, PartitionStyle

    started = not ray.is_initialized()
    if started:
        address = address or os.environ.get("RAY_ADDRESS")
        # "local": a fresh 2-CPU instance, never a cluster that happens to run on this machine
        ray.init(address=address or "local", num_cpus=None if address else 2,
                 include_dashboard=False, log_to_driver=False)  # fmt: skip
    try:
        part = Partitioning(PartitionStyle.HIVE, base_dir=str(root), field_types={"trial_id": str})
        # select_columns is pushed down into the Parquet read (projection): list columns stay
        data = ray.data.read_parquet(str(root), partitioning=part).select_columns(
            [*SCALAR_COLUMNS, "trial_id"]
        )
        reduce = functools.partial(_reduce_trial, bounds=bounds)
        # one shuffle partition per trial at most: Ray's default (200) costs minutes on 2 CPUs
        parts = max(1, min(len(bounds), 4 * int(ray.cluster_resources().get("CPU", 1))))
        grouped = data.groupby("trial_id", num_partitions=parts)
        reduced = grouped.map_groups(reduce, batch_format="pandas")
        frame = reduced.to_pandas()
    finally:
        if started:
            ray.shutdown()
    shape = (len(CURVES), T_GRID.size)
    curves = {
        tid: np.asarray(c, dtype=np.float32).reshape(shape)
        for tid, c in zip(frame["trial_id"], frame.pop("curves"), strict=True)
    }
    for col in frame.columns.drop(["trial_id", "drift_trend"]):  # None -> NaN, as locally
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame.sort_values("trial_id", ignore_index=True), curves
