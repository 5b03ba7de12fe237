"""Per-trial metrics and medians over seeds, on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dashboards._tables import (
    CHECKPOINTS,
    T_GRID,
    first_exceed,
    late_slope,
    median_interval,
    step_value,
    trend,
    trial_metrics,
)
from tests.tolerance import EXACT_F64, assert_close


def _cols(t: np.ndarray, drift: np.ndarray) -> dict[str, np.ndarray]:
    nan = np.full(t.size, np.nan)
    return {"t": t, "drift": drift, "gap": drift + 1, "lambda_min": nan, "theta_inf": nan,
            "f_abs_min": nan, "flips": np.zeros(t.size)}  # fmt: skip


def test_step_value_takes_last_tracked_value_and_nan_outside():
    t = np.array([0.0, 1.0, 10.0, 100.0])
    y = np.array([0.0, 1.0, 2.0, 3.0])
    got = step_value(t, y, np.array([-1.0, 0.5, 10.0, 99.0, 100.0, 101.0]))
    assert_close(got[1:5], [0.0, 2.0, 2.0, 3.0])
    assert math.isnan(got[0]) and math.isnan(got[5])


def test_first_exceed_is_first_tracked_time_at_or_above_bound():
    t = np.array([0.0, 0.1, 0.2, 0.4])
    assert first_exceed(t, np.array([0.0, 0.01, 0.0247, 1.0]), 0.0247) == 0.2
    assert first_exceed(t, np.array([0.0, 0.01, 0.02, 0.0]), 0.0247) == math.inf


def test_late_slope_tells_log_growth_from_saturation():
    t = np.geomspace(0.1, 1e4, 200)
    slope, rel = late_slope(t, 3.0 * np.log1p(t))
    assert_close(slope, 3.0 * math.log(10), (2e-3, 0), "log-growth slope per decade")
    assert trend(rel) == "growing"
    _, rel_sat = late_slope(t, 3.0 * -np.expm1(-t / 5.0))
    assert trend(rel_sat) == "flat"
    assert trend(late_slope(t, 1.0 / np.log(2 + t))[1]) == "shrinking"


def test_trial_metrics_checkpoints_and_running_sup():
    t = np.array([0.0, 0.5, 1.0, 5.0, 10.0, 50.0, 100.0])
    drift = np.array([0.0, 2.0, 1.0, 3.0, 2.5, 4.0, 3.5])
    m, curves = trial_metrics(_cols(t, drift), bound=2.0)
    assert m["t_exceed_traj"] == 0.5
    assert m["drift_t1e0"] == 1.0 and m["drift_sup_t1e0"] == 2.0
    assert m["drift_t1e1"] == 2.5 and m["drift_sup_t1e1"] == 3.0
    assert m["drift_sup_t1e2"] == 4.0 and m["drift_sup_traj"] == 4.0
    assert math.isnan(m["drift_t1e3"])  # beyond the horizon
    assert curves.shape == (5, T_GRID.size)
    assert np.isnan(curves[0][T_GRID < 0.5]).all()  # t = 0 stays off the log-t curves


@pytest.mark.parametrize(("n", "coverage"), [(1, 0.0), (3, 0.75), (5, 0.9375), (6, 0.96875)])
def test_median_interval_coverage_is_exact_binomial(n, coverage):
    med, lo, hi, cover = median_interval(np.arange(1.0, n + 1))
    assert_close(cover, coverage, EXACT_F64, "order-statistic coverage")
    assert med == (n + 1) / 2 and lo == 1.0 and hi == n


def test_median_interval_narrows_with_many_seeds_and_keeps_never():
    x = np.r_[np.arange(1.0, 20.0), [math.inf]]
    med, lo, hi, cover = median_interval(x)
    assert cover >= 0.95 and lo > 1.0 and hi < 20.0
    assert median_interval(np.array([1.0, math.inf, math.inf]))[0] == math.inf


def test_checkpoints_are_decades_from_one():
    assert CHECKPOINTS[:4] == (1.0, 10.0, 100.0, 1000.0)
