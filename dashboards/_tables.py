"""Per-trial and per-row tables: what each trajectory says, and medians over seeds.

A *group* is (arch, depth, loss, lr, data) plus a ``variant`` naming any other config field that
varies inside it (dtype, epochs, weight decay, ...), so that trials that differ in more than the
seed are never pooled. Rows of a group are widths; seeds are replicates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core import (
    USABLE,  # the only status whose trajectories count
    first_leave,  # core's one home of t_leave (interpolated in log t)
    resolution,  # core's one home of the resolution (summary.json holds the same figure)
)

GROUP_KEYS = ("arch", "depth", "loss", "lr", "data", "variant")
ROW_KEYS = (*GROUP_KEYS, "width")
PAIR_KEYS = tuple(k for k in ROW_KEYS if k not in ("loss", "lr"))  # what two losses' rows share
CONTROL_LOSS = "mse"  # the theorem's control: under squared loss K_t stays within O(m^-1/2)
CONFIG_KEYS = {"model.arch": "arch", "model.depth": "depth", "train.loss": "loss",
               "train.lr": "lr", "model.width": "width", "seed": "seed"}  # fmt: skip
# config fields that never split a group: replicates, where it ran, what was tracked
NOT_VARIANT = ("model.arch", "model.depth", "train.loss", "train.lr", "data.kind", "data.n",
               "model.width", "seed", "device", "track.", "checkpoint.")  # fmt: skip
DECADES = tuple(10.0**k for k in range(-2, 41))  # t = 0.01 .. 1e40: where m*(t) is read
T_GRID = 10.0 ** np.arange(-3.0, 42.0 + 1e-9, 0.125)  # common log-t grid for the curves
CURVES = ("drift", "gap", "lambda_min", "theta_inf", "f_abs_min", "drift_smooth", "flips",
          "gap_avg")  # fmt: skip
# trajectory columns the per-trial pass reads (absent ones, e.g. in older stores, come as NaN)
TRAJ_COLUMNS = ("t", "drift", "gap", "lambda_min", "theta_inf", "f_abs_min", "loss", "flips",
                "step_jump", "flip_jump", "drift_smooth", "near_kink", "h", "gap_avg")  # fmt: skip
WINDOW = 0.25  # decades of t: robust values are medians over the tracked rows in such a window
SATURATION = 0.05  # late growth below 5% of the final drift per decade of t counts as flat
STATS = ("gap_init", "drift_sup", "gap_sup", "t_exceed", "lambda_min_emp_min", "step_jump_max",
         "flip_jump_max")  # fmt: skip
SUMMARY_NUMBERS = (*STATS, "t_leave", "t_stay", "t_leave_avg", "t_stay_avg", "bound", "lambda0",
                   "max_K", "resolution", "f_abs_min_final", "theta_inf_final", "loss_final",
                   "wall_s", "horizon_t")  # fmt: skip
DIVERGED = ("diverged", "overflow")  # "overflow" is the legacy name of diverged


def checkpoint_name(t: float) -> str:
    """Column suffix of a decade of t: 1 -> 't1e0', 1000 -> 't1e3', 0.01 -> 't1e-2'."""
    return f"t1e{round(math.log10(t))}"


# --- one trial -------------------------------------------------------------------------------


def step_value(t: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """y at the last tracked t <= each point of ``at``; NaN before the first or after the last.

    Args:
        t: (k,) sorted tracked times; y: (k,) values; at: (g,) query times.
    Returns:
        (g,) values.
    """
    idx = np.searchsorted(t, at, side="right") - 1
    out = y[np.clip(idx, 0, None)].astype(float)
    out[(idx < 0) | (at > t[-1] * (1 + 1e-12))] = np.nan
    return out


def window_median(t: np.ndarray, y: np.ndarray, at: float, width: float = WINDOW) -> float:
    """Median of y over the tracked rows (t sorted) with log10 t in [log10 at - width, log10 at].

    A robust value at ``at``: after convergence, ReLU pre-activations parked at the kink flip
    between tracked steps and single rows of the drift jump (GD chattering, DESIGN §1). Falls
    back to :func:`step_value` where the window holds no row; NaN beyond the last tracked t.
    """
    if not t.size or at > t[-1] * (1 + 1e-12) or at < t[0]:
        return math.nan
    lo = np.searchsorted(t, at * 10.0**-width, side="left")  # t is sorted: the window is a slice
    hi = np.searchsorted(t, at * (1 + 1e-12), side="right")
    seg = y[lo:hi]
    seg = seg[np.isfinite(seg)]
    if seg.size:
        return float(np.median(seg))
    return float(step_value(t, y, np.array([at]))[0])


def late_growth(t: np.ndarray, drift: np.ndarray) -> float:
    """Growth of the drift over the last decade of tracked t, relative to its final value.

    (W(T) - W(T/10)) / W(T), with W the :func:`window_median` and T the last tracked t; NaN when
    the run spans under a decade of positive t.
    """
    pos = (t > 0) & np.isfinite(drift)
    t, drift = t[pos], drift[pos]
    if t.size < 2 or t[-1] < 10.0 * t[0]:
        return math.nan
    end, start = window_median(t, drift, t[-1]), window_median(t, drift, t[-1] / 10.0)
    return (end - start) / max(abs(end), 1e-300)


def trend(rel_slope: float) -> str:
    """'growing', 'flat' or 'shrinking' from the relative late growth (per decade)."""
    if not math.isfinite(rel_slope):
        return "unknown"
    if rel_slope >= SATURATION:
        return "growing"
    return "shrinking" if rel_slope <= -SATURATION else "flat"


def _nanmax(y: np.ndarray) -> float:
    return float(np.nanmax(y)) if np.isfinite(y).any() else math.nan


def _last(y: np.ndarray) -> float:
    finite = np.flatnonzero(np.isfinite(y))
    return float(y[finite[-1]]) if finite.size else math.nan


def trial_metrics(cols: dict[str, np.ndarray], bound: float) -> tuple[dict, Curves]:
    """Scalar metrics and resampled curves of one trajectory.

    The run's own figures (drift_sup, t_exceed, t_leave, step_jump_max) come from its
    summary.json, computed once in core; the values here are what the summary cannot hold (the
    drift at each decade of t, the late growth) and, for stores written before a summary key
    existed, the column it is the maximum of (``step_jump_max_traj``) or core's t_leave
    of the gap column (``t_leave_traj``).

    Args:
        cols: {name: (k,) array} for :data:`TRAJ_COLUMNS` (absent ones NaN), sorted by t.
        bound: the trial's lambda0 / (2 n^2).
    Returns:
        (metrics dict, the trial's :class:`Curves`).
    """
    t = cols["t"]
    nan = np.full(t.size, np.nan)
    drift, gap = cols["drift"], cols.get("gap", nan)
    rel = late_growth(t, drift)
    out = {
        "rows": int(t.size), "t_last": float(t[-1]) if t.size else math.nan,
        "drift_slope_rel": rel, "drift_trend": trend(rel),
        "step_jump_max_traj": _nanmax(cols.get("step_jump", nan)),
        "flip_jump_max_traj": _nanmax(cols.get("flip_jump", nan)),
        "t_leave_traj": _t_leave(t, gap, bound),
        "flips_last": _last(cols.get("flips", nan)),
        "near_kink_last": _last(cols.get("near_kink", nan)),
        "drift_smooth_last": _last(cols.get("drift_smooth", nan)),
    }  # fmt: skip
    for tc in DECADES:
        out[f"drift_{checkpoint_name(tc)}"] = window_median(t, drift, tc) if t.size else math.nan
    pos = t > 0  # the curves are drawn in log t; t = 0 (drift 0) stays out
    tp = t[pos]
    first = int(np.searchsorted(T_GRID, tp[0])) if tp.size else 0
    last = int(np.searchsorted(T_GRID, tp[-1] * (1 + 1e-12), side="right")) if tp.size else 0
    grid = T_GRID[first:last]  # outside the tracked t every curve is NaN: not kept
    block = np.stack([step_value(tp, cols.get(name, nan)[pos], grid) for name in CURVES])
    return out, Curves(first, block.astype(np.float32))


@dataclass(frozen=True)
class Curves:
    """One trial's :data:`CURVES` on the part of :data:`T_GRID` its tracked t covers: a run from
    t = 1e-3 to 1e3 keeps 49 of the grid's 361 points."""

    first: int  # index into T_GRID of block[:, 0]
    block: np.ndarray  # (len(CURVES), points) float32

    def on_grid(self, name: str) -> np.ndarray:
        """The curve ``name`` on the whole T_GRID, NaN outside the tracked t."""
        out = np.full(T_GRID.size, np.nan, dtype=np.float32)
        out[self.first : self.first + self.block.shape[1]] = self.block[CURVES.index(name)]
        return out


def _t_leave(t: np.ndarray, gap: np.ndarray, bound: float) -> float:
    """core's t_leave (``first_leave``) of the gap column; +inf if never."""
    ok = np.isfinite(gap)
    if not ok.any() or not math.isfinite(bound):
        return math.nan
    above = np.flatnonzero(ok & (gap >= bound))
    if not above.size:
        return math.inf
    upto = np.flatnonzero(ok[: above[0] + 1])  # the rows up to the first at the bound: all it reads
    rows = {"t": t[upto].tolist(), "gap": gap[upto].tolist()}
    hit = first_leave(rows, bound)
    return math.inf if hit is None else hit


def trajectory_pass(
    stream: Iterable[tuple[str, dict[str, np.ndarray]]], bounds: dict[str, float]
) -> tuple[pd.DataFrame, dict[str, Curves]]:
    """Reduce a stream of trajectories to one metrics row and one curve block per trial.

    Memory is O(trials x the T_GRID points their runs span), never O(trials x tracked rows).
    """
    rows, curves = [], {}
    for tid, cols in stream:
        metrics, block = trial_metrics(cols, bounds.get(tid, math.nan))
        rows.append({"trial_id": tid, **metrics})
        curves[tid] = block
    return pd.DataFrame(rows), curves


# --- the per-trial table -------------------------------------------------------------------


def data_label(row: pd.Series) -> str:
    """'circle n=6' from data.kind and data.n."""
    kind, n = row.get("data.kind"), row.get("data.n")
    if kind is None or (isinstance(kind, float) and math.isnan(kind)):
        return "unknown"
    return f"{kind} n={int(n)}" if pd.notna(n) else str(kind)


def _variants(frame: pd.DataFrame) -> pd.Series:
    """Per trial: 'key=value, ...' over config fields that vary inside its base group."""
    cfg = [c for c in frame.columns if ("." in c or c == "dtype") and not c.startswith(NOT_VARIANT)]
    out = pd.Series("", index=frame.index, dtype=object)
    base = ["arch", "depth", "loss", "lr", "data"]
    for _, sub in frame.groupby(base, dropna=False, sort=False):
        varying = [c for c in cfg if sub[c].astype(str).nunique(dropna=False) > 1]
        if varying:
            out[sub.index] = (
                sub[varying]
                .astype(str)
                .apply(lambda r, v=varying: ", ".join(f"{k}={r[k]}" for k in v), axis=1)
            )
    return out


def trial_table(summary: pd.DataFrame, unpublished: pd.DataFrame, traj: pd.DataFrame):
    """One row per trial: keys, status, the summary's numbers and the trajectory's metrics.

    Unpublished trials (failed, missing) appear with their status and keys, and NaN numbers.
    """
    parts = [summary.assign(published=True), unpublished.assign(published=False)]
    frame = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    for col in (*CONFIG_KEYS, "data.kind", "data.n", "dtype", "status", "error"):
        if col not in frame.columns:
            frame[col] = None
    for col in SUMMARY_NUMBERS:
        frame[col] = frame[col].astype(float) if col in frame.columns else math.nan
    frame = frame.rename(columns=CONFIG_KEYS)
    for col in ("depth", "width", "seed"):  # integers unless a trial's config is unreadable
        if frame[col].notna().all():
            frame[col] = frame[col].astype(int)
    frame["data"] = frame.apply(data_label, axis=1)
    frame["variant"] = _variants(frame)
    if len(traj):
        frame = frame.merge(traj, on="trial_id", how="left")
    _fill_from_trajectory(frame)
    frame["usable"] = frame["published"] & frame["status"].isin(list(USABLE))
    # a null first passage with a measured trajectory means "never within the horizon": +inf
    never = frame["usable"] & frame["t_exceed"].isna() & frame["drift_sup"].notna()
    frame["t_exceed"] = frame["t_exceed"].astype(float).mask(never, math.inf)
    never = frame["usable"] & frame["t_leave"].isna() & frame["gap_init"].notna()
    frame["t_leave"] = frame["t_leave"].astype(float).mask(never, math.inf)
    kmax = frame["max_K"].astype(float) + frame["gap_sup"].astype(float).fillna(0.0).clip(lower=0)
    frame["resolution_run"] = [
        resolution(d, k) if isinstance(d, str) and math.isfinite(k) else math.nan
        for d, k in zip(frame["dtype"], kmax, strict=True)
    ]
    return frame


def _fill_from_trajectory(frame: pd.DataFrame) -> None:
    """Summary keys that older stores lack, from the trajectory (in place).

    step_jump_max is the maximum of the step_jump column, t_leave core's first passage of the
    gap, the horizon the last tracked t; where the summary has the key, it wins.
    """
    for key, col in (("step_jump_max", "step_jump_max_traj"), ("t_leave", "t_leave_traj"),
                     ("flip_jump_max", "flip_jump_max_traj"), ("horizon_t", "t_last")):  # fmt: skip
        if key not in frame.columns:
            frame[key] = math.nan
        if col in frame.columns:
            frame[key] = frame[key].astype(float).fillna(frame[col].astype(float))
    frame["t_horizon"] = frame["horizon_t"]


# --- medians over seeds --------------------------------------------------------------------


def _below_half(j: int, n: int) -> float:
    """P(Bin(n, 1/2) <= j), summed exactly."""
    return sum(math.comb(n, i) for i in range(j + 1)) / 2**n  # integer division to a float


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Median and a distribution-free confidence interval for it from order statistics.

    The interval [x_(k), x_(n+1-k)] covers the median with probability 1 - 2 P(Bin(n, 1/2) < k)
    whatever the distribution; k is the largest index reaching ``level``. Under 6 seeds no k
    does, so [min, max] is returned with its smaller coverage (e.g. 0.75 for 3 seeds).
    Infinite values (t_exceed "never") are ordinary order statistics.

    Returns:
        (median, lo, hi, coverage); all NaN when ``values`` is empty.
    """
    x = np.sort(np.asarray(values, dtype=float)[~np.isnan(np.asarray(values, dtype=float))])
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan
    med = float(np.median(x))
    k, cover = 1, 1.0 - 2.0 * _below_half(0, n)
    for j in range(1, (n + 1) // 2 + 1):
        c = 1.0 - 2.0 * _below_half(j - 1, n)
        if c >= level:
            k, cover = j, c
    return med, float(x[k - 1]), float(x[n - k]), float(cover)


def _row_stats(sub: pd.DataFrame) -> Iterator[tuple[str, object]]:
    ok = sub[sub["usable"]]
    yield "n_seeds", len(ok)
    diverged = sub["status"].isin(DIVERGED)
    yield "n_failed", int((~sub["usable"] & sub["status"].ne("missing") & ~diverged).sum())
    yield "n_missing", int((sub["status"] == "missing").sum())
    yield "n_diverged", int(diverged.sum())
    for q in STATS:
        med, lo, hi, _ = median_interval(ok[q].to_numpy(float))
        yield f"{q}_med", med
        yield f"{q}_lo", lo
        yield f"{q}_hi", hi
    yield "ci_coverage", median_interval(ok["drift_sup"].to_numpy(float))[3]
    yield "bound", float(ok["bound"].median()) if len(ok) else math.nan
    yield "resolution", float(ok["resolution_run"].max()) if len(ok) else math.nan
    yield "t_horizon", float(ok["t_horizon"].min()) if "t_horizon" in ok and len(ok) else math.nan
    exceed = ok["drift_sup"].to_numpy(float) >= ok["bound"].to_numpy(float)
    yield "frac_exceed", float(exceed.mean()) if len(ok) else math.nan
    rel = ok["drift_slope_rel"].to_numpy(float) if "drift_slope_rel" in ok else np.array([])
    yield "drift_slope_rel_med", float(np.nanmedian(rel)) if np.isfinite(rel).any() else math.nan
    yield "dtype", ",".join(sorted(set(map(str, sub["dtype"].dropna())))) or "unknown"


def row_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (group, width): counts, medians and intervals over seeds, bound, resolution.

    ``resolution`` is the largest over the row's seeds of eps(dtype) * max|K_t| * safety, with
    max|K_t| <= max|K| + gap_sup (under cross-entropy K_t grows well past max|K|).
    """
    rows = []
    known = trials.dropna(subset=["arch", "depth", "loss", "lr", "width"])  # else: notes only
    for keys, sub in known.groupby(list(ROW_KEYS), dropna=False, sort=True):
        rows.append({**dict(zip(ROW_KEYS, keys, strict=True)), **dict(_row_stats(sub))})
    out = pd.DataFrame(rows)
    if len(out) and out["width"].notna().all():
        out["width"] = out["width"].astype(int)
    return out
