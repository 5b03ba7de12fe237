"""Sweep benchmark: what Ray dispatch, the store and MLflow add to the trials themselves.

Goals (issue "sweep"), on a local 2-CPU Ray cluster:
- orchestration: 32 trivial trials, median per-trial overhead (wall per trial minus its own
  compute) <= 0.3 s;
- wall time: 16 trials of ~5 s each finish within 1.2x the ideal, sum of compute / slots;
- MLflow: logging the smoke sweep takes <= 5% of its trials' wall time.

Each sweep runs through ``sweep._runner.run_sweep``, as ``ntkdiv sweep`` does, into a temporary
store. A trial's own compute is the ``run_trial`` call timed inside its task (``run_s`` in
``attempts.json``); everything else (task dispatch, the wrapper's bookkeeping, idle slots) is
overhead.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from core import config_from_dict, run_trial

from ._common import machine, table

SLOTS = 2  # a local cluster of 2 CPUs, 1 CPU per trial


def _spec(root: Path, name: str, base: dict, seeds: int, mlflow: bool = False) -> Any:
    from sweep._spec import parse_spec

    mlflow_section = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "enabled": mlflow}
    return parse_spec({"name": name, "base": base, "grid": {"seed": list(range(seeds))},
                       "storage": str(root / "store"), "mlflow": mlflow_section})  # fmt: skip


def _attempts(sweep_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted((sweep_dir / "trials").glob("*/attempts.json")):
        out += json.loads(path.read_text())["attempts"]
    return out


def per_trial_overhead(attempts: list[dict[str, Any]]) -> list[float]:
    """For each trial after the first on its worker: the idle gap since that worker's previous
    trial ended, plus the wrapper's time outside run_trial. Seconds."""
    by_worker: dict[tuple, list[dict]] = {}
    for a in attempts:
        by_worker.setdefault((a["node"], a["pid"]), []).append(a)
    out = []
    for runs in by_worker.values():
        runs.sort(key=lambda a: a["start"])
        for prev, cur in zip(runs, runs[1:], strict=False):
            wrapper = (cur["end"] - cur["start"]) - cur["run_s"]
            out.append(cur["start"] - prev["end"] + wrapper)
    return out


def _sweep(spec: Any) -> tuple[Any, list[dict[str, Any]]]:
    from sweep._runner import run_sweep

    res = run_sweep(spec, num_cpus=SLOTS, aggregate=False, quiet=True)
    assert res.exit_code == 0, f"benchmark sweep {spec.name} failed: {res.failed}"
    return res, _attempts(res.sweep_dir)


def orchestration(root: Path, n: int) -> dict[str, float]:
    """``n`` trivial trials (width 8, one step): overheads per trial, warm workers."""
    base = {"model": {"width": 8, "depth": 1}, "train": {"epochs": 1},
            "track": {"log_points": 2}}  # fmt: skip
    res, attempts = _sweep(_spec(root, "orchestration", base, n))
    compute = sum(a["run_s"] for a in attempts)
    first = min(a["start"] for a in attempts) - res.dispatch_start
    return {"trials": n, "median compute s": statistics.median(a["run_s"] for a in attempts),
            "median overhead s": statistics.median(per_trial_overhead(attempts)),
            "mean overhead s": (SLOTS * res.dispatch_s - compute) / n, "first start s": first,
            "dispatch s": res.dispatch_s, "wall s (Ray start incl.)": res.wall_s}  # fmt: skip


