"""Store faults without Ray: corrupt files read, quarantined or skipped; the sweep's lease on real
files; a grid counted before it is built.

The sweeps that reproduce these faults end to end (real Ray through ``ntkdiv sweep``) are in
``test_store_faults.py``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from core import ConfigError, run_trial, trial_id
from core import store as st
from sweep._spec import expand, parse_spec
from tests.sweep.conftest import spec_dict, tiny_base, write_spec

GARBAGE = b"\x00\xffnot a file of ours\x13" * 3


def truncate(path: Path, keep: int = 20) -> bytes:
    """Cut a file to its first ``keep`` bytes (what a torn copy leaves); returns them."""
    data = path.read_bytes()[:keep]
    path.write_bytes(data)
    return data


def damage_data(path: Path, column: str = "t") -> bytes:
    """Flip one bit in a column's data pages, leaving the footer intact (what a bad sector
    leaves), at the first place where plain Parquet decoding still succeeds, returning other
    numbers: the silent case. Returns the new content."""
    meta = pq.read_metadata(path).row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns)
                 if meta.column(i).path_in_schema == column)  # fmt: skip
    good, clean = path.read_bytes(), pq.read_table(path)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    for offset in range(start, start + chunk.total_compressed_size):
        data = bytearray(good)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            got = pq.read_table(path)
            if got.schema.equals(clean.schema) and not got.equals(clean):
                return bytes(data)
        except (OSError, pa.ArrowException):  # this flip breaks decoding: loud; try the next
            continue
    raise AssertionError(f"no silent flip found in {column} of {path}")


def quarantined(sweep_dir: Path) -> dict[str, bytes]:
    """'<trial_id>/<file name>' -> content of every quarantined file."""
    root = sweep_dir / st.QUARANTINE
    return {f"{p.parent.name}/{p.name.split('.')[0]}.{p.name.split('.')[1]}": p.read_bytes()
            for p in sorted(root.glob("*/*"))}  # fmt: skip


# --- corrupt files: what each reader does ----------------------------------------------------


def test_corrupt_reason_names_what_is_wrong(tmp_path):
    tdir = tmp_path / "s" / "trials" / "abc"
    st.write_json(tdir / st.SUMMARY, {"status": "completed"})
    st.write_json(tdir / st.ATTEMPTS, {"attempts": []})
    st.write_trajectory(tdir / st.TRAJECTORY, st.trajectory_table({"step": [0], "t": [0.0]}))
    assert [st.corrupt_reason(tdir / n) for n in (st.SUMMARY, st.ATTEMPTS, st.TRAJECTORY)] == [
        None, None, None]  # fmt: skip
    assert st.corrupt_reason(tdir / "missing.json") is None
    truncate(tdir / st.SUMMARY)
    (tdir / st.ATTEMPTS).write_text("[1, 2]")
    (tdir / st.TRAJECTORY).write_bytes(GARBAGE)
    assert "line 2" in (st.corrupt_reason(tdir / st.SUMMARY) or "")
    assert st.corrupt_reason(tdir / st.ATTEMPTS) == "a list, not a mapping"
    assert "magic bytes" in (st.corrupt_reason(tdir / st.TRAJECTORY) or "")
    (tdir / st.SUMMARY).write_bytes(b"\xff\xfe")  # not UTF-8
    assert st.corrupt_reason(tdir / st.SUMMARY)


def test_damaged_data_under_an_intact_footer_is_found(tmp_path):
    """Parquet alone decodes a flipped byte in a data page into other numbers; the page CRCs
    that the store writes catch it."""
    path = tmp_path / st.TRAJECTORY
    t = [0.001 * 1.1**k for k in range(300)]
    st.write_trajectory(path, st.trajectory_table({"step": list(range(300)), "t": t}))
    assert st.corrupt_reason(path) is None
    damage_data(path)
    assert pq.read_metadata(path).num_rows == 300  # the footer still reads
    assert pq.read_table(path)["t"].to_pylist() != t  # plain decoding: silently other numbers
    assert "CRC" in (st.corrupt_reason(path) or "")
    table, problem = st.read_table_checked(path)
    assert table is None and "CRC" in (problem or "")


def test_quarantine_moves_aside_and_keeps_every_copy(tmp_path):
    tdir = tmp_path / "s" / "trials" / "abc"
    tdir.mkdir(parents=True)
    for content in (b"first", b"second"):
        (tdir / st.SUMMARY).write_bytes(content)
        target = st.quarantine(tdir / st.SUMMARY)
        assert not (tdir / st.SUMMARY).exists()
        assert Path(str(target)).parent == tmp_path / "s" / "quarantine" / "abc"
    kept = sorted(p.read_bytes() for p in (tmp_path / "s" / "quarantine" / "abc").iterdir())
    assert kept == [b"first", b"second"]
    alone = tmp_path / "run"  # a trial run on its own (ntkdiv run --out)
    alone.mkdir()
    (alone / "checkpoint.pt").write_bytes(b"x")
    assert Path(str(st.quarantine(alone / "checkpoint.pt"))).parent == alone / "quarantine"


def flip_in_largest_record(path: Path) -> bytes:
    """Flip one bit in the middle of the largest record of a ``torch.save`` zip (a tensor's
    data), leaving the archive's structure intact; returns the new content."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return bytes(data)


