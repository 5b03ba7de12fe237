"""Store benchmark: the store in S3 (a real SeaweedFS on 127.0.0.1) against the store on local disk.

Goals (issue 14), measured side by side in one run:
- the smoke sweep with an ``s3://`` store: wall time within 1.15x of the same sweep on local disk;
- ``ntkdiv aggregate`` of 2,000 synthetic trials read in place from S3: under 30 s;
- per-trial store traffic: requests by kind and bytes each way, in this doc.

The benchmark starts its own ``weed server`` (random loopback ports, a temporary directory, a
Prometheus metrics port) and stops it by its pid at the end, also on error. Traffic comes from
SeaweedFS's own counters, scraped before and after each measured step. SeaweedFS files a HEAD
under GET; a GET that sent a body also counts a time to first byte, so HEAD = GET - that count.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from core import store as st

from ._common import machine, table

SLOTS = 2  # a local Ray cluster of 2 CPUs, 1 CPU per trial, as bench/sweep.py
BUCKET = "ntkdiv"
SWEEP_GOAL = 1.15  # S3 / local wall time of the smoke sweep
AGGREGATE_GOAL_S = 30.0  # 2,000 trials aggregated from S3
KINDS = ("PUT", "GET", "HEAD", "LIST", "DELETE", "POST")
BUILD_THREADS = 4  # synthetic trials written at once
WEED_START_S = 180.0  # ~5-20 s on an idle machine; more under load


# --- SeaweedFS, its credentials and its counters ---------------------------------------------


@contextlib.contextmanager
def seaweedfs(root: Path) -> Iterator[dict[str, Any]]:
    """A ``weed server`` with its S3 gateway and metrics on free loopback ports under ``root``;
    yields the state dict of ``cluster/_services.py`` (pid in ``state["pids"]["seaweedfs"]``)."""
    from cluster import _procs
    from cluster import _services as svc

    state: dict[str, Any] = {
        "dir": str(root), "ports": svc.pick_ports(), "bucket": BUCKET, "pids": {},
        "s3_access_key": "bench", "s3_secret_key": secrets.token_hex(16),
        "weed_metrics_port": _procs.free_port(),
    }  # fmt: skip
    state["pids"]["seaweedfs"] = svc.spawn_seaweedfs(state)
    try:
        svc.wait_seaweedfs(state, WEED_START_S)
        yield state
    finally:
        _procs.stop(state["pids"]["seaweedfs"])


@contextlib.contextmanager
def aws_env(state: dict[str, Any]) -> Iterator[None]:
    """The AWS variables that point ``core.store.locate("s3://...")`` (and the sweep's workers)
    at this SeaweedFS; the previous values come back on exit."""
    values = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{state['ports']['s3']}",
        "AWS_ACCESS_KEY_ID": state["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": state["s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    names = (*st.AWS_VARIABLES, *values)
    saved = {k: os.environ.get(k) for k in names}
    for k in st.AWS_VARIABLES:  # a user's own S3 settings must not leak into the benchmark
        os.environ.pop(k, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def parse_metrics(text: str) -> dict[str, float]:
    """SeaweedFS's S3 counters from its Prometheus text: requests by type (``GET`` includes
    HEAD), ``GET body`` (GETs that sent a first byte), ``errors`` (5xx), ``not found`` (4xx),
    ``bytes in`` (received from clients) and ``bytes out`` (sent to them)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("SeaweedFS_s3_") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        tags = dict(p.split("=", 1) for p in labels.rstrip("}").split(",") if "=" in p)
        tags = {k: v.strip('"') for k, v in tags.items()}
        key = {
            "SeaweedFS_s3_request_total": tags.get("type"),
            "SeaweedFS_s3_time_to_first_byte_millisecond_count": "GET body",
            "SeaweedFS_s3_bucket_traffic_received_bytes_total": "bytes in",
            "SeaweedFS_s3_bucket_traffic_sent_bytes_total": "bytes out",
        }.get(name)
        if key is None:
            continue
        out[key] = out.get(key, 0.0) + float(value)
        code = tags.get("code", "")
        if name == "SeaweedFS_s3_request_total" and code[:1] in ("4", "5"):
            label = "errors" if code[0] == "5" else "not found"
            out[label] = out.get(label, 0.0) + float(value)
    return out


def scrape(state: dict[str, Any]) -> dict[str, float]:
    """The current counters of this SeaweedFS (see :func:`parse_metrics`)."""
    url = f"http://127.0.0.1:{state['weed_metrics_port']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        return parse_metrics(resp.read().decode())


