"""Reading a sweep store where it is written: ``<sweep>/trials/<trial_id>/`` (see core/store/).

- the summaries: one typed row per trial, from its summary.json and its config.yaml (dotted
  config columns); small, read whole;
- the trajectories: a ``pyarrow.dataset`` over the trials' trajectory.parquet files (the
  directory name is the ``trial_id`` column), streamed one trial at a time, scalar columns only,
  so memory does not grow with the number of trials;
- the dense columns (``f``, ``kernel``) are read only for the few trials a figure shows.

The store may be a local directory or an object store (``s3://...``): every read goes through
the store's pyarrow filesystem (``core.store.locate``), and nothing is copied down first; one
listing of ``trials/`` says which files exist, so only those are opened.

Files are scanned in chunks, each through a fresh ``pyarrow.dataset`` that is dropped after use:
a dataset's fragments keep every Parquet footer they have read, so one long-lived dataset over
10,000 trials would grow by over a gigabyte.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import yaml

from core import DataError, encode_value, first_line
from core import store as st

# the scalar trajectory columns the per-trial pass needs (never the list columns)
SCALAR_COLUMNS = ("t", "drift", "gap", "lambda_min", "theta_inf", "f_abs_min", "loss", "flips")
CHUNK = 256  # files per scanned dataset: bounds the footers held at once
# every data page written with a CRC (core.store.write_table) is checked against it as it is read
VERIFIED = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True)
)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster per config
# config columns that define groups and rows: numbers there must be numbers
NUMERIC_KEYS = ("model.width", "model.depth", "train.lr", "data.n", "seed")


@dataclass(frozen=True)
class Parquet:
    """The trajectory files of a sweep: their unified schema and paths, read in chunks."""

    root: st.StorePath  # <sweep>/trials: the trial_id is the first directory below it
    schema: pa.Schema
    sizes: dict[str, int]  # path on root's filesystem -> bytes (the listing's), by trial id

    @property
    def files(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    def dataset(self, files: list[str] | tuple[str, ...]) -> ds.Dataset:
        """A short-lived ``pyarrow.dataset`` over some of the files (drop it after use)."""
        fragments = [_fragment(self.root, path, self.sizes.get(path)) for path in files]
        return ds.FileSystemDataset(fragments, self.schema, VERIFIED, self.root.fs)

    def trial(self, trial_id: str) -> ds.Dataset:
        """The dataset of one trial's file."""
        return self.dataset([(self.root / trial_id / st.TRAJECTORY).path])


@dataclass(frozen=True)
class SweepStore:
    """What the aggregator reads from one sweep directory.

    Attributes:
        sweep_dir: ``<storage>/<sweep>``.
        summary: one row per trial with a summary.json (any status): its keys, typed as in
            ``core.store.SUMMARY_*``, the dotted config columns, and ``trial_id``.
        unpublished: trial directories without a summary.json (running, lost, never started),
            with ``trial_id``, ``status`` ("missing"), ``error`` and the config columns when
            config.yaml is readable.
        trajectory: the trajectory files, or None when no trial has one.
    """

    sweep_dir: st.StorePath
    summary: pd.DataFrame
    unpublished: pd.DataFrame
    trajectory: Parquet | None


def find_sweeps(path: st.Where) -> list[st.StorePath]:
    """``path`` itself if it is a sweep directory, else the sweep directories just below it.

    Raises:
        DataError: the path does not exist or holds no sweep (or the object store refuses).
    """
    path = _located(path)
    if not path.is_dir():
        raise DataError(f"store path {path} does not exist or is not a directory")
    if st.is_sweep_dir(path):
        return [path]
    below = [p for p in path.iterdir() if p.is_dir() and st.is_sweep_dir(p)]
    sweeps = sorted(below, key=lambda p: p.name)
    if not sweeps:
        raise DataError(
            f"{path} is not a sweep store: no trials/ in it or in its subdirectories; pass "
            "<storage>/<sweep> as written by 'ntkdiv sweep'"
        )
    return sweeps


# --- the summaries ---------------------------------------------------------------------------


def _flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted config columns; list values as JSON text (hashable, one type per column)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = encode_value(value)
    return out


