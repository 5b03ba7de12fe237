"""Synthetic stores for the direct test: kernels that start inside the bound, and leave it or not.

Each trial is written as ``core.run_trial`` writes one (config.yaml, summary.json,
trajectory.parquet through ``core/store/``), on the two antipodal circle points (FCN L = 2,
bound 0.620, DESIGN §1). Only the numbers are constructed, so every verdict, t_leave and fit has
a known answer:
- gap_0 = gap0_c m^-1/2 (times a per-seed factor), the step jump = jump_c / m;
- gap_t stays at gap_0 until t_leave / 1e3, then rises linearly in log t to reach the bound at
  exactly t_leave(m, seed) = 10^(leave_a + leave_b log2(m / 4096) + seed_shift) (inf: never);
- drift_t follows ``drift(t, m)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

TWO_POINT_BOUND = 0.620  # lambda0 4.962 / (2 * 2^2)
SEED_SHIFT = (0.0, 0.2, -0.2, 0.1, -0.1)  # decades of t_leave per seed


def log_drift(c: float = 0.3) -> Callable:
    """drift_t = c (m/4096)^-1/2 log10(1 + t): grows at every width, m*(t) grows with t."""
    return lambda t, m: c * (m / 4096) ** -0.5 * np.log10(1.0 + t)


def saturating_drift(c: float = 0.1, tau: float = 1.0) -> Callable:
    """drift_t = c (m/4096)^-1/2 (1 - exp(-t/tau)): flat after t ~ 10 tau, m* constant."""
    return lambda t, m: c * (m / 4096) ** -0.5 * -np.expm1(-np.asarray(t) / tau)


@dataclass(frozen=True)
class DirectGroup:
    """One (arch, depth, loss, lr, data) group: widths x seeds trials on two circle points."""

    loss: str = "cross_entropy"
    lr: float = 1e-3
    widths: Sequence[int] = (1024, 2048, 4096, 8192)
    seeds: Sequence[int] = (0, 1, 2)
    depth: int = 2
    t_max: float = 1e40
    decades_step: float = 0.02  # tracked rows per decade: 1 / decades_step
    gap0_c: float = 0.151 * 64  # 0.151 at m = 4096
    jump_c: float = 0.008 * 4096  # 0.008 at m = 4096
    leave_a: float = 12.0  # log10 t_leave at m = 4096
    leave_b: float | None = 3.0  # decades per doubling; None: never leaves
    never: Sequence[tuple[int, int]] = ()  # (width, seed) trials that never leave
    drift: Callable = field(default_factory=log_drift)
    scatter: Sequence[float] = (1.0, 1.1, 0.9, 1.05, 0.95)  # per-seed factor on gap_0 and drift
    track_jump: bool = True  # False: a store written before the step jump was tracked
    status: dict = field(default_factory=dict)  # (width, seed) -> status other than completed


def t_leave_of(g: DirectGroup, m: int, seed: int) -> float:
    """The constructed t_leave (exact; the tracked one is the first row at or after it)."""
    if g.leave_b is None or (m, seed) in g.never:
        return math.inf
    return 10.0 ** (g.leave_a + g.leave_b * math.log2(m / 4096) + SEED_SHIFT[seed])


def _times(g: DirectGroup) -> np.ndarray:
    return np.r_[0.0, 10.0 ** np.arange(-3.0, math.log10(g.t_max) + 1e-9, g.decades_step)]


def rows_of(g: DirectGroup, m: int, seed: int) -> dict[str, list]:
    """The trajectory columns of one trial (two points, three kernel pairs)."""
    t = _times(g)
    k = t.size
    gap0 = g.gap0_c * m**-0.5 * g.scatter[seed]
    tl = t_leave_of(g, m, seed)
    gap = np.full(k, gap0)
    if math.isfinite(tl):
        frac = np.clip((np.log10(np.maximum(t, 1e-300)) - math.log10(tl) + 3.0) / 3.0, 0, None)
        gap = gap0 + (TWO_POINT_BOUND - gap0) * frac
    drift = g.drift(t, m) * g.scatter[seed]
    jump = np.full(k, g.jump_c / m)
    f = np.outer(np.log1p(t), [-1.0, 1.0])
    return {
        "step": list(range(k)), "t": t.tolist(), "loss": np.log1p(np.exp(-f[:, 1])).tolist(),
        "accuracy": [1.0] * k, "f": f.tolist(), "f_probe": [[] for _ in range(k)],
        "f_abs_min": np.abs(f).min(axis=1).tolist(), "gap": gap.tolist(),
        "drift": drift.tolist(), "lambda_min": [4.9] * k,
        "kernel": (np.array([3.0, 1.0, 3.0])[None, :] + drift[:, None]).tolist(),
        "theta_inf": (1e-3 * np.log1p(t)).tolist(), "theta_l2": (1e-2 * np.log1p(t)).tolist(),
        "flips": np.floor(np.log1p(t)).astype(int).tolist(),
        "step_jump": jump.tolist(), "flip_jump": jump.tolist(),
        "drift_smooth": (0.5 * drift).tolist(),
        "near_kink": [0] * k, "h": np.r_[g.lr, np.diff(t)].tolist(),
    }  # fmt: skip


NEW_COLUMNS = {"step_jump": pa.float64(), "flip_jump": pa.float64(),
               "drift_smooth": pa.float64(), "near_kink": pa.int64(),
               "h": pa.float64()}  # fmt: skip


def _table(rows: dict, tid: str, track_jump: bool) -> pa.Table:
    """The trajectory table through ``core.store``, with the columns core's schema may lack."""
    from core import store

    table = store.trajectory_table(rows, {"trial_id": tid, "kernel_pairs": [[0, 0], [0, 1],
                                                                            [1, 1]]})  # fmt: skip
    for name, typ in NEW_COLUMNS.items():
        if not track_jump and name in ("step_jump", "flip_jump"):
            if name in table.column_names:
                table = table.set_column(table.column_names.index(name), name,
                                         pa.nulls(table.num_rows, typ))  # fmt: skip
            continue
        col = pa.array(rows[name], typ)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, col)
        else:
            table = table.append_column(name, col)
    return table


