"""bench flow at smoke size: the figures it reports meet their goals (they can fail)."""

from __future__ import annotations

import pytest

from bench.flow import steps_to_t, tracked_step_costs

pytestmark = pytest.mark.slow


def test_flow_reaches_far_t_in_few_steps_at_both_tolerances():
    rows = steps_to_t(512, 1e12)  # [m, tol, steps to 1e5, to 1e10, rejected, wall, s/eval]
    strict, loose = rows[1], rows[0]
    assert loose[3] < 2500 and strict[3] < 2 * loose[3] + 500, rows


def test_a_tracked_step_costs_at_most_two_and_a_half_times_the_previous_one():
    """The goal is 2x; measured 1.43-2.17x (docs/performance.md), 2.03x here once: this guards
    against a regression past 2.5x, it does not claim the goal."""
    row = tracked_step_costs(256, 3, 6, repeats=5)
    assert row[-1] <= 2.5, row
