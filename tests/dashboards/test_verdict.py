"""Acceptance: synthetic stores with known answers come out as constructed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.aggregate import CIRCLE_BOUND, CIRCLE_MAX_K, log_growth
from core import RESOLUTION_SAFETY, tracked_steps
from dashboards import Verdict
from dashboards._verdict import decide
from tests.tolerance import EXACT_F64, assert_close

from .conftest import WIDTHS, texceed_group

EXPONENT_TOL = (0.0, 1e-9)  # noise-free power laws: the fit is exact up to rounding
TEXCEED_TOL = (0.0, 0.02)  # t_exceed sits on a log grid of ~0.011 decades per row


def _rows(result, loss: str):
    v = result.verdict
    return v[v["loss"] == loss].sort_values("width")


def _fit(result, loss: str, quantity: str, t: float | None = None):
    f = result.fits
    sel = (f["loss"] == loss) & (f["quantity"] == quantity)
    if t is not None:
        sel &= np.isclose(f["t"], t)
    assert sel.sum() == 1, (loss, quantity, t)
    return f[sel].iloc[0]


def test_decide_order():
    assert decide(0, 0.02, 1e-12, 5.0, 1.0) is Verdict.NO_DATA
    assert decide(3, 0.02, 0.05, 5.0, 1.0) is Verdict.UNRESOLVABLE
    assert decide(3, 0.02, 1e-12, 5.0, 1.0) is Verdict.EXCEEDS_BY_TRAINING
    assert decide(3, 0.02, 1e-12, 5.0, 0.01) is Verdict.EXCEEDS_ONLY_AT_INIT
    assert decide(3, 0.02, 1e-12, 0.01, 0.01) is Verdict.BELOW_BOUND


def test_log_growth_exceeds_by_training_and_keeps_growing(growth_result):
    ce = _rows(growth_result, "cross_entropy")
    assert list(ce["verdict"]) == ["exceeds-by-training"] * len(WIDTHS)
    assert list(ce["direct"]) == ["starts-outside"] * len(WIDTHS)  # gap_0 = 1.5..6 >> 0.0247
    trials = growth_result.trials
    usable = trials[trials["usable"] & (trials["loss"] == "cross_entropy")]
    assert set(usable["drift_trend"]) == {"growing"}
    assert (ce["t_exceed_med"] == 0.1).all()  # the first tracked step already exceeds


def test_t_exceed_at_the_first_step_everywhere_is_refused(growth_result):
    row = _fit(growth_result, "cross_entropy", "t_exceed")
    assert math.isnan(row["exponent"]) and "constant data" in row["note"]


def test_saturating_drift_is_flat(growth_result):
    trials = growth_result.trials
    assert set(trials[trials["loss"] == "mse"]["drift_trend"]) == {"flat"}


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_width_exponents_are_minus_one_half(growth_result, loss):
    for q in ("gap_init", "drift_sup_horizon"):
        assert_close(_fit(growth_result, loss, q)["exponent"], -0.5, EXPONENT_TOL, q)
    c = growth_result.crossing
    sel = (c["loss"] == loss) & np.isfinite(c["exponent"].to_numpy(float))
    assert sel.sum() >= 3
    assert_close(c[sel]["exponent"], -0.5, EXPONENT_TOL, "drift at each decade of t")


@pytest.mark.parametrize("t_c", [1.0, 10.0, 100.0])
def test_cross_entropy_crossing_width_as_constructed(growth_result, t_c):
    """m*(t) from the drift at t (a window median; log growth is exact on the tracked rows)."""
    c = growth_result.crossing
    row = c[(c["loss"] == "cross_entropy") & np.isclose(c["t"], t_c)].iloc[0]
    t = tracked_steps(10_000, 200) * 0.1
    win = t[(t <= t_c * (1 + 1e-12)) & (t >= t_c * 10**-0.25)]
    drift_128 = float(np.median(log_growth()(win, 128)))
    expected = 128.0 * (drift_128 / CIRCLE_BOUND) ** 2
    assert_close(row["m_star"], expected, EXACT_F64, f"m* at t={t_c}")
    assert row["extrapolated"]  # 1e8-1e10 against a widest width of 1024


def test_crossing_width_grows_with_t_only_under_cross_entropy(growth_result):
    c = growth_result.crossing
    ce = c[(c["loss"] == "cross_entropy") & (c["t"] >= 1)]["m_star"].to_numpy()
    assert all(b > 2 * a for a, b in zip(ce, ce[1:], strict=False))
    mse = c[(c["loss"] == "mse") & np.isclose(c["t"], 100.0)]["m_star"].iloc[0]
    saturated = 64.0 * (3.0 / CIRCLE_BOUND) ** 2  # drift -> 3 (m/64)^-1/2 once t >> tau = 5
    assert_close(mse, saturated, (1e-6, 0), "mse m* at t = 100: the saturated level")


def test_failed_and_missing_trials_are_reported(growth_result):
    ce = _rows(growth_result, "cross_entropy").set_index("width")
    assert (ce.loc[64, "n_failed"], ce.loc[64, "n_seeds"]) == (1, 2)
    assert (ce.loc[128, "n_missing"], ce.loc[128, "n_seeds"]) == (1, 2)
    statuses = growth_result.trials["status"].value_counts().to_dict()
    assert statuses["failed"] == 1 and statuses["missing"] == 1
    notes = " ".join(growth_result.notes)
    assert "is failed" in notes and "is missing" in notes and "synthetic failure" in notes


def test_no_consistency_check_between_copies(growth_result):
    """t_exceed and drift_sup come from core (summary.json) only: no second computation."""
    assert not [n for n in growth_result.notes if "summary t_exceed" in n]
    assert "t_exceed_traj" not in growth_result.trials.columns


def _verdict_of(result, depth: int) -> set[str]:
    v = result.verdict
    return set(v[v["depth"] == depth]["verdict"])


def test_each_verdict_as_constructed(verdict_result):
    assert _verdict_of(verdict_result, 1) == {"exceeds-only-at-init"}
    assert _verdict_of(verdict_result, 2) == {"below-bound"}
    assert _verdict_of(verdict_result, 4) == {"unresolvable"}
    assert _verdict_of(verdict_result, 5) == {"no-data"}
    assert _verdict_of(verdict_result, 6) == {"exceeds-by-training"}
    v = verdict_result.verdict
    assert set(v[v["depth"] == 4]["direct"]) == {"unresolvable"}
    assert set(v[v["depth"] == 5]["direct"]) == {"no-data"}


def test_resolution_is_eps_times_max_kernel_times_safety(verdict_result):
    v = verdict_result.verdict
    row = v[(v["depth"] == 4) & (v["width"] == 64)].iloc[0]
    t = verdict_result.trials
    gap_sup = t[(t["depth"] == 4) & (t["width"] == 64) & t["usable"]]["gap_sup"].max()
    eps32 = float(np.finfo(np.float32).eps)
    assert_close(row["resolution"], eps32 * (CIRCLE_MAX_K + gap_sup) * RESOLUTION_SAFETY)
    assert row["bound"] < row["resolution"]


def test_no_data_row_counts_its_failures(verdict_result):
    v = verdict_result.verdict
    row = v[v["depth"] == 5].iloc[0]
    assert (row["n_seeds"], row["n_failed"]) == (0, 2)


def test_t_exceed_as_constructed_and_its_power_law(verdict_result):
    g = texceed_group()
    t = tracked_steps(g.epochs, g.log_points) * g.lr
    rows = verdict_result.verdict[verdict_result.verdict["depth"] == 6].sort_values("width")
    for width, got in zip(rows["width"], rows["t_exceed_med"], strict=True):
        expected = t[np.flatnonzero(g.drift(t, width) >= CIRCLE_BOUND)[0]]
        assert got == expected, (width, got, expected)
    f = verdict_result.fits
    fit = f[(f["depth"] == 6) & (f["quantity"] == "t_exceed")].iloc[0]
    assert_close(fit["exponent"], 0.5, TEXCEED_TOL, "t_exceed ~ m^0.5")
    horizon = g.epochs * g.lr  # tau(m) = (m/64)^0.5 reaches the horizon at m = 64 horizon^2
    assert abs(math.log10(fit["crossing_width"] / (64 * horizon**2))) < 0.15
    assert fit["extrapolated"] and "extrapolated" in fit["note"]  # 2.6e6 vs widest 1024


def test_conclusions_state_regime_and_limits(growth_result):
    ce, mse = (p for _, p in sorted(growth_result.conclusions.items()))
    assert "Regime: diverging" in ce and "starts-outside" in ce
    for p in (ce, mse):
        assert "Cannot show" in p and "extrapolations" in p


def test_conclusions_give_the_fewest_seeds_when_widths_differ():
    import pandas as pd

    from dashboards._verdict import _seeds

    assert _seeds(pd.Series([3, 3, 3])) == "3 seed(s)"
    assert _seeds(pd.Series([3, 3, 1])) == "1-3 seed(s)"
