"""Store faults end to end, through ``ntkdiv sweep`` on a real local Ray cluster: corrupt trial
files, two drivers on one sweep, a disk that fills mid-sweep, and which failures spend a trial's
own retries.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from core import store as st
from tests.sweep.conftest import attempts, spec_dict, summaries, tiny_base, write_spec
from tests.sweep.test_faults import assert_one_mlflow_run_per_trial, wait_for
from tests.sweep.test_recovery import GARBAGE, quarantined, truncate

pytestmark = pytest.mark.slow

NTKDIV = [sys.executable, "-m", "ntkdiv.cli"]


def errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ntkdiv: error")]


# --- corrupt files ---------------------------------------------------------------------------


def test_corrupt_trial_files_are_quarantined_and_only_their_trials_rerun(tmp_path, cli):
    base = tiny_base(checkpoint={"every": 10})
    spec = spec_dict(tmp_path, base=base, grid={"model.width": [16, 32], "seed": [0, 1, 2]},
                     mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})  # fmt: skip
    path = write_spec(tmp_path, spec)
    sweep_dir = tmp_path / "store" / "t"
    code, _, err = cli("sweep", path, "--no-aggregate", "--quiet")
    assert code == 0, err
    a, b, c, d, e, f = sorted(summaries(sweep_dir))
    trials = sweep_dir / "trials"
    bad = {
        f"{a}/summary.json": truncate(trials / a / st.SUMMARY),
        f"{b}/trajectory.parquet": truncate(trials / b / st.TRAJECTORY, 300),
        f"{c}/attempts.json": truncate(trials / c / st.ATTEMPTS, 7),
        f"{d}/checkpoint.pt": GARBAGE,
        f"{e}/summary.json": b"",
    }
    (trials / d / "checkpoint.pt").write_bytes(GARBAGE)
    (trials / d / st.SUMMARY).unlink()  # d was interrupted, its checkpoint left corrupt
    (trials / e / st.SUMMARY).write_bytes(b"")
    before = {tid: len(attempts(sweep_dir, tid)) for tid in (d, f)}

    code, out, err = cli("sweep", path, "--no-aggregate", "--quiet")
    assert code == 0, err
    assert "Traceback" not in err and not errors(err)
    warnings = [ln for ln in err.splitlines() if "corrupt" in ln]
    assert len(warnings) == 6, err  # b's summary is moved with its trajectory
    for name in bad:
        assert sum(name.split("/")[1] in ln and name.split("/")[0] in ln for ln in warnings)
    done = summaries(sweep_dir)
    assert len(done) == 6 and {s["status"] for s in done.values()} == {"completed"}
    kept = quarantined(sweep_dir)
    for name, content in bad.items():
        assert kept[name] == content  # moved aside, byte for byte
    assert done[d]["resumed_from_step"] is None and "quarantined" in done[d]
    assert [len(attempts(sweep_dir, t)) for t in (d, f)] == [before[d] + 1, before[f]]
    assert len(attempts(sweep_dir, c)) == 0  # c's history was quarantined; c did not rerun
    assert "2 from earlier runs, 4 completed" in out  # c and f were left alone
    assert_one_mlflow_run_per_trial(tmp_path / "mlflow.db", "t", set(done))
    code, _, err = cli("aggregate", sweep_dir, "--out", tmp_path / "report")
    assert code == 0 and "warning" not in err, err


# --- two drivers -----------------------------------------------------------------------------


def long_base(epochs: int, every: int) -> dict:
    """A trial that runs long enough (width 256, depth 3) to be caught mid-flight."""
    return tiny_base(model={"width": 256, "depth": 3}, train={"epochs": epochs},
                     track={"log_points": 20}, checkpoint={"every": every})  # fmt: skip


def start_sweep(tmp_path: Path, spec: dict) -> tuple[list[str], subprocess.Popen]:
    """``ntkdiv sweep`` of this spec started in the background: (its argv, the process)."""
    argv = [*NTKDIV, "sweep", str(write_spec(tmp_path, spec)), "--no-aggregate", "--quiet"]
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    return argv, proc


def test_a_second_driver_refuses_with_one_line_or_waits(tmp_path):
    spec = spec_dict(tmp_path, base=long_base(4000, 500), grid={"seed": [0, 1, 2]},
                     resources={"cpus_per_trial": 1},
                     mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})  # fmt: skip
    sweep_dir = tmp_path / "store" / "t"
    argv, first = start_sweep(tmp_path, spec)
    try:
        wait_for(lambda: attempts(sweep_dir, next(iter(_trial_ids(sweep_dir)), "-")), 120,
                 "the first driver's first trial")  # fmt: skip
        second = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert f"pid {first.pid}, since 20" in line and "--wait" in line
        assert "another driver (host " in line
        queued = subprocess.run([*argv, "--wait"], cwd=tmp_path, capture_output=True, text=True,
                                timeout=600)  # fmt: skip
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert queued.returncode == 0, queued.stderr
    assert f"waiting for the driver running sweep {sweep_dir} (host " in queued.stderr
    assert "3 from earlier runs" in queued.stdout  # it ran nothing twice
    done = summaries(sweep_dir)
    assert len(done) == 3
    for tid in done:
        assert [a["status"] for a in attempts(sweep_dir, tid)] == ["completed"]
    assert not (sweep_dir / st.LEASE).exists()  # released
    assert_one_mlflow_run_per_trial(tmp_path / "mlflow.db", "t", set(done))


def _trial_ids(sweep_dir: Path) -> list[str]:
    return sorted(p.name for p in (sweep_dir / "trials").glob("*")) if sweep_dir.exists() else []


def test_the_lease_of_a_killed_driver_is_taken_over_with_a_warning(tmp_path, cli):
    path = write_spec(tmp_path, spec_dict(tmp_path))
    sweep_dir = tmp_path / "store" / "t"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    now = time.time()
    st.write_json(sweep_dir / st.LEASE, {"token": "killed", "host": os.uname().nodename,
                                         "pid": int(dead), "since": now - 60, "heartbeat": now,
                                         "every_s": st.HEARTBEAT_S})  # fmt: skip
    code, _, err = cli("sweep", path, "--no-aggregate", "--quiet")
    assert code == 0, err
    (line,) = [ln for ln in err.splitlines() if "took over" in ln]
    assert f"pid {dead}" in line
    assert len(summaries(sweep_dir)) == 2 and not (sweep_dir / st.LEASE).exists()


# --- a full disk -----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs mounted for the test (root only), unmounted after it: room for a few
    checkpoints of long_base (2.1 MB each) and their temporary copies."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(where)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full; returns it (delete it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * (1 << 16)
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    with open(filler, "ab", buffering=0) as fh:  # the last partial page too
        try:
            while True:
                fh.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def fill_and_stop(driver: subprocess.Popen, disk: Path, ready, what: str) -> tuple[Path, str]:
    """Once ``ready()`` holds, fill the disk and wait for the driver: it must stop with exit 1
    and one error line about the full disk. Returns (the filler file, that line)."""
    try:
        wait_for(ready, 300, what)
        filler = fill(disk)
        _, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, err
    assert "Traceback" not in err
    (line,) = errors(err)
    assert "No space left on device" in line, line
    return filler, line


def test_a_disk_that_fills_mid_sweep_stops_the_driver_with_one_line(tmp_path, small_disk):
    spec = spec_dict(tmp_path, base=long_base(3000, 100), grid={"seed": [0, 1, 2, 3, 4, 5]},
                     retries=0, storage=str(small_disk / "store"),
                     resources={"cpus_per_trial": 1})  # fmt: skip
    sweep_dir = small_disk / "store" / "t"
    argv, driver = start_sweep(tmp_path, spec)
    ready = lambda: len(summaries(sweep_dir)) >= 2  # noqa: E731
    filler, line = fill_and_stop(driver, small_disk, ready, "two finished trials")
    assert "failed mid-sweep" in line
    finished = {t: len(attempts(sweep_dir, t)) for t, s in summaries(sweep_dir).items()
                if s["status"] == "completed"}  # fmt: skip
    assert len(finished) >= 2

    filler.unlink()  # space freed: the same command completes the rest
    rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)} from earlier runs" in rerun.stdout
    done = summaries(sweep_dir)
    assert len(done) == 6 and {s["status"] for s in done.values()} == {"completed"}
    for tid, n in finished.items():
        assert len(attempts(sweep_dir, tid)) == n  # not rerun
    for tid in set(done) - set(finished):  # a system failure spent none of retries = 0
        assert st.failures(sweep_dir / "trials" / tid) == 0
        assert attempts(sweep_dir, tid)[-1]["status"] == "completed"


def test_a_disk_that_fills_mid_search_stops_it_with_one_line(tmp_path, small_disk):
    from tests.sweep.test_search import write_spec as search_spec

    path = search_spec(tmp_path, epochs=3000, n_trials=4)
    raw = yaml.safe_load(path.read_text())
    raw["storage"] = str(small_disk / "store")
    raw["base"]["model"]["depth"] = 3
    raw["search"]["space"]["model.width"] = {"type": "int", "low": 200, "high": 256}
    path.write_text(yaml.safe_dump(raw))
    argv = [*NTKDIV, "search", str(path)]
    driver = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    trials = small_disk / "store" / "search-smoke" / "trials"
    ready = lambda: any(trials.glob("*/checkpoint.pt"))  # noqa: E731
    filler, line = fill_and_stop(driver, small_disk, ready, "a checkpoint")
    assert "failed mid-search" in line, line
    assert "'ntkdiv search' again" in line

    filler.unlink()  # space freed: the same command finishes the study
    rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert len(summaries(small_disk / "store" / "search-smoke")) == 4


# --- whose failure it is ---------------------------------------------------------------------


def test_a_trial_out_of_retries_reruns_with_retry_failed(tmp_path, cli):
    spec = spec_dict(tmp_path, grid={"device": ["cpu", "cuda"]}, retries=0)
    path = write_spec(tmp_path, spec)
    sweep_dir = tmp_path / "store" / "t"
    code, _, _ = cli("sweep", path, "--no-aggregate", "--quiet")
    assert code == 1
    (failed,) = [t for t, s in summaries(sweep_dir).items() if s["status"] == "failed"]
    code, out, _ = cli("sweep", path, "--no-aggregate", "--quiet")
    assert code == 1 and "out of retries" in out
    assert len(attempts(sweep_dir, failed)) == 1  # not rerun
    code, out, _ = cli("sweep", path, "--no-aggregate", "--quiet", "--retry-failed")
    assert code == 1 and "out of retries" not in out
    assert [a["status"] for a in attempts(sweep_dir, failed)] == ["failed", "failed"]


def test_a_killed_worker_does_not_spend_the_trials_retries(tmp_path):
    """With retries = 0 a worker SIGKILLed mid-trial is a system failure (the attempt is closed
    by the driver): the next run reruns the trial, which is not out of retries."""
    spec = spec_dict(tmp_path, base=long_base(6000, 200), grid={"seed": [0]}, retries=0)
    sweep_dir = tmp_path / "store" / "t"
    argv, driver = start_sweep(tmp_path, spec)
    try:
        (victim,) = wait_for(lambda: [p.parent.name for p in
                                      (sweep_dir / "trials").glob("*/checkpoint.pt")], 180,
                             "a checkpoint")  # fmt: skip
        os.kill(attempts(sweep_dir, victim)[-1]["pid"], signal.SIGKILL)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1 and "Traceback" not in err, err
    (attempt,) = attempts(sweep_dir, victim)
    assert attempt["status"] == "failed" and attempt["by"] == "driver"
    assert st.failures(sweep_dir / "trials" / victim) == 0
    rerun = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "out of retries" not in rerun.stdout
    assert [a["status"] for a in attempts(sweep_dir, victim)] == ["failed", "completed"]
    assert summaries(sweep_dir)[victim]["resumed_from_step"] is not None
