"""Power-law fits against width, with intervals, and the widths they extrapolate to.

Every fit is ordinary least squares of log y on log m over all (width, seed) trials of a group,
seeds being replicates. The 95% interval of the exponent is b +- t_{0.975, N-2} se(b). A
*crossing width* is where the fitted line meets a target:
- gap_init and drift_sup: the width at which they would fall below the bound;
- t_exceed: the width at which the first exceedance would leave the horizon, that is where the
  drift within the horizon would fall below the bound (a second estimate of the same width).
Its interval comes from lines through the data's centroid with the exponent's two ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ._tables import CHECKPOINTS, GROUP_KEYS, checkpoint_name

LEVEL = 0.95


@dataclass(frozen=True)
class PowerLaw:
    """y = prefactor * m^exponent, fitted in log-log over N points at several widths."""

    exponent: float
    exponent_lo: float
    exponent_hi: float
    prefactor: float
    x_mean: float  # mean log m (the centroid the interval's lines pass through)
    y_mean: float  # mean log y
    n_points: int
    n_widths: int
    r2: float

    def at(self, m: float | np.ndarray) -> float | np.ndarray:
        return self.prefactor * np.asarray(m, dtype=float) ** self.exponent


def fit_power_law(width: np.ndarray, y: np.ndarray, level: float = LEVEL) -> PowerLaw | None:
    """Fit y ~ A m^b on the finite, positive points; None under two distinct widths.

    Args:
        width: (N,) widths m; y: (N,) values.
    Returns:
        The fit; its interval is NaN when N < 3 (no degrees of freedom left).
    """
    ok = np.isfinite(y) & (y > 0) & np.isfinite(width) & (width > 0)
    x, v = np.log(width[ok].astype(float)), np.log(y[ok].astype(float))
    if np.unique(x).size < 2:
        return None
    xm, ym = float(x.mean()), float(v.mean())
    sxx = float(((x - xm) ** 2).sum())
    b = float(((x - xm) * (v - ym)).sum() / sxx)
    resid = v - (ym + b * (x - xm))
    sst = float(((v - ym) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / sst if sst > 0 else 1.0
    half = math.nan
    if x.size > 2:
        se = math.sqrt(float((resid**2).sum()) / (x.size - 2) / sxx)
        half = float(stats.t.ppf(0.5 + level / 2, x.size - 2)) * se
    return PowerLaw(b, b - half, b + half, math.exp(ym - b * xm), xm, ym, int(x.size),
                    int(np.unique(x).size), r2)  # fmt: skip


def _cross(fit: PowerLaw, slope: float, target: float, falls: bool) -> float:
    """Width where the line through the centroid with ``slope`` meets ``target``.

    ``falls``: the quantity must fall with m to reach the target (drift, gap); otherwise rise
    (t_exceed). A slope of the wrong sign never gets there: +inf.
    """
    if not (math.isfinite(slope) and target > 0):
        return math.nan
    if (falls and slope >= 0) or (not falls and slope <= 0):
        return math.inf
    log_m = fit.x_mean + (math.log(target) - fit.y_mean) / slope
    return math.exp(log_m) if log_m < 700 else math.inf  # beyond 1e304: "never" in practice


def crossing(fit: PowerLaw, target: float, falls: bool = True) -> tuple[float, float, float]:
    """(crossing width, lower end, upper end) for ``target``; see the module docstring."""
    mid = _cross(fit, fit.exponent, target, falls)
    ends = sorted(_cross(fit, s, target, falls) for s in (fit.exponent_lo, fit.exponent_hi))
    return mid, ends[0], ends[1]


def _fit_row(keys: dict, quantity: str, t: float, sub: pd.DataFrame, col: str, target: float,
             falls: bool, note: str = "") -> dict:  # fmt: skip
    row = {**keys, "quantity": quantity, "t": t, "target": target, "note": note}
    fit = fit_power_law(sub["width"].to_numpy(float), sub[col].to_numpy(float))
    if fit is None:
        row.update(exponent=math.nan, exponent_lo=math.nan, exponent_hi=math.nan,
                   prefactor=math.nan, n_points=0, n_widths=0, r2=math.nan,
                   crossing_width=math.nan, crossing_width_lo=math.nan,
                   crossing_width_hi=math.nan)  # fmt: skip
        row["note"] = (note + "; " if note else "") + "under two widths with positive values"
        return row
    mid, lo, hi = crossing(fit, target, falls)
    row.update(exponent=fit.exponent, exponent_lo=fit.exponent_lo, exponent_hi=fit.exponent_hi,
               prefactor=fit.prefactor, n_points=fit.n_points, n_widths=fit.n_widths, r2=fit.r2,
               crossing_width=mid, crossing_width_lo=lo, crossing_width_hi=hi)  # fmt: skip
    return row


def group_fits(keys: dict, sub: pd.DataFrame) -> list[dict]:
    """All fits of one group (usable trials only): gap_init, drift_sup at each checkpoint and at
    the horizon, t_exceed. ``keys`` holds the group keys."""
    bound = float(sub["bound"].median())
    horizon = float(sub["t_horizon"].min()) if "t_horizon" in sub else math.nan
    rows = [_fit_row(keys, "gap_init", 0.0, sub, "gap_init", bound, True)]
    for tc in CHECKPOINTS:
        col = f"drift_sup_{checkpoint_name(tc)}"
        if col in sub and tc <= horizon and sub[col].notna().any():
            rows.append(_fit_row(keys, "drift_sup", tc, sub, col, bound, True))
    rows.append(_fit_row(keys, "drift_sup_horizon", horizon, sub, "drift_sup", bound, True))
    hit = sub[np.isfinite(sub["t_exceed"].to_numpy(float))]
    never = len(sub) - len(hit)
    note = f"{never} trial(s) never exceeded and are left out (censored)" if never else ""
    rows.append(_fit_row(keys, "t_exceed", horizon, hit, "t_exceed", horizon, False, note))
    return rows


def fit_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Fits of every group over its usable trials; one row per (group, quantity, t)."""
    usable = trials[trials["usable"]]
    rows: list[dict] = []
    for keys, sub in usable.groupby(list(GROUP_KEYS), dropna=False, sort=True):
        rows += group_fits(dict(zip(GROUP_KEYS, keys, strict=True)), sub)
    cols = [*GROUP_KEYS, "quantity", "t", "exponent", "exponent_lo", "exponent_hi",
            "prefactor", "n_points", "n_widths", "r2", "target", "crossing_width",
            "crossing_width_lo", "crossing_width_hi", "note"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def side_by_side(fits: pd.DataFrame) -> pd.DataFrame:
    """Crossing widths of cross-entropy and squared loss next to each other.

    One row per (arch, depth, data, variant, quantity, t); one column per (loss, lr).
    """
    if fits.empty:
        return pd.DataFrame()
    f = fits.copy()
    f["run"] = f["loss"].astype(str) + " lr=" + f["lr"].map(lambda v: f"{v:g}")
    # checkpoints line up across losses; horizons differ (t = steps * lr), so they are not keys
    f["at"] = [f"t={t:g}" if q == "drift_sup" else "horizon" if q != "gap_init" else "init"
               for q, t in zip(f["quantity"], f["t"], strict=True)]  # fmt: skip
    index = ["arch", "depth", "data", "variant", "quantity", "at"]
    wide = f.pivot_table(index=index, columns="run", values="crossing_width", aggfunc="first",
                         dropna=False)  # fmt: skip
    wide.columns = [f"crossing_width [{c}]" for c in wide.columns]
    return wide.reset_index().dropna(axis=0, how="all", subset=list(wide.columns))
