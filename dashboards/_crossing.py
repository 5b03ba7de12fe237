"""The crossing width m*(t): where the per-width drift at equal t falls below the bound.

At each decade t of gradient-flow time, the drift of every trial that reached t (a robust value:
the median over a window of tracked rows around t, see ``_tables.window_median``) is fitted
against width, log drift = a + b log m over all (width, seed) points, and solved for
drift = bound. m*(t) is compared between losses only at equal t.

Its interval is a bootstrap over seeds: each replicate redraws, within every width, as many seeds
as that width has, with replacement, and refits. The same draws serve every t, so a replicate is
a whole curve m*(t) and the slope of log m* against log t gets an interval too. A width with one
seed cannot be resampled: with fewer than two seeds at any width the interval is NaN (said so).
The percentile interval under-covers with few seeds (3 seeds give about 80-90% for a nominal 95%).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ._fits import EXTRAPOLATION, MIN_WIDTHS, refusal

N_BOOT = 400  # bootstrap replicates; the interval's ends move by ~1% between runs of 400
LEVEL = 0.95
SEED = 20250417  # the bootstrap's fixed seed: a report is reproducible bit for bit


def _ols(x: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise least squares of v on x. x, v: (B, N) -> (x_mean, v_mean, slope), each (B,)."""
    xm, vm = x.mean(axis=1), v.mean(axis=1)
    dx = x - xm[:, None]
    sxx = (dx**2).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (dx * (v - vm[:, None])).sum(axis=1) / sxx
    return xm, vm, slope


def _crossings(xm, vm, slope, bound: float) -> np.ndarray:
    """(B,) crossing widths of row-wise lines; +inf where the drift does not fall with m."""
    out = np.full(slope.shape, np.inf)
    falls = np.isfinite(slope) & (slope < 0)
    log_m = xm[falls] + (math.log(bound) - vm[falls]) / slope[falls]
    out[falls] = np.exp(np.minimum(log_m, 700.0))
    out[np.isnan(slope)] = np.nan
    return out


