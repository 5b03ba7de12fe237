"""The headline numbers in README.md and docs/results.md are the aggregate's, regenerated here."""

from __future__ import annotations

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
