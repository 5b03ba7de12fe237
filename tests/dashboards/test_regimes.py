"""m*(t) with bootstrap intervals, and the regime per group, on known answers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from dashboards._crossing import crossing_at, crossing_curve, slope_interval
from dashboards._regimes import growth_interval
from tests.tolerance import EXACT_F64, assert_close

from .direct_store import DirectGroup, log_drift, saturating_drift

WIDTHS = np.repeat([256.0, 512.0, 1024.0, 2048.0, 4096.0], 4)
DIVERGING = DirectGroup(depth=2, leave_b=None, drift=log_drift(), decades_step=0.05)
SETTLING = DirectGroup(depth=2, loss="mse", lr=0.05, leave_b=None, drift=saturating_drift(),
                       decades_step=0.05)  # fmt: skip
ONE_SEED = DirectGroup(depth=3, seeds=(0,), leave_b=None, t_max=1e6, decades_step=0.05)
# the direct-test spec's shape: 3 seeds at three widths, seed 0 only at the widest
THREE = DirectGroup(depth=4, widths=(1024, 2048, 4096), leave_b=None, decades_step=0.05)
WIDEST = DirectGroup(depth=4, widths=(8192,), seeds=(0,), leave_b=None, decades_step=0.05)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import dashboards

    from .direct_store import write_sweep

    sweep = tmp_path_factory.mktemp("regimes") / "sweep"
    write_sweep(sweep, [DIVERGING, SETTLING, ONE_SEED, THREE, WIDEST])
    return dashboards.aggregate(sweep, tmp_path_factory.mktemp("report"), figures=False)


def _regime(result, loss: str, depth: int):
    r = result.regimes
    return r[(r["loss"] == loss) & (r["depth"] == depth)].iloc[0]


def test_log_growing_drift_is_diverging(result):
    row = _regime(result, "cross_entropy", 2)
    assert row["regime"] == "diverging", row["why"]
    assert row["m_star_slope_lo"] > 0 and "grew over the last decade at all 4 widths" in row["why"]


def test_saturating_drift_is_settling(result):
    row = _regime(result, "mse", 2)
    assert row["regime"] == "settling", row["why"]
    assert abs(row["m_star_slope"]) < 1e-6


def test_one_seed_per_width_is_undetermined_and_says_why(result):
    row = _regime(result, "cross_entropy", 3)
    assert row["regime"] == "undetermined" and "(>= 2 seeds) at 0 width(s)" in row["why"]
    c = result.crossing
    assert "one seed per width: no interval" in " ".join(c[c["depth"] == 3]["note"])


def test_a_width_with_one_seed_is_held_fixed_and_said_so(result):
    row = _regime(result, "cross_entropy", 4)
    assert row["regime"] == "diverging", row["why"]
    assert "m = 8192 (under 2 seeds) not judged" in row["why"]
    c = result.crossing
    late = c[(c["depth"] == 4) & (c["t"] == 1e40)].iloc[0]
    assert late["n_widths"] == 4 and late["m_star_lo"] <= late["m_star"] <= late["m_star_hi"]
    assert "m = 8192 has one seed, held fixed in the bootstrap" in late["note"]


def test_m_star_over_the_whole_horizon_and_losses_at_equal_t(result):
    """m* at every decade to 1e40; the report's side-by-side table pairs losses at equal t."""
    c = result.crossing
    ce = c[(c["loss"] == "cross_entropy") & (c["depth"] == 2)]
    assert ce["t"].max() == 1e40 and np.isfinite(ce["m_star"]).sum() >= 40
    page = result.html.read_text()
    assert "m* [cross_entropy lr=0.001]" in page and "m* [mse lr=0.05]" in page


def test_m_star_solves_the_law_at_each_t(result):
    """drift = c (m/4096)^-1/2 g(t) s: m* = 4096 (c g(t) s_geo / bound)^2 with s_geo the
    geometric mean of the per-seed factors (seeds are replicates in the log-log fit)."""
    c = result.crossing
    row = c[(c["loss"] == "mse") & (c["depth"] == 2) & (c["t"] == 1e3)].iloc[0]
    s_geo = math.exp(np.mean(np.log(SETTLING.scatter[:3])))
    expected = 4096.0 * (0.1 * s_geo / row["bound"]) ** 2
    assert_close(row["m_star"], expected, EXACT_F64, "m* at t = 1e3")


def test_bootstrap_interval_covers_the_true_crossing():
    """drift = A m^-1/2 exp(0.2 N(0,1)), 5 widths x 4 seeds: the 95% percentile interval over
    seeds covers m* = (A / bound)^2 in most replicate data sets (it under-covers a little with
    4 seeds per width)."""
    rng = np.random.default_rng(1)
    a, bound = 5.0, 0.05
    truth = (a / bound) ** 2
    covered, n = 0, 150
    for _ in range(n):
        drift = a * WIDTHS**-0.5 * np.exp(0.2 * rng.standard_normal(WIDTHS.size))
        curve, _ = crossing_curve(WIDTHS, {1.0: drift}, bound, n_boot=300)
        covered += curve["m_star_lo"].iloc[0] <= truth <= curve["m_star_hi"].iloc[0]
    assert 0.80 <= covered / n <= 0.99, covered / n


def test_crossing_refuses_two_widths_and_rising_drift():
    w = np.array([64.0, 64.0, 128.0, 128.0])
    assert "needs >= 3" in crossing_at(w, w**-0.5, 0.01, None)["note"]
    w3 = np.repeat([64.0, 128.0, 256.0], 2)
    up = crossing_at(w3, 0.1 * w3**0.2, 0.01, None)
    assert up["m_star"] == math.inf and "does not fall with width" in up["note"]


def test_slope_interval_needs_every_decade():
    assert math.isnan(slope_interval({1.0: np.ones(10)}, [1.0, 10.0])[0])


def test_slope_interval_leaves_out_replicates_without_a_positive_crossing_width():
    """A replicate whose m* is 0 (an underflowed crossing) has no log: it is left out, as the
    point estimate leaves it out; over 10% such replicates give no interval."""
    flat = np.full(40, 300.0)
    boots = {1.0: flat.copy(), 10.0: flat.copy(), 100.0: flat.copy()}
    boots[10.0][0] = 0.0  # 1 of 40
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log10(0)
        lo, hi = slope_interval(boots, [1.0, 10.0, 100.0])
    assert abs(lo) < 1e-12 and abs(hi) < 1e-12
    boots[10.0][:5] = 0.0  # 5 of 40
    assert math.isnan(slope_interval(boots, [1.0, 10.0, 100.0])[0])


def test_growth_interval_has_no_ends_for_one_seed():
    mean, lo, hi = growth_interval(np.array([0.3]))
    assert mean == 0.3 and math.isnan(lo) and math.isnan(hi)
    mean, lo, hi = growth_interval(np.array([0.1, 0.2, 0.3]))
    assert 0.1 <= lo <= mean <= hi <= 0.3
