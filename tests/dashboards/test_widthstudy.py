"""The six-point width study's m*(t), re-read from its committed aggregate at equal t."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dashboards._widthstudy import STUDY, study_crossing, study_markdown, study_table
from tests.tolerance import EXACT_F64, assert_close


@pytest.fixture(scope="module")
def crossing() -> pd.DataFrame:
    return study_crossing(STUDY)


def _row(c: pd.DataFrame, arch: str, data: str, loss: str, t: float) -> pd.Series:
    sel = (c["arch"] == arch) & (c["data"] == data) & (c["loss"] == loss) & (c["t"] == t)
    assert sel.sum() == 1
    return c[sel].iloc[0]


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("t", [1.0, 10.0, 100.0])
def test_m_star_is_the_least_squares_crossing_of_the_committed_drifts(crossing, loss, t):
    trials = pd.read_parquet(STUDY)
    sub = trials[(trials["arch"] == "fcn") & (trials["data"] == "circle n=6")
                 & (trials["loss"] == loss)]  # fmt: skip
    y = sub[f"drift_t1e{int(math.log10(t))}"].to_numpy(float)
    slope, icpt = np.polyfit(np.log(sub["width"].to_numpy(float)), np.log(y), 1)
    bound = float(sub["bound"].iloc[0])
    row = _row(crossing, "fcn", "circle n=6", loss, t)
    assert_close(row["m_star"], math.exp((math.log(bound) - icpt) / slope), EXACT_F64, "m*")
    assert row["m_star_lo"] <= row["m_star"] <= row["m_star_hi"]
    assert row["n_widths"] == 6 and row["n_points"] == 18


def test_only_trials_that_reached_t_count(crossing):
    """Squared loss ran to t = 200 (FCN) and 50 (ResNet): no m* past that, so the losses are
    compared at t = 1, 10, 100 (FCN) and 1, 10 (ResNet) only."""
    assert set(crossing[(crossing["arch"] == "fcn") & (crossing["loss"] == "mse")]["t"]) == {
        1.0, 10.0, 100.0}  # fmt: skip
    table = study_table(crossing)
    assert set(table[table["arch"] == "resnet"]["t"]) == {1.0, 10.0}
    assert set(table[table["data"] == "circle n=6"]["t"]) == {1.0, 10.0, 100.0}


def test_at_equal_t_squared_loss_needs_the_wider_network_on_the_circle(crossing):
    """The committed numbers, read at equal t (FCN, circle): at t = 10 and 100 the squared loss's
    m* is above cross-entropy's, beyond both intervals' overlap at t = 10."""
    for t in (10.0, 100.0):
        ce = _row(crossing, "fcn", "circle n=6", "cross_entropy", t)
        mse = _row(crossing, "fcn", "circle n=6", "mse", t)
        assert mse["m_star"] > ce["m_star"]
    ce10 = _row(crossing, "fcn", "circle n=6", "cross_entropy", 10.0)
    mse10 = _row(crossing, "fcn", "circle n=6", "mse", 10.0)
    assert mse10["m_star_lo"] > ce10["m_star_hi"]


def test_every_extrapolation_is_flagged(crossing):
    far = crossing["m_star"] > 10 * crossing["max_width"]
    assert (crossing["extrapolated"] == far).all() and far.sum() >= 15
    assert "(extrapolated)" in study_markdown(crossing)


def test_results_doc_quotes_the_table_generated_from_the_aggregate(crossing):
    """docs/results.md carries study_markdown's table verbatim: no hand-copied number."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "results.md").read_text()
    assert study_markdown(crossing).strip() in doc
