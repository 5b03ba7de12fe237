"""The direct verdict: where the kernel starts inside the bound, does training take it out?

A trial *starts inside* when gap_0 = max|K_0 - K| < bound and its kernel's granularity, the
largest change of K per activation flip (``flip_jump_max``), is < bound/10: the kernel is then
resolved well enough that gap_t >= bound, if it happens, is the theorem observed, not initial
noise or one activation flip. Per
(group, width), over the usable seeds that start inside (completed trials, and stopped ones up to
the horizon they reached):

- ``leaves-bound``: every such seed reached gap_t >= bound (t_leave: median and seed range);
- ``stays-within``: none did by its horizon ("did not leave by t = T");
- ``split``: some did and some did not (both counts given).

Rows where no seed starts inside say why:
- ``starts-outside``: median gap_0 >= bound (finite-width fluctuation already outside);
- ``flip-limited``: gap_0 < bound but the per-flip jump >= bound/10;
- ``jump-untracked``: gap_0 < bound and the store has no per-flip jump (written before it was
  tracked), so the direct test cannot be certified;
- ``unresolvable`` / ``no-data``: as for the drift verdict (``_verdict``).

Each row also names the direct verdict of the other loss at the same width and otherwise the same
config (``other_loss_direct``, :func:`add_other_loss`): cross-entropy leaving the bound tells the
losses apart only where the squared-loss control stays within it at that width.

Every unresolved row of a group carries the width that would resolve it (:func:`resolving_width`):
gap_0 ~ A m^a and jump ~ B m^b fitted across widths (a, b fitted from >= 3 widths, else the
theoretical -1/2 and -1 with the prefactor from the data, said so), solved for gap_0 < bound and
jump < bound/10.
"""

from __future__ import annotations

import math
from enum import Enum

import numpy as np
import pandas as pd

from core import TrialStatus

from ._fits import EXTRAPOLATION, JUMP_FRACTION, JUMP_KEY, fit_power_law, refusal, starts_inside
from ._tables import CONTROL_LOSS, GROUP_KEYS, PAIR_KEYS, ROW_KEYS


class Direct(str, Enum):
    """The direct verdict of one (group, width) row; see the module docstring."""

    LEAVES = "leaves-bound"
    STAYS = "stays-within"
    SPLIT = "split"
    STARTS_OUTSIDE = "starts-outside"
    FLIP_LIMITED = "flip-limited"
    JUMP_UNTRACKED = "jump-untracked"
    UNRESOLVABLE = "unresolvable"
    NO_DATA = "no-data"


RESOLVED = (Direct.LEAVES.value, Direct.STAYS.value, Direct.SPLIT.value)
THEORY = {"gap_init": -0.5, JUMP_KEY: -1.0}  # gap_0 ~ m^-1/2, one flip ~ 1/m


def _spread(t: np.ndarray) -> tuple[float, float, float]:
    return (float(np.median(t)), float(t.min()), float(t.max())) if t.size else (math.nan,) * 3


