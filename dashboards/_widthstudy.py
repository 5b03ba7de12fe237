"""The six-point width study re-read: m*(t) at equal t for both losses, from its aggregate.

The study's raw trajectories are not in the repository; its committed aggregate
(``docs/results/width/trials.parquet``, one row per trial) keeps, per trial, the drift at the
last tracked step at or before t = 1, 10, 100, 1000 (``drift_t1e0`` .. ``drift_t1e3``; NaN past
the trial's horizon). From those, per (arch, depth, data, loss, lr) and t:
m*(t) = the width at which the fitted drift(m) at t falls below the bound, with the bootstrap
interval over seeds of ``_crossing`` (3 seeds per width, so the interval under-covers), and the
losses side by side only at a t that both reached. These are single tracked values, not window
medians: the squared-loss drift chatters between tracked steps after convergence, so its m*(t)
carries that noise (DESIGN §1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ._crossing import crossing_curve

STUDY = Path(__file__).resolve().parents[1] / "docs" / "results" / "width" / "trials.parquet"
STUDY_T = (1.0, 10.0, 100.0, 1000.0)
KEYS = ("arch", "depth", "data", "loss", "lr")


def study_crossing(trials: pd.DataFrame | str | Path = STUDY) -> pd.DataFrame:
    """m*(t) per (arch, depth, data, loss, lr) and t of :data:`STUDY_T`.

    Args:
        trials: the study's per-trial aggregate, or the path of its Parquet file.
    Returns:
        One row per (group, t): m_star, m_star_lo, m_star_hi, exponent, n_widths, n_points,
        max_width, extrapolated, note, bound.
    """
    frame = pd.read_parquet(trials) if isinstance(trials, (str, Path)) else trials
    usable = frame[frame["usable"].astype(bool)] if "usable" in frame else frame
    rows = []
    for keys, sub in usable.groupby(list(KEYS), sort=True):
        drift_at = {t: sub[f"drift_t1e{int(np.log10(t))}"].to_numpy(float) for t in STUDY_T}
        drift_at = {t: y for t, y in drift_at.items() if np.isfinite(y).any()}
        bound = float(sub["bound"].median())
        curve, _ = crossing_curve(sub["width"].to_numpy(float), drift_at, bound)
        rows.append(curve.assign(**dict(zip(KEYS, keys, strict=True)), bound=bound))
    out = pd.concat(rows, ignore_index=True)
    return out[[*KEYS, "t", *[c for c in out.columns if c not in (*KEYS, "t")]]]


def study_table(crossing: pd.DataFrame) -> pd.DataFrame:
    """Both losses side by side at equal t: one row per (arch, depth, data, t) that both
    losses reached, with each loss's lr and m* [lo, hi]."""
    c = crossing.copy()
    c["cell"] = [
        f"{m:.3g} [{lo:.3g}, {hi:.3g}]" + (" (extrapolated)" if far else "")
        for m, lo, hi, far in zip(c["m_star"], c["m_star_lo"], c["m_star_hi"], c["extrapolated"],
                                  strict=True)
    ]  # fmt: skip
    index = ["arch", "depth", "data", "t"]
    cells = c.pivot_table(index=index, columns="loss", values="cell", aggfunc="first")
    lrs = c.pivot_table(index=index, columns="loss", values="lr", aggfunc="first")
    cells.columns = [f"m* {loss}" for loss in cells.columns]
    lrs.columns = [f"lr {loss}" for loss in lrs.columns]
    return pd.concat([lrs, cells], axis=1).dropna(axis=0, how="any").reset_index()


def study_markdown(crossing: pd.DataFrame) -> str:
    """:func:`study_table` as a Markdown table (for docs/results.md)."""
    table = study_table(crossing)
    head = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in r) + " |"
            for r in table.itertuples(index=False)]  # fmt: skip
    return "\n".join([head, rule, *body])
