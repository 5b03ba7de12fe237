"""``ntkdiv bench store``: traffic arithmetic, goals, and a reduced run on a real SeaweedFS."""

from __future__ import annotations

import pytest

from bench import store as bench_store

METRICS = """\
# HELP SeaweedFS_s3_request_total Counter of s3 requests.
SeaweedFS_s3_request_total{bucket="ntkdiv",code="200",type="PUT"} 10
SeaweedFS_s3_request_total{bucket="ntkdiv",code="200",type="GET"} 6
SeaweedFS_s3_request_total{bucket="ntkdiv",code="206",type="GET"} 4
SeaweedFS_s3_request_total{bucket="ntkdiv",code="404",type="GET"} 2
SeaweedFS_s3_request_total{bucket="ntkdiv",code="200",type="LIST"} 3
SeaweedFS_s3_request_total{bucket="ntkdiv",code="503",type="PUT"} 1
SeaweedFS_s3_time_to_first_byte_millisecond_count{bucket="ntkdiv",type="GET"} 4
SeaweedFS_s3_bucket_traffic_received_bytes_total{bucket="ntkdiv"} 5000
SeaweedFS_s3_bucket_traffic_sent_bytes_total{bucket="ntkdiv"} 800
SeaweedFS_s3_request_seconds_count{bucket="ntkdiv",type="GET"} 12
"""


def test_metrics_are_read_by_kind_with_heads_split_out_of_gets():
    after = bench_store.parse_metrics(METRICS)
    assert after["PUT"] == 11 and after["GET"] == 12 and after["GET body"] == 4
    assert after["not found"] == 2 and after["errors"] == 1
    row = bench_store.per_trial({}, after, trials=2)
    assert row["GET"] == 2 and row["HEAD"] == 4 and row["PUT"] == 5.5 and row["LIST"] == 1.5
    assert row["requests"] == pytest.approx(2 + 4 + 5.5 + 1.5)
    assert row["bytes in"] == 2500 and row["bytes out"] == 400


def test_goals_follow_the_figures():
    result = {"ratio": 1.1, "aggregate": {"rows": {"s3": {"trials": 2000, "aggregate s": 20.0}}}}
    assert bench_store.goals(result, 2000) == {"sweep": True, "aggregate": True}
    result["ratio"] = 1.2
    result["aggregate"]["rows"]["s3"]["aggregate s"] = 31.0
    assert bench_store.goals(result, 2000) == {"sweep": False, "aggregate": False}
    assert bench_store.goals(result, 200)["aggregate"] is None  # not judged below 2,000 trials


def test_sigterm_during_the_benchmark_raises_so_seaweedfs_is_stopped():
    import os
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit), bench_store._terminate_raises():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_reduced_run_measures_both_stores_and_the_traffic(tmp_path):
    from cluster._procs import alive

    result = bench_store.measure(tmp_path, repeats=1, n_trials=200, agg_repeats=1)
    sweeps, agg = result["sweeps"], result["aggregate"]
    assert not alive(result["weed pid"])  # stopped by its pid
    assert sweeps.trials == 8 and sweeps.summaries == [8]  # summary.json for every trial in S3
    assert all(len(w) == 1 and w[0] > 0 for w in sweeps.walls.values())
    assert result["ratio"] == pytest.approx(result["s3 s"] / result["local s"])
    sweep = result["sweep traffic"]
    assert sweep["requests"] > 0 and sweep["PUT"] >= 3 and sweep["bytes in"] > 0
    assert sweep["errors"] == 0
    rows = agg["rows"]
    assert rows["s3"]["trials"] == rows["local"]["trials"] == 200
    assert rows["s3"]["same verdicts"] and rows["local"]["same verdicts"]
    assert agg["traffic"]["GET"] >= 1 and agg["traffic"]["bytes out"] > 0
    assert agg["traffic"]["PUT"] == 0  # aggregate reads the store in place, writes nothing there
    text = bench_store.section(result, bench_store.goals(result, 200))
    assert "not judged" in text and "| PUT |" in text