def per_trial(before: dict[str, float], after: dict[str, float], trials: int) -> dict[str, float]:
    """Requests of each kind (HEAD split out of GET), 4xx/5xx answers and bytes each way, per
    trial, between two scrapes."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}
    get, body = d.get("GET", 0.0), d.get("GET body", 0.0)
    counts = {k: d.get(k, 0.0) for k in KINDS}
    counts.update({"GET": body, "HEAD": get - body})
    row = {**counts, "requests": sum(counts.values())}
    row.update({k: d.get(k, 0.0) for k in ("not found", "errors", "bytes in", "bytes out")})
    return {k: v / trials for k, v in row.items()}


# --- 1. the smoke sweep, S3 against local ----------------------------------------------------


@dataclass
class SweepRuns:
    """Wall times (s, Ray start included) of the smoke sweep by store, and the S3 runs'
    per-trial traffic."""

    walls: dict[str, list[float]] = field(default_factory=lambda: {"local": [], "s3": []})
    traffic: list[dict[str, float]] = field(default_factory=list)
    trials: int = 0
    summaries: list[int] = field(default_factory=list)  # trials with summary.json, per S3 run


def _smoke_once(raw: dict[str, Any], storage: str, db: Path) -> tuple[float, st.StorePath, int]:
    """One smoke sweep into ``storage``, MLflow to a new sqlite file: (wall s, sweep dir,
    trials)."""
    from sweep import parse_spec, run_sweep

    mlflow = {"tracking_uri": f"sqlite:///{db}", "enabled": True, "experiment": db.stem}
    res = run_sweep(parse_spec({**raw, "storage": storage, "mlflow": mlflow}), num_cpus=SLOTS,
                    quiet=True)  # fmt: skip
    if res.tracking is not None:
        res.tracking.finish()
    assert res.exit_code == 0, f"benchmark sweep into {storage} failed: {res.failed}"
    return res.wall_s, st.locate(res.sweep_dir), res.counts.total


def smoke_sweeps(root: Path, state: dict[str, Any], repeats: int) -> SweepRuns:
    """The smoke sweep ``repeats`` times on each store, in the order S3, local, local, S3, ...
    (so neither store always goes first), each into a fresh directory or prefix."""
    import mlflow  # noqa: F401  imported once here, not inside the first timed sweep
    import ray  # noqa: F401

    from .sweep import _smoke

    raw, runs = _smoke(), SweepRuns()
    order = [("s3", "local") if i % 2 == 0 else ("local", "s3") for i in range(repeats)]
    for i, pair in enumerate(order):
        for kind in pair:
            tag = f"{kind}-{i}"
            if kind == "local":
                wall, _, n = _smoke_once(raw, str(root / tag), root / f"{tag}.db")
            else:
                before = scrape(state)
                storage = f"s3://{BUCKET}/bench-{time.time_ns()}/{tag}"
                wall, sweep_dir, n = _smoke_once(raw, storage, root / f"{tag}.db")
                runs.traffic.append(per_trial(before, scrape(state), n))
                files = st.trial_files(sweep_dir)
                runs.summaries.append(sum(st.SUMMARY in f for f in files.values()))
            runs.walls[kind].append(wall)
            runs.trials = n
            _say(f"smoke sweep, {kind} store: {wall:.1f} s")
    return runs


# --- 2. aggregate of synthetic trials, S3 against local ---------------------------------------

_CHILD = """
import sys, time
from bench._common import peak_rss_bytes
t0 = time.perf_counter()
import dashboards
t1, c1 = time.perf_counter(), time.process_time()
res = dashboards.aggregate(sys.argv[1], sys.argv[2])
t2, c2 = time.perf_counter(), time.process_time()
open(sys.argv[3], "w").write(res.verdict_text)
rss = peak_rss_bytes() / 2**20
tm = res.timings
print(f"{t2 - t1:.3f} {c2 - c1:.3f} {tm.get('read', 0):.3f} {tm.get('trials', 0):.3f} {rss:.1f} "
      f"{len(res.trials)}")
