"""Reading a sweep store: the summary rows, the trials that never published, the trajectories.

The store layout is the one in ``core/store.py``'s docstring. The sweep dataset is read with
``pyarrow.dataset`` (hive partitioning on ``trial_id``), with projection and filters:
- the summary rows (one per trial) are read whole: they are small;
- the trajectories are streamed one trial at a time, scalar columns only, so memory does not grow
  with the number of trials;
- the dense columns (``f``, ``kernel``) are read only for the few trials a figure shows.

Files are scanned in chunks, each through a fresh ``pyarrow.dataset`` that is dropped after use:
a dataset's fragments keep every Parquet footer they have read (about 130 kB per 50-column
summary file), so one long-lived dataset over 10,000 trials would grow by over a gigabyte.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import yaml

from core import DataError
from core.store import read_json, trajectory_meta

# trial ids are hex digits; an explicit string type stops "0123..." from being read as an integer
PARTITIONING = ds.partitioning(pa.schema([("trial_id", pa.string())]), flavor="hive")
# the scalar trajectory columns the per-trial pass needs (never the list columns)
SCALAR_COLUMNS = ("t", "drift", "gap", "lambda_min", "theta_inf", "f_abs_min", "loss", "flips")
# config columns that define groups and rows: a type conflict there is never repaired
KEY_COLUMNS = ("model.arch", "model.depth", "model.width", "train.loss", "train.lr",
               "data.kind", "data.n", "seed", "dtype")  # fmt: skip
USABLE = ("completed", "overflow")  # statuses whose trajectories count
CHUNK = 256  # files per scanned dataset: bounds the footers held at once


@dataclass(frozen=True)
class Parquet:
    """A hive-partitioned dataset on disk: its unified schema and its files, read in chunks."""

    root: Path
    schema: pa.Schema
    files: tuple[str, ...]

    def dataset(self, files: list[str] | tuple[str, ...]) -> ds.Dataset:
        """A short-lived ``pyarrow.dataset`` over some of the files (drop it after use)."""
        return ds.dataset(list(files), schema=self.schema, format="parquet",
                          partitioning=PARTITIONING, partition_base_dir=str(self.root))  # fmt: skip

    def chunks(self) -> Iterator[ds.Dataset]:
        for i in range(0, len(self.files), CHUNK):
            yield self.dataset(self.files[i : i + CHUNK])

    def trial(self, trial_id: str) -> ds.Dataset:
        """The dataset of one trial's partition."""
        mark = f"trial_id={trial_id}/"
        return self.dataset([f for f in self.files if mark in f])


@dataclass(frozen=True)
class SweepStore:
    """What the aggregator reads from one sweep directory.

    Attributes:
        sweep_dir: ``<storage>/<sweep>``.
        summary: one row per published trial (summary keys + dotted config columns + trial_id).
        unpublished: trial directories with no summary row (failed, running or lost), with
            ``trial_id``, ``status``, ``error`` and the config columns read from config.yaml.
        trajectory: the trajectory dataset, or None when no trial published one.
    """

    sweep_dir: Path
    summary: pd.DataFrame
    unpublished: pd.DataFrame
    trajectory: Parquet | None


def is_sweep_dir(path: Path) -> bool:
    return (path / "dataset" / "summary").is_dir() or (path / "trials").is_dir()


