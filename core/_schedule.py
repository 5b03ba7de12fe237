"""When to track: a mix of log-spaced and periodic steps, so that 1e6-step horizons stay cheap.

Divergence under cross-entropy unfolds in log time (min|f| grows like log t), so log spacing
resolves early dynamics and late growth with the same few hundred rows.
"""

from __future__ import annotations

import numpy as np


def tracked_steps(epochs: int, log_points: int, every: int = 0) -> np.ndarray:
    """Sorted unique steps to track in [0, epochs]; always includes 0 and ``epochs``.

    Args:
        epochs: the last step (the run performs ``epochs`` updates).
        log_points: number of log-spaced points in [1, epochs] before de-duplication.
        every: also every ``every``-th step (0 = off).

    Returns:
        int64 array, shape (k,).
    """
    steps = [np.array([0, epochs], dtype=np.int64)]
    if epochs >= 1 and log_points > 0:
        grid = np.logspace(0.0, np.log10(epochs), num=log_points)
        steps.append(np.round(grid).astype(np.int64))
    if every > 0:
        steps.append(np.arange(0, epochs + 1, every, dtype=np.int64))
    return np.unique(np.concatenate(steps))


def checkpoint_due(step: int, every: int) -> bool:
    """True at the steps where a periodic checkpoint is written (``every`` = 0: never)."""
    return every > 0 and step > 0 and step % every == 0


def tracked_times(t_max: float, log_points: int, t_first: float) -> list[float]:
    """Tracked gradient-flow times for an adaptive run: 0, then ``log_points`` log-spaced times
    from ``t_first`` (the first step) to ``t_max``; ascending, ending exactly at ``t_max``.

    Runs with the same grid record rows at the same t, whatever their width, seed or loss, so
    that they can be compared at equal t.
    """
    t_first = min(t_first, t_max)
    grid = np.logspace(np.log10(t_first), np.log10(t_max), num=max(log_points, 2))
    times = np.unique(np.concatenate([[0.0], grid[:-1], [t_max]]))
    return [float(t) for t in times]
