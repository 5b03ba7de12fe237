"""Per-trial metrics and medians over seeds, on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dashboards._tables import (
    CURVES,
    DECADES,
    T_GRID,
    late_growth,
    median_interval,
    step_value,
    trend,
    trial_metrics,
    window_median,
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


def test_late_growth_tells_log_growth_from_saturation():
    t = np.geomspace(0.1, 1e4, 200)
    rel = late_growth(t, 3.0 * np.log1p(t))
    assert trend(rel) == "growing" and 0.2 < rel < 0.3  # ~ 1 / log10(1e4): a quarter per decade
    assert trend(late_growth(t, 3.0 * -np.expm1(-t / 5.0))) == "flat"
    assert trend(late_growth(t, 1.0 / np.log(2 + t))) == "shrinking"


def test_window_median_ignores_chattering_between_tracked_rows():
    """Squared-loss drift jumping 0.26 <-> 0.57 between tracked steps (DESIGN §1): the window
    median is the level most rows sit at, not whichever row is tracked last."""
    t = np.geomspace(1.0, 1e3, 301)
    drift = np.where(np.arange(t.size) % 3 == 0, 0.57, 0.26)
    assert window_median(t, drift, 1e3) == 0.26
    assert math.isnan(window_median(t, drift, 2e3))  # beyond the horizon
    assert math.isnan(late_growth(t[:5], drift[:5]))  # under a decade: unknown


def test_trial_metrics_drift_at_decades_and_fallbacks():
    t = np.array([0.0, 0.6, 1.0, 5.0, 10.0, 50.0, 100.0])
    drift = np.array([0.0, 2.0, 1.0, 3.0, 2.5, 4.0, 3.5])
    m, curves = trial_metrics(_cols(t, drift), bound=2.0)
    assert m["drift_t1e0"] == 1.5  # median of the rows at t in [10^-0.25, 1]: 2.0 and 1.0
    assert m["drift_t1e1"] == 2.5 and m["drift_t1e2"] == 3.5
    assert math.isnan(m["drift_t1e3"])  # beyond the horizon
    # gap = drift + 1 first >= 2 at t = 0.6 after 1 at t = 0 (core's first_leave: no log t at 0)
    assert m["t_leave_traj"] == 0.6
    assert math.isnan(m["step_jump_max_traj"])  # an older store: no step_jump column
    drift_curve = curves.on_grid("drift")
    assert curves.block.shape[0] == len(CURVES) and drift_curve.shape == T_GRID.shape
    assert np.isnan(drift_curve[T_GRID < 0.6]).all()  # t = 0 stays off the log-t curves
    assert np.isnan(drift_curve[T_GRID > 100.0]).all()  # nor is anything past the horizon
    assert drift_curve[np.searchsorted(T_GRID, 1.0)] == 1.0 and drift_curve[-1 - 8 * 40] == 3.5


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


def test_decades_reach_1e40():
    assert DECADES[2:6] == (1.0, 10.0, 100.0, 1000.0) and DECADES[-1] == 1e40
    assert T_GRID[-1] >= 1e40
