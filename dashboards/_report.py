"""The report directory: a self-contained HTML page, the tables as Parquet and CSV, the figures.

Files written (Parquet through ``core/store.py``, everything atomically):
    report.html       images inlined as data: URIs, tables sortable by clicking a header
    verdict.parquet   one row per (group, width) with the verdict; verdict.csv the same
    fits.parquet      one row per (group, quantity, t); fits.csv the same
    trials.parquet    one row per trial, failed and missing ones included
    verdict.txt       the plain-text table and conclusions that ``ntkdiv sweep`` prints
    figures/*.png
"""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core import store

from ._figures import Figure

CAVEAT = (
    "At practical widths the fluctuation at initialization, gap_0 = max|K_0 - K|, is far above "
    "the bound lambda0/(2n^2), so 'gap >= bound' holds at t = 0 and says nothing. The verdicts "
    "rest on the training-induced drift, drift_t = max|K_t - K_0|, on the first time t_exceed "
    "it reaches the bound, and on how both scale with width and time."
)
VERDICT_HELP = {
    "exceeds-by-training": "median drift_sup >= bound: training alone moved K_t past the bound",
    "exceeds-only-at-init": "gap_0 >= bound > drift_sup: uninformative (finite-width noise only)",
    "below-bound": "neither gap_0 nor drift_sup reaches the bound",
    "unresolvable": "the bound is below the kernel's numerical resolution in this dtype",
    "no-data": "no usable trial (failed or missing), or no kernel tracked (track.kernel off)",
}
MAX_TRIAL_ROWS = 2000  # rows of the per-trial table shown in the HTML; the Parquet has all
VERDICT_COLUMNS = (
    "arch", "depth", "loss", "lr", "data", "variant", "width", "n_seeds", "n_failed",
    "n_missing", "bound", "resolution", "gap_init_med", "gap_init_lo", "gap_init_hi",
    "drift_sup_med", "drift_sup_lo", "drift_sup_hi", "gap_sup_med", "t_exceed_med",
    "t_exceed_lo", "t_exceed_hi", "lambda_min_emp_min_med", "frac_exceed",
    "drift_slope_rel_med", "ci_coverage", "t_horizon", "verdict",
)  # fmt: skip
TRIAL_COLUMNS = (
    "trial_id", "status", "arch", "depth", "loss", "lr", "data", "variant", "width", "seed",
    "dtype", "bound", "gap_init", "drift_sup", "gap_sup", "t_exceed", "t_exceed_traj",
    "drift_trend", "drift_slope_rel", "lambda_min_emp_min", "theta_inf_final", "t_horizon",
    "flips_total", "error",
)  # fmt: skip