def _epochs_for(seconds: float, base: dict) -> int:
    """Scale epochs so that one trial computes for about ``seconds`` on one thread here."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    probe = 1000
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = config_from_dict({**base, "train": {"epochs": probe}})
            t0 = time.perf_counter()
            run_trial(config, Path(tmp))
            per_step = (time.perf_counter() - t0) / probe
    finally:  # the caller's threads, as it set them (a test process runs other tests after)
        torch.set_num_threads(threads)
    return max(probe, int(seconds / per_step))


def wall_time(root: Path, n: int, seconds: float) -> dict[str, float]:
    """``n`` trials of about ``seconds`` each on ``SLOTS`` slots, against the ideal."""
    base = {"model": {"width": 256, "depth": 3}, "track": {"log_points": 50}}
    base["train"] = {"epochs": _epochs_for(seconds, base)}
    res, attempts = _sweep(_spec(root, "walltime", base, n))
    ideal = sum(a["run_s"] for a in attempts) / SLOTS
    return {"trials": n, "epochs": base["train"]["epochs"],
            "median compute s": statistics.median(a["run_s"] for a in attempts),
            "ideal s": ideal, "dispatch s": res.dispatch_s, "ratio": res.dispatch_s / ideal,
            "wall s (Ray start incl.)": res.wall_s,
            "ratio incl. start": res.wall_s / ideal}  # fmt: skip


def mlflow_share(root: Path) -> dict[str, float]:
    """The smoke sweep (sweeps/smoke.yaml) without MLflow, then with MLflow on a sqlite file."""
    from sweep._runner import run_sweep
    from sweep._spec import load_spec, parse_spec

    raw = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml").model_dump()
    dispatch = {}
    for enabled in (False, True):
        raw["storage"] = str(root / f"store-{enabled}")
        raw["mlflow"] = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "enabled": enabled}
        res = run_sweep(parse_spec(raw), num_cpus=SLOTS, aggregate=False, quiet=True)
        dispatch[enabled] = res.dispatch_s
    trial_wall = sum(a["end"] - a["start"] for a in _attempts(res.sweep_dir))
    per_trial, total = res.mlflow_s.get("log_trial", 0.0), sum(res.mlflow_s.values())
    total -= res.mlflow_s.get("open", 0.0)
    one_tx, api = relog(root, res.sweep_dir)
    return {"trials": res.counts.total, "trial wall s": trial_wall, "log_trial s": per_trial,
            "all MLflow s": total, "share": per_trial / trial_wall,
            "share all": total / trial_wall, "new database s": res.mlflow_s.get("open", 0.0),
            "dispatch s, MLflow off": dispatch[False],
            "dispatch s, MLflow on": dispatch[True], "sync s, one transaction": one_tx,
            "sync s, log_batch": api, "log_batch / one transaction": api / one_tx}  # fmt: skip


def relog(root: Path, sweep_dir: Path, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of ``ntkdiv sync`` of one store into a new sqlite file, with a trial's new
    run written in one transaction (the default) and through MLflow's ``log_batch``,
    alternated."""
    from sweep._mlflow import MlflowLogger

    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats):
        for fast in (True, False):
            logger = MlflowLogger(f"sqlite:///{root / f'relog-{fast}-{i}.db'}", None,
                                  sweep_dir.name, sweep_dir)  # fmt: skip
            logger.ensure_parent()
            if not fast:
                logger.writer = None
            t0 = time.perf_counter()
            logger.sync()
            times[fast].append(time.perf_counter() - t0)
    return statistics.median(times[True]), statistics.median(times[False])


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    n_trivial, n_long, seconds = (8, 4, 1.0) if quick else (32, 16, 5.0)
    with tempfile.TemporaryDirectory(prefix="ntkdiv-bench-sweep-") as tmp:
        root = Path(tmp)
        orch = orchestration(root / "orch", n_trivial)
        wall = wall_time(root / "wall", n_long, seconds)
        share = mlflow_share(root / "mlflow")
    return _section(orch, wall, share)


def _row(result: dict[str, float]) -> str:
    return table(list(result), [list(result.values())])


def _section(orch: dict, wall: dict, share: dict) -> str:
    ok = {True: "met", False: "NOT met"}
    o, w, s = orch["median overhead s"], wall["ratio"], share["share"]
    return "\n".join([
        "## Sweep orchestration (`ntkdiv bench sweep`)", "",
        f"{machine()}; a local Ray cluster of {SLOTS} CPUs started by each sweep, 1 CPU per "
        "trial. A trial's compute is its `run_trial` call timed inside the task; the rest is "
        "overhead. The machine is shared: figures vary with its load.", "",
        _row(orch), "",
        f"- Goal median per-trial overhead <= 0.3 s (trivial trials): {ok[o <= 0.3]} ({o:.3f} s). "
        "It counts each worker's idle gap between trials and the task wrapper's bookkeeping. "
        "The first trial on each worker also waits for the worker to start and import torch "
        "(first start s); the mean overhead spreads that over all trials.", "",
        _row(wall), "",
        f"- Goal wall <= 1.2x ideal (sum of compute / {SLOTS} slots): {ok[w <= 1.2]} ({w:.3f}x "
        f"from the first submission, {wall['ratio incl. start']:.3f}x with Ray's start).", "",
        _row(share), "",
        f"- Goal MLflow logging <= 5% of trial wall time (smoke sweep, sqlite): {ok[s <= 0.05]} "
        f"({100 * s:.1f}% for the per-trial logging, {100 * share['share all']:.1f}% with the "
        "parent run and the backfill check). The driver logs while trials run (all are "
        "submitted at once). Once per tracking database, MLflow creates its tables in a new "
        "sqlite file (new database s, MLflow's own schema migrations, not counted in the shares);"
        " that runs while the workers start, and is most of the gap between the two dispatch "
        "columns. The sync columns log the same store again into new sqlite files, writing "
        f"each trial's run in one transaction (the default) or through MLflow's `log_batch`: "
        f"{share['log_batch / one transaction']:.2f}x.",
    ])  # fmt: skip
