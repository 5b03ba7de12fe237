"""``bench/aggregate.py`` runs and reports its table (quick sizes)."""

from __future__ import annotations

import pytest

from bench.aggregate import run


@pytest.mark.slow
def test_bench_aggregate_quick_returns_markdown():
    section = run(quick=True)
    assert section.startswith("## Aggregator")
    rows = [
        line for line in section.splitlines() if line.startswith("| 1") or line.startswith("| 2")
    ]
    assert len(rows) == 2  # 100 and 200 trials
    assert "not judged" in section