def test_corrupt_checkpoint_is_quarantined_and_the_trial_starts_from_scratch(tmp_path):
    config = expand(parse_spec(spec_dict(tmp_path, grid={"seed": [0]})))[0]
    clean = run_trial(config, tmp_path / "clean")
    for name, bad in (("truncated", None), ("garbage", GARBAGE), ("bit flip", b"")):
        out = tmp_path / "sweep" / "trials" / name
        run_trial(config, out)
        ckpt = out / "checkpoint.pt"
        if bad == b"":  # torch.load alone loads it, with one parameter changed
            content = flip_in_largest_record(ckpt)
            assert torch.load(ckpt, weights_only=True)["step"] > 0
        else:
            content = truncate(ckpt, 200) if bad is None else bad
            ckpt.write_bytes(content)
        (out / st.SUMMARY).unlink()  # as if the trial had been interrupted
        summary = run_trial(config, out)
        assert summary["status"] == "completed" and summary["resumed_from_step"] is None
        assert summary["steps"] == clean["steps"]
        assert "corrupt checkpoint.pt" in summary["quarantined"][0]
        assert bad != b"" or "CRC" in summary["quarantined"][0]
        (kept,) = (tmp_path / "sweep" / "quarantine" / name).iterdir()
        assert kept.read_bytes() == content  # moved aside, never deleted
        got = pq.read_table(out / st.TRAJECTORY)
        assert got.equals(pq.read_table(tmp_path / "clean" / st.TRAJECTORY))


def _store_of_three(tmp_path: Path) -> tuple[Path, list[str]]:
    """A sweep directory with three finished trials, run in this process (no Ray)."""
    spec = parse_spec(spec_dict(tmp_path, grid={"model.width": [16, 32], "seed": [0, 1]},
                                exclude=[{"model.width": 32, "seed": 1}]))  # fmt: skip
    sweep_dir = tmp_path / "store" / "t"
    ids = []
    for config in expand(spec):
        ids.append(trial_id(config))
        run_trial(config, sweep_dir / "trials" / ids[-1])
    st.write_spec(sweep_dir, "name: t\n")
    return sweep_dir, ids


def test_aggregate_skips_corrupt_files_with_one_line_each_and_moves_nothing(tmp_path, cli):
    sweep_dir, (a, b, c) = _store_of_three(tmp_path)
    summary = truncate(sweep_dir / "trials" / a / st.SUMMARY)
    (sweep_dir / "trials" / b / st.TRAJECTORY).write_bytes(GARBAGE)
    code, out, err = cli("aggregate", sweep_dir, "--out", tmp_path / "report")
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 2, err
    assert f"trial {a}: corrupt summary.json" in warnings[0] + warnings[1]
    assert f"{b}/trajectory.parquet" in warnings[0] + warnings[1]
    assert "Traceback" not in err
    trials = pq.read_table(tmp_path / "report" / "trials.parquet").to_pandas()
    assert {a, c} <= set(trials["trial_id"])
    assert (sweep_dir / "trials" / a / st.SUMMARY).read_bytes() == summary  # left in place
    assert (sweep_dir / "trials" / b / st.TRAJECTORY).read_bytes() == GARBAGE


