"""The direct verdict on synthetic stores with known answers (see ``direct_store``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dashboards._direct import Direct, resolving_width
from dashboards._fits import JUMP_FRACTION
from tests.tolerance import EXACT_F64, assert_close

from .direct_store import SEED_SHIFT, TWO_POINT_BOUND, DirectGroup, saturating_drift, t_leave_of

B = TWO_POINT_BOUND
GRID_TOL = (0.0, 0.021)  # t_leave is read on a grid of 0.02 decades
CE = DirectGroup()
MSE = DirectGroup(loss="mse", lr=0.05, leave_b=None, drift=saturating_drift())
OUTSIDE = DirectGroup(depth=3, widths=(64, 128), seeds=(0, 1), t_max=1e3, gap0_c=30.0)
FLIPS = DirectGroup(depth=4, widths=(1024, 2048, 4096), seeds=(0, 1), jump_c=0.1 * 4096,
                    t_max=1e3)  # fmt: skip
SPLIT = DirectGroup(depth=5, widths=(2048, 4096), never=[(2048, 1)], t_max=1e20, leave_a=10.0)
UNTRACKED = DirectGroup(depth=6, widths=(4096,), seeds=(0, 1), track_jump=False, t_max=1e3)
DIVERGED = DirectGroup(depth=7, widths=(4096,), status={(4096, 0): "diverged"}, t_max=1e20,
                       leave_a=10.0)  # fmt: skip
# a width too narrow to tell the losses apart: squared loss leaves there too (at m = 1024 only)
CE_PAIR = DirectGroup(depth=8, widths=(1024, 4096), t_max=1e20)
MSE_PAIR = DirectGroup(depth=8, widths=(1024, 4096), t_max=1e20, loss="mse", lr=0.05,
                       leave_a=14.0, never=[(4096, s) for s in (0, 1, 2)])  # fmt: skip
GROUPS = (CE, MSE, OUTSIDE, FLIPS, SPLIT, UNTRACKED, DIVERGED, CE_PAIR, MSE_PAIR)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    import dashboards

    from .direct_store import write_sweep

    sweep = tmp_path_factory.mktemp("direct") / "sweep"
    write_sweep(sweep, GROUPS)
    return dashboards.aggregate(sweep, tmp_path_factory.mktemp("report"), figures=False)


def _rows(result, group: DirectGroup):
    v = result.verdict
    return v[(v["depth"] == group.depth) & (v["loss"] == group.loss)].sort_values("width")


def test_kernel_that_starts_inside_and_leaves_is_leaves_bound(result):
    rows = _rows(result, CE)
    assert list(rows["direct"]) == [Direct.LEAVES.value] * 4
    assert (rows["n_inside"] == 3).all() and (rows["n_left"] == 3).all()
    for r in rows.itertuples():
        want = [math.log10(t_leave_of(CE, r.width, s)) for s in CE.seeds]
        got = np.log10([r.t_leave_min, r.t_leave_med, r.t_leave_max])
        assert_close(got, sorted(want), GRID_TOL, f"t_leave spread at m={r.width}")


def test_t_leave_fit_recovers_decades_per_doubling(result):
    f = result.fits
    row = f[(f["quantity"] == "t_leave") & (f["depth"] == 2) & (f["loss"] == CE.loss)].iloc[0]
    assert_close(row["decades_per_doubling"], CE.leave_b, (0.0, 0.01), "decades per doubling")
    assert row["exponent_lo"] <= CE.leave_b / math.log10(2) <= row["exponent_hi"]
    assert row["n_widths"] == 4


def test_the_fit_and_its_figure_leave_out_the_same_trials(result, tmp_path):
    """``left_out``: the cross-entropy trials at a width where the control left the bound too
    (CE_PAIR at m = 1024), one rule for the t_leave(m) fit and the hollow dots of its figure."""
    from dashboards._direct import contested_widths
    from dashboards._figures import t_leave_figure
    from dashboards._fits import left_out

    trials, contested = result.trials, contested_widths(result.verdict)
    out = trials[left_out(trials, contested)]
    assert set(out["depth"]) == {8} and set(out["width"]) == {1024}
    assert set(out["loss"]) == {CE.loss} and len(out) == len(CE_PAIR.seeds)
    family = trials[trials["depth"] == 8]
    fig = t_leave_figure(family, result.fits, tmp_path / "tleave.png", "L=8", contested)
    assert fig.path.is_file() and "Hollow: a width where the squared-loss control" in fig.caption
    assert "t_leave_avg" not in fig.caption  # these trials recorded no gap_avg


def test_the_t_leave_figure_draws_the_averaged_crossing_where_it_was_recorded(result, tmp_path):
    """Trials with t_leave_avg (gradient flow) get its points and its fit in the t_leave figure;
    the fit row is the aggregate's rule applied to that column."""
    from dashboards._figures import t_leave_figure
    from dashboards._fits import fit_table

    trials = result.trials[result.trials["depth"] == 2].copy()
    trials["t_leave_avg"] = trials["t_leave"] * 1.5
    fits = fit_table(trials)
    row = fits[(fits["quantity"] == "t_leave_avg") & (fits["loss"] == CE.loss)].iloc[0]
    plain = fits[(fits["quantity"] == "t_leave") & (fits["loss"] == CE.loss)].iloc[0]
    assert_close(row["exponent"], plain["exponent"], (1e-9, 0.0), "a constant factor, one slope")
    fig = t_leave_figure(trials, fits, tmp_path / "tleave.png", "L=2")
    assert fig.path.is_file() and "x: t_leave_avg" in fig.caption


def test_kernel_that_never_leaves_stays_within_and_says_how_far(result):
    rows = _rows(result, MSE)
    assert list(rows["direct"]) == [Direct.STAYS.value] * 4
    assert (rows["horizon_min"] >= 1e40 * (1 - 1e-9)).all()
    text = result.conclusions
    para = next(p for k, p in text.items() if "mse" in k and "L=2" in k)
    assert "did not leave the bound by t = 1e+40" in para


def test_each_row_names_the_other_losss_verdict_at_its_width(result):
    assert list(_rows(result, CE)["other_loss_direct"]) == [Direct.STAYS.value] * 4
    assert list(_rows(result, MSE)["other_loss_direct"]) == [Direct.LEAVES.value] * 4
    pair = _rows(result, CE_PAIR)
    assert list(pair["direct"]) == [Direct.LEAVES.value] * 2
    assert list(pair["other_loss_direct"]) == [Direct.LEAVES.value, Direct.STAYS.value]
    assert list(_rows(result, OUTSIDE)["other_loss_direct"]) == ["", ""]  # no control ran
    f = result.fits  # the t_leave(m) fit leaves out the width where the control left too
    fit = f[(f["quantity"] == "t_leave") & (f["depth"] == 8) & (f["loss"] == CE.loss)].iloc[0]
    assert fit["note"].startswith("m = 1024 left out: the squared-loss control left"), fit["note"]
    assert "refused: 1 width(s)" in fit["note"]  # m = 4096 alone is left
    fit = f[(f["quantity"] == "t_leave") & (f["depth"] == 2) & (f["loss"] == CE.loss)].iloc[0]
    assert "left out" not in fit["note"]
    para = next(p for k, p in result.conclusions.items() if "cross_entropy" in k and "L=8" in k)
    assert (
        "At m = 1024 the other loss left the bound too (in some or all seeds), so that width "
        "does not tell the losses apart; at m = 4096 the other loss stayed within it."
    ) in para
    para = next(p for k, p in result.conclusions.items() if "cross_entropy" in k and "L=2" in k)
    assert (
        "The other loss stayed within the bound at m = " in para
        and "left the bound too" not in para
    )


def test_starts_outside_names_the_theoretical_resolving_width(result):
    rows = _rows(result, OUTSIDE)
    assert list(rows["direct"]) == [Direct.STARTS_OUTSIDE.value] * 2
    r = rows.iloc[0]
    # two widths: gap_0 ~ m^-1/2 is assumed, with the geometric-mean prefactor of the data
    pref = np.exp(np.mean(np.log(OUTSIDE.gap0_c * np.array(OUTSIDE.scatter[:2]))))
    assert_close(r["resolve_gap_width"], (pref / B) ** 2, EXACT_F64, "gap_0 < bound width")
    assert "theoretical m^-0.5" in r["resolve_how"] and "extrapolated" in r["resolve_how"]
    assert r["resolve_extrapolated"]


def test_flip_limited_names_the_fitted_jump_width(result):
    rows = _rows(result, FLIPS)
    assert list(rows["direct"]) == [Direct.FLIP_LIMITED.value] * 3
    r = rows.iloc[0]
    assert_close(r["resolve_jump_width"], FLIPS.jump_c / (JUMP_FRACTION * B), EXACT_F64, "jump")
    assert "fitted m^-1.00 (3 widths)" in r["resolve_how"]
    assert r["resolve_width"] == max(r["resolve_gap_width"], r["resolve_jump_width"])


def test_seeds_that_disagree_are_split(result):
    rows = _rows(result, SPLIT)
    assert list(rows["direct"]) == [Direct.SPLIT.value, Direct.LEAVES.value]
    assert rows.iloc[0]["n_left"] == 2 and rows.iloc[0]["n_inside"] == 3


def test_store_without_step_jump_is_not_certified(result):
    assert list(_rows(result, UNTRACKED)["direct"]) == [Direct.JUMP_UNTRACKED.value]


def test_diverged_trials_are_never_counted(result):
    r = _rows(result, DIVERGED).iloc[0]
    assert r["n_seeds"] == 2 and r["n_diverged"] == 1 and r["n_inside"] == 2
    assert r["direct"] == Direct.LEAVES.value


def test_report_opens_with_the_direct_verdict(result):
    page = result.html.read_text()
    first_table = page.index("<table")
    assert page.index("Direct verdict") < first_table < page.index("Drift verdict")
    head = page[first_table : page.index("</tr>", first_table)]
    assert head.index("direct") < head.index("t_leave")  # the answer before the evidence


def test_resolving_width_refuses_no_data():
    import pandas as pd

    frame = pd.DataFrame({"width": [64.0], "gap_init": [np.nan], "flip_jump_max": [np.nan]})
    assert math.isnan(resolving_width(frame, B)["resolve_width"])


def test_seed_shifts_are_distinct():
    assert len(set(SEED_SHIFT[:3])) == 3  # the t_leave spread test needs three distinct seeds


def test_no_second_verdict_beside_a_direct_answer(result):
    """Where the direct test answers, the drift verdict is not shown next to it (text and HTML)."""
    lines = [ln.split() for ln in result.verdict_text.splitlines() if "leaves-bound" in ln]
    assert lines and all(ln[-1] == "-" for ln in lines if ln[-2] == "leaves-bound")
    page = result.html.read_text()
    drift = page[page.index("Drift verdict (evidence") :]
    drift = drift[: drift.index("<h2>", 10)]
    unresolved = ~result.verdict["direct"].isin(["leaves-bound", "stays-within", "split"])
    assert drift.count("<tr>") == 1 + int(unresolved.sum())  # a header and the unresolved rows
