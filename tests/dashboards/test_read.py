"""Reading stores: bad input, schema conflicts, streaming one trial at a time."""

from __future__ import annotations

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


def _one_partition(sweep: Path, kind: str) -> Path:
    return sorted((sweep / "dataset" / kind).glob("trial_id=*/part-0.parquet"))[0]


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
    part = _one_partition(sweep, "trajectory")
    table = pq.read_table(part)
    bad = table.set_column(table.schema.get_field_index("drift"), "drift",
                           pa.array([str(v) for v in table["drift"].to_pylist()]))  # fmt: skip
    store.write_table(part, bad)
    with pytest.raises(DataError, match="incompatible schemas: column 'drift'"):
        dashboards.aggregate(sweep, figures=False)


def test_summary_key_with_two_types_is_a_data_error(tmp_path):
    sweep = _small(tmp_path / "s")
    part = _one_partition(sweep, "summary")
    table = pq.read_table(part)
    i = table.schema.get_field_index("model.width")
    store.write_table(part, table.set_column(i, "model.width", pa.array(["wide"])))
    with pytest.raises(DataError, match="'model.width'"):
        dashboards.aggregate(sweep, figures=False)


def test_none_valued_config_field_with_two_types_is_repaired(tmp_path):
    # core.store.summary_row writes a None config value as the string "null"
    sweep = _small(tmp_path / "s")
    part = _one_partition(sweep, "summary")
    table = pq.read_table(part)
    i = table.schema.get_field_index("track.ntk_block")
    store.write_table(part, table.set_column(i, "track.ntk_block", pa.array([64])))
    result = dashboards.aggregate(sweep, figures=False)
    assert result.verdict["n_seeds"].sum() == 4


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


def test_corrupt_parquet_file_is_a_data_error(tmp_path):
    sweep = _small(tmp_path / "s")
    _one_partition(sweep, "trajectory").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="unreadable file"):
        dashboards.aggregate(sweep, figures=False)