def write_trial(sweep_dir: Path, g: DirectGroup, m: int, seed: int) -> str:
    """Write one trial through ``core/store/`` (and publish it where the store copies)."""
    from core import config_from_dict, config_to_yaml, first_exceed, first_leave, store, trial_id

    config = config_from_dict({
        "model": {"arch": "fcn", "width": m, "depth": g.depth},
        "data": {"kind": "circle", "n": 2, "d": 2},
        "train": {"loss": g.loss, "lr": g.lr, "t_max": g.t_max},
        "seed": seed, "dtype": "float64",
    })  # fmt: skip
    tid = trial_id(config)
    tdir = store.trial_dir(sweep_dir, tid)
    store.atomic_write_text(tdir / "config.yaml", config_to_yaml(config))
    rows = rows_of(g, m, seed)
    store.write_trajectory(tdir / "trajectory.parquet", _table(rows, tid, g.track_jump))
    leave = first_leave(rows, TWO_POINT_BOUND)
    exceed = first_exceed(rows, TWO_POINT_BOUND)
    summary = {
        "trial_id": tid, "status": g.status.get((m, seed), "completed"),
        "lambda0": TWO_POINT_BOUND * 8, "bound": TWO_POINT_BOUND, "gap_init": rows["gap"][0],
        "gap_sup": max(rows["gap"]), "drift_sup": max(rows["drift"]), "t_exceed": exceed,
        "t_leave": leave, "horizon_t": rows["t"][-1], "lambda_min_emp_min": 4.9,
        "f_abs_min_final": rows["f_abs_min"][-1], "theta_inf_final": rows["theta_inf"][-1],
        "loss_final": rows["loss"][-1], "steps": len(rows["t"]) - 1, "wall_s": 1.0,
        "device": "cpu", "dtype": "float64", "max_K": 3.5,
        "resolution": float(np.finfo(np.float64).eps) * 3.5 * 1000.0, "n": 2, "error": None,
    }  # fmt: skip
    if g.track_jump:
        summary["step_jump_max"] = max(rows["step_jump"])
        summary["flip_jump_max"] = max(rows["flip_jump"])
    store.write_json(tdir / "summary.json", summary)
    return tid


def write_sweep(sweep_dir: Path, groups: Sequence[DirectGroup]) -> list[str]:
    """Every trial of ``groups`` into ``sweep_dir``; returns the trial ids."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return [write_trial(sweep_dir, g, m, s) for g in groups for m in g.widths for s in g.seeds]
