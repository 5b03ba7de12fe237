"""bench ntk: the figures it reports are measured side by side and consistent (they can fail)."""

from __future__ import annotations

import pytest

from bench import ntk

pytestmark = pytest.mark.slow  # ~40 s on 2 cores: peaks are measured in fresh processes


def test_quick_run_reports_consistent_figures(capsys):
    section = ntk.run(quick=True)
    assert section.startswith("## Empirical NTK")
    assert "| fcn | 16 | 64 | 2 |" in capsys.readouterr().out  # rows print as they come
    rows = _rows(section, ntk.HEADER)
    assert [r[0] for r in rows] == ["fcn", "resnet"]
    for r in rows:
        per_map, jac, speedup = map(float, r[4:7])
        assert per_map > 0 and jac > 0, r
        assert speedup == pytest.approx(jac / per_map, rel=0.05), r  # the ratio of the two
        if "<" in r[7] + r[8]:  # a peak below the measurement's resolution: no ratio from it
            assert r[9] == "-", r
        else:
            mem_map, mem_jac, mem_ratio = map(float, r[7:10])
            assert mem_map >= ntk.MEM_FLOOR_MIB and mem_jac >= ntk.MEM_FLOOR_MIB, r
            assert mem_ratio == pytest.approx(mem_map / mem_jac, rel=0.05), r
    for r in _rows(section, ntk.TRAIN_HEADER):
        ntk_s, step_s, ratio = map(float, r[4:7])
        assert ntk_s > 0 and step_s > 0 and ratio == pytest.approx(ntk_s / step_s, rel=0.05), r
    met = "NOT met" not in section.split("Goal >= 20x")[1].split("\n")[0]
    assert met == all(float(r[6]) >= 20 and r[9] != "-" and float(r[9]) <= 0.1 for r in rows)


def _rows(section: str, header: list[str]) -> list[list[str]]:
    """The body rows of the Markdown table with this header."""
    lines = section.splitlines()
    start = lines.index("| " + " | ".join(header) + " |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows
