"""Verdicts per group and width, and the plain-language conclusion of each group.

At practical widths the fluctuation at initialization gap_0 = max|K_0 - K| is far above the
bound lambda0 / (2 n^2), so "gap_sup >= bound" holds at t = 0 and says nothing (DESIGN §1). The
verdict therefore rests on the training-induced part, drift_sup = sup_t max|K_t - K_0|:

- ``unresolvable``: the bound is below the numerical resolution of the kernel: nothing about
  it can be read off this dtype;
- ``exceeds-by-training``: the median over seeds of drift_sup is >= the bound;
- ``exceeds-only-at-init``: gap_0 >= bound > drift_sup: uninformative, and said so;
- ``below-bound``: neither gap_0 nor drift_sup reaches the bound;
- ``no-data``: no usable trial in the row (all failed or missing), or no kernel was tracked.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import pandas as pd

from ._tables import GROUP_KEYS, RESOLUTION_SAFETY, SATURATION, resolution

__all__ = ["RESOLUTION_SAFETY", "Verdict", "add_verdicts", "conclusions", "decide", "resolution"]


class Verdict(str, Enum):
    """The verdict of one (group, width) row; see the module docstring."""

    EXCEEDS_BY_TRAINING = "exceeds-by-training"
    EXCEEDS_ONLY_AT_INIT = "exceeds-only-at-init"
    BELOW_BOUND = "below-bound"
    UNRESOLVABLE = "unresolvable"
    NO_DATA = "no-data"


def decide(n_seeds: int, bound: float, res: float, gap_init: float, drift_sup: float) -> Verdict:
    """The verdict from the row's medians over seeds (checked in this order)."""
    if n_seeds == 0 or not math.isfinite(bound) or math.isnan(drift_sup):
        return Verdict.NO_DATA
    if not math.isfinite(res) or bound <= res:
        return Verdict.UNRESOLVABLE
    if drift_sup >= bound:
        return Verdict.EXCEEDS_BY_TRAINING
    if gap_init >= bound:
        return Verdict.EXCEEDS_ONLY_AT_INIT
    return Verdict.BELOW_BOUND


def add_verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """Append the ``verdict`` column to :func:`_tables.row_table`'s output."""
    out = rows.copy()
    out["verdict"] = [
        decide(int(r.n_seeds), r.bound, r.resolution, r.gap_init_med, r.drift_sup_med).value
        for r in out.itertuples()
    ]
    return out


# --- words -----------------------------------------------------------------------------------


