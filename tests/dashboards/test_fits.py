"""Power-law fits and crossing widths, on exact and on scattered power laws."""

from __future__ import annotations

import math

import numpy as np

from dashboards._fits import crossing, fit_power_law
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
