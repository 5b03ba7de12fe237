"""``bench/aggregate.py`` runs, and its figures meet what can be judged at quick sizes."""

from __future__ import annotations

import math

import pytest

from bench.aggregate import run

COLUMNS = ["trials", "build s", "import s", "aggregate s", "aggregate CPU s", "trial pass s",
           "peak RSS MiB"]  # fmt: skip


def _table(section: str) -> list[dict[str, float]]:
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == COLUMNS, head
    return [dict(zip(head, (float(c) for c in ln.strip("|").split("|")), strict=True))
            for ln in lines[1:]]  # fmt: skip


@pytest.mark.slow
def test_bench_aggregate_quick_figures():
    section = run(quick=True)
    assert section.startswith("## Aggregator") and "not judged" in section
    rows = _table(section)
    assert [r["trials"] for r in rows] == [100.0, 200.0]
    assert all(math.isfinite(v) and v > 0 for r in rows for v in r.values())
    # memory stays flat when the trial count doubles (the goal's second half)
    assert rows[1]["peak RSS MiB"] < 1.10 * rows[0]["peak RSS MiB"]
    # the per-trial pass is linear and cheap: 200 trials well inside the 20 s of 2,000
    assert rows[1]["trial pass s"] < 5.0