"""


def aggregate_in_child(sweep: str, out: Path) -> dict[str, Any]:
    """``dashboards.aggregate(sweep, out)`` with figures, as ``ntkdiv aggregate`` runs it, in a
    fresh process (this one's environment, so its AWS variables and thread count)."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, sweep, str(out), str(out) + ".txt"],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"aggregate of {sweep} failed:\n{proc.stderr[-3000:]}")
    s, cpu, read, trial_pass, rss, n = proc.stdout.split()[-6:]
    return {"aggregate s": float(s), "CPU s": float(cpu), "read s": float(read),
            "trial pass s": float(trial_pass),
            "peak RSS MiB": float(rss), "trials": int(n),
            "verdict": Path(str(out) + ".txt").read_text()}  # fmt: skip


def _build(where: st.StorePath, n_trials: int) -> tuple[int, float]:
    """Write the synthetic trials of ``bench/aggregate.py`` into ``where`` with its own writer,
    ``BUILD_THREADS`` trials at a time (an S3 upload mostly waits): (trials, seconds)."""
    from .aggregate import bench_groups, write_trial

    jobs = [(g, m, s) for g in bench_groups(n_trials) for m in g.widths for s in g.seeds]
    t0 = time.perf_counter()
    where.mkdir()
    # write_trial goes through core/store/, which takes a StorePath wherever it takes a Path
    with ThreadPoolExecutor(BUILD_THREADS) as pool:
        ids = list(pool.map(lambda job: write_trial(cast(Path, where), *job), jobs))
    return len(set(ids)), time.perf_counter() - t0


def aggregates(root: Path, state: dict[str, Any], n_trials: int, repeats: int) -> dict[str, Any]:
    """The same synthetic trials on local disk and in S3, each aggregated ``repeats`` times
    (S3, local, local, S3, ...): one row per store of medians, and the S3 reads' traffic."""
    places = {"local": st.locate(root / "synthetic"),
              "s3": st.locate(f"s3://{BUCKET}/bench-{time.time_ns()}/synthetic")}  # fmt: skip
    built = {kind: _build(where, n_trials) for kind, where in places.items()}
    _say(
        f"{n_trials} synthetic trials written: "
        + ", ".join(f"{k} {b[1]:.1f} s" for k, b in built.items())
    )
    runs: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
    traffic = []
    for i in range(repeats):
        for kind in ("s3", "local") if i % 2 == 0 else ("local", "s3"):
            before = scrape(state)
            runs[kind].append(aggregate_in_child(str(places[kind]), root / f"report-{kind}-{i}"))
            _say(f"aggregate, {kind} store: {runs[kind][-1]['aggregate s']:.1f} s")
            if kind == "s3":
                traffic.append(per_trial(before, scrape(state), built[kind][0]))
    rows = {kind: {"trials": built[kind][0], "build s": built[kind][1],
                   **{k: statistics.median(r[k] for r in rs) for k in
                      ("aggregate s", "CPU s", "read s", "trial pass s", "peak RSS MiB")},
                   "same verdicts": all(r["verdict"] == runs["local"][0]["verdict"] for r in rs)}
            for kind, rs in runs.items()}  # fmt: skip
    return {"rows": rows, "traffic": _median_rows(traffic), "repeats": repeats}


# --- the benchmark ----------------------------------------------------------------------------


def _say(text: str) -> None:
    print(f"  store: {text}", file=sys.stderr, flush=True)


def _median_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


@contextlib.contextmanager
def _terminate_raises() -> Iterator[None]:
    """SIGTERM (``timeout``, a CI runner) raises SystemExit, so SeaweedFS is still stopped."""

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def measure(root: Path, repeats: int, n_trials: int, agg_repeats: int) -> dict[str, Any]:
    """Every figure of the benchmark, with SeaweedFS started under ``root`` and stopped after."""
    load = [os.getloadavg()[0]]
    with _terminate_raises(), seaweedfs(root / "weed") as state, aws_env(state):
        t0 = time.perf_counter()
        sweeps = smoke_sweeps(root / "sweeps", state, repeats)
        sweep_s = time.perf_counter() - t0
        agg = aggregates(root / "aggregate", state, n_trials, agg_repeats)
    local, s3 = (statistics.median(sweeps.walls[k]) for k in ("local", "s3"))
    return {"sweeps": sweeps, "local s": local, "s3 s": s3, "ratio": s3 / local,
            "sweep traffic": _median_rows(sweeps.traffic), "aggregate": agg,
            "bench sweeps s": sweep_s, "weed pid": state["pids"]["seaweedfs"],
            "load": [*load, os.getloadavg()[0]]}  # fmt: skip


def goals(result: dict[str, Any], n_trials: int) -> dict[str, bool | None]:
    """Each goal of the module docstring: met, not met, or None (aggregate goal at another
    size than 2,000 trials: not judged)."""
    s3 = result["aggregate"]["rows"]["s3"]
    judged = s3["trials"] >= 2000 and n_trials >= 2000
    return {"sweep": result["ratio"] <= SWEEP_GOAL,
            "aggregate": (s3["aggregate s"] < AGGREGATE_GOAL_S) if judged else None}  # fmt: skip


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    # full: ~10 min on 2 busy cores, most of it the six smoke sweeps
    repeats, n_trials, agg_repeats = (1, 200, 1) if quick else (3, 2000, 1)
    with tempfile.TemporaryDirectory(prefix="ntkdiv-bench-store-") as tmp:
        result = measure(Path(tmp), repeats, n_trials, agg_repeats)
    return section(result, goals(result, n_trials))


def _fmt_traffic(sweep: dict[str, float], agg: dict[str, float]) -> str:
    keys = [*KINDS, "requests", "not found", "errors"]
    rows = [[k, f"{sweep[k]:.1f}", f"{agg[k]:.2f}"] for k in keys]
    rows += [[f"KiB {k[6:]}", f"{sweep[k] / 1024:.1f}", f"{agg[k] / 1024:.1f}"]
             for k in ("bytes in", "bytes out")]  # fmt: skip
    return table(["per trial", "smoke sweep (write, run, log)", "aggregate (read)"], rows)


def _runs(n: int) -> str:
    return "one run each" if n == 1 else f"medians of {n} alternated runs each"


def section(result: dict[str, Any], met: dict[str, bool | None]) -> str:
    """The Markdown section of docs/performance.md for ``result``."""
    word = {True: "met", False: "NOT met", None: "not judged (fewer than 2,000 trials)"}
    sweeps, agg = result["sweeps"], result["aggregate"]
    walls = [[k, len(w), statistics.median(w), " / ".join(f"{x:.1f}" for x in w)]
             for k, w in sweeps.walls.items()]  # fmt: skip
    rows = agg["rows"]
    keys = ["trials", "build s", "aggregate s", "CPU s", "read s", "trial pass s", "peak RSS MiB",
            "same verdicts"]  # fmt: skip
    agg_rows = [[k, *(r[h] for h in keys)] for k, r in rows.items()]
    head = ["store", *keys[:-1], "verdicts equal local's"]
    s3_agg = rows["s3"]["aggregate s"]
    return "\n".join([
        "## Store on S3 (`ntkdiv bench store`)", "",
        f"{machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. S3 is a "
        "SeaweedFS `weed server` that the benchmark starts on 127.0.0.1 (one process: master, "
        "volume, filer, S3 gateway, on this machine's disk), so the figures show the store's "
        "request pattern and client cost, not a network's latency. The machine is shared: "
        f"1-minute load average {result['load'][0]:.1f} at the start, {result['load'][1]:.1f} "
        "at the end.", "",
        f"Smoke sweep (`sweeps/smoke.yaml`, {sweeps.trials} trials, local Ray of {SLOTS} CPUs, "
        "MLflow to a new sqlite file each run), run through `run_sweep` in one process, "
        "alternating stores (S3, local, local, S3, ...), each run into a fresh directory or "
        "prefix; wall s includes Ray's start:", "",
        table(["store", "runs", "median wall s", "each run s"], walls), "",
        f"- Goal S3 / local <= {SWEEP_GOAL}: {word[met['sweep']]} ({result['ratio']:.3f}x).", "",
        f"Aggregate (`dashboards.aggregate` with figures, as `ntkdiv aggregate` runs it, in a "
        f"fresh process; {_runs(agg['repeats'])}) of the synthetic "
        "trials of `ntkdiv bench aggregate`, written through `core/store/` once to local disk "
        "and once to S3, read in place. read s: the listing, every summary and config, the "
        "trajectories' schema; trial pass s: the trajectories, one trial at a time:", "",
        table(head, agg_rows), "",
        f"- Goal 2,000 trials from S3 in < {AGGREGATE_GOAL_S:.0f} s: {word[met['aggregate']]} "
        f"({s3_agg:.1f} s; {s3_agg / rows['local']['aggregate s']:.2f}x local).", "",
        "Store traffic per trial, from SeaweedFS's own Prometheus counters scraped before and "
        "after (medians over the S3 runs above). SeaweedFS counts a HEAD as a GET; GET here is "
        "the GETs that sent a body, HEAD the rest. `not found` are 4xx answers (a probe for a "
        "file not yet there: a HEAD, then a LIST); pyarrow reads an object with a HEAD (its size) "
        "then a GET, but the aggregator opens trajectory files with the size the listing gave "
        "(no HEAD); bytes are object bodies, without headers. "
        "The sweep's column covers `run_sweep` (write probe, trials with checkpoints, attempts, "
        "the driver's MLflow logging of each trial), not the report:", "",
        _fmt_traffic(result["sweep traffic"], agg["traffic"]),
    ])  # fmt: skip