def _g(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return "never" if v == math.inf else f"{v:.3g}"


def _seeds(n_seeds: pd.Series) -> str:
    """'3 seed(s)', or '1-3 seed(s)' when widths differ (the fewest first)."""
    lo, hi = int(n_seeds.min()), int(n_seeds.max())
    return f"{hi} seed(s)" if lo == hi else f"{lo}-{hi} seed(s)"


def _widths(ws) -> str:
    ws = [int(w) for w in ws]
    return ", ".join(map(str, ws)) if len(ws) <= 4 else f"{ws[0]}..{ws[-1]} ({len(ws)} widths)"


def _fit(fits: pd.DataFrame, quantity: str) -> pd.DataFrame:
    return fits[fits["quantity"] == quantity].sort_values("t")


def _exponent(row) -> str:
    if not math.isfinite(row.exponent):
        return "n/a"
    if math.isnan(row.exponent_lo):  # two points: a line through them, no interval
        return f"m^{row.exponent:.2f} (from {int(row.n_points)} points: no interval)"
    return f"m^{row.exponent:.2f} [{row.exponent_lo:.2f}, {row.exponent_hi:.2f}]"


def _crossing_ratio(fits: pd.DataFrame) -> tuple[float, str]:
    """(ratio, sentence): how the extrapolated crossing width moved over the last two
    checkpoints in t (the time signature); (NaN, "") with under two finite crossings."""
    cp = _fit(fits, "drift_sup")
    cp = cp[np.isfinite(cp["crossing_width"].to_numpy(float))]
    if len(cp) < 2:
        return math.nan, ""
    prev, last = cp.iloc[-2], cp.iloc[-1]
    ratio = last.crossing_width / prev.crossing_width
    way = (
        f"rose by a factor {ratio:.2g}"
        if ratio > 1.2
        else f"fell by a factor {1 / ratio:.2g}"
        if ratio < 1 / 1.2
        else "stayed within 20%"
    )
    return ratio, (
        f" From t = {prev.t:g} to t = {last.t:g} the width at which the drift would fall below "
        f"the bound {way} ({_g(prev.crossing_width)} -> {_g(last.crossing_width)})."
    )  # fmt: skip


def _trend(rows: pd.DataFrame) -> tuple[int, int, str]:
    """(widths still growing, widths known, sentence) from the late drift slopes."""
    rel = rows["drift_slope_rel_med"].to_numpy(float)
    if not np.isfinite(rel).any():
        return 0, 0, ""
    lo, hi = np.nanmin(rel), np.nanmax(rel)
    growing, known = int((rel >= SATURATION).sum()), int(np.isfinite(rel).sum())
    what = (f"was still growing at {growing} of {known} widths" if growing
            else "had flattened at every width")  # fmt: skip
    return (
        growing,
        known,
        (
            f" Over the last decade of t the drift {what} (late slope {100 * lo:+.0f}% to "
            f"{100 * hi:+.0f}% of its final value per decade of t)."
        ),
    )


def _time_signature(rows: pd.DataFrame, fits: pd.DataFrame) -> str:
    """The late drift trend (direct) and the crossing width's move (extrapolated), and what
    they mean; the trend decides, the crossing width can only add a caveat."""
    growing, known, trend = _trend(rows)
    ratio, moved = _crossing_ratio(fits)
    if not known:
        return moved
    if growing == known:
        meaning = (
            " That is consistent with divergence: the longer the run, the wider a "
            "network must be to keep its kernel within the bound."
        )
        if ratio <= 1.2:
            meaning += (
                " The extrapolated crossing width did not grow with t, though; longer "
                "runs would tell."
            )
    elif growing == 0:
        meaning = (
            " That is consistent with the lazy regime: the drift settles at a level "
            "that falls with width, so exceeding the bound at these widths is a "
            "finite-width effect."
        )
        if ratio > 1.2:
            meaning += (
                " The crossing width still rose with t, so the drift may not have fully settled."
            )
    else:
        meaning = (
            " Mixed: the drift still grows at some widths and not at others; longer runs "
            "or more seeds are needed."
        )
    return trend + moved + meaning  # fmt: skip


def conclusion(rows: pd.DataFrame, fits: pd.DataFrame) -> str:
    """One plain-language paragraph: what this group's data show and what they cannot show."""
    ok = rows[rows["n_seeds"] > 0]
    head = _group_name(rows.iloc[0])
    if ok.empty:
        return f"{head}: no usable trial (all failed or missing); nothing can be concluded."
    counts = ok["verdict"].value_counts()
    parts = [
        f"{head}: bound {_g(ok['bound'].iloc[0])} (resolution {_g(ok['resolution'].max())}), "
        f"widths {_widths(ok['width'])}, {_seeds(ok['n_seeds'])} per width, "
        f"horizon t = {_g(ok['t_horizon'].min())}. Verdicts: "
        + ", ".join(f"{v} at {c} width(s)" for v, c in counts.items())
        + "."
    ]
    if counts.get(Verdict.UNRESOLVABLE.value, 0):
        parts.append(
            " Where unresolvable, the bound is below the rounding of the kernel in "
            "this dtype and the data say nothing about it; rerun in float64."
        )
    if counts.get(Verdict.EXCEEDS_ONLY_AT_INIT.value, 0):
        parts.append(
            " 'exceeds-only-at-init' is uninformative: the finite-width fluctuation "
            "gap_0 is above the bound, but training itself did not move K_t that far."
        )
    gi, dh = _fit(fits, "gap_init"), _fit(fits, "drift_sup_horizon")
    if len(gi) and math.isfinite(gi.iloc[0].exponent):
        parts.append(
            f" gap_0 scales like {_exponent(gi.iloc[0])} (finite-width fluctuation, "
            f"about m^-0.5 expected)."
        )
    if len(dh) and math.isfinite(dh.iloc[0].exponent):
        r = dh.iloc[0]
        parts.append(
            f" drift_sup within the horizon scales like {_exponent(r)}; extrapolated, "
            f"it would fall below the bound at m = {_g(r.crossing_width)}"
            + (
                ""
                if math.isnan(r.crossing_width_lo)
                else f" [{_g(r.crossing_width_lo)}, {_g(r.crossing_width_hi)}]"
            )
            + "."  # fmt: skip
        )
    parts.append(_time_signature(ok, fits))
    parts.append(
        f" What the data cannot show: behaviour beyond t = {_g(ok['t_horizon'].min())} or "
        f"outside widths {int(ok['width'].min())}..{int(ok['width'].max())}; every crossing "
        "width is a power-law extrapolation, not a measurement, and no finite run can prove "
        "that the gap stays above the bound as m -> infinity."
    )
    return "".join(parts)


def _group_name(row) -> str:
    variant = f", {row['variant']}" if row["variant"] else ""
    return (f"{row['arch']} L={int(row['depth'])}, {row['loss']} lr={row['lr']:g}, "
            f"{row['data']}{variant}")  # fmt: skip


def conclusions(verdict: pd.DataFrame, fits: pd.DataFrame) -> dict[str, str]:
    """{group name: paragraph} for every group."""
    out = {}
    for keys, rows in verdict.groupby(list(GROUP_KEYS), dropna=False, sort=True):
        sel = np.ones(len(fits), dtype=bool)
        for k, v in zip(GROUP_KEYS, keys, strict=True):
            sel &= (fits[k] == v).to_numpy()
        out[_group_name(rows.iloc[0])] = conclusion(rows.sort_values("width"), fits[sel])
    return out


TEXT_COLUMNS = (("arch", "{}"), ("depth", "{}"), ("loss", "{}"), ("lr", "{:g}"), ("data", "{}"),
                ("width", "{}"), ("n_seeds", "{}"), ("bound", "{:.3g}"),
                ("resolution", "{:.2g}"), ("gap_init_med", "{:.3g}"),
                ("drift_sup_med", "{:.3g}"), ("t_exceed_med", "{:.3g}"),
                ("verdict", "{}"))  # fmt: skip


def verdict_text(verdict: pd.DataFrame, paragraphs: dict[str, str], notes: list[str]) -> str:
    """A plain-text table of the verdicts, then the per-group conclusions and any notes."""
    columns = list(TEXT_COLUMNS)
    if "variant" in verdict and verdict["variant"].astype(bool).any():
        columns.insert(5, ("variant", "{}"))
    cells = [[c for c, _ in columns]]
    for r in verdict.itertuples():
        row = []
        for c, fmt in columns:
            v = getattr(r, c)
            is_num = isinstance(v, (int, float, np.integer, np.floating))
            row.append("never" if is_num and v == math.inf else
                       "n/a" if is_num and math.isnan(v) else fmt.format(v))  # fmt: skip
        cells.append(row)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]
    lines += ["", "Conclusions:"]
    lines += [f"- {p}" for p in paragraphs.values()]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)
