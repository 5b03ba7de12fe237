"""The report directory: a self-contained HTML page, the tables as Parquet and CSV, the figures.

Files written (Parquet through ``core/store/``, everything atomically):
    report.html       opens with the direct verdict table (the answer), then the evidence;
                      images inlined as data: URIs, tables sortable by clicking a header
    verdict.parquet   one row per (group, width): direct verdict and drift verdict; + .csv
    fits.parquet      one row per (group, quantity), refusals in ``note``; + .csv
    regimes.parquet   one row per group: regime in {diverging, settling, undetermined}, why; + .csv
    crossing.parquet  m*(t) per (group, decade of t) with its bootstrap interval; + .csv
    growth.parquet    late drift growth per (group, width) with its interval over seeds
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
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from core import store

from ._direct import RESOLVED
from ._figures import Figure


@dataclass(frozen=True)
class Tables:
    """Every table of one report (see the module docstring for the files)."""

    verdict: pd.DataFrame
    fits: pd.DataFrame
    trials: pd.DataFrame
    regimes: pd.DataFrame
    crossing: pd.DataFrame
    growth: pd.DataFrame
    side_by_side: pd.DataFrame  # m*(t) of each (loss, lr) at equal t; HTML only


DIRECT_HELP = {
    "leaves-bound": "the kernel started inside (gap_0 < bound, step jump < bound/10) and "
    "gap_t reached the bound at t_leave, in every such seed",
    "stays-within": "it started inside and did not leave by the horizon t reached",
    "split": "it started inside; some seeds left, others did not",
    "starts-outside": "gap_0 >= bound: finite-width noise is already outside; resolve_width "
    "says how wide the network must be to start inside",
    "flip-limited": "gap_0 < bound but one step moves K by >= bound/10 (activation flips)",
    "jump-untracked": "gap_0 < bound but the store has no step jump to certify the start",
    "unresolvable": "the bound is below the kernel's numerical resolution in this dtype",
    "no-data": "no usable trial (failed, diverged or missing), or no kernel tracked",
}
CAVEAT = (
    "Where gap_0 = max|K_0 - K| >= bound, or one step moves K by >= bound/10, 'gap >= bound' "
    "says nothing about training: those rows fall back on the training-induced drift, "
    "drift_t = max|K_t - K_0| (the drift verdict), on its first passage t_exceed, and on how "
    "both scale with width and time (m*(t), the regime)."
)
VERDICT_HELP = {
    "exceeds-by-training": "median drift_sup >= bound: training alone moved K_t past the bound",
    "exceeds-only-at-init": "gap_0 >= bound > drift_sup: uninformative (finite-width noise only)",
    "below-bound": "neither gap_0 nor drift_sup reaches the bound",
    "unresolvable": "the bound is below the kernel's numerical resolution in this dtype",
    "no-data": "no usable trial (failed or missing), or no kernel tracked (track.kernel off)",
}
MAX_TRIAL_ROWS = 2000  # rows of the per-trial table shown in the HTML; the Parquet has all
# the verdict next to the row's name: wide tables scroll inside the page, and what a reader
# looks for first stays in view at 1600 px
VERDICT_COLUMNS = (
    "group", "width", "verdict", "n_seeds", "n_failed", "n_missing", "bound", "resolution",
    "gap_init_med", "gap_init_lo", "gap_init_hi", "drift_sup_med", "drift_sup_lo",
    "drift_sup_hi", "gap_sup_med", "t_exceed_med", "t_exceed_lo", "t_exceed_hi",
    "lambda_min_emp_min_med", "frac_exceed", "drift_slope_rel_med", "ci_coverage", "t_horizon",
)  # fmt: skip
DIRECT_DETAIL_COLUMNS = (
    "group", "width", "direct", "n_seeds", "n_inside", "n_left", "bound", "gap_init_med",
    "gap_init_lo", "gap_init_hi", "flip_jump_max_med", "step_jump_max_med",
    "t_leave_med", "t_leave_min", "t_leave_max",
    "horizon_min", "resolve_gap_width", "resolve_jump_width", "resolve_how",
)  # fmt: skip
CROSSING_COLUMNS = ("group", "t", "m_star", "m_star_lo", "m_star_hi", "exponent", "n_widths",
                    "n_points", "max_width", "extrapolated", "note")  # fmt: skip
TRIAL_COLUMNS = (
    "trial_id", "status", "group", "width", "seed",
    "dtype", "bound", "gap_init", "drift_sup", "gap_sup", "t_exceed",
    "flip_jump_max", "step_jump_max",
    "t_leave", "drift_trend", "drift_slope_rel", "lambda_min_emp_min",
    "theta_inf_final", "t_horizon", "flips_last", "near_kink_last", "error",
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
.wide{max-width:100%;overflow-x:auto}.answer{font-size:15px;margin:.8em 0 .2em}
.answer+ul{margin-top:0;font-size:13px;color:#444}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eee;cursor:pointer;position:sticky;top:0}
td.s{text-align:left}.caveat{background:#fff6d6;padding:.6em;border-left:4px solid #e0b000}
.v-exceeds-by-training{background:#d7f0d7}.v-exceeds-only-at-init{background:#fde2c8}
.v-below-bound{background:#dde7fb}.v-unresolvable{background:#eee;font-style:italic}
.v-no-data{background:#f7d0d0}.v-leaves-bound{background:#d7f0d7;font-weight:bold}
.v-stays-within{background:#dde7fb;font-weight:bold}.v-split{background:#fff6d6}
.v-starts-outside,.v-flip-limited,.v-jump-untracked{background:#eee}
.v-diverging{background:#d7f0d7}.v-settling{background:#dde7fb}.v-undetermined{background:#eee}figure{display:inline-block;margin:.5em;vertical-align:top}
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
            if c in ("verdict", "direct", "regime"):
                cls += f" v-{text}"
            tds.append(f'<td class="{cls.strip()}" data-v="{html.escape(key)}">'
                       f"{html.escape(text)}</td>")  # fmt: skip
        body.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<div class="wide"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>'
            f'{"".join(body)}</tbody></table></div>')  # fmt: skip


def _img(fig: Figure) -> str:
    data = base64.b64encode(fig.path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(fig.title)}.</b> {html.escape(fig.caption)}"
            "</figcaption></figure>")  # fmt: skip


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _group_label(frame: pd.DataFrame) -> pd.Series:
    """'fcn L=2 cross_entropy lr=0.1, circle n=2' (+ variant) per row; '(no config)' for a
    trial that failed before writing its config."""
    if frame.empty:
        return pd.Series([], dtype=object)

    def label(r) -> str:
        if pd.isna(r.depth) or pd.isna(r.lr):
            return "(no config)"
        variant = f", {r.variant}" if isinstance(r.variant, str) and r.variant else ""
        return f"{r.arch} L={int(r.depth)} {r.loss} lr={r.lr:g}, {r.data}{variant}"

    return pd.Series([label(r) for r in frame.itertuples()], index=frame.index)


def direct_table(verdict: pd.DataFrame) -> pd.DataFrame:
    """The answer, narrow enough that its verdict column shows at 1600 px: one row per
    (group, width) with the direct verdict, t_leave (median [range]) and the horizon."""

    def span(r) -> str:
        if r.direct == "stays-within":
            return f"did not leave by t = {r.horizon_min:.3g}"
        if not math.isfinite(r.t_leave_med):
            return ""
        return f"{r.t_leave_med:.3g} [{r.t_leave_min:.3g}, {r.t_leave_max:.3g}]"

    def resolve(r) -> str:
        if not isinstance(r.resolve_how, str) or not r.resolve_how:
            return ""
        far = " (extrapolated)" if r.resolve_extrapolated else ""
        return f"m >= {r.resolve_width:.3g}{far}"

    return pd.DataFrame({
        "group": _group_label(verdict), "width": verdict["width"],
        "direct": verdict["direct"],
        "other loss": verdict.get("other_loss_direct", pd.Series("", index=verdict.index)),
        "seeds inside": [f"{int(a)}/{int(b)}" for a, b in
                         zip(verdict["n_inside"], verdict["n_direct"], strict=True)],
        "t_leave median [range]": [span(r) for r in verdict.itertuples()],
        "horizon t": verdict["t_horizon"],
        "resolving width": [resolve(r) for r in verdict.itertuples()],
    })  # fmt: skip


def _with_group(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(group=_group_label(frame)) if len(frame) else frame


def _legend(help_: dict[str, str]) -> str:
    return "<ul>" + "".join(f'<li><span class="v-{k}">{k}</span>: {html.escape(v)}</li>'
                            for k, v in help_.items()) + "</ul>"  # fmt: skip


def _drift_block(verdict: pd.DataFrame) -> str:
    """The drift verdict of the rows the direct test leaves unresolved (elsewhere the direct
    verdict is the answer, and a second verdict beside it would only compete with it)."""
    rows = verdict[~verdict["direct"].isin(RESOLVED)]
    if rows.empty:
        return "<p>None: the direct test resolves every row.</p>"
    return (f'<p class="caveat">{html.escape(CAVEAT)}</p>' + _legend(VERDICT_HELP)
            + html_table(_with_group(rows), VERDICT_COLUMNS))  # fmt: skip


def conclusions_html(paragraphs: dict[str, str]) -> str:
    """Each group's conclusion: the answer in bold, then its evidence and limits as a list
    (a paragraph's first line is the answer, each further line one piece of evidence)."""
    out = []
    for text in paragraphs.values():
        first, *rest = text.splitlines()
        head, _, answer = first.partition(": ")
        out.append(f'<p class="answer"><b>{html.escape(head)}</b>: {html.escape(answer)}</p>'
                   + ("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in rest) + "</ul>"
                      if rest else ""))  # fmt: skip
    return "".join(out)


def render_html(sweep_dir: Path | store.StorePath, tables: Tables, paragraphs: dict[str, str],
                notes: list[str], figures: list[Figure]) -> str:  # fmt: skip
    """The whole report as one HTML string (no external resources): the answer first."""
    trials = tables.trials
    usable = int(trials["usable"].sum())
    lost = trials[~trials["usable"]]
    regimes = _with_group(tables.regimes)
    parts = [
        f"<h1>ntkdiv report: {html.escape(sweep_dir.name)}</h1>",
        f"<p>{html.escape(str(sweep_dir))}; generated {time.strftime('%Y-%m-%d %H:%M:%S')}; "
        f"{len(trials)} trials, {usable} usable, {len(lost)} failed, diverged or missing.</p>",
        _section("Direct verdict: does training take the kernel out of the bound?",
                 html_table(direct_table(tables.verdict))),
        _section("Conclusions", conclusions_html(paragraphs)),
        "<details><summary>What each direct verdict means</summary>"
        + _legend(DIRECT_HELP) + "</details>",
        _section("Regimes", html_table(regimes, ("group", "regime", "why"))
                 if len(regimes) else "<p>None.</p>"),
        _section("Direct verdict: details",
                 html_table(_with_group(tables.verdict), DIRECT_DETAIL_COLUMNS)),
        _section("Crossing width m*(t) at equal t, losses side by side",
                 "<p>Width at which the drift at t (median over a quarter decade of tracked "
                 "rows) would fall below the bound, fitted across widths.</p>"
                 + html_table(tables.side_by_side)),
        _section("m*(t) with bootstrap intervals over seeds",
                 html_table(_with_group(tables.crossing), CROSSING_COLUMNS)),
        _section("Drift verdict (evidence for rows the direct test does not resolve)",
                 _drift_block(tables.verdict)),
        _section("Power-law fits against width (refusals in note)", html_table(tables.fits)),
        _section("Figures", "".join(_img(f) for f in figures)),
        _section("Failed, diverged and missing trials", html_table(_with_group(lost), (
            "trial_id", "status", "group", "width", "seed", "error"))
            if len(lost) else "<p>None.</p>"),
        _section("Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
                 + "</ul>" if notes else "<p>None.</p>"),
        _section("Trials", _trials_block(trials)),
    ]  # fmt: skip
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>ntkdiv report: '
            f"{html.escape(sweep_dir.name)}</title><style>{CSS}</style></head><body>"
            f"{''.join(parts)}<script>{SORTER_JS}</script></body></html>")  # fmt: skip


