"""``ntkdiv bench sweep``: its side-by-side MLflow relog, and the whole section at quick size."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from bench import sweep as bench_sweep
from core import config_from_dict, run_trial, trial_id
from core import store as st


def test_relog_times_both_ways_into_separate_stores(tmp_path):
    sweep_dir = tmp_path / "store" / "relog"
    for seed in (0, 1):
        cfg = config_from_dict({"model": {"width": 16, "depth": 2}, "seed": seed,
                                "train": {"epochs": 10}, "track": {"log_points": 5}})  # fmt: skip
        run_trial(cfg, st.trial_dir(sweep_dir, trial_id(cfg)))
    one_tx, api = bench_sweep.relog(tmp_path, sweep_dir, repeats=1)
    assert one_tx > 0 and api > 0
    for fast in (True, False):
        client = MlflowClient(f"sqlite:///{tmp_path / f'relog-{fast}-0.db'}")
        runs = client.search_runs([client.get_experiment_by_name("relog").experiment_id],
                                  "tags.`ntkdiv.role` = 'trial'")  # fmt: skip
        assert len(runs) == 2 and all(r.data.metrics["loss"] >= 0 for r in runs)


@pytest.mark.slow
def test_quick_run_returns_the_section():
    section = bench_sweep.run(quick=True)
    assert section.startswith("## Sweep orchestration")
    assert "Goal MLflow logging <= 5%" in section and "log_batch / one transaction" in section