def find_sweeps(path: Path) -> list[Path]:
    """``path`` itself if it is a sweep directory, else the sweep directories just below it.

    Raises:
        DataError: the path does not exist or holds no sweep.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"store path {path} does not exist or is not a directory")
    if is_sweep_dir(path):
        return [path]
    sweeps = sorted(p for p in path.iterdir() if p.is_dir() and is_sweep_dir(p))
    if not sweeps:
        raise DataError(
            f"{path} is not a sweep store: no dataset/summary/ or trials/ in it or in its "
            "subdirectories; pass <storage>/<sweep> as written by 'ntkdiv sweep'"
        )
    return sweeps


def _factory(root: Path) -> ds.FileSystemDatasetFactory:
    options = ds.FileSystemFactoryOptions(partitioning=PARTITIONING, partition_base_dir=str(root))
    selector = pafs.FileSelector(str(root), recursive=True)
    return ds.FileSystemDatasetFactory(pafs.LocalFileSystem(), selector, ds.ParquetFileFormat(),
                                       options)  # fmt: skip


def _conflicts(root: Path) -> dict[str, set[str]]:
    """Field name -> the distinct types it has across the fragments under ``root``."""
    types: dict[str, set[str]] = {}
    for frag in ds.dataset(str(root), format="parquet", partitioning=PARTITIONING).get_fragments():
        for f in frag.physical_schema:
            types.setdefault(f.name, set()).add(str(f.type))
    return {name: t for name, t in types.items() if len(t - {"null"}) > 1}


def _repaired_schema(root: Path, kind: str, err: Exception) -> pa.Schema:
    """Unify a summary dataset whose only conflicts are in non-key config columns.

    ``core.store.summary_row`` writes a None config value as the string "null", so a config
    field that is None in one trial and an int in another (``track.ntk_block``) has two types.
    Such columns are read as strings; a conflict anywhere else is an incompatible store.
    """
    bad = _conflicts(root)
    fatal = {k: v for k, v in bad.items() if kind != "summary" or "." not in k or k in KEY_COLUMNS}
    if fatal or not bad:
        name, types = next(iter(fatal.items())) if fatal else ("?", {str(err)})
        raise DataError(
            f"{root} mixes incompatible schemas: column '{name}' has types "
            f"{' and '.join(sorted(types))}; rewrite the odd trials (ntkdiv sweep reruns them) "
            "or aggregate the sweeps separately"
        )
    schema = _factory(root).inspect(promote_options="permissive", fragments=1)
    fields = {f.name: f for f in schema}
    for name in bad:
        fields[name] = pa.field(name, pa.string())
    for frag in ds.dataset(str(root), format="parquet", partitioning=PARTITIONING).get_fragments():
        for f in frag.physical_schema:
            fields.setdefault(f.name, f)
    return pa.schema(list(fields.values()))


def open_dataset(root: Path, kind: str) -> Parquet | None:
    """The hive-partitioned dataset under ``root`` with a schema unified over every fragment.

    Types are promoted where that is lossless (int -> double, null -> anything); incompatible
    types raise :class:`DataError`. Returns None when ``root`` holds no Parquet file.
    """
    if not root.is_dir():
        return None
    factory = _factory(root)
    try:
        schema = factory.inspect(promote_options="permissive")
    except pa.ArrowTypeError as err:
        schema = _repaired_schema(root, kind, err)
    except (pa.ArrowInvalid, OSError) as err:  # not Parquet, truncated, unreadable
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{kind} dataset under {root} has an unreadable file: {first}") from None
    files = tuple(sorted(factory.finish(schema).files))
    return Parquet(root, schema, files) if files else None


def read_summary(data: Parquet | None) -> pd.DataFrame:
    """Every summary row as a DataFrame (one row per trial)."""
    if data is None:
        return pd.DataFrame({"trial_id": pd.Series([], dtype=str)})

    def read(chunk: ds.Dataset) -> pa.Table:  # combined, so 1-row chunks do not pile up
        return chunk.to_table(use_threads=False).combine_chunks()

    try:  # footer parsing dominates for 1-row files: two chunks at a time, one thread each
        with ThreadPoolExecutor(2) as pool:
            tables = list(pool.map(read, data.chunks()))
    except (pa.ArrowTypeError, pa.ArrowInvalid) as err:
        raise DataError(f"summary dataset unreadable: {str(err).splitlines()[0]}") from None
    return pa.concat_tables(tables).to_pandas()


def _unpublished_row(tdir: Path) -> dict:
    """Status, error and flattened config of a trial directory that has no summary row."""
    row: dict = {"trial_id": tdir.name, "status": "missing", "error": None}
    if (tdir / "summary.json").exists():
        summary = read_json(tdir / "summary.json")
        row["status"] = str(summary.get("status") or "unknown")
        row["error"] = summary.get("error")
    if (tdir / "config.yaml").exists():
        raw = yaml.safe_load((tdir / "config.yaml").read_text()) or {}
        row.update(_flatten(raw))
    return row


def _encode(value):
    """A config value as ``core.store.summary_row`` stores it (lists, dicts, None as JSON)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) or value is None else value


def _flatten(node: dict, prefix: str = "") -> dict:
    out: dict = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = _encode(value)
    return out


