"""When a tracked quantity crosses the bound, read from a trial's rows: t_exceed (drift),
t_leave and t_stay (the kernel gap), and the resolution below which a kernel difference is
rounding. Plain numbers: the trial computes its summary with these, and the aggregator reads the
same definitions (no torch here)."""

from __future__ import annotations

import math

import numpy as np

RESOLUTION_SAFETY = 1000.0  # kernel entries sum O(P) products: rounding grows with the sum


def resolution(dtype: str, max_abs_k: float) -> float:
    """Smallest kernel difference that can be told from rounding: eps(dtype) * max|K| * 1000;
    nan for a dtype that no trial runs in (a store should hold float32 or float64 only)."""
    if dtype not in ("float32", "float64"):
        return math.nan
    eps = float(np.finfo(np.dtype(dtype)).eps)  # a Python float, as torch.finfo's: float64 maths
    return float(eps * max_abs_k * RESOLUTION_SAFETY)


def first_exceed(rows: dict[str, list], bound: float) -> float | None:
    """The first tracked t with drift_t >= bound (the summary's t_exceed); None if never."""
    for t, drift in zip(rows["t"], rows["drift"], strict=True):
        if drift is not None and drift >= bound:
            return float(t)
    return None


def first_leave(rows: dict[str, list], bound: float, column: str = "gap") -> float | None:
    """When gap_t = max|K_t - K| first reaches the bound (the summary's t_leave); None if never.
    ``column="gap_avg"``: the same for the window-averaged gap (t_leave_avg).

    Interpolated linearly in log t between the last tracked row below the bound and the first at
    or above it, so it does not snap to the tracking grid. Meaningful as "training took the
    kernel out of the band" only where gap_0 < bound and the step jump is below bound / 10 (the
    direct test, DESIGN §1).
    """
    prev: tuple[float, float] | None = None
    for t, gap in zip(rows["t"], rows[column], strict=True):
        if gap is None:
            continue
        if gap >= bound:
            if prev is None or prev[0] <= 0 or t <= 0:
                return float(t)
            g0, lo = prev[1], math.log10(prev[0])
            return float(10 ** (lo + (bound - g0) / (gap - g0) * (math.log10(t) - lo)))
        prev = (t, gap)
    return None


def last_leave(rows: dict[str, list], bound: float, column: str = "gap") -> float | None:
    """When gap_t reaches the bound for the last time: from then to the horizon it stays at or
    above it (the summary's t_stay); None if the last tracked gap is below the bound.

    Late in a run, units chattering across their kinks make the gap jitter by a few hundredths
    between rows; where that jitter straddles the bound the gap crosses it several times, and
    [t_leave, t_stay] is that band. Interpolated in log t as :func:`first_leave` is.
    """
    tracked = [(t, g) for t, g in zip(rows["t"], rows[column], strict=True) if g is not None]
    if not tracked or tracked[-1][1] < bound:
        return None
    below = [i for i, (_, g) in enumerate(tracked) if g < bound]
    if not below:
        return first_leave(rows, bound, column)
    (t0, g0), (t1, g1) = tracked[below[-1]], tracked[below[-1] + 1]
    if t0 <= 0 or t1 <= 0:
        return float(t1)
    lo = math.log10(t0)
    return float(10 ** (lo + (bound - g0) / (g1 - g0) * (math.log10(t1) - lo)))
