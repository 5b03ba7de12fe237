"""``ntkdiv bench sweep``: its figures, and its goals judged from them."""

from __future__ import annotations

import pytest

from bench import sweep as bench_sweep


def test_goals_follow_the_figures():
    orch, wall = {"median overhead s": 0.2}, {"ratio": 1.1}
    shares = [{"ratio": 1.01}, {"ratio": 1.02}]
    assert bench_sweep.goals(orch, wall, shares) == {"overhead": True, "wall": True,
                                                      "mlflow": True}  # fmt: skip
    shares[1]["ratio"] = 1.05
    assert not bench_sweep.goals(orch, wall, shares)["mlflow"]
    assert not bench_sweep.goals({"median overhead s": 0.31}, wall, shares)["overhead"]


def test_per_trial_overhead_is_the_idle_gap_plus_the_wrapper():
    attempts = [
        {"node": "a", "pid": 1, "start": 0.0, "end": 1.0, "run_s": 0.9},
        {"node": "a", "pid": 1, "start": 1.25, "end": 2.25, "run_s": 0.75},
        {"node": "b", "pid": 2, "start": 0.0, "end": 1.0, "run_s": 1.0},
    ]
    assert bench_sweep.per_trial_overhead(attempts) == [0.25 + 0.25]


@pytest.mark.slow
def test_quick_run_measures_mlflow_on_and_off():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        (row,) = bench_sweep.mlflow_shares(Path(tmp), quick=True)
    assert row["sweep"] == "smoke" and row["store"] == "sqlite" and row["trials"] == 8
    assert row["wall s, MLflow on"] > 0 and row["wall s, MLflow off"] > 0
    assert row["MLflow calls s"] > 0  # the sweep logged through MLflow
    assert row["ratio"] == pytest.approx(row["wall s, MLflow on"] / row["wall s, MLflow off"])
