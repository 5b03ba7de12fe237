"""Browsing a sweep in a real browser: the smoke sweep logs to a real ``mlflow server``, and
headless Chromium opens the sweep's parent run in the MLflow UI and the HTML report it holds.

The screenshots are kept under tmp_path and copied to ``<repo>/.tmp/browser/`` (gitignored) for
a person to look at.
"""

from __future__ import annotations

import dataclasses
import shutil
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

from ntkdiv._commands import sweep_with_report
from sweep._spec import parse_spec
from tests._chromium import (
    Chromium,
    chromium_binary,
    distinct_colours,
    ink,
    parse_page,
    pixels,
)

REPO = Path(__file__).resolve().parents[1]
SHOTS = REPO / ".tmp" / "browser"
VERDICTS = ("exceeds-by-training", "exceeds-only-at-init", "below-bound", "unresolvable",
            "leaves-bound", "stays-within", "starts-outside", "flip-limited")  # fmt: skip
REPORT = "report/report.html"  # where MlflowLogger.log_report puts the report
REPORT_FILES = ("report.html", "verdict.csv", "verdict.parquet", "fits.parquet")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def parent_run(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The smoke sweep run against the server (its own experiment); its parent run, finished."""
    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw["storage"] = str(tmp_path_factory.mktemp("browser") / "store")
    # the server is shared by the session: an experiment of its own keeps the runs apart
    raw["mlflow"] = {"tracking_uri": mlflow_server, "experiment": f"browser-{uuid.uuid4().hex[:8]}"}
    spec = parse_spec(raw, REPO / "sweeps")
    res, _ = sweep_with_report(spec, num_cpus=2, quiet=True)
    assert res.exit_code == 0, res.failed
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(raw["mlflow"]["experiment"])
    runs = client.search_runs(
        [exp.experiment_id], "tags.`ntkdiv.role` = 'parent' AND tags.`ntkdiv.sweep` = 'smoke'"
    )
    assert len(runs) == 1, [r.info.run_id for r in runs]
    assert runs[0].info.status == "FINISHED"
    return runs[0]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    return Chromium(chromium_binary(), tmp_path_factory.mktemp("chromium-profile"))


def run_url(server: str, run: Run, tail: str = "") -> str:
    """The MLflow UI's page of a run (a hash route of the single-page app)."""
    return f"{server}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}{tail}"


def keep(png: Path) -> None:
    """Copy a screenshot where a person can look at it."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(png, SHOTS / png.name)


def report_painted(rgb: np.ndarray) -> bool:
    """Whether the artifact pane of a run page screenshot (shape (h, w, 3)) shows a document.

    The pane is the middle of the page, right of the file tree. A frame that stayed empty is
    one flat colour there; the report's text, table and figures are not.
    """
    h, w, _ = rgb.shape
    pane = rgb[int(0.25 * h) : int(0.9 * h), int(0.32 * w) : int(0.68 * w)]
    return distinct_colours(pane) > 50 and ink(pane) > 0.01


def test_run_page_shows_the_sweep_and_its_verdict(mlflow_server, parent_run, browser, tmp_path):
    """The parent run's page: its name, and the verdict table logged as its description."""
    url = run_url(mlflow_server, parent_run)
    page = parse_page(browser.dump_dom(url))
    assert parent_run.info.run_id in page.title, page.title  # "Run <id> - MLflow"
    assert "smoke" in page.words, page.text[:2000]
    header = parent_run.data.tags["ntkdiv.verdict"].splitlines()[0].split()
    assert header[0] in page.words and "verdict" in page.words, page.text[:2000]
    assert any(v in page.words for v in VERDICTS), page.text[:2000]
    png = browser.screenshot(url, tmp_path / "mlflow-run.png")
    keep(png)
    assert distinct_colours(pixels(png)) > 50  # a blank or error page has a handful


def test_artifact_view_lists_and_renders_the_report(mlflow_server, parent_run, browser, tmp_path):
    """The run's Artifacts tab opened at the report: the files listed, the report in its frame."""
    url = run_url(mlflow_server, parent_run, f"/artifacts/{REPORT}")
    dom = browser.dump_dom(url)
    page = parse_page(dom)
    for name in (*REPORT_FILES, "spec.yaml", "verdict.txt"):
        assert name in page.words, f"{name} not listed: {page.text[:2000]}"
    assert "mlflow-html-iframe" in dom  # the UI hands the report to an iframe (not in the dump)
    png = browser.screenshot(url, tmp_path / "mlflow-report-artifact.png", ready=report_painted)
    keep(png)
    assert report_painted(pixels(png)), "the report's frame stayed empty"


def test_served_report_renders_its_verdict_table_and_figures(
    mlflow_server, parent_run, browser, tmp_path
):
    """report.html as the server hands it out, rendered: verdict table and inline figures."""
    query = urllib.parse.urlencode({"path": REPORT, "run_uuid": parent_run.info.run_id})
    with urllib.request.urlopen(f"{mlflow_server}/get-artifact?{query}", timeout=60) as resp:
        served = resp.read()
    local = Path(parent_run.data.tags["ntkdiv.storage"]) / "report" / "report.html"
    assert served == local.read_bytes()
    # the server sends artifacts as downloads; the browser opens the downloaded file
    html_file = tmp_path / "report.html"
    html_file.write_bytes(served)
    page = parse_page(browser.dump_dom(html_file.as_uri()))
    assert "verdict" in page.th, page.th
    assert any(cell in VERDICTS for cell in page.td), page.td[:50]
    figures = [s for s in page.img_src if s.startswith("data:image/png;base64,")]
    assert figures and len(figures) == len(page.img_src), page.img_src[:3]
    tall = dataclasses.replace(browser, window=(1400, 4000))  # the tables and the first figures
    png = tall.screenshot(html_file.as_uri(), tmp_path / "report.png")
    keep(png)
    assert distinct_colours(pixels(png)) > 50
