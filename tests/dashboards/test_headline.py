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


def test_results_md_quotes_the_tolerance_study_from_its_aggregate():
    """Every t_leave and t_stay of the "How sure t_leave is" table is the committed aggregate's,
    flow_tol from 1e-3 down to 1.25e-4."""
    trials = pd.read_parquet(TOLERANCE)
    text = (REPO / "docs" / "results.md").read_text()
    for seed, sub in trials.groupby("seed"):
        sub = sub.sort_values("train.flow_tol", ascending=False)
        leave = " / ".join(_short(v) for v in sub["t_leave"])
        stay = " / ".join(_short(v) for v in sub["t_stay"])
        assert f"| {seed} | {leave} | {stay} |" in text, (seed, leave, stay)


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
