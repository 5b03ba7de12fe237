"""Faults and packing on real Ray clusters: a node dies mid-trial, the driver is SIGKILLed,
fractional GPUs are packed.

The packing test declares 2 GPUs to a local cluster of 8 logical CPUs on this 2-core machine
(CPU trials; Ray only counts the shares) and gives each trial 0.1 CPU, so that the GPU shares,
not the CPUs, bound how many trials run at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from core import config_from_dict, run_trial
from dashboards._read import open_store
from sweep._runner import run_sweep
from sweep._spec import parse_spec
from tests.sweep.conftest import attempts, spec_dict, summaries, tiny_base, write_spec

pytestmark = pytest.mark.slow

NTKDIV = [sys.executable, "-m", "ntkdiv.cli"]


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (an end at t comes before a start at t)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def reference_trajectory(config_dict: dict, tmp: Path) -> object:
    """The same trial, uninterrupted, in this process, with the task's one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_trial(config_from_dict(config_dict), tmp)
    finally:
        torch.set_num_threads(threads)
    return pq.read_table(tmp / "trajectory.parquet")


def assert_store_consistent(sweep_dir: Path, n_trials: int) -> None:
    """One completed summary per trial, and no step twice in any trajectory."""
    store = open_store(sweep_dir)
    assert sorted(store.summary["status"]) == ["completed"] * n_trials
    assert store.trajectory is not None
    traj = store.trajectory.dataset(store.trajectory.files).to_table(columns=["trial_id", "step"])
    pairs = list(zip(traj.column("trial_id").to_pylist(), traj.column("step").to_pylist(),
                     strict=True))  # fmt: skip
    assert len(pairs) == len(set(pairs))