def _trial_row(tdir: st.StorePath, names: dict[str, int]) -> tuple[bool, dict[str, Any]]:
    """(has a summary, its row): the summary's scalar keys plus the flattened config.

    ``names``: the files the listing found in ``tdir``; only those are opened.
    """
    summary, problem = (
        st.read_json_checked(tdir / st.SUMMARY) if st.SUMMARY in names else (None, None)
    )
    row: dict[str, Any] = {"trial_id": tdir.name, "status": "missing", "error": None}
    if problem is not None:  # a reader moves nothing: the next 'ntkdiv sweep' quarantines it
        row["error"] = f"corrupt {st.SUMMARY} ({problem}); skipped"
        warn(f"trial {tdir.name}: corrupt {st.SUMMARY} ({problem}) skipped; the next 'ntkdiv "
             "sweep' moves it to quarantine/ and reruns the trial")  # fmt: skip
    if summary is not None:
        row.update({k: v for k, v in summary.items() if not isinstance(v, (list, dict))})
        row["trial_id"] = tdir.name
    if st.CONFIG in names:
        raw = yaml.load((tdir / st.CONFIG).read_text(), Loader=YAML_LOADER) or {}
        row.update(_flatten(raw))
    return summary is not None, row


def _typed(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as a DataFrame with the summary keys' types ("inf" strings become floats)."""
    frame = pd.DataFrame(rows) if rows else pd.DataFrame({"trial_id": pd.Series([], dtype=str)})
    for col in st.SUMMARY_FLOATS:
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col].astype(object), errors="coerce").astype(float)
    for col in st.SUMMARY_INTS:
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    for col in NUMERIC_KEYS:
        if col in frame.columns:
            try:
                frame[col] = pd.to_numeric(frame[col])
            except (TypeError, ValueError):
                bad = frame[pd.to_numeric(frame[col], errors="coerce").isna() & frame[col].notna()]
                raise DataError(
                    f"config column '{col}' of trial {bad['trial_id'].iloc[0]} is "
                    f"{bad[col].iloc[0]!r}, not a number; fix or delete that trial's config.yaml"
                ) from None
    return frame


