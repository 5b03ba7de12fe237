"""Sweep benchmark: what Ray dispatch, the store and MLflow add to the trials themselves.

Goals (issue "sweep"), on a local 2-CPU Ray cluster:
- orchestration: 32 trivial trials, median per-trial overhead (wall per trial minus its own
  compute) <= 0.3 s;
- wall time: 16 trials of ~5 s each finish within 1.2x the ideal, sum of compute / slots;
- MLflow: the sweep's wall time with MLflow on is within 3% of the same sweep with it off, for
  the smoke sweep and for a sweep of 1-minute trials, to a sqlite file and to a real
  ``mlflow server`` on 127.0.0.1.

Each sweep runs through ``sweep._runner.run_sweep``, as ``ntkdiv sweep`` does, into a temporary
store. A trial's own compute is the ``run_trial`` call timed inside its task (``run_s`` in
``attempts.json``); everything else (task dispatch, the wrapper's bookkeeping, idle slots) is
overhead.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from core import config_from_dict, run_trial
from core import store as st

from ._common import machine, table

SLOTS = 2  # a local cluster of 2 CPUs, 1 CPU per trial


def _spec(root: Path, name: str, base: dict, seeds: int, mlflow: bool = False) -> Any:
    from sweep import parse_spec

    mlflow_section = {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "enabled": mlflow}
    return parse_spec({"name": name, "base": base, "grid": {"seed": list(range(seeds))},
                       "storage": str(root / "store"), "mlflow": mlflow_section})  # fmt: skip


def _attempts(sweep_dir: st.Where) -> list[dict[str, Any]]:
    return [a for tdir in st.trial_dirs(sweep_dir) for a in st.read_attempts(tdir)]


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
    from sweep import run_sweep

    res = run_sweep(spec, num_cpus=SLOTS, quiet=True)
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


def mlflow_overhead(root: Path, raw: dict[str, Any], uri: str, repeats: int) -> dict[str, Any]:
    """The sweep ``raw`` with MLflow off and on (to ``uri``), alternated ``repeats`` times, each
    into a new store; medians of the wall times (Ray start included) and their ratio."""
    from sweep import parse_spec, run_sweep

    walls: dict[bool, list[float]] = {False: [], True: []}
    logging: list[float] = []
    for i in range(repeats):
        for enabled in (False, True):
            run = {**raw, "storage": str(root / f"store-{i}-{enabled}"),
                   "mlflow": {"tracking_uri": uri, "enabled": enabled,
                              "experiment": f"{raw['name']}-{i}"}}  # fmt: skip
            res = run_sweep(parse_spec(run), num_cpus=SLOTS, quiet=True)
            assert res.exit_code == 0, f"benchmark sweep {raw['name']} failed: {res.failed}"
            if res.tracking is not None:
                res.tracking.finish()
            walls[enabled].append(res.wall_s)
            if enabled:
                logging.append(sum(res.mlflow_s.values()))
    off, on = statistics.median(walls[False]), statistics.median(walls[True])
    return {"sweep": raw["name"], "store": "server" if uri.startswith("http") else "sqlite",
            "trials": res.counts.total, "wall s, MLflow off": off, "wall s, MLflow on": on,
            "MLflow calls s": statistics.median(logging), "ratio": on / off}  # fmt: skip


def _smoke() -> dict[str, Any]:
    from sweep import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml")
    return spec.model_dump()


def _minute_trials(n: int, seconds: float) -> dict[str, Any]:
    base = {"model": {"width": 256, "depth": 3}, "track": {"log_points": 200}}
    base["train"] = {"epochs": _epochs_for(seconds, base)}
    return {"name": f"trials-{seconds:g}s", "base": base, "grid": {"seed": list(range(n))}}


def mlflow_shares(root: Path, quick: bool) -> list[dict[str, Any]]:
    """MLflow on vs off: the smoke sweep, then ``SLOTS`` trials of a minute, to a sqlite file and
    to a local ``mlflow server`` (quick: the smoke sweep to sqlite, once)."""
    from ._mlflow_server import running_mlflow_server

    sweeps = [_smoke()] if quick else [_smoke(), _minute_trials(SLOTS, 60.0)]
    repeats = 1 if quick else 3
    rows = [mlflow_overhead(root / f"sqlite-{i}", raw, f"sqlite:///{root / f'db-{i}.db'}",
                            repeats) for i, raw in enumerate(sweeps)]  # fmt: skip
    if not quick:
        with running_mlflow_server(root / "server") as uri:
            rows += [mlflow_overhead(root / f"server-{i}", raw, uri, repeats)
                     for i, raw in enumerate(sweeps)]  # fmt: skip
    return rows


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    n_trivial, n_long, seconds = (8, 4, 1.0) if quick else (32, 16, 5.0)
    with tempfile.TemporaryDirectory(prefix="ntkdiv-bench-sweep-") as tmp:
        root = Path(tmp)
        orch = orchestration(root / "orch", n_trivial)
        wall = wall_time(root / "wall", n_long, seconds)
        shares = mlflow_shares(root / "mlflow", quick)
    return _section(orch, wall, shares)


def _row(result: dict[str, float]) -> str:
    return table(list(result), [list(result.values())])


def goals(orch: dict, wall: dict, shares: list[dict]) -> dict[str, bool]:
    """Each goal of the module docstring: met or not."""
    return {"overhead": orch["median overhead s"] <= 0.3, "wall": wall["ratio"] <= 1.2,
            "mlflow": all(r["ratio"] <= 1.03 for r in shares)}  # fmt: skip


def _section(orch: dict, wall: dict, shares: list[dict]) -> str:
    ok = {True: "met", False: "NOT met"}
    met = goals(orch, wall, shares)
    o, w = orch["median overhead s"], wall["ratio"]
    worst = max(r["ratio"] for r in shares)
    return "\n".join([
        "## Sweep orchestration (`ntkdiv bench sweep`)", "",
        f"{machine()}; a local Ray cluster of {SLOTS} CPUs started by each sweep, 1 CPU per "
        "trial. A trial's compute is its `run_trial` call timed inside the task; the rest is "
        "overhead. The machine is shared: figures vary with its load.", "",
        _row(orch), "",
        f"- Goal median per-trial overhead <= 0.3 s (trivial trials): {ok[met['overhead']]} "
        f"({o:.3f} s). It counts each worker's idle gap between trials and the task wrapper's "
        "bookkeeping. The first trial on each worker also waits for the worker to start and "
        "import torch (first start s); the mean overhead spreads that over all trials.", "",
        _row(wall), "",
        f"- Goal wall <= 1.2x ideal (sum of compute / {SLOTS} slots): {ok[met['wall']]} "
        f"({w:.3f}x from the first submission, {wall['ratio incl. start']:.3f}x with Ray's "
        "start).", "",
        table(list(shares[0]), [list(r.values()) for r in shares]), "",
        f"- Goal MLflow on within 3% of off (sweep wall time, medians of alternated runs): "
        f"{ok[met['mlflow']]} (worst {worst:.3f}x). The driver logs each trial through "
        "`MlflowClient.log_batch` while the other trials run; a new sqlite file gets MLflow's "
        "tables once (~1.5 s) while the workers start.",
    ])  # fmt: skip