SORTER_JS = """
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y), c;
      if (!isNaN(nx) && !isNaN(ny)) { c = nx - ny; } else { c = String(x).localeCompare(y); }
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""
CSS = """
body{font-family:sans-serif;margin:1.5em;max-width:1400px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee;cursor:pointer;position:sticky;top:0}
td.s{text-align:left}.caveat{background:#fff6d6;padding:.6em;border-left:4px solid #e0b000}
.v-exceeds-by-training{background:#d7f0d7}.v-exceeds-only-at-init{background:#fde2c8}
.v-below-bound{background:#dde7fb}.v-unresolvable{background:#eee;font-style:italic}
.v-no-data{background:#f7d0d0}figure{display:inline-block;margin:.5em;vertical-align:top}
figcaption{font-size:12px;max-width:700px}img{max-width:100%}
"""


def _cell(value) -> tuple[str, str]:
    """(display text, sort key) of one table cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return ("never" if value > 0 else "-inf"), ("1e308" if value > 0 else "-1e308")
        return f"{value:.4g}", repr(float(value))
    if isinstance(value, (int, np.integer, bool, np.bool_)):
        return str(value), str(int(value))
    return str(value), str(value)


def html_table(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> str:
    """A sortable HTML table; the verdict column is coloured."""
    cols = [c for c in (columns or frame.columns) if c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for rec in frame[cols].itertuples(index=False):
        tds = []
        for c, v in zip(cols, rec, strict=True):
            text, key = _cell(v)
            cls = "s" if not isinstance(v, (int, float, np.number)) else ""
            if c == "verdict":
                cls += f" v-{text}"
            tds.append(f'<td class="{cls.strip()}" data-v="{html.escape(key)}">'
                       f"{html.escape(text)}</td>")  # fmt: skip
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            f'{"".join(body)}</tbody></table>')  # fmt: skip


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}"
            "</figcaption></figure>")  # fmt: skip


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def render_html(sweep_dir: Path, verdict: pd.DataFrame, fits: pd.DataFrame, wide: pd.DataFrame,
                trials: pd.DataFrame, paragraphs: dict[str, str], notes: list[str],
                figures: list[Figure]) -> str:  # fmt: skip
    """The whole report as one HTML string (no external resources)."""
    usable = int(trials["usable"].sum())
    lost = trials[~trials["usable"]]
    legend = "".join(f'<li><span class="v-{k}">{k}</span>: {html.escape(v)}</li>'
                     for k, v in VERDICT_HELP.items())  # fmt: skip
    parts = [
        f"<h1>ntkdiv report: {html.escape(sweep_dir.name)}</h1>",
        f"<p>{html.escape(str(sweep_dir))}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}; "
        f"{len(trials)} trials, {usable} usable, {len(lost)} failed or missing.</p>",
        f'<p class="caveat">{html.escape(CAVEAT)}</p>',
        _section("Verdicts", f"<ul>{legend}</ul>" + html_table(verdict, VERDICT_COLUMNS)),
        _section("Conclusions", "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs.values())),
        _section(
            "Crossing widths, cross-entropy and squared loss side by side",
            "<p>Width at which each fitted quantity would fall below the bound "
            "(t_exceed: would leave the horizon). inf/never: it does not fall with width."
            "</p>" + html_table(wide),
        ),  # fmt: skip
        _section("Power-law fits against width", html_table(fits)),
        _section("Figures", "".join(_img(f) for f in figures)),
        _section(
            "Failed and missing trials",
            html_table(
                lost,
                (
                    "trial_id",
                    "status",
                    "arch",
                    "depth",
                    "loss",
                    "lr",
                    "data",
                    "width",
                    "seed",
                    "error",
                ),
            )
            if len(lost)
            else "<p>None.</p>",
        ),
        _section(
            "Notes",
            "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
            if notes
            else "<p>None.</p>",
        ),  # fmt: skip
        _section("Trials", _trials_block(trials)),
    ]
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>ntkdiv report: '
            f"{html.escape(sweep_dir.name)}</title><style>{CSS}</style></head><body>"
            f"{''.join(parts)}<script>{SORTER_JS}</script></body></html>")  # fmt: skip


def _trials_block(trials: pd.DataFrame) -> str:
    shown = trials.head(MAX_TRIAL_ROWS)
    more = (f"<p>First {MAX_TRIAL_ROWS} of {len(trials)} trials; trials.parquet has all.</p>"
            if len(trials) > MAX_TRIAL_ROWS else "")  # fmt: skip
    return f"<details><summary>{len(trials)} trials</summary>{more}" + html_table(
        shown, TRIAL_COLUMNS) + "</details>"  # fmt: skip


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as an Arrow table; object columns of mixed types become strings."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object:
            kinds = {type(v) for v in frame[col] if v is not None and v == v}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                frame[col] = [None if v is None or v != v else str(v) for v in frame[col]]
    return pa.Table.from_pandas(frame, preserve_index=False)


def write_outputs(report_dir: Path, tables: dict[str, pd.DataFrame], text: str, page: str) -> None:
    """Write every table as Parquet (+ CSV for verdict and fits), the text and the HTML."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        store.write_table(report_dir / f"{name}.parquet", arrow_table(frame))
        if name in ("verdict", "fits"):
            store.atomic_write_text(report_dir / f"{name}.csv", frame.to_csv(index=False))
    store.atomic_write_text(report_dir / "verdict.txt", text + "\n")
    store.atomic_write_text(report_dir / "report.html", page)
