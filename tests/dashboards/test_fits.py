"""Power-law fits and crossing widths, on exact and on scattered power laws."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dashboards._fits import crossing, fit_power_law, fit_table, is_extrapolated, refusal
from tests.tolerance import EXACT_F64, assert_close

WIDTHS = np.repeat([64.0, 128.0, 256.0, 512.0, 1024.0], 3)


def test_exact_power_law_is_recovered():
    fit = fit_power_law(WIDTHS, 3.0 * WIDTHS**-0.5)
    assert_close([fit.exponent, fit.prefactor], [-0.5, 3.0], EXACT_F64, "exponent, prefactor")
    assert abs(fit.exponent_hi - fit.exponent_lo) < 1e-9
    assert fit.n_points == 15 and fit.n_widths == 5


def test_crossing_width_solves_the_fitted_line():
    fit = fit_power_law(WIDTHS, 3.0 * WIDTHS**-0.5)
    mid, lo, hi = crossing(fit, target=0.03)
    assert_close(mid, (3.0 / 0.03) ** 2, EXACT_F64, "m* with 3 m*^-1/2 = 0.03")
    assert lo <= mid <= hi


def test_rising_quantity_never_falls_below_target():
    fit = fit_power_law(WIDTHS, 2.0 * WIDTHS**0.3)
    assert crossing(fit, target=0.01)[0] == math.inf
    up = crossing(fit, target=100.0, falls=False)[0]  # t_exceed-like: when it leaves the horizon
    assert_close(up, (100.0 / 2.0) ** (1 / 0.3), EXACT_F64, "rising crossing")


def test_interval_covers_true_exponent_under_scatter():
    rng = np.random.default_rng(0)
    covered = 0
    for _ in range(200):
        y = 5.0 * WIDTHS**-0.9 * np.exp(0.2 * rng.standard_normal(WIDTHS.size))
        fit = fit_power_law(WIDTHS, y)
        covered += fit.exponent_lo <= -0.9 <= fit.exponent_hi
    assert 0.90 <= covered / 200 <= 0.99  # nominal 95%


def test_fit_needs_two_widths_and_positive_values():
    assert fit_power_law(np.full(4, 64.0), np.ones(4)) is None
    fit = fit_power_law(np.array([64.0, 128.0, 256.0]), np.array([1.0, 0.0, 0.25]))
    assert fit.n_points == 2 and math.isnan(fit.exponent_lo)  # zero dropped, no dof left


def test_refusals_say_why():
    three = np.array([64.0, 128.0, 256.0])
    assert refusal(three, 2.0 * three**-0.5) == ""
    assert "2 width(s)" in refusal(three[:2], np.ones(2))
    assert "2 width(s)" in refusal(three, np.array([1.0, 0.0, 0.25]))  # zero is dropped
    assert "constant data" in refusal(three, np.full(3, 0.1))
    assert fit_power_law(three, np.full(3, 0.1)) is None  # never an exponent 0 with r2 = 1


def _trials(width, y, **extra) -> pd.DataFrame:
    n = len(width)
    base = {"arch": "fcn", "depth": 2, "loss": "cross_entropy", "lr": 0.1, "data": "circle n=2",
            "variant": "", "usable": True, "width": width, "bound": np.full(n, 0.62),
            "t_horizon": np.full(n, 1e3), "gap_init": y, "drift_sup": y,
            "t_exceed": np.full(n, 0.1), "step_jump_max": np.full(n, np.nan),
            "flip_jump_max": np.full(n, np.nan),
            "t_leave": np.full(n, np.nan)}  # fmt: skip
    return pd.DataFrame({**base, **extra})


def _q(table: pd.DataFrame, quantity: str) -> pd.Series:
    return table[table["quantity"] == quantity].iloc[0]


def test_fit_table_refuses_two_widths_and_constant_data():
    table = fit_table(_trials(np.array([64.0, 128.0]), np.array([1.0, 0.7])))
    row = _q(table, "gap_init")
    assert math.isnan(row["exponent"]) and math.isnan(row["r2"]) and "needs >= 3" in row["note"]
    assert "no trial starts inside" in _q(table, "t_leave")["note"]
    w = np.array([64.0, 128.0, 256.0])
    assert "constant data" in _q(fit_table(_trials(w, w**-0.5)), "t_exceed")["note"]


def test_fit_table_flags_extrapolation_past_ten_times_the_widest_width():
    w = np.array([64.0, 128.0, 256.0])
    table = fit_table(_trials(w, 3.0 * w**-0.5))
    row = _q(table, "gap_init")
    assert_close(row["crossing_width"], (3.0 / 0.62) ** 2, EXACT_F64, "crossing")
    assert not row["extrapolated"]  # 23.4 < 2560
    far = _q(fit_table(_trials(w, 300.0 * w**-0.5)), "gap_init")
    assert far["extrapolated"] and "extrapolated" in far["note"]
    assert is_extrapolated(math.inf, 256.0) and not is_extrapolated(math.nan, 256.0)


def test_t_leave_avg_is_fitted_where_trials_recorded_it():
    """The window-averaged crossing gets its own fit row, by the t_leave rule (inside trials
    only); trials without it (plain GD, older stores) get no such row."""
    w = np.array([1024.0, 2048.0, 4096.0, 8192.0])
    gap0 = np.full(4, 0.1)  # all start inside
    t_avg = 1e3 * (w / 1024.0) ** 20.0
    far, small = {"t_horizon": np.full(4, 1e40)}, {"flip_jump_max": np.full(4, 1e-3)}
    table = fit_table(_trials(w, gap0, t_leave=t_avg / 2, t_leave_avg=t_avg, **far, **small))
    row = _q(table, "t_leave_avg")
    assert_close(row["exponent"], 20.0, (1e-9, 0.0), "t_leave_avg exponent")
    assert_close(row["decades_per_doubling"], 20.0 * math.log10(2.0), (1e-9, 0.0), "decades")
    outside = fit_table(_trials(w, np.full(4, 0.9), t_leave=t_avg, t_leave_avg=t_avg, **far,
                                **small))  # fmt: skip
    assert "no trial starts inside" in _q(outside, "t_leave_avg")["note"]
    plain = fit_table(_trials(w, gap0, t_leave=t_avg, **far, **small))
    assert "t_leave_avg" not in set(plain["quantity"])
