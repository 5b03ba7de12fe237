"""``aggregate(sweep_dir)``: read a sweep store, decide the verdicts, fit, draw, write the report.

The pipeline, top to bottom:
1. read the summary rows and the unpublished trial directories (small);
2. one streaming pass over the trajectories (pyarrow, one trial in memory at a time): per-trial
   metrics and curves on a common log-t grid;
3. tables: per trial; per (group, width) with the direct and the drift verdicts; fits, m*(t)
   and the regime per group;
4. figures, for which only a handful of trials' dense columns (f, kernel) are read;
5. the report directory (see ``_report``).
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core import DataError
from core import store as st

from . import _figures as F
from ._direct import add_direct, contested_widths
from ._fits import JUMP_KEY, fit_table, starts_inside
from ._read import SweepStore, dense_trajectory, iter_trajectories, open_store
from ._regimes import regime_tables, side_by_side
from ._report import Tables, render_html, write_outputs
from ._tables import TRAJ_COLUMNS, row_table, trajectory_pass, trial_table
from ._verdict import add_verdicts, conclusions, verdict_text

MAX_FAMILIES = 24  # (arch, depth, data) families drawn; more are listed in the notes


@dataclass(frozen=True)
class AggregateResult:
    """What :func:`aggregate` produced; the files are under ``report_dir``."""

    sweep_dir: st.StorePath
    report_dir: Path
    verdict: pd.DataFrame  # one row per (group, width), with ``direct`` and ``verdict``
    fits: pd.DataFrame  # one row per (group, quantity)
    trials: pd.DataFrame  # one row per trial, failed and missing ones included
    regimes: pd.DataFrame  # one row per group: regime and why
    crossing: pd.DataFrame  # m*(t): one row per (group, decade of t)
    verdict_text: str  # plain-text table + conclusions (``ntkdiv sweep`` prints it)
    conclusions: dict[str, str]
    notes: list[str]
    figures: list[F.Figure]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def html(self) -> Path:
        return self.report_dir / "report.html"


def _trajectory_pass(store: SweepStore):
    bounds = dict(zip(store.summary["trial_id"], store.summary.get("bound", []), strict=False))
    if store.trajectory is None:
        return pd.DataFrame({"trial_id": pd.Series([], dtype=str)}), {}
    return trajectory_pass(iter_trajectories(store.trajectory, TRAJ_COLUMNS), bounds)


def _notes(trials: pd.DataFrame) -> list[str]:
    notes = []
    for r in trials[~trials["usable"]].itertuples():
        err = str(r.error).strip().splitlines()[-1] if isinstance(r.error, str) else ""
        where = (f"{r.loss}, m={int(r.width)}, seed={int(r.seed)}" if pd.notna(r.width)
                 else "no readable config.yaml, so in no row")  # fmt: skip
        counted = ("counted in the direct test up to the t it reached, not in the drift verdict"
                   if r.status == "stopped" and r.published else "not counted")  # fmt: skip
        notes.append(f"trial {r.trial_id} ({where}) is {r.status}, {counted}"
                     f"{': ' + err if err else ''}")  # fmt: skip
    return notes


def _family_figures(trials, fits, crossing, curves, store, fig_dir: Path, contested: frozenset):
    # stopped trials are drawn up to the t they reached, as the direct test counts them
    drawn = trials["usable"] | (trials["status"].eq("stopped") & trials["published"])
    usable = trials[drawn & trials["trial_id"].isin(curves.keys())]
    figs, notes = [], []
    families = list(usable.groupby(["arch", "depth", "data"], sort=True))
    if len(families) > MAX_FAMILIES:
        notes.append(f"{len(families)} (arch, depth, data) families; figures for the first "
                     f"{MAX_FAMILIES} only")  # fmt: skip
    for old in fig_dir.glob("f[0-9][0-9]_*.png"):  # a previous report's figures
        old.unlink()
    for i, ((arch, depth, data), fam) in enumerate(families[:MAX_FAMILIES]):
        name, stem = f"{arch} L={int(depth)}, {data}", f"f{i:02d}"
        figs += [
            F.gap_figure(fam, curves, fig_dir / f"{stem}_gap.png", name),
            F.drift_figure(fam, curves, fig_dir / f"{stem}_drift.png", name),
            F.width_figure(fam, fits, fig_dir / f"{stem}_width.png", name),
            F.crossing_figure(fam, crossing, fig_dir / f"{stem}_crossing.png", name),
            F.lambda_theta_figure(fam, curves, fig_dir / f"{stem}_lambda.png", name),
        ]
        inside = starts_inside(
            fam["gap_init"].to_numpy(float),
            fam[JUMP_KEY].to_numpy(float),
            fam["bound"].to_numpy(float),
        )
        if inside.any():  # t_leave(m) is drawn where some trial started inside the bound
            figs.insert(-5, F.t_leave_figure(fam, fits, fig_dir / f"{stem}_tleave.png", name,
                                             contested))  # fmt: skip
        figs += _seed_figures(fam, store, fig_dir, stem)
    return figs, notes


def _seed_figures(family: pd.DataFrame, store: SweepStore, fig_dir: Path, stem: str) -> list:
    """The seed's Figures 1 and 2 for each group's widest trial (lowest seed)."""
    figs: list[F.Figure] = []
    if store.trajectory is None:
        return figs
    for j, (_, sub) in enumerate(family.groupby(["loss", "lr", "variant"], sort=True)):
        pick = sub.sort_values(["width", "seed"], ascending=[False, True]).iloc[0]
        dense, pairs = dense_trajectory(store.trajectory, pick["trial_id"])
        name = (f"{pick['arch']} L={int(pick['depth'])} m={int(pick['width'])}, "
                f"{pick['loss']} lr={pick['lr']:g}, seed {int(pick['seed'])}")  # fmt: skip
        if dense["f"].size:
            figs.append(F.outputs_figure(dense, fig_dir / f"{stem}_g{j}_f.png", name))
        if dense["kernel"].size and pairs:
            figs.append(F.kernel_figure(dense, pairs, fig_dir / f"{stem}_g{j}_K.png", name))
    return figs


def default_report_dir(sweep_dir: st.StorePath) -> Path:
    """``<sweep>/report`` for a local store; ``./ntkdiv-report/<sweep>`` for an object store."""
    if sweep_dir.local:
        return Path(sweep_dir.path) / "report"
    return Path("ntkdiv-report").absolute() / sweep_dir.name


def aggregate(
    sweep_dir: st.Where,
    out_dir: str | Path | None = None,
    *,
    figures: bool = True,
    only: Collection[str] | None = None,
) -> AggregateResult:
    """Aggregate one sweep directory into verdicts, fits, figures and an HTML report.

    Args:
        sweep_dir: ``<storage>/<sweep>`` (see ``core/store/`` for the layout).
        out_dir: the report directory (local); default ``<sweep_dir>/report``, or for a store
            in an object store ``./ntkdiv-report/<sweep>`` (MLflow keeps the team's copy).
        figures: draw the figures (off: tables and text only).
        only: aggregate these trial ids alone (``ntkdiv sweep``: its spec's own grid, when the
            store also holds trials of an earlier grid under the same name).

    Raises:
        DataError: not a sweep store, an empty one, or mixed incompatible schemas.
    """
    timings, t0 = {}, time.perf_counter()
    store = open_store(sweep_dir, only)
    sweep_dir = store.sweep_dir
    report_dir = Path(out_dir) if out_dir is not None else default_report_dir(sweep_dir)
    if store.summary.empty and store.unpublished.empty:
        raise DataError(f"sweep {sweep_dir} has no trials yet; run 'ntkdiv sweep' first")
    timings["read"] = time.perf_counter() - t0
    traj, curves = _trajectory_pass(store)
    timings["trials"] = time.perf_counter() - t0 - timings["read"]
    trials = trial_table(store.summary, store.unpublished, traj)
    rows = row_table(trials)
    if rows.empty:
        raise DataError(f"sweep {sweep_dir} has {len(trials)} trial(s), none with a readable "
                        "config; nothing to aggregate (see its trials/ directory)")  # fmt: skip
    verdict = add_direct(add_verdicts(rows), trials)
    fits = fit_table(trials, contested_widths(verdict))
    regimes, crossing, growth = regime_tables(trials)
    paragraphs, notes = conclusions(verdict, fits, regimes), _notes(trials)
    timings["tables"] = time.perf_counter() - t0 - sum(timings.values())
    figs: list[F.Figure] = []
    if figures and curves:
        figs, more = _family_figures(trials, fits, crossing, curves, store,
                                     report_dir / "figures", contested_widths(verdict))  # fmt: skip
        notes += more
    timings["figures"] = time.perf_counter() - t0 - sum(timings.values())
    text = verdict_text(verdict, paragraphs, notes)
    tables = Tables(verdict, fits, trials, regimes, crossing, growth, side_by_side(crossing))
    page = render_html(sweep_dir, tables, paragraphs, notes, figs)
    write_outputs(report_dir, tables, text, page)
    timings["total"] = time.perf_counter() - t0
    return AggregateResult(sweep_dir, report_dir, verdict, fits, trials, regimes, crossing, text,
                           paragraphs, notes, figs,
                           {k: round(v, 3) for k, v in timings.items()})  # fmt: skip
