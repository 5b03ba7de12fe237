"""The drift verdict per group and width, and the plain-language conclusion of each group.

The answer comes first from the direct verdict (``_direct``: where the kernel starts inside the
bound, does training take it out?). The drift verdict here (column ``verdict``) is the evidence
for rows the direct test cannot resolve. At practical widths the fluctuation at initialization
gap_0 = max|K_0 - K| is far above the bound lambda0 / (2 n^2), so "gap_sup >= bound" holds at
t = 0 and says nothing (DESIGN §1). The drift verdict therefore rests on the training-induced
part, drift_sup = sup_t max|K_t - K_0|:

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

from ._direct import RESOLVED
from ._tables import GROUP_KEYS

__all__ = ["Verdict", "add_verdicts", "conclusions", "decide"]


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


def _fit(fits: pd.DataFrame, quantity: str) -> pd.Series | None:
    sel = fits[fits["quantity"] == quantity]
    return sel.iloc[0] if len(sel) else None


def _exponent(row) -> str:
    if not math.isfinite(row.exponent):
        return "n/a"
    if math.isnan(row.exponent_lo):
        return f"m^{row.exponent:.2f} (no interval)"
    return f"m^{row.exponent:.2f} [{row.exponent_lo:.2f}, {row.exponent_hi:.2f}]"


# why the direct test gives no answer, per direct verdict that is not an answer
UNDECIDED = {
    "starts-outside": "the kernel starts outside the bound, gap_0 >= bound",
    "flip-limited": "one step moves K by >= bound/10",
    "jump-untracked": "no step jump in the store to certify the start",
    "unresolvable": "the bound is below the kernel's numerical resolution",
}


def _direct_part(ok: pd.DataFrame) -> str:
    """One sentence per direct verdict present, widths named, numbers from the row table."""
    parts = []
    for verdict, sub in ok.groupby("direct", sort=False):
        ws = _widths(sub["width"])
        if verdict == "leaves-bound":
            first, last = sub.iloc[0], sub.iloc[-1]
            parts.append(f"the kernel left the bound at m = {ws} (median t_leave "
                         f"{_g(first.t_leave_med)} at m={int(first.width)}"
                         + (f" to {_g(last.t_leave_med)} at m={int(last.width)}"
                            if len(sub) > 1 else "") + ")")  # fmt: skip
        elif verdict == "stays-within":
            parts.append(f"at m = {ws} it did not leave the bound by t = "
                         f"{_g(sub['horizon_min'].min())}")  # fmt: skip
        elif verdict == "split":
            counts = ", ".join(f"{int(r.n_left)} of {int(r.n_inside)} at m={int(r.width)}"
                               for r in sub.itertuples())  # fmt: skip
            parts.append(f"seeds disagree at m = {ws} (left: {counts})")
        else:
            why = UNDECIDED.get(str(verdict), "")
            parts.append(f"undecided at m = {ws} ({verdict}{': ' + why if why else ''})")
    parts.sort(key=lambda part: part.startswith("undecided"))  # the answers first
    return "; ".join(parts) + "." + _control_part(ok)


def _control_part(ok: pd.DataFrame) -> str:
    """Where this loss and the other one both left the bound at a width, that width does not
    tell the losses apart: say so, with the widths where they do differ."""
    if "other_loss_direct" not in ok:
        return ""
    left = ok[ok["direct"] == "leaves-bound"]
    other = left["other_loss_direct"].astype(str)
    both = left[other.str.contains("leaves-bound|split")]
    apart = left[other == "stays-within"]
    if both.empty:
        return (f" The other loss stayed within the bound at m = {_widths(apart['width'])}."
                if not apart.empty else "")  # fmt: skip
    text = (f" At m = {_widths(both['width'])} the other loss left the bound too (in some or "
            "all seeds), so that width does not tell the losses apart")  # fmt: skip
    if not apart.empty:
        text += f"; at m = {_widths(apart['width'])} the other loss stayed within it"
    return text + "."


def _resolve_part(ok: pd.DataFrame) -> str:
    unres = ok[ok["resolve_how"].astype(str) != ""] if "resolve_how" in ok else ok.iloc[:0]
    if unres.empty:
        return ""
    r = unres.iloc[0]
    return f" To start inside the bound: m >= {_g(r.resolve_width)} ({r.resolve_how})."


def _t_leave_part(fits: pd.DataFrame) -> str:
    r = _fit(fits, "t_leave")
    if r is None:
        return ""
    if not math.isfinite(r.exponent):
        return f" t_leave(m): no fit ({r.note})."
    per = r.exponent * math.log10(2.0)
    lo, hi = r.exponent_lo * math.log10(2.0), r.exponent_hi * math.log10(2.0)
    return (f" t_leave(m) ~ {_exponent(r)}: {per:.2f} [{lo:.2f}, {hi:.2f}] decades of t per "
            f"doubling of m, from {int(r.n_widths)} widths" + (f" ({r.note})" if r.note else "")
            + ".")  # fmt: skip


def _regime_part(regime: pd.Series | None) -> str:
    if regime is None:
        return ""
    return f" Regime: {regime['regime']} ({regime['why']})."


def conclusion(rows: pd.DataFrame, fits: pd.DataFrame, regime: pd.Series | None = None) -> str:
    """A short paragraph drawn from the numbers, one line each: the answer (the direct test),
    the evidence it rests on, and what the finite widths and horizon cannot show."""
    n = rows["n_direct"] if "n_direct" in rows else rows["n_seeds"]  # stopped ones: direct only
    ok = rows[n > 0]
    head = _group_name(rows.iloc[0])
    if ok.empty:
        return f"{head}: no usable trial (all failed, diverged or missing); nothing to conclude."
    horizon = _g(ok["t_horizon"].min())
    answer = _direct_part(ok) if "direct" in ok else "no direct test in this store."
    evidence = (f"Evidence: bound {_g(ok['bound'].iloc[0])}, widths {_widths(ok['width'])}, "
                f"{_seeds(n[n > 0])} per width, horizon t = {horizon}."
                + (_resolve_part(ok) if "direct" in ok else "")
                + _t_leave_part(fits) + _regime_part(regime))  # fmt: skip
    limits = (f"Cannot show: anything past t = {horizon} or outside m = "
              f"{int(ok['width'].min())}..{int(ok['width'].max())}; widths named beyond that "
              "are extrapolations of fitted power laws, and no finite run proves what happens "
              "as m -> infinity.")  # fmt: skip
    return "\n".join((f"{head}: {answer}", evidence, limits))


def _group_name(row) -> str:
    variant = f", {row['variant']}" if row["variant"] else ""
    return (f"{row['arch']} L={int(row['depth'])}, {row['loss']} lr={row['lr']:g}, "
            f"{row['data']}{variant}")  # fmt: skip


def _select(frame: pd.DataFrame, keys) -> pd.DataFrame:
    if frame.empty:
        return frame
    sel = np.ones(len(frame), dtype=bool)
    for k, v in zip(GROUP_KEYS, keys, strict=True):
        sel &= (frame[k] == v).to_numpy()
    return frame[sel]


def conclusions(verdict: pd.DataFrame, fits: pd.DataFrame,
                regimes: pd.DataFrame | None = None) -> dict[str, str]:  # fmt: skip
    """{group name: paragraph} for every group."""
    out = {}
    regimes = pd.DataFrame() if regimes is None else regimes
    for keys, rows in verdict.groupby(list(GROUP_KEYS), dropna=False, sort=True):
        reg = _select(regimes, keys)
        out[_group_name(rows.iloc[0])] = conclusion(
            rows.sort_values("width"), _select(fits, keys), reg.iloc[0] if len(reg) else None
        )
    return out


DIRECT_TEXT = (("arch", "{}"), ("depth", "{}"), ("loss", "{}"), ("lr", "{:g}"), ("data", "{}"),
               ("width", "{}"), ("n_direct", "{}"), ("n_inside", "{}"), ("bound", "{:.3g}"),
               ("gap_init_med", "{:.3g}"), ("flip_jump_max_med", "{:.3g}"),
               ("t_leave_med", "{:.3g}"), ("t_horizon", "{:.3g}"), ("direct", "{}"),
               ("verdict", "{}"))  # fmt: skip
TEXT_COLUMNS = DIRECT_TEXT  # the plain-text table: the direct verdict, then the drift verdict


def _text_table(frame: pd.DataFrame, columns) -> list[str]:
    columns = [(c, f) for c, f in columns if c in frame.columns]
    cells = [[c for c, _ in columns]]
    for r in frame.itertuples():
        row = []
        for c, fmt in columns:
            v = getattr(r, c)
            is_num = isinstance(v, (int, float, np.integer, np.floating))
            row.append("never" if is_num and v == math.inf else
                       "n/a" if is_num and math.isnan(v) else fmt.format(v))  # fmt: skip
        cells.append(row)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]


def verdict_text(verdict: pd.DataFrame, paragraphs: dict[str, str], notes: list[str]) -> str:
    """A plain-text table of the verdicts (direct, then drift), the conclusions and any notes."""
    columns = list(TEXT_COLUMNS)
    if "variant" in verdict and verdict["variant"].astype(bool).any():
        columns.insert(5, ("variant", "{}"))
    shown = verdict.copy()
    if "direct" in shown:  # where the direct test answers, the drift verdict is not repeated
        shown["verdict"] = shown["verdict"].where(~shown["direct"].isin(RESOLVED), "-")
    lines = _text_table(shown, columns)
    lines += ["", "Conclusions:"]
    for p in paragraphs.values():  # the answer on the bullet, its evidence indented below
        first, *rest = p.splitlines()
        lines += [f"- {first}", *(f"  {line}" for line in rest)]
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)