def bootstrap_draws(width: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N) indices into the N points, seeds redrawn within each width.

    A width with one seed keeps it in every replicate: the interval then holds the seed spread
    of the other widths only (said in the row's note)."""
    idx = np.empty((n_boot, width.size), dtype=int)
    for w in np.unique(width):
        members = np.flatnonzero(width == w)
        idx[:, members] = rng.choice(members, size=(n_boot, members.size), replace=True)
    return idx


def _quantiles(values: np.ndarray) -> tuple[float, float]:
    """Percentile interval without interpolation (values may be +inf: "never")."""
    v = values[~np.isnan(values)]
    if v.size < 0.9 * values.size or v.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(v, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def crossing_at(width: np.ndarray, drift: np.ndarray, bound: float,
                draws: np.ndarray | None) -> dict:  # fmt: skip
    """m* at one t from per-trial (width, drift); ``draws`` from :func:`bootstrap_draws`.

    Returns:
        {m_star, m_star_lo, m_star_hi, exponent, n_widths, n_points, note, boot: (B,) m*}.
    """
    ok = np.isfinite(drift) & (drift > 0)
    max_w = float(width[ok].max()) if ok.any() else math.nan
    m_star = lo = hi = exponent = math.nan
    boot: np.ndarray | None = None
    notes = [refusal(width, drift, MIN_WIDTHS)]
    if not notes[0]:
        x, v = np.log(width[ok])[None, :], np.log(drift[ok])[None, :]
        xm, vm, b = _ols(x, v)
        exponent = float(b[0])
        m_star = float(_crossings(xm, vm, b, bound)[0])
        if m_star == math.inf:
            notes.append(f"drift does not fall with width (exponent {exponent:+.2f}): never")
        if draws is not None and ok.all():
            boot = _crossings(*_ols(np.log(width)[draws], np.log(drift)[draws]), bound)
            lo, hi = _quantiles(boot)
            notes.append(single_seed_note(width))
        elif draws is None:
            notes.append("one seed per width: no interval")
    far = bool(m_star > EXTRAPOLATION * max_w)
    if far and math.isfinite(m_star):
        notes.append(f"m* over {EXTRAPOLATION:g}x past the widest width {max_w:g}: extrapolated")
    return {"m_star": m_star, "m_star_lo": lo, "m_star_hi": hi, "exponent": exponent,
            "n_widths": int(np.unique(width[ok]).size), "n_points": int(ok.sum()),
            "max_width": max_w, "extrapolated": far, "note": "; ".join(filter(None, notes)),
            "boot": boot}  # fmt: skip


Boots = dict[float, np.ndarray]


def crossing_curve(width: np.ndarray, drift_at: dict[float, np.ndarray], bound: float,
                   n_boot: int = N_BOOT) -> tuple[pd.DataFrame, Boots]:  # fmt: skip
    """m*(t) of one group at every t of ``drift_at``.

    Where every trial reached t the replicates share their draws across t (a replicate is a
    curve); where some did not, that t gets its own draws over the trials that did.

    Args:
        width: (N,) each trial's width; drift_at: {t: (N,) each trial's drift at t, NaN where
            the trial did not reach t}; bound: the group's bound.
    Returns:
        (one row per t with m* and its interval, {t: (n_boot,) replicate m*} at the t that
        every trial reached).
    """
    width = np.asarray(width, float)
    rng = np.random.default_rng(SEED)
    shared = _draws_or_none(width, n_boot, rng)
    rows, boots = [], {}
    for t in sorted(drift_at):
        y = np.asarray(drift_at[t], float)
        reached = np.isfinite(y)
        draws = shared if reached.all() else _draws_or_none(width[reached], n_boot, rng)
        r = crossing_at(width[reached], y[reached], bound, draws)
        boot = r.pop("boot")
        if boot is not None and reached.all():
            boots[t] = boot
        rows.append({"t": t, **r})
    return pd.DataFrame(rows), boots


def _draws_or_none(width: np.ndarray, n_boot: int, rng: np.random.Generator):
    """Bootstrap draws, or None when no width has two seeds (nothing to resample)."""
    counts = np.unique(width, return_counts=True)[1]
    return bootstrap_draws(width, n_boot, rng) if counts.size and counts.max() >= 2 else None


def single_seed_note(width: np.ndarray) -> str:
    """'m = 8192 has one seed, held fixed in the bootstrap', or ""."""
    ws, counts = np.unique(width, return_counts=True)
    single = [f"{w:g}" for w, c in zip(ws, counts, strict=True) if c == 1]
    if not single or len(single) == ws.size:
        return ""
    return f"m = {', '.join(single)} has one seed, held fixed in the bootstrap"


def slope_in_t(t: np.ndarray, m_star: np.ndarray) -> float:
    """Least-squares slope of log10 m* against log10 t (decades of m* per decade of t)."""
    ok = np.isfinite(m_star) & (m_star > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log10(t[ok]), np.log10(m_star[ok]), 1)[0])


def slope_interval(boots: dict[float, np.ndarray], ts: list[float]) -> tuple[float, float]:
    """Bootstrap interval of :func:`slope_in_t` over the replicate curves at ``ts``."""
    if len(ts) < 2 or any(t not in boots for t in ts):
        return math.nan, math.nan
    curves = np.stack([boots[t] for t in ts], axis=1)  # (B, len(ts))
    finite = (np.isfinite(curves) & (curves > 0)).all(axis=1)  # as slope_in_t: m* > 0 only
    if finite.mean() < 0.9:  # many replicates say "never" (or no positive width): no slope
        return math.nan, math.nan
    lt = np.log10(np.asarray(ts))
    slopes = np.polyfit(lt, np.log10(curves[finite]).T, 1)[0]
    return _quantiles(slopes)