def read_unpublished(sweep_dir: Path, published: set[str]) -> pd.DataFrame:
    """Trial directories under ``<sweep>/trials`` that have no summary row in the dataset."""
    trials = sweep_dir / "trials"
    dirs = sorted(p for p in trials.iterdir() if p.is_dir()) if trials.is_dir() else []
    rows = [_unpublished_row(p) for p in dirs if p.name not in published]
    return pd.DataFrame(rows) if rows else pd.DataFrame({"trial_id": pd.Series([], dtype=str)})


def open_store(sweep_dir: Path) -> SweepStore:
    """Open one sweep directory (see :func:`find_sweeps` for storage roots)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(f"store path {sweep_dir} does not exist or is not a directory")
    if not is_sweep_dir(sweep_dir):
        raise DataError(f"{sweep_dir} is not a sweep store: it has no dataset/summary/ or trials/")
    summary = read_summary(open_dataset(sweep_dir / "dataset" / "summary", "summary"))
    unpublished = read_unpublished(sweep_dir, set(summary["trial_id"]))
    trajectory = open_dataset(sweep_dir / "dataset" / "trajectory", "trajectory")
    if trajectory is not None:
        missing = [c for c in ("t", "drift") if c not in trajectory.schema.names]
        if missing:
            raise DataError(f"trajectory dataset of {sweep_dir} has no column '{missing[0]}'")
    return SweepStore(sweep_dir, summary, unpublished, trajectory)


def iter_trajectories(
    data: Parquet, columns: tuple[str, ...] = SCALAR_COLUMNS
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Yield (trial_id, {column: (k,) float64 array}) one trial at a time, rows sorted by t.

    Batches come in fragment order and a fragment is one trial's partition, so a trial is
    complete when the fragment changes. Null entries become NaN. Columns absent from the
    dataset come back as NaN arrays.
    """
    present = [c for c in columns if c in data.schema.names]
    for chunk in data.chunks():
        yield from _trials_of(chunk.scanner(columns=present, use_threads=True), columns)


def _trials_of(scanner: ds.Scanner, columns: tuple[str, ...]):
    pending: list[pa.RecordBatch] = []
    current: str | None = None
    try:
        for tagged in scanner.scan_batches():
            tid = ds.get_partition_keys(tagged.fragment.partition_expression)["trial_id"]
            if tid != current and pending:
                yield current, _columns(pending, columns)
                pending = []
            current = tid
            pending.append(tagged.record_batch)
    except (pa.ArrowTypeError, pa.ArrowInvalid) as err:
        raise DataError(f"trajectory dataset unreadable: {str(err).splitlines()[0]}") from None
    if pending:
        yield current, _columns(pending, columns)


def _columns(batches: list[pa.RecordBatch], columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    table = pa.Table.from_batches(batches)
    out = {}
    for name in columns:
        if name in table.column_names:
            col = table[name].cast(pa.float64())
            out[name] = col.to_numpy(zero_copy_only=False)
        else:
            out[name] = np.full(table.num_rows, np.nan)
    order = np.argsort(out["t"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def dense_trajectory(data: Parquet, trial_id: str) -> tuple[dict[str, np.ndarray], list]:
    """One trial's t, f and kernel columns, and its kernel pairs.

    Returns:
        ({"t": (k,), "f": (k, n), "kernel": (k, p)}, [[i, j], ...] of length p).
    """
    dataset = data.trial(trial_id)
    table = dataset.to_table(columns=["t", "f", "kernel"],
                             filter=ds.field("trial_id") == trial_id)  # fmt: skip
    frags = list(dataset.get_fragments())
    meta = trajectory_meta(frags[0].physical_schema.empty_table()) if frags else {}
    order = np.argsort(table["t"].to_numpy(), kind="stable")
    return {
        "t": table["t"].to_numpy()[order],
        "f": _stack(table["f"])[order],
        "kernel": _stack(table["kernel"])[order],
    }, meta.get("kernel_pairs", [])


def _stack(column: pa.ChunkedArray) -> np.ndarray:
    """A list<double> column of equal-length lists as a (k, n) array; ragged rows become NaN."""
    rows = column.to_pylist()
    width = max((len(r) for r in rows if r), default=0)
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        if r and len(r) == width:
            out[i] = [np.nan if v is None else v for v in r]
    return out
