"""The session's smoke sweep (``ntkdiv sweep sweeps/smoke.yaml``) aggregates, and its report opens
in headless Chromium."""

from __future__ import annotations

import pytest

import dashboards

from .test_report import DATA_IMG, assert_not_blank, screenshot

VERDICTS = {v.value for v in dashboards.Verdict}


@pytest.mark.slow
def test_smoke_sweep_aggregates_and_report_opens(smoke_sweep, tmp_path):
    assert smoke_sweep.code == 0, smoke_sweep.stderr[-3000:]
    assert "Conclusions:" in smoke_sweep.stdout  # ntkdiv sweep ends with the aggregator's verdict
    result = dashboards.aggregate(smoke_sweep.sweep_dir, tmp_path / "report")
    assert len(result.verdict) >= 2 and set(result.verdict["verdict"]) <= VERDICTS
    assert (result.verdict["n_seeds"] > 0).all()
    assert not [n for n in result.notes if "summary" in n]  # summary and trajectory agree
    assert {"gap_init", "drift_sup_horizon", "t_exceed", "t_leave"} <= set(result.fits["quantity"])
    page = result.html.read_text()
    assert len(DATA_IMG.findall(page)) == len(result.figures) >= 7
    png = tmp_path / "report.png"
    screenshot(result.html, png, tmp_path)
    assert_not_blank(png)
