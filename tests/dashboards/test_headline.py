"""The headline numbers in README.md and docs/results.md are the aggregate's, regenerated here."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from dashboards import direct_markdown

REPO = Path(__file__).resolve().parents[2]
VERDICT = REPO / "docs" / "results" / "direct" / "verdict.parquet"


@pytest.mark.parametrize("doc", ["README.md", "docs/results.md"])
def test_docs_quote_the_direct_table_generated_from_the_aggregate(doc):
    table = direct_markdown(pd.read_parquet(VERDICT))
    assert table in (REPO / doc).read_text(), f"{doc}: regenerate the direct table"


def test_the_table_says_what_each_row_rests_on():
    frame = pd.read_parquet(VERDICT)
    table = direct_markdown(frame)
    assert table.count("\n") == 1 + int((frame["n_direct"] > 0).sum())
    for verdict in frame.loc[frame["n_direct"] > 0, "direct"]:
        assert f"| {verdict} |" in table


TOLERANCE = REPO / "docs" / "results" / "direct-tolerance" / "trials.parquet"


def _short(v: float) -> str:
    """1.73e11 for 1.7306e+11; "-" for a missing value."""
    if v is None or not math.isfinite(float(v)):
        return "-"
    mantissa, exponent = f"{float(v):.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _and(values) -> str:
    """ "a, b and c" of the short forms of three values."""
    parts = [_short(v) for v in values]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _pct(x: float) -> str:
    """15 for 0.151, 1.5 for 0.0153: a change in percent, to two figures."""
    return f"{100 * x:.0f}" if 100 * x >= 10 else f"{100 * x:.1f}"


def tolerance_moves(trials: pd.DataFrame, column: str) -> str:
    """ "a-b%, c-d% and e-f%": per halving of flow_tol, the range over seeds of |ratio - 1| of
    ``column`` between the two tolerances."""
    tols = sorted(trials["train.flow_tol"].unique(), reverse=True)
    ranges = []
    for a, b in zip(tols, tols[1:], strict=False):
        by = trials.pivot_table(index="seed", columns="train.flow_tol", values=column)
        moves = (by[b] / by[a] - 1.0).abs()
        ranges.append(f"{_pct(moves.min())}-{_pct(moves.max())}%")
    return ", ".join(ranges[:-1]) + " and " + ranges[-1]


def test_results_md_quotes_the_tolerance_study_from_its_aggregate():
    """Every t_leave and t_leave_avg of the "How sure t_leave is" table is the committed
    aggregate's, flow_tol from 1e-3 down to 1.25e-4, and so are the moves per halving quoted
    in the text, the steps and the trial time."""
    trials = pd.read_parquet(TOLERANCE)
    text = (REPO / "docs" / "results.md").read_text()
    joined = " ".join(text.split())
    for seed, sub in trials.groupby("seed"):
        sub = sub.sort_values("train.flow_tol", ascending=False)
        leave = " / ".join(_short(v) for v in sub["t_leave"])
        avg = " / ".join(_short(v) for v in sub["t_leave_avg"])
        assert f"| {seed} | {leave} | {avg} |" in text, (seed, leave, avg)
    readme = " ".join((REPO / "README.md").read_text().split())
    for column in ("t_leave", "t_leave_avg"):
        assert f"`{column}` moved by {tolerance_moves(trials, column)}" in joined, column
        assert f"`{column}` moved by {tolerance_moves(trials, column)}" in readme, column
    steps = trials.groupby("train.flow_tol")["steps"].agg(["min", "max"])
    quoted = " / ".join(f"{lo:,d}-{hi:,d}" for lo, hi in steps.sort_index(ascending=False).values)
    assert f"; {quoted} steps)" in joined, quoted
    assert f"{trials['wall_s'].sum() / 60:.0f} min of trial time" in joined
    by = trials.pivot_table(index="seed", columns="train.flow_tol", values="t_leave_avg")
    coarse = by[by.columns.max()] / by[by.columns.min()]
    assert f"t_leave_avg was {coarse.min():.2f}-{coarse.max():.2f} times its value" in joined
    main = pd.read_parquet(TRIALS)
    main = main[(main["width"] == 4096) & (main["loss"] == "cross_entropy")]["t_leave"]
    assert f"t_leave at m = 4096 ({_short(main.min())} to {_short(main.max())}," in joined
    spread = trials.groupby("seed")["t_leave"].agg(lambda v: v.max() / v.min())
    assert f"a seed's t_leave spans a factor of {spread.min():.1f}-{spread.max():.1f}" in joined


MORE = REPO / "docs" / "results" / "direct-more" / "trials.parquet"


def test_results_md_quotes_the_direct_more_study_from_its_aggregate():
    """The "Beyond two points and L = 2" section: gap_0, drift, steps and their ratios to the
    bound are the committed aggregate's."""
    t = pd.read_parquet(MORE)
    text = " ".join((REPO / "docs" / "results.md").read_text().split())  # lines joined
    four = t[t["data.n"] == 4].sort_values(["depth", "width"])

    def pair(sub: pd.DataFrame, col: str, fmt: str) -> str:
        return " and ".join(format(v, fmt) for v in sub[col])

    ce, mse = four[four["loss"] == "cross_entropy"], four[four["loss"] == "mse"]
    for depth in (2, 3):
        ce_d, mse_d = ce[ce["depth"] == depth], mse[mse["depth"] == depth]
        assert f"{pair(mse_d, 'drift_sup', '#.2g')} (L = {depth})" in text, mse_d["drift_sup"]
        assert pair(ce_d, "drift_sup", ".0f") in text, pair(ce_d, "drift_sup", ".0f")
        assert pair(ce_d, "steps", ",d") in text, pair(ce_d, "steps", ",d")
    ratio = four["drift_sup"] / four["bound"]
    lo, hi = ratio[four["loss"] == "cross_entropy"].agg(["min", "max"])
    assert f"{round(lo, -1):,.0f}-{round(hi, -2):,.0f} times the bound" in text, (lo, hi)
    lo, hi = ratio[four["loss"] == "mse"].agg(["min", "max"])
    assert f"{lo:.1f}-{hi:.1f} times the bound" in text, (lo, hi)
    gap = four["gap_init"] / four["bound"]
    assert f"{gap.min():.0f}-{gap.max():.0f} times the bound" in text, (gap.min(), gap.max())
    two = t[t["data.n"] == 2].set_index("loss")
    assert f"t = {_short(two.loc['cross_entropy', 't_leave'])}" in text
    assert f"drift {two.loc['mse', 'drift_sup']:.2f}" in text
    assert f"{two.loc['cross_entropy', 'steps']:,d} steps" in text


