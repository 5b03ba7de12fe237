"""bench flow at smoke size: the figures it reports meet their goals (they can fail)."""

from __future__ import annotations

import pytest

from bench.flow import steps_to_t, tracked_step_costs

pytestmark = pytest.mark.slow


def test_flow_reaches_far_t_in_few_steps_at_both_tolerances():
    """m = 512 to t = 1e20, past the late chattering (sigmoid(f) - 1 underflows at f > 36.7)."""
    rows = steps_to_t(512, 1e20)  # [m, tol, steps to 1e5, 1e10, 1e15, 1e20, rejected, wall, ...]
    strict, loose = rows[1], rows[0]
    assert loose[5] < 4000 and strict[5] < 2.5 * loose[5], rows


def test_a_tracked_step_costs_at_most_two_and_a_half_times_the_previous_one():
    """The goal is 2x; measured 1.43-2.17x one day and 1.36-1.70x the next on a loaded machine
    (docs/performance.md), 2.03x here once: this guards against a regression past 2.5x, it does
    not claim the goal."""
    row = tracked_step_costs(256, 3, 6, repeats=5)
    assert row[-1] <= 2.5, row
