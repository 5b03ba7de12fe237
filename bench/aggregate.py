"""Aggregator benchmark, and the synthetic stores with known answers that the tests also use.

A synthetic trial is written exactly as a real one is: ``config.yaml``, ``summary.json`` and
``trajectory.parquet`` in its trial directory through ``core/store/``, which the aggregator
reads where it lies. Only the numbers are constructed:
drift_t follows a chosen law in width and time, so verdicts, exponents and t_exceed are known.

Goals (issue "aggregator"): 2,000 trials (about 200 tracked steps each, n = 6) aggregate in under
20 s on 2 cores, and peak memory stays flat when the trial count doubles.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The seed's six circle points with the FCN, L = 3 (DESIGN §1 worked example).
CIRCLE_LAMBDA0 = 1.776
CIRCLE_BOUND = CIRCLE_LAMBDA0 / (2 * 6**2)
CIRCLE_MAX_K = 13.0
CIRCLE_LAMBDA_MAX = 51.9

DriftLaw = Callable[[np.ndarray, int], np.ndarray]  # (t (k,), width) -> drift_t (k,)


def log_growth(c: float = 50.0, m0: int = 128) -> DriftLaw:
    """drift_t = c (m/m0)^(-1/2) log(1 + t): keeps growing like log t at every width."""
    return lambda t, m: c * (m / m0) ** -0.5 * np.log1p(t)


def saturating(c: float = 3.0, m0: int = 64, tau: float = 5.0) -> DriftLaw:
    """drift_t = c (m/m0)^(-1/2) (1 - exp(-t/tau)): flat once t >> tau, falls like m^(-1/2)."""
    return lambda t, m: c * (m / m0) ** -0.5 * -np.expm1(-np.asarray(t) / tau)


def linear_until(bound: float, tau0: float = 1.0, m0: int = 64, exponent: float = 0.5) -> DriftLaw:
    """drift_t = bound * t / tau(m), tau(m) = tau0 (m/m0)^exponent: drift reaches the bound at
    exactly t = tau(m), so t_exceed (on the tracked grid) follows a power law in m."""
    return lambda t, m: bound * np.asarray(t) / (tau0 * (m / m0) ** exponent)


def constant(value: float) -> DriftLaw:
    """drift_t = value for t > 0 (0 at t = 0): a width-independent drift."""
    return lambda t, m: np.where(np.asarray(t) > 0, value, 0.0)


@dataclass(frozen=True)
class SyntheticGroup:
    """One (arch, depth, loss, lr, data) group of a synthetic sweep: widths x seeds trials."""

    loss: str = "cross_entropy"
    lr: float = 0.1
    widths: Sequence[int] = (64, 128, 256, 512, 1024)
    seeds: Sequence[int] = (0, 1, 2)
    epochs: int = 10_000
    log_points: int = 200
    drift: DriftLaw = field(default_factory=log_growth)
    gap_init_c: float = 4.2 * math.sqrt(128)  # gap_0 = c m^(-1/2): 4.2 at m = 128 (DESIGN §1)
    noise: float = 0.05  # per-trial multiplicative scatter, exp(noise * N(0, 1))
    dtype: str = "float64"
    n: int = 6  # data.n; the circle's bound is used unless ``bound`` is set
    bound: float | None = None  # override lambda0 / (2 n^2), e.g. to put it below resolution
    depth: int = 3
    arch: str = "fcn"
    failed: Sequence[tuple[int, int]] = ()  # (width, seed) trials written as failed
    missing: Sequence[tuple[int, int]] = ()  # (width, seed) trials with a config and no summary


def _config(group: SyntheticGroup, width: int, seed: int):
    from core import config_from_dict

    return config_from_dict(
        {
            "model": {"arch": group.arch, "width": width, "depth": group.depth},
            "data": {"kind": "circle", "n": group.n, "d": 2},
            "train": {"loss": group.loss, "lr": group.lr, "epochs": group.epochs},
            "track": {"log_points": group.log_points},
            "seed": seed,
            "dtype": group.dtype,
        }
    )


def _rows(group: SyntheticGroup, width: int, seed: int) -> dict[str, list]:
    """The trajectory columns of one synthetic trial (n points, all kernel pairs stored)."""
    from core import tracked_steps

    rng = np.random.default_rng([width, seed, group.epochs])
    scale = math.exp(group.noise * rng.standard_normal())
    steps = tracked_steps(group.epochs, group.log_points)  # (k,)
    t = steps * group.lr
    drift = group.drift(t, width) * scale  # (k,)
    gap0 = group.gap_init_c * width**-0.5 * scale
    n, k = group.n, len(steps)
    sign = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)  # labels 0, 1, 0, 1, ...
    f = np.outer(np.log1p(t), sign) + 0.1 * rng.standard_normal(n)  # (k, n)
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    k0 = np.array([CIRCLE_MAX_K if i == j else 2.0 for i, j in pairs]) + gap0  # (p,)
    kernel = k0[None, :] + drift[:, None] * np.linspace(-1.0, 1.0, len(pairs))[None, :]
    theta_inf = 2.0 * width**-0.5 * np.log1p(t) * scale
    return {
        "step": steps.tolist(),
        "t": t.tolist(),
        "loss": (n * np.log1p(np.exp(-np.log1p(t)))).tolist(),
        "accuracy": [1.0] * k,
        "f": f.tolist(),
        "f_probe": [[] for _ in range(k)],
        "f_abs_min": np.abs(f).min(axis=1).tolist(),
        "gap": (gap0 + drift).tolist(),
        "drift": drift.tolist(),
        "lambda_min": (CIRCLE_LAMBDA0 - 0.01 * drift).tolist(),
        "kernel": kernel.tolist(),
        "theta_inf": theta_inf.tolist(),
        "theta_l2": (theta_inf * math.sqrt(width)).tolist(),
        "flips": [0] + rng.poisson(2.0, k - 1).tolist(),
    }


def _summary(tid: str, group: SyntheticGroup, rows: dict, bound: float) -> dict:
    """summary.json as core's run_trial writes it, computed from the constructed rows."""
    eps = float(np.finfo(group.dtype).eps)
    exceed = [t for t, d in zip(rows["t"], rows["drift"], strict=True) if d >= bound]
    return {
        "trial_id": tid, "status": "completed", "lambda0": bound * 2 * group.n**2, "bound": bound,
        "gap_init": rows["gap"][0], "gap_sup": max(rows["gap"]), "drift_sup": max(rows["drift"]),
        "t_exceed": exceed[0] if exceed else None, "lambda_min_emp_min": min(rows["lambda_min"]),
        "f_abs_min_final": rows["f_abs_min"][-1], "theta_inf_final": rows["theta_inf"][-1],
        "loss_final": rows["loss"][-1], "steps": group.epochs, "wall_s": 1.0, "device": "cpu",
        "dtype": group.dtype, "lambda_max": CIRCLE_LAMBDA_MAX, "max_K": CIRCLE_MAX_K,
        "resolution": eps * CIRCLE_MAX_K * 1000.0, "loss_init": rows["loss"][0],
        "accuracy_final": 1.0, "resumed_from_step": None, "overflow_step": None,
        "n": group.n, "tracked_rows": len(rows["step"]), "error": None,
    }  # fmt: skip