FITS = REPO / "docs" / "results" / "direct" / "fits.parquet"
TRIALS = REPO / "docs" / "results" / "direct" / "trials.parquet"


def _e(v: float, digits: int = 1) -> str:
    """3.2e13 for 3.1974e+13 (``digits`` after the point)."""
    mantissa, exponent = f"{float(v):.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _listed(items) -> str:
    """'a and b', 'a, b and c': a list as the docs write it."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fit_without_the_2048_seed(t: pd.DataFrame) -> tuple[int, float, float, float]:
    """(trials, exponent, its 95% interval) of log t_leave on log m over the cross-entropy
    trials at m >= 4096, by least squares (scipy, independent of the report's own fit)."""
    from scipy import stats

    ce = t[(t["loss"] == "cross_entropy") & (t["width"] >= 4096)]
    x, y = [math.log10(v) for v in ce["width"]], [math.log10(v) for v in ce["t_leave"]]
    line = stats.linregress(x, y)
    half = stats.t.ppf(0.975, len(x) - 2) * line.stderr
    return len(x), line.slope, line.slope - half, line.slope + half


def test_readme_quotes_the_t_leave_fit_and_the_widest_rows_from_the_aggregate():
    """README's "How t_leave grows with m" and its m = 4096 / 8192 sentences: the fit, its
    interval, the crossing of t = 1e40 and the per-seed figures are the committed aggregate's."""
    text = " ".join((REPO / "README.md").read_text().split())
    fits = pd.read_parquet(FITS).set_index(["loss", "quantity"])
    fit = fits.loc[("cross_entropy", "t_leave")]
    per_doubling = [fit[k] * math.log10(2) for k in ("exponent", "exponent_lo", "exponent_hi")]
    assert f"m^{fit['exponent']:.0f} [{fit['exponent_lo']:.0f}, {fit['exponent_hi']:.0f}]" in text
    assert f"r2 = {fit['r2']:.2f}" in text
    assert "{:.1f} [{:.1f}, {:.1f}] decades of t per doubling".format(*per_doubling) in text
    assert f"m ~ {_e(fit['crossing_width'], 0).replace('.', '')}" in text  # 9e4
    assert fit["n_widths"] == 4 and fit["crossing_width"] < fit["max_width"] * 10
    assert "m = 2048 with one seed, 4096, 8192 and 16384 with three" in text
    assert fit["n_points"] == 1 + 3 + 3 + 3
    t = pd.read_parquet(TRIALS)
    n, slope, lo, hi = _fit_without_the_2048_seed(t)
    assert n == 9
    assert f"(without it, m^{slope:.0f} [{lo:.1f}, {hi:.0f}] over nine trials)" in text
    ce, mse = t[t["loss"] == "cross_entropy"], t[t["loss"] == "mse"]
    wide = ce[ce["width"] == 8192]
    assert f"t = {_e(wide['t_leave'].min())} to {_e(wide['t_leave'].max())}" in text
    assert wide["t_leave"].min() > ce.loc[ce["width"] == 4096, "t_leave"].max()  # "each later"
    widest = ce[ce["width"] == 16384].sort_values("seed")
    leave = _listed(_e(v) for v in widest["t_leave"])
    assert list(widest["seed"]) == [0, 1, 2]
    assert f"at m = 16384 (seeds 0, 1 and 2) at t = {leave}" in text
    ratio = lambda sub, w: (sub["gap_sup"] / sub["bound"])[sub["width"] == w].max()  # noqa: E731
    assert (f"up to {ratio(ce, 4096):.0f}x the bound (m = 4096), {ratio(ce, 8192):.1f}x (m = 8192) "
            f"and {ratio(ce, 16384):.1f}x (m = 16384)") in text  # fmt: skip
    assert (f"never passed {ratio(mse, 4096):.2f} (m = 4096), {ratio(mse, 8192):.2f} (m = 8192) "
            f"and {ratio(mse, 16384):.2f} (m = 16384)") in text  # fmt: skip
    assert (t.loc[t["width"] >= 4096, "stationary_t"].max() < 4) and "inside by t ~ 4" in text
    minutes = wide["wall_s"] / 60
    assert f"took {minutes.min():.0f}-{minutes.max():.0f} min each" in text
    span = math.log10(widest["t_leave"].max() / widest["t_leave"].min())
    assert f"the three seeds at the widest width left {span:.1f} decades of t apart" in text
    minutes = _listed(f"{v / 60:.0f}" for v in widest["wall_s"])
    assert f"the m = 16384 ones {minutes} min" in text
    one = ce[(ce["width"] == 2048) & (ce["gap_init"] < ce["bound"])]
    assert len(one) == 1
    assert f"started at {100 * float(one['gap_init'].iloc[0] / one['bound'].iloc[0]):.0f}%" in text


def test_results_md_quotes_the_widest_width_from_the_aggregate():
    """docs/results.md's m = 8192 and 16384 paragraphs and its t_leave(m) fits (with and
    without the single m = 2048 seed) are the aggregate's."""
    text = " ".join((REPO / "docs" / "results.md").read_text().split())
    fit = pd.read_parquet(FITS).set_index(["loss", "quantity"]).loc[("cross_entropy", "t_leave")]
    assert f"m^{fit['exponent']:.0f} [{fit['exponent_lo']:.0f}, {fit['exponent_hi']:.0f}]" in text
    assert (f"r2 = {fit['r2']:.2f}), {fit['decades_per_doubling']:.1f} "
            f"[{fit['exponent_lo'] * math.log10(2):.1f}, {fit['exponent_hi'] * math.log10(2):.1f}]"
            " decades") in text  # fmt: skip
    low, high = (_e(fit[k], 0).replace(".", "") for k in ("crossing_width_lo", "crossing_width_hi"))
    assert f"m ~ {_e(fit['crossing_width'], 0).replace('.', '')} [{low}, {high}]" in text
    t = pd.read_parquet(TRIALS)
    n, slope, lo, hi = _fit_without_the_2048_seed(t)
    assert n == 9 and "(m = 4096-16384, nine trials)" in text
    assert (f"gives m^{slope:.0f} [{lo:.1f}, {hi:.0f}], "
            f"{slope * math.log10(2):.1f} decades per doubling") in text  # fmt: skip
    one = t[t["width"] == 16384].sort_values("seed")
    c, m = one[one["loss"] == "cross_entropy"], one[one["loss"] == "mse"]
    assert list(c["seed"]) == list(m["seed"]) == [0, 1, 2]

    def both(values, fmt: str) -> str:
        return _listed(format(v, fmt) for v in values)

    assert (f"cross-entropy took {both(c['wall_s'] / 60, '.0f')} min on one core, squared loss "
            f"{both(m['wall_s'] / 60, '.0f')} min") in text  # fmt: skip
    assert list(c["gap_init"]) == list(m["gap_init"])  # the same networks
    assert f"gap_0 = {both(c['gap_init'], '.3f')}" in text
    assert f"one flip moves K by at most {both(c['flip_jump_max'], '.2g')}" in text
    assert f"took it out at t = {both(c['t_leave'], '.2e')}".replace("e+", "e") in text
    assert f"outside for good from t = {both(c['t_stay'], '.2e')}".replace("e+", "e") in text
    ratios = _listed(f"{v:.1f}x" for v in c["gap_sup"] / c["bound"])
    assert f"at up to {ratios} the bound by t = 1e40" in text
    assert f"peaked at {both(m['gap_sup'] / m['bound'], '.2f')} of the bound" in text
    assert m["gap_sup"].iloc[0] == m["gap_init"].iloc[0]  # "seed 0's never passed its start"
    assert f"held from t = {both(m['stationary_t'], '.1f')} on" in text
    assert f"m = 16384 in {both(c['steps'], ',d')} accepted" in text
    seed1 = c[c["seed"] == 1].iloc[0]
    assert int(seed1["resumed_from_step"]) == 118 and "killed it at step 118" in text
    spent = (c["wall_s"].to_numpy() + m["wall_s"].to_numpy()) / 60
    assert f"({both(spent, '.0f')} min for the pairs of seeds 0, 1 and 2)" in text
    assert f"the three seeds at 16384 left at {both(map(_e, c['t_leave']), 's')}." in text
    span = math.log10(c["t_leave"].max() / c["t_leave"].min())
    assert f"The three seeds left {span:.1f} decades of t apart." in text
    t = pd.read_parquet(TRIALS)
    wide = t[t["width"] == 8192].sort_values("seed")
    ce, mse = wide[wide["loss"] == "cross_entropy"], wide[wide["loss"] == "mse"]
    leave = ", ".join(f"{v:.2e}".replace("e+", "e") for v in ce["t_leave"][:-1])
    assert f"t = {leave} and {ce['t_leave'].iloc[-1]:.2e}".replace("e+", "e") in text
    ratio = ce["gap_sup"] / ce["bound"]
    assert f"{ratio.min():.1f}-{ratio.max():.1f}x the bound by t = 1e40" in text
    ratio = mse["gap_sup"] / mse["bound"]
    assert f"never passed {ratio.min():.2f}-{ratio.max():.2f} of the bound" in text
    held = mse["stationary_t"]
    assert f"held from t = {held.min():.1f}-{held.max():.1f} on" in text
    assert f"{ce['steps'].min():,d}-{ce['steps'].max():,d} accepted steps" in text
    assert f"{wide['wall_s'].sum() / 60:.0f} min of trial time for the six" in text


TOLERANCE_8192 = REPO / "docs" / "results" / "direct-tolerance-8192" / "trials.parquet"


def test_results_md_quotes_the_tolerance_study_at_8192_from_its_aggregate():
    """The m = 8192 tolerance table (t_leave, t_stay and t_leave_avg at four tolerances), the
    moves per halving and the trial time are the committed aggregate's; so are the same trial's
    crossings in its run to t = 1e40 at flow_tol 1e-3."""
    text = (REPO / "docs" / "results.md").read_text()
    tol = pd.read_parquet(TOLERANCE_8192).sort_values("train.flow_tol", ascending=False)
    for _, r in tol.iterrows():
        row = (f"| {r['train.flow_tol']:g} | {int(r['steps']):,d} | {_short(r['t_leave'])} | "
               f"{_short(r['t_stay'])} | {_short(r['t_leave_avg'])} |")  # fmt: skip
        assert row in text, row
    joined = " ".join(text.split())
    assert f"{tol['wall_s'].sum() / 60:.0f} min of trial time on the 2 cores" in joined
    for column in ("t_leave", "t_leave_avg"):
        v = tol[column].to_numpy(float)
        moves = ", ".join(f"{_pct(abs(b / a - 1.0))}%" for a, b in zip(v, v[1:], strict=False))
        assert f"`{column}` moved by {moves}" in joined, (column, moves)
    t = pd.read_parquet(TRIALS)
    same = t[(t["width"] == 8192) & (t["seed"] == 0) & (t["loss"] == "cross_entropy")].iloc[0]
    assert f"first crossed at {_short(same['t_leave'])} and stayed out from " in joined
    assert f"stayed out from {_short(same['t_stay'])}" in joined


L3 = REPO / "docs" / "results" / "direct-L3"


def test_results_md_quotes_the_depth_3_study_from_its_aggregate():
    """The "direct test at L = 3" section: its table is the aggregate's ``direct_markdown``,
    and each number of its three points is the committed aggregate's."""
    text = (REPO / "docs" / "results.md").read_text()
    table = direct_markdown(pd.read_parquet(L3 / "verdict.parquet"))
    assert f"<!-- direct-L3-table -->\n{table}\n<!-- /direct-L3-table -->" in text
    joined = " ".join(text.split())
    t = pd.read_parquet(L3 / "trials.parquet")
    lam, bound = t["lambda0"].iloc[0], t["bound"].iloc[0]
    assert f"FCN L = 3: lambda0 = {lam:.3f}, bound = {bound:.3f}." in joined
    t = t.assign(start=t["gap_init"] / t["bound"], peak=t["gap_sup"] / t["bound"])
    ce, mse = t[t["loss"] == "cross_entropy"], t[t["loss"] == "mse"]
    ran = t[(t["width"] != 4096) | (t["seed"] != 0)]  # the seed-0 pair at 4096 was copied
    assert len(ran) == 10 and f"{ran['wall_s'].sum() / 60:.0f} min of trial time" in joined
    narrow, narrow_mse = ce[ce["width"] == 2048], mse[mse["width"] == 2048]
    assert (narrow["start"] >= 1).all()  # "no seed starts inside"
    assert f"gap_0 is {narrow['start'].min():.2f}-{narrow['start'].max():.2f} times" in joined
    assert (f"moved the kernel by {narrow['drift_sup'].min():.0f}-{narrow['drift_sup'].max():.0f}"
            f" (drift_sup), squared loss by {narrow_mse['drift_sup'].min():.2f}-"
            f"{narrow_mse['drift_sup'].max():.2f}") in joined  # fmt: skip
    wide = ce[ce["width"] == 4096].set_index("seed")
    ctl = mse[mse["width"] == 4096].set_index("seed")
    start = wide["start"]
    assert start[0] < 1 and start[1] < 1 and start[2] >= 1
    assert (f"at {start[0]:.2f} and {start[1]:.2f} of the bound (seed 2, at {start[2]:.2f}, does "
            "not)") in joined  # fmt: skip
    leave, stay = wide["t_leave"], wide["t_stay"]
    assert f"seed 0 at t = {_short(leave[0])} and seed 1 at t = {leave[1]:.2f}" in joined
    assert f"from t = {_short(stay[0])} and {stay[1]:.2e}".replace("e+", "e") in joined
    assert f"gaps were {wide['peak'].min():.0f}-{wide['peak'].max():.0f} times the bound" in joined
    assert math.isinf(ctl["t_leave"][0]) and math.isinf(ctl["t_leave"][1])  # stayed within
    assert f"never passed {ctl['peak'][0]:.2f} and {ctl['peak'][1]:.2f} of the bound" in joined
    held = {f"{v:.1f}" for v in ctl["stationary_t"][[0, 1]]}
    assert len(held) == 1 and f"held from t = {held.pop()} on" in joined
    assert (f"{ce['steps'].min():,d}-{ce['steps'].max():,d} steps to reach t = 1e40 at L = 3, "
            f"squared loss {mse['steps'].min()}-{mse['steps'].max()}") in joined  # fmt: skip
    assert f"within {100 * (1 - start[1]):.0f}% of the bound" in joined
    assert f"within {100 * (1 - ctl['peak'][1]):.0f}% of it" in joined
    assert f"about {start[2] / math.sqrt(2):.2f} of the bound at m = 8192" in joined
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"cross-entropy took both out (t = {_e(leave[0])} and {leave[1]:.2f})" in readme
    assert f"one of the two started within {100 * (1 - start[1]):.0f}% of the bound" in readme


def test_the_direct_table_gives_the_averaged_crossing_where_it_was_recorded():
    """The tolerance study recorded gap_avg: its direct table has a t_leave_avg column, each row
    the median [min, max] over the seeds of that flow_tol's trials; the main study's trials
    predate gap_avg and its table has no such column."""
    verdict = pd.read_parquet(TOLERANCE.with_name("verdict.parquet"))
    trials = pd.read_parquet(TOLERANCE)
    lines = direct_markdown(verdict).splitlines()
    assert "t_leave_avg median [range]" in lines[0]
    for r in verdict.itertuples():
        v = trials.loc[trials["variant"] == r.variant, "t_leave_avg"]
        cell = f" {v.median():.3g} [{v.min():.3g}, {v.max():.3g}] |"
        assert sum(cell in line for line in lines[2:]) == 1, (r.variant, cell)
    assert "t_leave_avg" not in direct_markdown(pd.read_parquet(VERDICT))


def test_the_direct_table_names_the_variant_of_each_row_when_there_are_several():
    """The tolerance study's four rows differ only in flow_tol: a variant column says which is
    which; a table of one variant (the main study) has no such column."""
    verdict = pd.read_parquet(TOLERANCE.with_name("verdict.parquet"))
    lines = direct_markdown(verdict).splitlines()
    assert "| width | variant |" in lines[0] and len(lines) == 2 + len(verdict)
    for variant in verdict["variant"]:
        assert sum(f"| {variant} |" in line for line in lines[2:]) == 1, variant
    assert "variant" not in direct_markdown(pd.read_parquet(VERDICT)).splitlines()[0]


FINE = REPO / "docs" / "results" / "direct-fine"


def test_results_md_quotes_the_direct_test_at_the_converged_tolerance():
    """The direct test at flow_tol 2.5e-4 (m = 1024-8192): its table is the aggregate's; the
    steps and minutes per width, each seed's t_leave_avg at m = 4096 and 8192 and their ratios to
    the tolerance studies, the control's figures and the t_leave_avg(m) fit are the trials'."""
    text = (REPO / "docs" / "results.md").read_text()
    joined = " ".join(text.split())
    readme = " ".join((REPO / "README.md").read_text().split())
    assert direct_markdown(pd.read_parquet(FINE / "verdict.parquet")) in text
    t = pd.read_parquet(FINE / "trials.parquet").sort_values(["width", "seed"])
    assert sorted(set(t["width"])) == [1024, 2048, 4096, 8192] and len(t) == 24
    ce_all, mse_all = t[t["loss"] == "cross_entropy"], t[t["loss"] == "mse"]
    for width, sub in ce_all.groupby("width"):
        steps = f"{sub['steps'].min():,d}-{sub['steps'].max():,d} accepted steps at m = {width}"
        assert steps in joined, steps
    ce = ce_all[ce_all["width"] == 4096]
    steps = f"{ce['steps'].min():,d}-{ce['steps'].max():,d} accepted steps"
    assert steps in readme, steps
    avg = ", ".join(_short(v) for v in ce["t_leave_avg"])
    assert f"m = 4096 at t_leave_avg = {avg} (seeds 0-2)" in joined and avg in readme, avg
    first = f"first instantaneous crossing came at {_and(ce['t_leave'])}"
    assert first in joined, first
    tol = pd.read_parquet(TOLERANCE)
    finest = tol[tol["train.flow_tol"] == tol["train.flow_tol"].min()].set_index("seed")
    ratio = ce.set_index("seed")["t_leave_avg"] / finest["t_leave_avg"]
    assert f"{ratio.min():.2f}-{ratio.max():.2f} times" in joined, ratio
    for width in (4096, 8192):
        lo, hi = (f"{v / 60:.0f}" for v in ce_all.loc[ce_all["width"] == width, "wall_s"]
                  .agg(["min", "max"]))  # fmt: skip
        assert f"({lo if lo == hi else f'{lo}-{hi}'} min each on one core" in joined, width
    coarse = pd.read_parquet(TRIALS)
    coarse = coarse[(coarse["width"] == 4096) & (coarse["loss"] == "cross_entropy")]
    times = ce["steps"].median() / coarse["steps"].median()
    assert f"{times:.1f}x the median steps at flow_tol 1e-3" in joined, times
    wide = ce_all[ce_all["width"] == 8192]
    avg = ", ".join(_short(v) for v in wide["t_leave_avg"])
    assert f"m = 8192 at t_leave_avg = {avg} (seeds 0-2)" in joined, avg
    same = pd.read_parquet(TOLERANCE_8192)
    same = same[same["train.flow_tol"] == 2.5e-4].iloc[0]
    r = float(wide.loc[wide["seed"] == 0, "t_leave_avg"].iloc[0] / same["t_leave_avg"])
    assert f"{r:.2f} times the m = 8192 tolerance study's" in joined, r
    inside = mse_all[mse_all["width"] >= 4096]
    held = inside["stationary_t"].astype(float)
    assert f"held from t = {held.min():.1f}-{held.max():.1f} on" in joined
    worst = (inside["gap_sup"] / inside["bound"]).max()
    assert f"never passed {worst:.2f} of the bound at m = 4096 and 8192" in joined, worst
    assert wide["t_leave_avg"].min() > ce["t_leave_avg"].max()  # "each later than every seed"
    coarse_wide = pd.read_parquet(TRIALS).sort_values("seed")
    coarse_wide = coarse_wide[
        (coarse_wide["width"] == 8192) & (coarse_wide["loss"] == "cross_entropy")
    ]
    factors = wide["t_leave"].to_numpy() / coarse_wide["t_leave"].to_numpy()
    assert f"m = 8192, {_and(wide['t_leave'])}, are" in joined
    assert f"are {_listed(f'{v:.2g}' for v in factors)} times the table's" in joined, factors
    assert f"({_and(coarse_wide['t_leave'])})" in joined
    new = t[t["width"] != 4096]  # the trials of the later session
    minutes = [
        new.loc[new["loss"] == loss, "wall_s"].sum() / 60 for loss in ("cross_entropy", "mse")
    ]
    assert f"{minutes[0]:.0f} min of cross-entropy trial time and {minutes[1]:.0f} min" in joined
    narrow = ce_all[ce_all["width"] == 2048].set_index("seed")
    inside = narrow[narrow["gap_init"] < narrow["bound"]]
    assert list(inside.index) == [2] and f"(gap_0 = {inside['gap_init'].iloc[0]:.2f})" in joined
    assert f"took it out at t = {inside['t_leave'].iloc[0]:.1f}" in joined
    assert (
        mse_all.loc[(mse_all["width"] == 2048) & (mse_all["seed"] == 2), "t_leave"].iloc[0] > 1e40
    )
    n1024 = ce_all[ce_all["width"] == 1024].set_index("seed").loc[[0, 1]]
    assert f"({n1024['gap_init'].iloc[0]:.2f} and {n1024['gap_init'].iloc[1]:.2f})" in joined
    jumps = n1024["flip_jump_max"]
    assert (jumps > n1024["bound"] / 10).all()
    assert f"by up to {jumps.iloc[0]:.2f} and {jumps.iloc[1]:.2f}, more than a tenth" in joined
    m1024 = mse_all[(mse_all["width"] == 1024) & (mse_all["seed"] == 0)]["t_leave"].iloc[0]
    assert f"took seed 0 out too (t = {m1024:.2f})" in joined
    fits = pd.read_parquet(FINE / "fits.parquet").set_index(["loss", "quantity"])
    for quantity in ("t_leave_avg", "t_leave"):
        f = fits.loc[("cross_entropy", quantity)]
        assert f["n_widths"] == 3 and f["n_points"] == 1 + 3 + 3, quantity
        quoted = (f"{quantity} ~ m^{f['exponent']:.0f} [{f['exponent_lo']:.0f}, "
                  f"{f['exponent_hi']:.0f}] (r2 = {f['r2']:.2f}), "
                  f"{f['decades_per_doubling']:.1f} decades of t per doubling")  # fmt: skip
        assert quoted in joined, quoted
        if quantity == "t_leave_avg":
            assert quoted in readme, quoted