def read_trials(
    sweep_dir: st.StorePath, found: dict[str, dict[str, int]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per trial with a summary.json, one per trial directory without one); ``found``:
    the listing's trial ids and their files (:func:`core.store.trial_files`)."""
    tdirs = [st.trial_dir(sweep_dir, tid) for tid in sorted(found)]
    with ThreadPoolExecutor(st.readers(sweep_dir)) as pool:
        read = list(pool.map(_trial_row, tdirs, [found[t.name] for t in tdirs]))
    return _typed([row for has, row in read if has]), _typed([row for has, row in read if not has])


# --- the trajectories ------------------------------------------------------------------------


def _fragment(root: st.StorePath, path: str, size: int | None) -> ds.ParquetFileFragment:
    """One trajectory file, its ``trial_id`` read from its directory by core's partitioning.
    Given its size (the listing's), an object store is not asked for it before the read: one
    request fewer per file."""
    trial = st.TRAJECTORY_PARTITIONING.parse(path[len(root.path) + 1 :])
    return VERIFIED.make_fragment(path, root.fs, trial, file_size=size)


def _schemas(root: st.StorePath, sizes: dict[str, int]) -> list[pa.Schema]:
    """Every file's Parquet schema, read in parallel (one footer read each: on an object store
    the requests overlap; pyarrow's own inspection reads them one after another)."""
    with ThreadPoolExecutor(st.readers(root)) as pool:
        return list(pool.map(lambda p: _fragment(root, p, sizes[p]).physical_schema, sizes))


def _conflict(schemas: list[pa.Schema]) -> tuple[str, set[str]]:
    """The first column with two non-null types across ``schemas``."""
    types: dict[str, set[str]] = {}
    for schema in schemas:
        for f in schema:
            types.setdefault(f.name, set()).add(str(f.type))
    bad = {name: t for name, t in types.items() if len(t - {"null"}) > 1}
    return next(iter(bad.items())) if bad else ("?", {"unknown"})


def _unified(root: st.StorePath, sizes: dict[str, int]) -> pa.Schema:
    """The schema of every file, promoted, with the ``trial_id`` partition column; DataError
    naming the first conflicting column."""
    schemas = _schemas(root, sizes)
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        name, types = _conflict(schemas)
        raise DataError(
            f"{root} mixes incompatible schemas: column '{name}' has types "
            f"{' and '.join(sorted(types))}; rerun the odd trials (delete their directories "
            "and run 'ntkdiv sweep' again) or aggregate the sweeps separately"
        ) from None
    if "trial_id" not in schema.names:
        schema = schema.append(pa.field("trial_id", pa.string()))
    return schema


def open_trajectories(sweep_dir: st.StorePath, found: dict[str, dict[str, int]]) -> Parquet | None:
    """The trajectory files of a sweep with a schema unified over all of them.

    Types are promoted where that is lossless (int -> double, null -> anything); incompatible
    types raise :class:`DataError`. A file that is not Parquet or is truncated is left out with
    a warning (:func:`readable`). Returns None when no trial has a readable trajectory.
    """
    root, sizes = st.trials_root(sweep_dir), st.trajectory_files(sweep_dir, found)
    if not sizes:
        return None
    try:
        schema = _unified(root, sizes)
    except (pa.ArrowInvalid, OSError):  # an unreadable file among them: leave it out, once
        sizes = {path: sizes[path] for path in readable(root, sizes)}
        if not sizes:
            return None
        try:
            schema = _unified(root, sizes)
        except (pa.ArrowInvalid, OSError) as err:  # unreadable after all (the store itself)
            raise DataError(
                f"trajectory files under {root}: an unreadable file: {first_line(err)}"
            ) from None
    missing = [c for c in ("t", "drift") if c not in schema.names]
    if missing:
        raise DataError(f"trajectory files of {sweep_dir} have no column '{missing[0]}'")
    return Parquet(root, schema, sizes)


def warn(text: str) -> None:
    """One warning line on stderr (the aggregator's progress goes there too)."""
    print(f"ntkdiv: warning: {text}", file=sys.stderr, flush=True)


def readable(root: st.StorePath, files: Collection[str]) -> list[str]:
    """The files that decode whole, every page matching its CRC (``core.store``'s check); each
    other one is named in a warning and left out (a reader moves nothing: the next
    'ntkdiv sweep' quarantines it and reruns its trial).

    Raises:
        DataError: the store itself failed while reading (one line).
    """
    good = []
    for path in files:
        try:
            problem = st.read_table_checked(st.StorePath(root.fs, path))[1]
        except OSError as err:
            raise DataError(f"store {root}: reading {path} failed: {first_line(err)}") from None
        if problem is None:
            good.append(path)
        else:
            warn(f"corrupt {path} ({problem}) skipped; the next 'ntkdiv sweep' moves it to "
                 "quarantine/ and reruns its trial")  # fmt: skip
    return good


def _located(where: st.Where) -> st.StorePath:
    """The store location, or DataError with one line when the object store refuses."""
    try:
        return st.locate(where)
    except (OSError, ValueError) as err:
        raise DataError(f"store {where}: {str(err).splitlines()[0]}") from None


def open_store(sweep_dir: st.Where, only: Collection[str] | None = None) -> SweepStore:
    """Open one sweep directory (see :func:`find_sweeps` for storage roots); ``only``: read
    these trial ids alone."""
    sweep_dir = _located(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(f"store path {sweep_dir} does not exist or is not a directory")
    if not st.is_sweep_dir(sweep_dir):
        raise DataError(f"{sweep_dir} is not a sweep store: it has no trials/")
    found = st.trial_files(sweep_dir)  # one listing, for the summaries and the trajectories
    if only is not None:
        keep = set(only)
        found = {tid: names for tid, names in found.items() if tid in keep}
    summary, unpublished = read_trials(sweep_dir, found)
    return SweepStore(sweep_dir, summary, unpublished, open_trajectories(sweep_dir, found))


def iter_trajectories(
    data: Parquet, columns: tuple[str, ...] = SCALAR_COLUMNS
) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    """Yield (trial_id, {column: (k,) float64 array}) one trial at a time, rows sorted by t.

    Batches come in fragment order and a fragment is one trial's file, so a trial is complete
    when the fragment changes. Null entries become NaN. Columns absent from the files come back
    as NaN arrays. A file whose data is damaged under an intact footer (a page that fails its
    CRC, or does not decode) is named in a warning and skipped, and the scan goes on.

    Raises:
        DataError: the store failed, or a file is unreadable for a reason of its own (one line).
    """
    present = [c for c in columns if c in data.schema.names]
    for i in range(0, len(data.files), CHUNK):
        files = data.files[i : i + CHUNK]
        done: set[str] = set()
        try:
            for tid, cols in _trials_of(data.dataset(files).scanner(columns=present), columns):
                done.add(tid)
                yield tid, cols
        except (OSError, pa.ArrowException) as err:  # a damaged file, or the store: which?
            left = [f for f in files if f.rsplit("/", 2)[-2] not in done]
            good = readable(data.root, left)
            if len(good) == len(left):  # no file is damaged: the scan failed for another reason
                raise DataError(f"trajectory files unreadable: {first_line(err)}") from None
            if good:
                yield from _trials_of(data.dataset(good).scanner(columns=present), columns)


def _trials_of(scanner: ds.Scanner, columns: tuple[str, ...]):
    pending: list[pa.RecordBatch] = []
    current: str | None = None
    for tagged in scanner.scan_batches():
        tid = ds.get_partition_keys(tagged.fragment.partition_expression)["trial_id"]
        if tid != current and pending:
            yield current, _columns(pending, columns)
            pending = []
        current = tid
        pending.append(tagged.record_batch)
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
    table = dataset.to_table(columns=["t", "f", "kernel"])
    frags = list(dataset.get_fragments())
    meta = st.trajectory_meta(frags[0].physical_schema) if frags else {}
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