def direct_row(ok: pd.DataFrame, bound: float, res: float) -> dict:
    """The direct verdict and its numbers from one row's usable trials."""
    out = {"n_inside": 0, "n_left": 0, "t_leave_med": math.nan, "t_leave_min": math.nan,
           "t_leave_max": math.nan, "t_stay_max": math.nan, "t_leave_avg_med": math.nan,
           "t_leave_avg_min": math.nan, "t_leave_avg_max": math.nan,
           "horizon_min": math.nan}  # fmt: skip
    if ok.empty or not math.isfinite(bound) or ok["gap_init"].isna().all():
        return {**out, "direct": Direct.NO_DATA.value}
    if not math.isfinite(res) or bound <= res:
        return {**out, "direct": Direct.UNRESOLVABLE.value}
    gap0, jump = ok["gap_init"].to_numpy(float), ok[JUMP_KEY].to_numpy(float)
    inside = starts_inside(gap0, jump, ok["bound"].to_numpy(float))
    if not inside.any():
        if np.nanmedian(gap0) >= bound:
            return {**out, "direct": Direct.STARTS_OUTSIDE.value}
        if np.isnan(jump).all():
            return {**out, "direct": Direct.JUMP_UNTRACKED.value}
        return {**out, "direct": Direct.FLIP_LIMITED.value}
    sel = ok[inside]
    t_leave = sel["t_leave"].to_numpy(float)
    left = np.isfinite(t_leave)
    med, lo, hi = _spread(t_leave[left])
    t_stay = sel["t_stay"].to_numpy(float) if "t_stay" in sel else np.full(len(sel), np.nan)
    stayed = np.isfinite(t_stay)  # outside at the horizon: from t_stay on, for good
    # the window-averaged gap's first crossing (gradient-flow trials that recorded gap_avg)
    avg = sel["t_leave_avg"].to_numpy(float) if "t_leave_avg" in sel else np.full(len(sel), np.nan)
    amed, alo, ahi = _spread(avg[np.isfinite(avg)])
    out.update(t_leave_avg_med=amed, t_leave_avg_min=alo, t_leave_avg_max=ahi)
    out.update(n_inside=int(inside.sum()), n_left=int(left.sum()), t_leave_med=med,
               t_leave_min=lo, t_leave_max=hi,
               t_stay_max=float(t_stay[stayed].max()) if stayed.all() and left.any() else math.nan,
               horizon_min=float(sel["t_horizon"].min()))  # fmt: skip
    verdict = Direct.LEAVES if left.all() else Direct.STAYS if not left.any() else Direct.SPLIT
    return {**out, "direct": verdict.value}


def _law(width: np.ndarray, y: np.ndarray, quantity: str) -> tuple[float, float, str]:
    """(exponent, prefactor, how): fitted from >= 3 widths, else the theoretical exponent."""
    why = refusal(width, y)
    fit = None if why else fit_power_law(width, y)
    if fit is not None:
        return fit.exponent, fit.prefactor, f"fitted m^{fit.exponent:.2f} ({fit.n_widths} widths)"
    b = THEORY[quantity]
    ok = np.isfinite(y) & (y > 0)
    if not ok.any():
        return b, math.nan, "no data"
    prefactor = float(np.exp(np.mean(np.log(y[ok]) - b * np.log(width[ok]))))
    n_w = np.unique(width[ok]).size
    return b, prefactor, f"theoretical m^{b:g} ({n_w} width(s): too few to fit)"


def _solve(exponent: float, prefactor: float, target: float) -> float:
    """Width m with prefactor m^exponent = target (inf when it does not fall with m)."""
    if not (math.isfinite(prefactor) and prefactor > 0):
        return math.nan
    if exponent >= 0:
        return math.inf
    return float((target / prefactor) ** (1.0 / exponent))


def resolving_width(trials: pd.DataFrame, bound: float) -> dict:
    """The width at which gap_0 < bound and jump < bound/10, from one group's usable trials."""
    width = trials["width"].to_numpy(float)
    a, pa, how_gap = _law(width, trials["gap_init"].to_numpy(float), "gap_init")
    m_gap = _solve(a, pa, bound)
    jump = trials[JUMP_KEY].to_numpy(float)
    if np.isnan(jump).all():
        m_jump, how_jump = math.nan, "jump not tracked"
    else:
        b, pb, how_jump = _law(width, jump, JUMP_KEY)
        m_jump = _solve(b, pb, JUMP_FRACTION * bound)
    m = max(m_gap, m_jump if not math.isnan(m_jump) else 0.0)
    max_w = float(np.nanmax(width)) if width.size else math.nan
    far = bool(m > EXTRAPOLATION * max_w) if not math.isnan(m) else False
    how = (f"gap_0 < bound at m >= {m_gap:.3g} ({how_gap}); jump < bound/10 at m >= "
           f"{m_jump:.3g} ({how_jump})")  # fmt: skip
    if far:
        how += f"; over {EXTRAPOLATION:g}x past the widest width {max_w:g}: extrapolated"
    return {"resolve_width": m, "resolve_gap_width": m_gap, "resolve_jump_width": m_jump,
            "resolve_extrapolated": far, "resolve_how": how}  # fmt: skip