def assert_one_mlflow_run_per_trial(db: Path, experiment: str, trial_ids: set[str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "trial_id" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(trial_ids)
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
        assert steps and len(steps) == len(set(steps))


# --- a node dies in the middle of a trial ----------------------------------------------------


def test_node_loss_resumes_from_checkpoint_bit_for_bit(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        _node_loss(cluster, tmp_path)
    finally:
        cluster.shutdown()


def _node_loss(cluster, tmp_path: Path) -> None:
    base = tiny_base(model={"width": 256, "depth": 3}, train={"epochs": 30000},
                     track={"log_points": 60}, checkpoint={"every": 500})  # fmt: skip
    spec = spec_dict(tmp_path, base=base, grid={"seed": [0, 1]},
                     mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})  # fmt: skip
    path = write_spec(tmp_path, spec)
    sweep_dir = tmp_path / "store" / "t"
    driver = subprocess.Popen([*NTKDIV, "sweep", str(path), "--address", cluster.address,
                               "--no-aggregate", "--quiet"], cwd=tmp_path,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        victim = wait_for(lambda: _checkpointed_trial(sweep_dir), 180, "a checkpoint")
        node_id = attempts(sweep_dir, victim)[-1]["node"]
        node = next(n for n in cluster.worker_nodes if n.node_id == node_id)
        cluster.remove_node(node)
        cluster.add_node(num_cpus=1)  # a replacement, so the retry need not queue
        out, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0
    finally:
        if driver.poll() is None:
            driver.kill()
    assert "2 completed, 0 diverged, 0 failed, 1 retried" in out
    done = summaries(sweep_dir)
    assert {s["status"] for s in done.values()} == {"completed"}
    assert done[victim]["resumed_from_step"] is not None
    assert [a["status"] for a in attempts(sweep_dir, victim)] == ["lost", "completed"]
    config = config_from_dict(yaml_load(sweep_dir / "trials" / victim / "config.yaml"))
    ref = reference_trajectory(config.model_dump(mode="json"), tmp_path / "ref")
    got = pq.read_table(sweep_dir / "trials" / victim / "trajectory.parquet")
    assert got.equals(ref, check_metadata=True)
    assert_store_consistent(sweep_dir, 2)
    assert_one_mlflow_run_per_trial(tmp_path / "mlflow.db", "t", set(done))


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def _checkpointed_trial(sweep_dir: Path) -> str | None:
    """A trial that is running and has written a checkpoint."""
    for tdir in sorted((Path(sweep_dir) / "trials").glob("*")):
        running = not (tdir / "summary.json").exists() and (tdir / "checkpoint.pt").exists()
        if running and attempts(sweep_dir, tdir.name):
            return tdir.name
    return None


# --- the driver is killed --------------------------------------------------------------------


def test_driver_sigkill_then_rerun_runs_only_the_missing_work(tmp_path):
    base = tiny_base(model={"width": 256, "depth": 3}, train={"epochs": 6000},
                     track={"log_points": 40}, checkpoint={"every": 200})  # fmt: skip
    spec = spec_dict(tmp_path, base=base, grid={"seed": [0, 1, 2, 3, 4, 5]},
                     resources={"cpus_per_trial": 1},
                     mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})  # fmt: skip
    path = write_spec(tmp_path, spec)
    sweep_dir = tmp_path / "store" / "t"
    argv = [*NTKDIV, "sweep", str(path), "--no-aggregate", "--quiet"]
    driver = subprocess.Popen(argv, cwd=tmp_path)
    try:
        wait_for(lambda: len(summaries(sweep_dir)) >= 2 and _checkpointed_trial(sweep_dir),
                 300, "two finished trials and one mid-run")  # fmt: skip
        family = descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    killed_at = time.monotonic()
    before = {tid: len(attempts(sweep_dir, tid)) for tid in summaries(sweep_dir)}
    interrupted = {tdir.name for tdir in (sweep_dir / "trials").glob("*")
                   if (tdir / "checkpoint.pt").exists() and tdir.name not in before}  # fmt: skip

    rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(before)} from earlier runs" in rerun.stdout
    done = summaries(sweep_dir)
    assert len(done) == 6 and {s["status"] for s in done.values()} == {"completed"}
    for tid, n in before.items():  # finished trials did not run again
        assert len(attempts(sweep_dir, tid)) == n
    for tid in interrupted:
        assert done[tid]["resumed_from_step"] is not None
        assert [a["status"] for a in attempts(sweep_dir, tid)] == ["lost", "completed"]
        ref = reference_trajectory(yaml_load(sweep_dir / "trials" / tid / "config.yaml"),
                                   tmp_path / f"ref-{tid}")  # fmt: skip
        assert pq.read_table(sweep_dir / "trials" / tid / "trajectory.parquet").equals(ref)
    assert interrupted
    assert_store_consistent(sweep_dir, 6)
    assert_one_mlflow_run_per_trial(tmp_path / "mlflow.db", "t", set(done))
    _assert_cluster_died_with_driver(family, killed_at)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"


def _assert_cluster_died_with_driver(family: list[int], killed_at: float) -> None:
    """ray.init's local cluster shares the driver's fate: the raylet and workers go at once, the
    dashboard and runtime-env agents within about a minute (they poll for their raylet).
    Anything left after two minutes is killed, and the test fails."""
    assert family  # the driver had started its cluster
    deadline = killed_at + 120
    while time.monotonic() < deadline and any(alive(p) for p in family):
        time.sleep(0.5)
    left = {p: cmdline(p) for p in family if alive(p)}
    for pid in left:  # started by the driver under test: ours to clean up
        os.kill(pid, signal.SIGKILL)
    assert not left, f"left running after the driver died: {left}"


# --- fractional GPUs ---------------------------------------------------------------------------


def test_quarter_gpu_trials_pack_eight_on_two_gpus(tmp_path):
    base = tiny_base(model={"width": 256, "depth": 3}, train={"epochs": 3000},
                     track={"log_points": 20})  # fmt: skip
    raw = spec_dict(tmp_path, base=base, grid={"seed": list(range(10))},
                    resources={"gpus_per_trial": 0.25, "cpus_per_trial": 0.1})  # fmt: skip
    res = run_sweep(parse_spec(raw), num_cpus=8, num_gpus=2, quiet=True)
    assert res.exit_code == 0
    spans, by_gpu = [], {}
    for tid in summaries(res.sweep_dir):
        (attempt,) = attempts(res.sweep_dir, tid)
        spans.append((attempt["start"], attempt["end"]))
        assert len(attempt["gpus"]) == 1  # Ray assigned one (declared) GPU
        by_gpu.setdefault(attempt["gpus"][0], []).append(spans[-1])
    assert max_overlap(spans) == 8
    assert set(by_gpu) == {"0", "1"}
    assert all(max_overlap(s) <= 4 for s in by_gpu.values())


def test_max_overlap():
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2  # touching intervals do not overlap
    assert max_overlap([(0, 5), (1, 2), (1, 3)]) == 3
