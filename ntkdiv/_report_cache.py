"""Skip rebuilding a report whose inputs have not changed since it was written.

A finished sweep run again would otherwise spend its longest step (the figures: ~30 s for the
smoke sweep) rebuilding a report identical to the one on disk. The key, written beside the report
as ``inputs.json``, is:

- every file of the sweep outside the report directory (trials/*/*, ...): name, size and
  modification time, so a trial rerun, resumed or quarantined changes it; spec.yaml by its
  content (each ``ntkdiv sweep`` writes it again, most often unchanged);
- the source of the ``dashboards`` package, so a new verdict rule or layout rebuilds;
- report.html's own size and modification time, so an edited or deleted report is rebuilt.

Only a local store gets a key (a remote listing's times are not reliable enough to trust).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from core import store as st

KEY_FILE = "inputs.json"


@dataclass(frozen=True)
class CachedReport:
    """The parts of a ``dashboards.AggregateResult`` that the commands use, read back from an
    unchanged report directory."""

    report_dir: Path
    verdict_text: str
    verdict: pd.DataFrame  # verdict.parquet
    trials: pd.DataFrame  # trials.parquet

    @property
    def html(self) -> Path:
        return self.report_dir / "report.html"


def local_dir(where: Any) -> Path | None:
    """The sweep directory as a local path; None for a remote store."""
    if not getattr(where, "local", True):
        return None
    return Path(os.fspath(where))


def _stat(path: Path) -> list[int]:
    s = path.stat()
    return [s.st_size, s.st_mtime_ns]


def _file_key(path: Path, rel: str) -> list[int] | str:
    if rel == st.SPEC:  # rewritten by every sweep run: its content is what counts
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return _stat(path)


def _code_digest() -> str:
    import dashboards

    digest = hashlib.sha256()
    for path in sorted(Path(dashboards.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def inputs_key(sweep_dir: Path, report_dir: Path) -> dict[str, Any]:
    """The key of a report built from ``sweep_dir`` into ``report_dir`` (see the module doc).

    Cost: one ``stat`` per file of the sweep (~0.2 s for 10^4 trials of 5 files).
    """
    files: dict[str, list[int] | str] = {}
    report = report_dir.resolve()
    for root, dirs, names in os.walk(sweep_dir):
        dirs[:] = sorted(d for d in dirs if (Path(root) / d).resolve() != report)
        for name in names:
            path = Path(root) / name
            rel = path.relative_to(sweep_dir).as_posix()
            files[rel] = _file_key(path, rel)
    html = report_dir / "report.html"
    return {"files": files, "code": _code_digest(),
            "report": _stat(html) if html.is_file() else None}  # fmt: skip


def unchanged(sweep_dir: Path, report_dir: Path) -> CachedReport | None:
    """The report as it is on disk when its key still holds; None when it must be rebuilt."""
    key_path = report_dir / KEY_FILE
    needed = [report_dir / n for n in ("report.html", "verdict.txt", "verdict.parquet",
                                       "trials.parquet")]  # fmt: skip
    if not key_path.is_file() or not all(p.is_file() for p in needed):
        return None
    try:
        saved = json.loads(key_path.read_text())
    except (OSError, ValueError):
        return None
    if saved != inputs_key(sweep_dir, report_dir):
        return None
    return CachedReport(report_dir, (report_dir / "verdict.txt").read_text().rstrip("\n"),
                        pq.read_table(report_dir / "verdict.parquet").to_pandas(),
                        pq.read_table(report_dir / "trials.parquet").to_pandas())  # fmt: skip


def remember(sweep_dir: Path, report_dir: Path) -> None:
    """Write the key of the report just built."""
    st.write_json(report_dir / KEY_FILE, inputs_key(sweep_dir, report_dir))