def test_a_trajectory_with_damaged_data_is_skipped_by_aggregate_and_rerun_by_sweep(tmp_path, cli):
    from sweep._prepare import Settled, settle

    sweep_dir, (a, b, c) = _store_of_three(tmp_path)
    clean = pq.read_table(tmp_path / "store" / "t" / "trials" / a / st.TRAJECTORY)
    damaged = damage_data(sweep_dir / "trials" / a / st.TRAJECTORY, "drift")
    code, _, err = cli("aggregate", sweep_dir, "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if "warning" in ln]
    assert f"{a}/trajectory.parquet" in line and "CRC" in line, line
    drift = pq.read_table(tmp_path / "report" / "trials.parquet").to_pandas()
    assert set(drift.loc[drift["drift_sup"].notna(), "trial_id"]) >= {b, c}
    assert (sweep_dir / "trials" / a / st.TRAJECTORY).read_bytes() == damaged  # left in place
    spec = parse_spec(spec_dict(tmp_path, grid={"model.width": [16, 32], "seed": [0, 1]},
                                exclude=[{"model.width": 32, "seed": 1}]))  # fmt: skip
    lines: list[str] = []
    states = settle(sweep_dir, expand(spec), 3, lines.append)
    assert states == {a: Settled.PENDING, b: Settled.DONE, c: Settled.DONE}
    assert quarantined(sweep_dir)[f"{a}/trajectory.parquet"] == damaged
    assert any(f"trials/{a}/trajectory.parquet is corrupt" in ln and "CRC" in ln for ln in lines)
    rerun = run_trial(expand(spec)[0] if trial_id(expand(spec)[0]) == a else
                      next(x for x in expand(spec) if trial_id(x) == a),
                      sweep_dir / "trials" / a)  # fmt: skip
    assert rerun["status"] == "completed"
    assert pq.read_table(sweep_dir / "trials" / a / st.TRAJECTORY).equals(clean)


def test_settle_quarantines_corrupt_files_and_reruns_their_trials(tmp_path):
    from sweep._prepare import Settled, settle

    sweep_dir, (a, b, c) = _store_of_three(tmp_path)
    spec = parse_spec(spec_dict(tmp_path, grid={"model.width": [16, 32], "seed": [0, 1]},
                                exclude=[{"model.width": 32, "seed": 1}]))  # fmt: skip
    st.begin_attempt(sweep_dir / "trials" / c)
    bad = {f"{a}/summary.json": truncate(sweep_dir / "trials" / a / st.SUMMARY),
           f"{b}/trajectory.parquet": GARBAGE,
           f"{c}/attempts.json": truncate(sweep_dir / "trials" / c / st.ATTEMPTS, 5)}  # fmt: skip
    (sweep_dir / "trials" / b / st.TRAJECTORY).write_bytes(GARBAGE)
    lines: list[str] = []
    states = settle(sweep_dir, expand(spec), 3, lines.append)
    assert states == {a: Settled.PENDING, b: Settled.PENDING, c: Settled.DONE}
    assert len(lines) == 4, lines  # b's summary goes with its trajectory
    for name in bad:
        assert any(f"trials/{name}" in ln for ln in lines)
    kept = quarantined(sweep_dir)
    for name, content in bad.items():
        assert kept[name] == content
    assert f"{b}/summary.json" in kept
    assert settle(sweep_dir, expand(spec), 3, lines.append) == states  # nothing left to move
    assert len(lines) == 4


# --- the lease -------------------------------------------------------------------------------


def test_lease_refuses_a_live_driver_and_takes_over_a_dead_one(tmp_path):
    sweep_dir = tmp_path / "s"
    lease, old = st.acquire_lease(sweep_dir)
    assert old is None and json.loads((sweep_dir / st.LEASE).read_text())["pid"] == os.getpid()
    with pytest.raises(st.LeaseHeld, match=f"pid {os.getpid()}, since 20"):
        st.acquire_lease(sweep_dir)  # this process is alive
    assert st.refresh_lease(sweep_dir, lease)
    st.release_lease(sweep_dir, lease)
    assert not (sweep_dir / st.LEASE).exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    now = time.time()
    mine = {"token": "x", "host": socket.gethostname(), "pid": int(dead), "since": now,
            "heartbeat": now, "every_s": st.HEARTBEAT_S}  # fmt: skip
    st.write_json(sweep_dir / st.LEASE, mine)  # a driver of this host that died a moment ago
    lease, old = st.acquire_lease(sweep_dir)
    assert old is not None and old["pid"] == int(dead)
    st.release_lease(sweep_dir, lease)

    other = {**mine, "host": "elsewhere", "pid": 1}
    st.write_json(sweep_dir / st.LEASE, other)  # another host's driver, heartbeat fresh: alive
    with pytest.raises(st.LeaseHeld, match="host elsewhere, pid 1"):
        st.acquire_lease(sweep_dir)
    every = 0.2  # short beats: the takeover watches 1.5 of them
    stale = now - st.STALE_BEATS * every - 1
    st.write_json(sweep_dir / st.LEASE, {**other, "heartbeat": stale, "every_s": every})
    lease, old = st.acquire_lease(sweep_dir)  # three beats missed, and none came while watched
    assert old is not None and old["host"] == "elsewhere"
    assert not st.refresh_lease(sweep_dir, {**lease, "token": "someone else"})


@pytest.mark.parametrize("skew_s", [-3600.0, 3600.0])
def test_a_live_driver_on_a_host_with_another_clock_keeps_its_lease(tmp_path, skew_s):
    """Another host's clock an hour behind (or ahead): by ours its heartbeat looks an hour old
    (or an hour early), yet it keeps beating, so the lease is not taken over."""
    sweep_dir, every = tmp_path / "s", 0.2
    lease = {"token": "far", "host": "elsewhere", "pid": 1, "since": time.time() + skew_s,
             "heartbeat": time.time() + skew_s, "every_s": every}  # fmt: skip
    st.write_json(sweep_dir / st.LEASE, lease)
    stop = threading.Event()

    def beat() -> None:  # the other driver, on its own clock
        while not stop.wait(every):
            st.write_json(sweep_dir / st.LEASE, {**lease, "heartbeat": time.time() + skew_s})

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        assert st.lease_stale(st.read_lease(sweep_dir) or {})  # the clocks alone would say dead
        with pytest.raises(st.LeaseHeld, match="host elsewhere, pid 1"):
            st.acquire_lease(sweep_dir)
    finally:
        stop.set()
        beating.join()
    time.sleep(2 * every)  # it stopped: now its heartbeat stands still
    mine, old = st.acquire_lease(sweep_dir)
    assert old is not None and old["token"] == "far"
    assert st.read_lease(sweep_dir) == mine


def test_an_unreadable_lease_is_replaced(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / st.LEASE).write_bytes(b'{"tok')
    lease, _ = st.acquire_lease(tmp_path / "s")
    assert st.read_lease(tmp_path / "s") == lease


# --- the grid is counted before it is built --------------------------------------------------


def test_a_grid_above_max_points_is_refused_in_milliseconds(tmp_path, cli):
    grid = {"model.width": list(range(1, 101)), "seed": list(range(100)),
            "train.lr": [0.01 * i for i in range(1, 101)]}  # fmt: skip
    path = write_spec(tmp_path, spec_dict(tmp_path, grid=grid))
    t0 = time.perf_counter()
    code, _, err = cli("sweep", path, "--no-aggregate")
    assert time.perf_counter() - t0 < 2.0  # the 10^6 points are never built
    assert code == 2
    (line,) = err.strip().splitlines()
    assert "1,000,000 points (100 x 100 x 100), above max_points = 100,000" in line
    assert not (tmp_path / "store").exists()
    with pytest.raises(ConfigError, match="4 points .*above max_points = 3"):
        parse_spec(spec_dict(tmp_path, grid={"seed": [0, 1, 2, 3]}, max_points=3))
    zipped = spec_dict(tmp_path, grid={"seed": [0, 1, 2], "train.lr": [0.1, 0.2, 0.3]},
                       zip=[["seed", "train.lr"]], max_points=3)  # fmt: skip
    assert len(expand(parse_spec(zipped))) == 3  # a zip group is one axis


def test_max_points_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="'max_points' = 0"):
        parse_spec(spec_dict(tmp_path, max_points=0))
    assert tiny_base()  # the base used by every spec here


def test_sync_quarantines_corrupt_files_and_logs_the_rest(tmp_path, cli):
    sweep_dir, (a, b, c) = _store_of_three(tmp_path)
    bad = {f"{a}/summary.json": truncate(sweep_dir / "trials" / a / st.SUMMARY),
           f"{b}/attempts.json": b'{"attempts": [{"st'}  # fmt: skip
    (sweep_dir / "trials" / b / st.ATTEMPTS).write_bytes(bad[f"{b}/attempts.json"])
    code, out, err = cli("sync", sweep_dir, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}")
    assert code == 0, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2, err
    assert "logged 2 trial(s)" in out  # b and c; a runs again on the next 'ntkdiv sweep'
    assert quarantined(sweep_dir) == bad
