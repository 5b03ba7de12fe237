"""``ntkdiv aggregate`` (ntkdiv/_commands.py): the console script end to end, its one-line errors,
and the report logged to MLflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bench.aggregate import SyntheticGroup, write_sweep
from core import store
from ntkdiv.cli import main
from tests.conftest import free_port

NTKDIV = Path(sys.executable).with_name("ntkdiv")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run([str(NTKDIV), "aggregate", *args], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip


def _sweep(path: Path, **kw) -> Path:
    write_sweep(path, [SyntheticGroup(widths=(64, 256), seeds=(0, 1), epochs=200,
                                      log_points=30, **kw)])  # fmt: skip
    return path


def test_storage_root_aggregates_each_sweep(tmp_path):
    _sweep(tmp_path / "root" / "ce")
    _sweep(tmp_path / "root" / "mse", loss="mse", lr=0.02)
    proc = _run(str(tmp_path / "root"))
    assert proc.returncode == 0, proc.stderr
    assert "== sweep ce" in proc.stdout and "== sweep mse" in proc.stdout
    assert (tmp_path / "root" / "ce" / "report" / "verdict.parquet").is_file()
    assert (tmp_path / "root" / "mse" / "report" / "verdict.parquet").is_file()


def _one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ntkdiv: error:"), proc.stderr
    for w in words:
        assert w in lines[0]


def test_not_a_store_exits_2_with_one_line(tmp_path, capsys):
    _one_line_error(_run(str(tmp_path / "missing")), "does not exist")  # the console script
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    code = main(["aggregate", str(tmp_path / "plain")])  # in this process: the same main
    got = subprocess.CompletedProcess([], code, *capsys.readouterr())
    _one_line_error(got, "not a sweep store")
    assert not (tmp_path / "plain" / "report").exists()


def test_mixed_schemas_exit_2_with_one_line(tmp_path):
    sweep = _sweep(tmp_path / "s")
    part = list(store.trajectory_files(sweep))[-1]
    table = pq.read_table(part)
    i = table.schema.get_field_index("t")
    store.write_table(part, table.set_column(i, "t", pa.array([str(v) for v in table["t"]])))
    _one_line_error(_run(str(sweep)), "incompatible schemas", "'t'")
    shutil.rmtree(sweep)


def test_aggregate_prints_verdicts_and_attaches_the_report_to_the_parent_run(
    tmp_path, mlflow_server
):
    from mlflow import MlflowClient

    sweep = _sweep(tmp_path / f"agg-{uuid.uuid4().hex[:8]}")
    store.atomic_write_text(sweep / "spec.yaml", f"name: {sweep.name}\nexperiment: {sweep.name}\n")
    proc = _run(str(sweep), "--out", str(tmp_path / "out"), "--tracking-uri", mlflow_server)
    assert proc.returncode == 0, proc.stderr
    assert "exceeds-by-training" in proc.stdout and "Conclusions:" in proc.stdout
    assert (tmp_path / "out" / "report.html").is_file()
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(sweep.name)
    runs = client.search_runs([exp.experiment_id], f"tags.`ntkdiv.sweep` = '{sweep.name}'")
    assert len(runs) == 1 and runs[0].data.tags["ntkdiv.role"] == "parent"
    files = {a.path for a in client.list_artifacts(runs[0].info.run_id, "report")}
    assert {"report/report.html", "report/verdict.parquet", "report/fits.parquet"} <= files
    assert "exceeds-by-training" in runs[0].data.tags["ntkdiv.verdict"]


def test_unreachable_tracking_server_keeps_the_report_and_exits_3(tmp_path):
    sweep = _sweep(tmp_path / "s")
    proc = _run(str(sweep), "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert proc.returncode == 3 and "unreachable" in proc.stderr
    assert (sweep / "report" / "report.html").is_file()