def write_trial(sweep_dir: Path, group: SyntheticGroup, width: int, seed: int) -> str:
    """Write one synthetic trial through ``core/store/``; returns its id."""
    from core import config_to_yaml, store, trial_id

    config = _config(group, width, seed)
    tid = trial_id(config)
    tdir = store.trial_dir(sweep_dir, tid)
    store.atomic_write_text(tdir / "config.yaml", config_to_yaml(config))
    if (width, seed) in group.missing:
        return tid  # started, never finished: no summary, no trajectory
    if (width, seed) in group.failed:
        err = {"trial_id": tid, "status": "failed", "error": "RuntimeError: synthetic failure"}
        store.write_json(tdir / "summary.json", err)
        return tid
    bound = group.bound if group.bound is not None else CIRCLE_BOUND
    rows = _rows(group, width, seed)
    pairs = [[i, j] for i in range(group.n) for j in range(i, group.n)]
    table = store.trajectory_table(rows, {"trial_id": tid, "kernel_pairs": pairs})
    store.write_trajectory(tdir / "trajectory.parquet", table)
    store.write_json(tdir / "summary.json", _summary(tid, group, rows, bound))
    return tid


def write_sweep(sweep_dir: Path, groups: Sequence[SyntheticGroup]) -> list[str]:
    """Write every trial of ``groups`` into ``sweep_dir``; returns the trial ids."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return [write_trial(sweep_dir, g, m, s) for g in groups for m in g.widths for s in g.seeds]


def bench_groups(n_trials: int) -> list[SyntheticGroup]:
    """Cross-entropy and squared-loss groups of 10 widths each, seeds filling ``n_trials``."""
    widths = tuple(int(64 * 2 ** (i / 2)) for i in range(10))
    seeds = tuple(range(max(1, n_trials // (2 * len(widths)))))
    ce = SyntheticGroup(widths=widths, seeds=seeds, epochs=10_000, log_points=240)
    mse = SyntheticGroup(loss="mse", lr=0.02, widths=widths, seeds=seeds, epochs=10_000,
                         log_points=240, drift=saturating())  # fmt: skip
    return [ce, mse]


# --- the benchmark ---------------------------------------------------------------------------

_CHILD = """
import sys, time
from bench._common import peak_rss_bytes
from pathlib import Path
t0 = time.perf_counter()
import dashboards
t1, c1 = time.perf_counter(), time.process_time()
res = dashboards.aggregate(Path(sys.argv[1]), Path(sys.argv[2]))
t2, c2 = time.perf_counter(), time.process_time()
rss = peak_rss_bytes() / 2**20
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {c2 - c1:.3f} {res.timings.get('trials', 0):.3f} {rss:.1f}")
"""


def _aggregate_in_child(sweep: Path, out: Path) -> list[float]:
    """[import s, aggregate s, aggregate CPU s, trial-pass s, peak RSS MiB] in a fresh process.

    CPU time (all threads) is reported beside wall time: on a shared machine it is the steadier
    of the two."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(sweep), str(out)], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return [float(x) for x in proc.stdout.split()[-5:]]