FILLED = ("gap_init", JUMP_KEY, "step_jump_max", "t_horizon")


def add_direct(rows: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Append the direct verdict (and, on unresolved rows, the resolving width) to ``rows``.

    Args:
        rows: :func:`_tables.row_table` output (one row per (group, width)).
        trials: :func:`_tables.trial_table` output.
    """
    # a stopped trial (a budget or a pruner ended it; resumable) counts here with its horizon:
    # whether and when it left the bound up to horizon_t is as measured as for a completed one
    stopped = trials["status"].eq(TrialStatus.STOPPED.value) & trials["published"]
    usable = trials[trials["usable"] | stopped]
    extra = []
    for r in rows.itertuples(index=False):
        key = {k: getattr(r, k) for k in ROW_KEYS}
        sel = np.ones(len(usable), dtype=bool)
        for k, v in key.items():
            sel &= (usable[k] == v).to_numpy()
        mine = usable[sel]
        bound, res = r.bound, r.resolution
        if not math.isfinite(bound) and not mine.empty:  # the row has only stopped trials
            bound, res = float(mine["bound"].median()), float(mine["resolution"].median())
        fill = {f"{k}_direct": float(mine[k].median()) if not mine.empty else math.nan
                for k in FILLED}  # fmt: skip
        extra.append({**direct_row(mine, bound, res), "n_direct": len(mine),
                      "bound_direct": bound, **fill})  # fmt: skip
    out = pd.concat([rows.reset_index(drop=True), pd.DataFrame(extra)], axis=1)
    out["bound"] = out["bound"].astype(float).fillna(out.pop("bound_direct"))
    for k in FILLED:  # rows whose trials were all stopped: their medians, for the direct table
        col = "t_horizon" if k == "t_horizon" else f"{k}_med"
        if col in out:
            out[col] = out[col].astype(float).fillna(out.pop(f"{k}_direct"))
        else:
            out.pop(f"{k}_direct")
    for col in ("resolve_width", "resolve_gap_width", "resolve_jump_width"):
        out[col] = math.nan
    out["resolve_extrapolated"], out["resolve_how"] = False, ""
    for keys, sub in usable.groupby(list(GROUP_KEYS), dropna=False, sort=True):
        at = np.ones(len(out), dtype=bool)
        for k, v in zip(GROUP_KEYS, keys, strict=True):
            at &= (out[k] == v).to_numpy()
        at &= ~out["direct"].isin([*RESOLVED, Direct.NO_DATA.value, Direct.UNRESOLVABLE.value])
        if at.any():
            res = resolving_width(sub, float(sub["bound"].median()))
            for col, v in res.items():
                out.loc[at, col] = v
    return add_other_loss(out)


def contested_widths(rows: pd.DataFrame) -> frozenset:
    """The :data:`PAIR_KEYS` tuples (config but the loss, and width) whose squared-loss control
    row left the bound (``leaves-bound`` or ``split``): there leaving does not tell the losses
    apart. The same rows that ``other_loss_direct`` names, from the same verdicts."""
    ctl = rows[(rows["loss"] == CONTROL_LOSS)
               & rows["direct"].isin([Direct.LEAVES.value, Direct.SPLIT.value])]  # fmt: skip
    return frozenset(ctl[list(PAIR_KEYS)].itertuples(index=False, name=None))


def add_other_loss(rows: pd.DataFrame) -> pd.DataFrame:
    """``other_loss_direct``: the direct verdict of the rows with another loss and the same
    arch, depth, data, variant and width ("; "-joined when there are several; "" when none)."""
    other = []
    for r in rows.itertuples(index=False):
        same = np.ones(len(rows), dtype=bool)
        for k in PAIR_KEYS:
            same &= (rows[k] == getattr(r, k)).to_numpy()
        same &= (rows["loss"] != r.loss).to_numpy()
        other.append("; ".join(sorted(set(rows.loc[same, "direct"].astype(str)))))
    return rows.assign(other_loss_direct=other)
