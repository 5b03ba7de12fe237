"""Reading stores: bad input, schema conflicts, streaming one trial at a time."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dashboards
from bench.aggregate import SyntheticGroup, write_sweep
from core import DataError, store
from dashboards._read import find_sweeps, iter_trajectories, open_store


def _small(path: Path, **kw) -> Path:
    write_sweep(path, [SyntheticGroup(widths=(64, 128), seeds=(0, 1), epochs=100,
                                      log_points=20, **kw)])  # fmt: skip
    return path


def _one_trajectory(sweep: Path) -> Path:
    return Path(next(iter(store.trajectory_files(sweep))))


def test_not_a_store_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        dashboards.aggregate(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a sweep store"):
        find_sweeps(tmp_path / "empty")
    with pytest.raises(DataError, match="not a sweep store"):
        dashboards.aggregate(tmp_path / "empty")


def test_storage_root_lists_its_sweeps(tmp_path):
    _small(tmp_path / "root" / "a")
    _small(tmp_path / "root" / "b", loss="mse", lr=0.02)
    assert [p.name for p in find_sweeps(tmp_path / "root")] == ["a", "b"]


def test_trajectories_stream_one_trial_at_a_time(tmp_path):
    sweep = _small(tmp_path / "s")
    st = open_store(sweep)
    seen = [tid for tid, cols in iter_trajectories(st.trajectory) if (cols["t"][1:] > 0).all()]
    assert sorted(seen) == sorted(st.summary["trial_id"]) and len(set(seen)) == 4


def test_mixed_incompatible_schemas_are_a_data_error(tmp_path):
    sweep = _small(tmp_path / "s")
    part = _one_trajectory(sweep)
    table = pq.read_table(part)
    bad = table.set_column(table.schema.get_field_index("drift"), "drift",
                           pa.array([str(v) for v in table["drift"].to_pylist()]))  # fmt: skip
    store.write_table(part, bad)
    with pytest.raises(DataError, match="incompatible schemas: column 'drift'"):
        dashboards.aggregate(sweep, figures=False)


def test_key_column_that_is_not_a_number_is_a_data_error(tmp_path):
    sweep = _small(tmp_path / "s")
    config = store.trial_dirs(sweep)[0] / "config.yaml"
    config.write_text(re.sub(r"width: \d+", "width: wide", config.read_text()))
    with pytest.raises(DataError, match="'model.width' of trial .* is 'wide'"):
        dashboards.aggregate(sweep, figures=False)


def test_config_field_none_in_one_trial_and_set_in_another_reads(tmp_path):
    sweep = _small(tmp_path / "s")
    config = store.trial_dirs(sweep)[0] / "config.yaml"
    text = config.read_text()
    assert "ntk_block: null" in text
    config.write_text(text.replace("ntk_block: null", "ntk_block: 64"))
    st = open_store(sweep)
    assert sorted(st.summary["track.ntk_block"].dropna()) == [64]
    result = dashboards.aggregate(sweep, figures=False)
    assert result.verdict["n_seeds"].sum() == 4


def test_summary_rows_are_typed_and_read_where_written(tmp_path):
    sweep = _small(tmp_path / "s")
    assert not (sweep / "dataset").exists()  # nothing is copied
    st = open_store(sweep)
    assert st.summary["drift_sup"].dtype == float and str(st.summary["steps"].dtype) == "Int64"
    assert st.summary["model.width"].dtype.kind == "i"


def test_unpublished_trial_without_config_is_still_listed(tmp_path):
    sweep = _small(tmp_path / "s")
    (sweep / "trials" / "deadbeefdeadbeef").mkdir()
    shutil.rmtree(sweep / "report", ignore_errors=True)
    result = dashboards.aggregate(sweep, figures=False)
    lost = result.trials[result.trials["trial_id"] == "deadbeefdeadbeef"]
    assert list(lost["status"]) == ["missing"]


def test_sweep_without_readable_trials_is_a_data_error(tmp_path):
    (tmp_path / "s" / "trials").mkdir(parents=True)
    with pytest.raises(DataError, match="no trials yet"):
        dashboards.aggregate(tmp_path / "s")
    (tmp_path / "s" / "trials" / "0123456789abcdef").mkdir()
    with pytest.raises(DataError, match="none with a readable config"):
        dashboards.aggregate(tmp_path / "s")


def test_corrupt_parquet_file_is_skipped_with_a_warning(tmp_path, capsys):
    sweep = _small(tmp_path / "s")
    part = _one_trajectory(sweep)
    part.write_bytes(b"not parquet at all")
    result = dashboards.aggregate(sweep, figures=False)
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert f"corrupt {part} (" in line and "skipped" in line
    assert part.read_bytes() == b"not parquet at all"  # a reader moves nothing
    assert part.parent.name in set(result.trials["trial_id"])
