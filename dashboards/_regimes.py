"""Per group: m*(t) over the whole horizon, and the regime it and the late drift point to.

- ``diverging``: at every width the drift still grew over the last decade of t (bootstrap
  interval over seeds of the relative growth above 0), and the crossing width m*(t) grows in t
  (interval of d log10 m* / d log10 t above 0 over the last :data:`SLOPE_DECADES` decades that
  every trial reached);
- ``settling``: at every width the drift saturated (interval within +-:data:`SATURATION` per
  decade) and m*(t) is flat (slope interval within +-:data:`FLAT`);
- ``undetermined``: anything else; ``why`` says which condition failed.

Saturation is read from window medians (``_tables.late_growth``), never from single tracked
rows: GD chattering at the ReLU kink makes the drift jump between tracked steps.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._crossing import N_BOOT, SEED, _quantiles, crossing_curve, slope_in_t, slope_interval
from ._tables import DECADES, GROUP_KEYS, SATURATION, checkpoint_name

SLOPE_DECADES = 2  # m*(t)'s trend is read over the last two decades of the common horizon
FLAT = 0.1  # |d log10 m* / d log10 t| below this (m* moves < 26% per decade of t): flat
ROUNDING = 1e-9  # a slope interval within +-this is a constant m* read through rounding, not growth
REGIMES = ("diverging", "settling", "undetermined")


def growth_interval(values: np.ndarray, n_boot: int = N_BOOT) -> tuple[float, float, float]:
    """(mean, lo, hi): bootstrap percentile interval over seeds of the mean late growth.

    NaN ends under two seeds (one seed cannot be resampled).
    """
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    if v.size < 2:
        return float(v.mean()), math.nan, math.nan
    rng = np.random.default_rng(SEED)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return (float(v.mean()), *_quantiles(means))


def drift_at_decades(trials: pd.DataFrame) -> dict[float, np.ndarray]:
    """{t: (N,) each trial's robust drift at t} for the decades some trial reached."""
    out = {}
    for t in DECADES:
        col = f"drift_{checkpoint_name(t)}"
        if col in trials and trials[col].notna().any():
            out[t] = trials[col].to_numpy(float)
    return out


def _growth_why(per_width: pd.DataFrame) -> tuple[str, str]:
    """('growing' | 'saturated' | 'mixed' | 'unknown', sentence) from per-width intervals."""
    judged = per_width[per_width["growth_lo"].notna()]
    skipped = per_width[per_width["growth_lo"].isna()]["width"]
    left_out = (f"; m = {', '.join(str(int(w)) for w in skipped)} (under 2 seeds) not judged"
                if len(skipped) else "")  # fmt: skip
    if len(judged) < 2:
        return "unknown", ("the late drift growth has an interval (>= 2 seeds) at "
                           f"{len(judged)} width(s), the trend needs 2")  # fmt: skip
    trend, why = _judge(judged)
    return trend, why + left_out


def _judge(per_width: pd.DataFrame) -> tuple[str, str]:
    lo, hi = per_width["growth_lo"].to_numpy(float), per_width["growth_hi"].to_numpy(float)
    n = len(per_width)
    up = int((lo > 0).sum())
    flat = int(((lo >= -SATURATION) & (hi <= SATURATION)).sum())
    lo_g, hi_g = (f"{100 * per_width['growth'].min():+.0f}%",
                  f"{100 * per_width['growth'].max():+.0f}%")  # fmt: skip
    span = (lo_g if lo_g == hi_g else f"{lo_g} to {hi_g}") + " of the final drift per decade"
    if up == n:
        return "growing", f"the drift still grew over the last decade at all {n} widths ({span})"
    if flat == n:
        return "saturated", f"the drift saturated at all {n} widths ({span})"
    return "mixed", (f"the drift grew (interval above 0) at {up} of {n} widths and saturated "
                     f"(within +-{100 * SATURATION:.0f}%) at {flat} ({span})")  # fmt: skip


def _m_star_why(curve: pd.DataFrame, boots: dict) -> tuple[str, str, float, float, float]:
    """(trend, sentence, slope, lo, hi) of m*(t) over the last SLOPE_DECADES common decades."""
    common = [t for t in curve["t"] if t in boots]
    ts = common[-(SLOPE_DECADES + 1) :]
    nan3 = (math.nan, math.nan, math.nan)
    if len(ts) < SLOPE_DECADES + 1:
        why = (f"m*(t) is known at {len(common)} decade(s) that every trial reached, its trend "
               f"needs {SLOPE_DECADES + 1}")  # fmt: skip
        return "unknown", why, *nan3
    sel = curve[curve["t"].isin(ts)]
    m = sel["m_star"].to_numpy(float)
    where = f"t = {ts[0]:.0e}..{ts[-1]:.0e}"
    if not np.isfinite(m).all():
        return "unknown", f"the drift does not fall with width at some t in {where}", *nan3
    slope = slope_in_t(np.asarray(ts), m)
    lo, hi = slope_interval(boots, ts)
    text = (f"m*(t) {m[0]:.3g} -> {m[-1]:.3g} over {where}, {slope:+.2f} [{lo:+.2f}, {hi:+.2f}] "
            "decades of m* per decade of t")  # fmt: skip
    if math.isnan(lo):
        return "unknown", text + " (no interval)", slope, lo, hi
    if lo > ROUNDING:
        return "growing", text, slope, lo, hi
    if lo >= -FLAT and hi <= FLAT:
        return "flat", text, slope, lo, hi
    return "unclear", text, slope, lo, hi


def group_regime(keys: dict, trials: pd.DataFrame) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(regime row, m*(t) rows, per-width growth rows) of one group's usable trials."""
    bound = float(trials["bound"].median())
    per_width = pd.DataFrame(
        [{**keys, "width": int(w), "n_seeds": len(sub),
          **dict(zip(("growth", "growth_lo", "growth_hi"),
                     growth_interval(sub["drift_slope_rel"].to_numpy(float)), strict=True))}
         for w, sub in trials.groupby("width")])  # fmt: skip
    curve, boots = crossing_curve(trials["width"].to_numpy(float), drift_at_decades(trials), bound)
    curve = curve.assign(**keys, bound=bound)
    g_trend, g_why = _growth_why(per_width)
    m_trend, m_why, slope, lo, hi = _m_star_why(curve, boots)
    if g_trend == "growing" and m_trend == "growing":
        regime = "diverging"
    elif g_trend == "saturated" and m_trend == "flat":
        regime = "settling"
    else:
        regime = "undetermined"
    row = {**keys, "regime": regime, "why": f"{g_why}; {m_why}", "growth_trend": g_trend,
           "m_star_trend": m_trend, "m_star_slope": slope, "m_star_slope_lo": lo,
           "m_star_slope_hi": hi, "horizon": float(trials["t_horizon"].min()),
           "n_widths": int(trials["width"].nunique())}  # fmt: skip
    return row, curve, per_width


def regime_tables(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(regimes: one row per group, crossing: m*(t) per (group, t), growth per (group, width))."""
    usable = trials[trials["usable"]]
    regimes, curves, growth = [], [], []
    for keys, sub in usable.groupby(list(GROUP_KEYS), dropna=False, sort=True):
        row, curve, per_width = group_regime(dict(zip(GROUP_KEYS, keys, strict=True)), sub)
        regimes.append(row)
        curves.append(curve)
        growth.append(per_width)
    cat = lambda parts: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()  # noqa: E731
    return pd.DataFrame(regimes), cat(curves), cat(growth)


def side_by_side(crossing: pd.DataFrame) -> pd.DataFrame:
    """m*(t) of every (loss, lr) next to each other, at equal t only.

    One row per (arch, depth, data, variant, t); one column per (loss, lr).
    """
    if crossing.empty:
        return pd.DataFrame()
    f = crossing.copy()
    f["run"] = f["loss"].astype(str) + " lr=" + f["lr"].map(lambda v: f"{v:g}")
    index = ["arch", "depth", "data", "variant", "t"]
    wide = f.pivot_table(index=index, columns="run", values="m_star", aggfunc="first",
                         dropna=False)  # fmt: skip
    wide.columns = [f"m* [{c}]" for c in wide.columns]
    return wide.reset_index().dropna(axis=0, how="all", subset=list(wide.columns))