def run(quick: bool = False) -> str:
    """Build synthetic stores of N and 2N trials, aggregate each in a fresh process, report."""
    from ._common import machine, table

    base = 100 if quick else 1000
    rows = []
    with tempfile.TemporaryDirectory(prefix="ntkdiv-bench-agg-") as tmp:
        for n_trials in (base, 2 * base):
            sweep = Path(tmp) / f"sweep{n_trials}"
            t0 = time.perf_counter()
            ids = write_sweep(sweep, bench_groups(n_trials))
            build = time.perf_counter() - t0
            rows.append([len(ids), build, *_aggregate_in_child(sweep, Path(tmp) / f"r{n_trials}")])
    growth = rows[1][6] / rows[0][6] - 1.0
    verdict = "met" if rows[1][3] < 20.0 and growth < 0.10 else "NOT met"
    if quick:
        verdict = "not judged (--quick sizes are below the goal's 2,000 trials)"
    return "\n".join(
        [
            "## Aggregator",
            "",
            f"Synthetic sweeps (2 losses x 10 widths x seeds, ~200 tracked steps each, n = 6), "
            f"aggregated in a fresh process. Machine: {machine()}.",
            "",
            table(
                [
                    "trials",
                    "build s",
                    "import s",
                    "aggregate s",
                    "aggregate CPU s",
                    "trial pass s",
                    "peak RSS MiB",
                ],  # fmt: skip
                rows,
            ),
            "",
            "Goal: 2,000 trials in < 20 s on 2 cores, peak memory flat when trials double. "
            f"Peak RSS grew {100 * growth:.1f}% from {rows[0][0]} to {rows[1][0]} trials "
            f"(aggregate time excludes the import): {verdict}.",
        ]
    )
