"""The direct verdict as the Markdown table that README.md and docs/results.md quote.

The docs carry this function's output verbatim, and a test regenerates it from the committed
aggregate (``docs/results/direct/verdict.parquet``), so no number in them is copied by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

LOSS = {"cross_entropy": "cross-entropy", "mse": "squared loss"}


def _g(v: float) -> str:
    return "-" if v is None or not math.isfinite(float(v)) else f"{float(v):.3g}"


def _other(r) -> str:
    return getattr(r, "other_loss_direct", "") or "-"


def _t_leave_avg(r) -> str:
    """The first crossing of the window-averaged gap (median [min, max]), where recorded."""
    if not math.isfinite(r.t_leave_avg_med):
        return "-"
    if r.t_leave_avg_min == r.t_leave_avg_max:
        return _g(r.t_leave_avg_med)
    return f"{_g(r.t_leave_avg_med)} [{_g(r.t_leave_avg_min)}, {_g(r.t_leave_avg_max)}]"


def _t_leave(r) -> str:
    if r.direct != "leaves-bound":
        return "-"
    first = (_g(r.t_leave_med) if r.t_leave_min == r.t_leave_max else
             f"{_g(r.t_leave_med)} [{_g(r.t_leave_min)}, {_g(r.t_leave_max)}]")  # fmt: skip
    t_stay = getattr(r, "t_stay_max", math.nan)
    return first if not math.isfinite(t_stay) else f"{first}; all outside from {_g(t_stay)}"


def direct_markdown(verdict: pd.DataFrame) -> str:
    """One row per (loss, width) of a verdict table: trials, gap_0, per-flip jump, the direct
    verdict and the other loss's at the same width, t_leave (median [min, max] over seeds; and
    from when every seed's gap stays at or above the bound to its horizon, t_stay) and the
    shortest horizon reached; where some trial recorded gap_avg, also the first crossing of the
    window-averaged gap (t_leave_avg: median [min, max] over the seeds that start inside), and
    where the table holds several variants of a group (another flow_tol, say), which row is
    which."""
    order = ["depth", "loss", "width", *(["variant"] if "variant" in verdict else [])]
    rows = verdict[verdict["n_direct"] > 0].sort_values(order)
    averaged = "t_leave_avg_med" in rows and bool(np.isfinite(rows["t_leave_avg_med"]).any())
    variants = "variant" in rows and rows["variant"].nunique(dropna=False) > 1
    extra = " t_leave_avg median [range] |" if averaged else ""
    head = ("| loss (lr) | width |" + (" variant |" if variants else "") +
            " trials (inside) | bound | gap_0 median | jump per flip | "
            "direct verdict | other loss, same width | t_leave median [range] |" + extra +
            " horizon t |")  # fmt: skip
    lines = [head, "|" + "---|" * (10 + averaged + variants)]
    for r in rows.itertuples():
        avg = f" {_t_leave_avg(r)} |" if averaged else ""
        variant = f" {r.variant} |" if variants else ""
        lines.append(
            f"| {LOSS.get(r.loss, r.loss)} ({r.lr:g}) | {int(r.width)} |{variant} "
            f"{int(r.n_direct)} ({int(r.n_inside)}) | {_g(r.bound)} | {_g(r.gap_init_med)} | "
            f"{_g(r.flip_jump_max_med)} | {r.direct} | {_other(r)} | {_t_leave(r)} |{avg} "
            f"{_g(r.t_horizon)} |"
        )
    return "\n".join(lines)
