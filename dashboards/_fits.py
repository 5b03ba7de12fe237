"""Power-law fits against width, with intervals, the widths they extrapolate to, and refusals.

Every fit is ordinary least squares of log y on log m over all (width, seed) trials of a group,
seeds being replicates. The 95% interval of the exponent is b +- t_{0.975, N-2} se(b). A fit
*refuses* (no exponent, the reason in ``note``) when it has under :data:`MIN_WIDTHS` distinct
widths with positive values, or when its data are constant (an exponent of 0 with r2 = 1 from
zero spread says nothing). A *crossing width* is where the fitted line meets a target:
- gap_init and drift_sup: the width at which they would fall below the bound;
- step_jump: the width at which the largest one-step kernel jump would fall below bound/10;
- t_exceed and t_leave: the width at which they would pass the horizon (rising quantities).
Its interval comes from lines through the data's centroid with the exponent's two ends. A
crossing more than :data:`EXTRAPOLATION` times past the widest width is flagged
(``extrapolated``): a power law read that far out is a guess, not a measurement.

t_leave(m) is fitted the same way (log t_leave on log m): t_leave spans tens of decades and the
widths double, so a line in (log m, log t) is the natural first model; its slope is reported
also as decades of t per doubling of m (``b log10 2``), the unit in which the direct test's
prototype was read (about 3 decades per doubling at m = 4096 -> 8192).
A width where the squared-loss control, started inside the bound too, also left it is left out
of the cross-entropy t_leave fit (said in its note): there leaving does not tell the losses
apart, and t_leave measures how far inside the kernel happened to start rather than the law.
Where trials recorded ``gap_avg`` (gradient flow), t_leave_avg(m), the crossing of the
window-averaged kernel, is fitted by the same rule: unlike t_leave it converges as the flow's
tolerance shrinks (docs/concepts.md, "Chattering at the kinks").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from ._tables import CONTROL_LOSS, GROUP_KEYS, PAIR_KEYS

LEVEL = 0.95
MIN_WIDTHS = 3  # fewer distinct widths give no exponent (two points fit any line exactly)
EXTRAPOLATION = 10.0  # crossings beyond this factor past the widest width are flagged
JUMP_FRACTION = 0.1  # one activation flip may move K by at most bound/10 for the direct test
# the kernel's granularity: the largest change of K per activation flip (core's flip_jump). Not
# step_jump: an adaptive step late in a run carries many flips, so its jump measures the step
# size as much as the kernel; the change per flip is what no step size can go below.
JUMP_KEY = "flip_jump_max"
FIT_COLUMNS = (
    *GROUP_KEYS, "quantity", "t", "exponent", "exponent_lo", "exponent_hi", "prefactor",
    "n_points", "n_widths", "r2", "target", "crossing_width", "crossing_width_lo",
    "crossing_width_hi", "max_width", "extrapolated", "note",
)  # fmt: skip


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


def _usable(width: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.isfinite(y) & (y > 0) & np.isfinite(width) & (width > 0)


def refusal(width: np.ndarray, y: np.ndarray, min_widths: int = MIN_WIDTHS) -> str:
    """Why no exponent may be fitted to (width, y), or "" when a fit is allowed.

    Args:
        width: (N,) widths m; y: (N,) values (non-positive and non-finite ones are dropped).
    """
    width, y = np.asarray(width, float), np.asarray(y, float)
    ok = _usable(width, y)
    n_w = np.unique(width[ok]).size
    if n_w < min_widths:
        return (f"refused: {n_w} width(s) with positive finite values, an exponent needs "
                f">= {min_widths}")  # fmt: skip
    if np.ptp(np.log(y[ok])) == 0.0:
        return f"refused: constant data (all {int(ok.sum())} values = {y[ok][0]:.4g})"
    return ""


def fit_power_law(width: np.ndarray, y: np.ndarray, level: float = LEVEL) -> PowerLaw | None:
    """Fit y ~ A m^b on the finite, positive points; None under two widths or constant data.

    Callers that report an exponent check :func:`refusal` first (>= 3 widths).

    Args:
        width: (N,) widths m; y: (N,) values.
    Returns:
        The fit; its interval is NaN when N < 3 (no degrees of freedom left).
    """
    width, y = np.asarray(width, float), np.asarray(y, float)
    ok = _usable(width, y)
    x, v = np.log(width[ok]), np.log(y[ok])
    if np.unique(x).size < 2 or np.ptp(v) == 0.0:
        return None
    xm, ym = float(x.mean()), float(v.mean())
    sxx = float(((x - xm) ** 2).sum())
    b = float(((x - xm) * (v - ym)).sum() / sxx)
    resid = v - (ym + b * (x - xm))
    r2 = 1.0 - float((resid**2).sum()) / float(((v - ym) ** 2).sum())
    half = math.nan
    if x.size > 2:
        se = math.sqrt(float((resid**2).sum()) / (x.size - 2) / sxx)
        half = float(special.stdtrit(x.size - 2, 0.5 + level / 2)) * se  # Student t quantile
    return PowerLaw(b, b - half, b + half, math.exp(ym - b * xm), xm, ym, int(x.size),
                    int(np.unique(x).size), r2)  # fmt: skip


def cross_line(x_mean: float, y_mean: float, slope: float, target: float, falls: bool) -> float:
    """Width where the line log y = y_mean + slope (log m - x_mean) meets ``target``.

    ``falls``: the quantity must fall with m to reach the target (drift, gap); otherwise rise
    (t_exceed, t_leave). A slope of the wrong sign never gets there: +inf.
    """
    if not (math.isfinite(slope) and target > 0):
        return math.nan
    if (falls and slope >= 0) or (not falls and slope <= 0):
        return math.inf
    log_m = x_mean + (math.log(target) - y_mean) / slope
    return math.exp(log_m) if log_m < 700 else math.inf  # beyond 1e304: "never" in practice


def crossing(fit: PowerLaw, target: float, falls: bool = True) -> tuple[float, float, float]:
    """(crossing width, lower end, upper end) for ``target``; see the module docstring."""
    mid = cross_line(fit.x_mean, fit.y_mean, fit.exponent, target, falls)
    ends = sorted(cross_line(fit.x_mean, fit.y_mean, s, target, falls)
                  for s in (fit.exponent_lo, fit.exponent_hi))  # fmt: skip
    return mid, ends[0], ends[1]


def is_extrapolated(width: float, max_width: float) -> bool:
    """A crossing more than EXTRAPOLATION times past the widest measured width (or never)."""
    return bool(math.isfinite(max_width) and not math.isnan(width)
                and width > EXTRAPOLATION * max_width)  # fmt: skip


NAN_FIT = dict(exponent=math.nan, exponent_lo=math.nan, exponent_hi=math.nan, prefactor=math.nan,
               n_points=0, n_widths=0, r2=math.nan, crossing_width=math.nan,
               crossing_width_lo=math.nan, crossing_width_hi=math.nan,
               extrapolated=False)  # fmt: skip


def _fit_row(keys: dict, quantity: str, t: float, sub: pd.DataFrame, col: str, target: float,
             falls: bool, note: str = "") -> dict:  # fmt: skip
    width, y = sub["width"].to_numpy(float), sub[col].to_numpy(float)
    max_w = float(np.nanmax(width)) if width.size else math.nan
    row = {**keys, "quantity": quantity, "t": t, "target": target, "max_width": max_w}
    why = refusal(width, y)
    fit = None if why else fit_power_law(width, y)
    if fit is None:
        row.update(NAN_FIT, note="; ".join(x for x in (note, why or "refused") if x))
        return row
    mid, lo, hi = crossing(fit, target, falls)
    far = is_extrapolated(mid, max_w)
    if far:
        why = (f"crossing width {mid:.3g} is over {EXTRAPOLATION:g}x past the widest width "
               f"{max_w:g}: extrapolated")  # fmt: skip
        note = "; ".join(x for x in (note, why) if x)
    row.update(exponent=fit.exponent, exponent_lo=fit.exponent_lo, exponent_hi=fit.exponent_hi,
               prefactor=fit.prefactor, n_points=fit.n_points, n_widths=fit.n_widths, r2=fit.r2,
               crossing_width=mid, crossing_width_lo=lo, crossing_width_hi=hi, extrapolated=far,
               note=note)  # fmt: skip
    return row


def starts_inside(gap_init: np.ndarray, jump: np.ndarray, bound: np.ndarray) -> np.ndarray:
    """(N,) bool: gap_0 < bound and the per-flip jump < bound/10 (a NaN jump is not inside)."""
    with np.errstate(invalid="ignore"):
        return (gap_init < bound) & (jump < JUMP_FRACTION * bound)


def _censored(keys, quantity, sub, col, horizon, what) -> dict:
    """Fit of a first-passage time over the trials that reached it; the others are counted."""
    hit = sub[np.isfinite(sub[col].to_numpy(float))]
    never = len(sub) - len(hit)
    if never and hit.empty:
        row = _fit_row(keys, quantity, horizon, hit, col, horizon, False)
        row["note"] = f"refused: none of {never} trial(s) {what} by their horizon"
        return row
    note = (f"{never} trial(s) never {what} by their horizon and are left out (censored: their "
            "times are longer)" if never else "")  # fmt: skip
    return _fit_row(keys, quantity, horizon, hit, col, horizon, False, note)


def group_fits(keys: dict, sub: pd.DataFrame, contested: frozenset = frozenset()) -> list[dict]:
    """All width fits of one group (usable trials only); ``keys`` holds the group keys;
    ``contested``: the :data:`PAIR_KEYS` tuples where the squared-loss control left the bound."""
    bound = float(sub["bound"].median())
    horizon = float(sub["t_horizon"].min()) if "t_horizon" in sub else math.nan
    rows = [_fit_row(keys, "gap_init", 0.0, sub, "gap_init", bound, True)]
    if sub[JUMP_KEY].notna().any():
        rows.append(_fit_row(keys, "flip_jump", 0.0, sub, JUMP_KEY, JUMP_FRACTION * bound, True))
    rows.append(_fit_row(keys, "drift_sup_horizon", horizon, sub, "drift_sup", bound, True))
    rows.append(_censored(keys, "t_exceed", sub, "t_exceed", horizon, "exceeded"))
    rows.append(_t_leave_row(keys, sub, horizon, contested))
    if "t_leave_avg" in sub and np.isfinite(sub["t_leave_avg"].to_numpy(float)).any():
        rows.append(_t_leave_row(keys, sub, horizon, contested, "t_leave_avg"))  # gradient flow
    return rows


def left_out(trials: pd.DataFrame, contested: frozenset) -> np.ndarray:
    """Per trial: not the control loss, at a :data:`PAIR_KEYS` tuple in ``contested`` (the
    squared-loss control left the bound there too); t_leave(m) leaves these trials out."""
    pairs = trials[list(PAIR_KEYS)].itertuples(index=False, name=None)
    losses = trials["loss"]
    return np.array([p in contested and loss != CONTROL_LOSS
                     for p, loss in zip(pairs, losses, strict=True)], dtype=bool)  # fmt: skip


def _inside(sub: pd.DataFrame) -> np.ndarray:
    return starts_inside(sub["gap_init"].to_numpy(float), sub[JUMP_KEY].to_numpy(float),
                         sub["bound"].to_numpy(float))  # fmt: skip


def _t_leave_row(keys: dict, sub: pd.DataFrame, horizon: float, contested: frozenset,
                 col: str = "t_leave") -> dict:  # fmt: skip
    """``col``(m) (t_leave, or t_leave_avg: the window-averaged kernel's crossing) over the
    trials that start inside the bound (elsewhere it is 0 or a flip, not the theorem), at the
    widths where the squared-loss control did not leave too."""
    inside = _inside(sub)
    if not inside.any():
        row = _fit_row(keys, col, horizon, sub.iloc[:0], col, horizon, False)
        row["note"] = "refused: no trial starts inside the bound (gap_0 < bound, jump < bound/10)"
        return row
    sub, note = sub[inside], ""
    if keys["loss"] != CONTROL_LOSS:
        out = left_out(sub, contested)
        if out.any():
            widths = ", ".join(f"{w:g}" for w in sorted(set(sub["width"][out])))
            note = (f"m = {widths} left out: the squared-loss control left the bound there too, "
                    "so leaving does not tell the losses apart")  # fmt: skip
            sub = sub[~out]
    row = _censored(keys, col, sub, col, horizon, "left the bound")
    row["note"] = "; ".join(x for x in (note, row["note"]) if x)
    return row


def fit_table(trials: pd.DataFrame, contested: frozenset = frozenset()) -> pd.DataFrame:
    """Fits of every group over its usable trials; one row per (group, quantity). ``contested``:
    the :data:`PAIR_KEYS` tuples where the squared-loss control left the bound
    (``dashboards._direct.contested_widths`` of the verdict table), left out of t_leave(m)."""
    usable = trials[trials["usable"]]
    rows: list[dict] = []
    for keys, sub in usable.groupby(list(GROUP_KEYS), dropna=False, sort=True):
        rows += group_fits(dict(zip(GROUP_KEYS, keys, strict=True)), sub, contested)
    out = pd.DataFrame(rows, columns=list(FIT_COLUMNS))
    rising = ["t_leave", "t_leave_avg", "t_exceed"]
    out["decades_per_doubling"] = np.where(out["quantity"].isin(rising),
                                           out["exponent"] * math.log10(2.0), np.nan)  # fmt: skip
    return out
