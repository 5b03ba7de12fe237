"""Before any trial runs, for ``ntkdiv sweep`` and ``ntkdiv search`` alike.

1. :func:`check_inputs` and :func:`check_storage` validate everything without creating anything
   (bad input leaves no store and no MLflow database);
2. :func:`settle` reads what earlier runs left in the store: done, out of retries, or pending;
3. :func:`prepare_store` writes ``spec.yaml`` and closes the attempts a lost driver left open.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import yaml

from core import DONE, ConfigError, TrialConfig, lr_warning, prepare, trial_id
from core import store as st

from ._spec import SweepSpec, spec_to_dict


class Settled(str, Enum):
    """Where a trial stands before a run: DONE (never rerun), EXHAUSTED (failed more often than
    ``retries`` allows; reported, not rerun) or PENDING (to run, resuming its checkpoint)."""

    DONE = "done"
    EXHAUSTED = "exhausted"
    PENDING = "pending"


def check_inputs(configs: list[TrialConfig]) -> list[str]:
    """Build every distinct data set and analytic kernel once; return the lr warnings.

    Raises:
        ConfigError, DataError: a missing data file, a single-class data set, bad kernel pairs.
    """
    seen: dict[str, Any] = {}
    warnings: dict[str, int] = {}
    for config in configs:
        m = config.model  # what prepare() depends on: the data, the analytic kernel, the loss
        key = repr((config.data, m.arch, m.depth, m.alpha, config.train.loss,
                    config.track.kernel_pairs))  # fmt: skip
        if key not in seen:
            seen[key] = prepare(config)[1]
        text = lr_warning(config, seen[key])
        if text:
            warnings[text] = warnings.get(text, 0) + 1
    return [f"{w} ({n} trial{'s' if n > 1 else ''})" for w, n in warnings.items()]


def check_storage(spec: SweepSpec) -> None:
    """The sweep directory can be created and written (locally: without creating it; on an
    object store: a probe object written and deleted)."""
    target = spec.sweep_dir()
    if target.local and target.exists() and not target.is_dir():
        raise ConfigError(f"sweep spec field 'storage': {target} exists and is not a directory")
    problem = st.check_writable(target)
    if problem is not None:
        fix = "pass --storage DIR" if target.local else "fix that, or pass another --storage"
        raise ConfigError(
            f"sweep spec field 'storage' = {spec.storage!r}: cannot write {target} ({problem}); "
            f"{fix}"
        )


def settle(
    sweep_dir: st.Where, configs: list[TrialConfig], retries: int | None
) -> dict[str, Settled]:
    """trial_id -> where it stands, read from the store (nothing is written); ``retries``
    None: no trial is out of retries (``--retry-failed``)."""
    states = {}
    files = st.trial_files(sweep_dir)  # one listing: only the trials with a summary are read
    for config in configs:
        tid = trial_id(config)
        tdir = st.trial_dir(sweep_dir, tid)
        status = st.trial_status(tdir) if st.SUMMARY in files.get(tid, {}) else None
        if status in DONE:
            states[tid] = Settled.DONE
        elif status == "failed" and retries is not None and st.failures(tdir) > retries:
            states[tid] = Settled.EXHAUSTED
        else:
            states[tid] = Settled.PENDING
    return states


def prepare_store(spec: SweepSpec, trial_ids: list[str]) -> None:
    """Write ``spec.yaml`` (creating the sweep directory) and mark the attempts still open in
    ``trial_ids`` lost: one driver runs a sweep at a time, so their processes are gone."""
    sweep_dir = spec.sweep_dir()
    st.write_spec(sweep_dir, yaml.safe_dump(spec_to_dict(spec), sort_keys=False))
    for tid in trial_ids:
        st.close_open_attempts(st.trial_dir(sweep_dir, tid))


def last_line(error: Any) -> str:
    """The last non-empty line of an error text (a traceback's names the exception)."""
    lines = [ln for ln in str(error or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "unknown error"