def _trials_block(trials: pd.DataFrame) -> str:
    shown = trials.head(MAX_TRIAL_ROWS)
    more = (f"<p>First {MAX_TRIAL_ROWS} of {len(trials)} trials; trials.parquet has all.</p>"
            if len(trials) > MAX_TRIAL_ROWS else "")  # fmt: skip
    return f"<details><summary>{len(trials)} trials</summary>{more}" + html_table(
        _with_group(shown), TRIAL_COLUMNS) + "</details>"  # fmt: skip


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A DataFrame as an Arrow table; object columns of mixed types become strings."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype == object:
            kinds = {type(v) for v in frame[col] if v is not None and v == v}
            if len(kinds) > 1 or (kinds and not kinds <= {str}):
                frame[col] = [None if v is None or v != v else str(v) for v in frame[col]]
    return pa.Table.from_pandas(frame, preserve_index=False)


def write_outputs(report_dir: Path, tables: Tables, text: str, page: str) -> None:
    """Write every table as Parquet (+ CSV for the small ones), the text and the HTML."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in ((f.name, getattr(tables, f.name)) for f in fields(tables)):
        if name == "side_by_side":
            continue
        store.write_table(report_dir / f"{name}.parquet", arrow_table(frame))
        if name in ("verdict", "fits", "regimes", "crossing"):
            store.atomic_write_text(report_dir / f"{name}.csv", frame.to_csv(index=False))
    store.atomic_write_text(report_dir / "verdict.txt", text + "\n")
    store.atomic_write_text(report_dir / "report.html", page)
