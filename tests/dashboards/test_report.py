"""The report directory: files, columns, inlined figures, and the page rendered by Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

VERDICT_COLUMNS = {"arch", "depth", "loss", "lr", "data", "width", "n_seeds", "bound",
                   "resolution", "gap_init_med", "drift_sup_med", "gap_sup_med", "t_exceed_med",
                   "verdict", "direct", "n_inside", "flip_jump_max_med", "t_leave_med",
                   "resolve_width", "resolve_how"}  # fmt: skip
REGIME_COLUMNS = {"arch", "depth", "loss", "lr", "data", "regime", "why", "m_star_slope"}
CROSSING_COLUMNS = {"loss", "t", "m_star", "m_star_lo", "m_star_hi", "extrapolated", "note"}
FITS_COLUMNS = {"arch", "depth", "loss", "lr", "data", "quantity", "exponent", "exponent_lo",
                "exponent_hi", "crossing_width"}  # fmt: skip
DATA_IMG = re.compile(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{200,}"')
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")  # fmt: skip


def screenshot(html: Path, png: Path, tmp: Path, size: str = "1400,5000") -> None:
    """Render ``html`` to ``png`` with headless Chromium (Debian's ``chromium`` package)."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: apt-get update && apt-get install -y chromium")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}",
           f"--screenshot={png}", f"--window-size={size}", html.resolve().as_uri()]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def assert_not_blank(png: Path) -> None:
    """The screenshot has text and pictures: many non-white pixels, several distinct colours."""
    img = mpimg.imread(png)[..., :3]  # (h, w, 3) floats in [0, 1]
    non_white = float((img.min(axis=2) < 0.9).mean())
    colours = np.unique((img[::7, ::7] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert non_white > 0.03, f"screenshot is nearly blank ({non_white:.3%} non-white)"
    assert len(colours) > 50, f"screenshot has only {len(colours)} colours"


def test_report_files_and_columns(growth_result):
    d = growth_result.report_dir
    for name in ("report.html", "verdict.parquet", "verdict.csv", "fits.parquet", "fits.csv",
                 "trials.parquet", "verdict.txt", "regimes.parquet", "regimes.csv",
                 "crossing.parquet", "crossing.csv", "growth.parquet"):  # fmt: skip
        assert (d / name).is_file(), name
    assert set(pq.read_schema(d / "verdict.parquet").names) >= VERDICT_COLUMNS
    assert FITS_COLUMNS | {"t", "extrapolated"} <= set(pq.read_schema(d / "fits.parquet").names)
    assert set(pq.read_schema(d / "regimes.parquet").names) >= REGIME_COLUMNS
    assert set(pq.read_schema(d / "crossing.parquet").names) >= CROSSING_COLUMNS
    assert len(pd.read_parquet(d / "regimes.parquet")) == 2  # one row per group
    assert len(pd.read_csv(d / "verdict.csv")) == len(growth_result.verdict)
    trials = pq.read_table(d / "trials.parquet").to_pandas()
    assert {"failed", "missing"} <= set(trials["status"])


def test_html_inlines_every_figure(growth_result):
    page = growth_result.html.read_text()
    assert len(DATA_IMG.findall(page)) == len(growth_result.figures) >= 9
    assert "http://" not in page and "https://" not in page  # self-contained
    assert page.count('class="sortable"') >= 4 and "addEventListener('click'" in page
    for fig in growth_result.figures:
        assert fig.path.stat().st_size > 5000


def test_verdict_text_lists_rows_and_conclusions(growth_result):
    text = growth_result.verdict_text
    assert text.count("exceeds-by-training") >= 10
    assert text.count("starts-outside") >= 10
    assert "Conclusions:" in text and "Cannot show" in text
    assert (growth_result.report_dir / "verdict.txt").read_text().strip() == text.strip()


def test_report_renders_in_headless_chromium(growth_result, tmp_path):
    png = tmp_path / "report.png"
    screenshot(growth_result.html, png, tmp_path)
    assert_not_blank(png)


def test_direct_table_is_first_and_narrow(growth_result):
    """The answer first: the first table is the direct verdict, with few columns, so that its
    verdict column shows at 1600 px; the wide drift table comes after the conclusions."""
    page = growth_result.html.read_text()
    first = page.index("<table")
    head = page[first : page.index("</thead>", first)]
    assert head.count("<th>") <= 8 and "<th>direct</th>" in head
    assert page.index("Conclusions") < page.index("Drift verdict")


def test_verdict_column_visible_at_1600_px(growth_result, tmp_path):
    """Rendered at 1600 x 900, the first table's verdict cells are inside the window."""
    png = tmp_path / "top.png"
    screenshot(growth_result.html, png, tmp_path, size="1600,900")
    img = mpimg.imread(png)[..., :3]
    grey = np.all(np.abs(img - np.array([0xEE, 0xEE, 0xEE]) / 255) < 0.02, axis=2)
    assert grey[:, :1600].sum() > 500  # the starts-outside cells' grey background is on screen
