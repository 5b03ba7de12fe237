"""``ntkdiv rerun RUN_ID``: an MLflow run's config, rerun locally by ``core.run_trial``, compared.

The comparison is exact (bitwise-equal floats) when the rerun uses the original's device type and
dtype, since ``run_trial`` is deterministic there. Otherwise it uses a relative tolerance:
``RTOL["float64"]`` = 1e-6 or ``RTOL["float32"]`` = 1e-3 (different kernels sum in different
orders; float32 rounding compounds over training steps).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from core import TrialConfig, config_from_dict, run_trial
from core import store as st

RTOL = {"float64": 1e-6, "float32": 1e-3}
COMPARED = (
    "status", "steps", "lambda0", "bound", "gap_init", "gap_sup", "drift_sup", "t_exceed",
    "lambda_min_emp_min", "f_abs_min_final", "theta_inf_final", "loss_init", "loss_final",
    "accuracy_final", "diverged_step",
)  # fmt: skip


def same(a: Any, b: Any, rtol: float | None) -> bool:
    """Equal: bitwise when ``rtol`` is None (NaN equals NaN), else within ``rtol`` relatively."""
    x, y = st.json_number(a), st.json_number(b)
    if x is None or y is None:
        return a == b
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if rtol is None or math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= rtol * max(abs(x), abs(y))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return repr(value) if isinstance(value, float) else str(value)


def comparison(original: dict[str, Any], rerun: dict[str, Any], rtol: float | None):
    """Rows (key, original, rerun, ok) for the keys the original holds; and whether all match."""
    rows = [(k, original[k], rerun.get(k), same(original[k], rerun.get(k), rtol))
            for k in COMPARED if k in original]  # fmt: skip
    return rows, all(ok for *_, ok in rows)


def format_table(rows) -> str:
    width = max(len(k) for k, *_ in rows)
    lines = [f"  {'key':<{width}}  {'original':<24}  {'rerun':<24}  match"]
    for key, a, b, ok in rows:
        lines.append(f"  {key:<{width}}  {_fmt(a):<24}  {_fmt(b):<24}  {'yes' if ok else 'NO'}")
    return "\n".join(lines)


def local_config(config: TrialConfig) -> TrialConfig:
    """The config as it can run here: a CUDA device without CUDA becomes ``auto`` (noted)."""
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"note: device {config.device!r} is not available here; rerunning with 'auto'",
              file=sys.stderr)  # fmt: skip
        return config.model_copy(update={"device": "auto"})
    return config


def mode(original: dict[str, Any], rerun: dict[str, Any]) -> tuple[float | None, str]:
    """(rtol or None for exact, a sentence that says which and why)."""
    dev, dtype = original.get("device"), original.get("dtype")
    if dev == rerun.get("device") and dtype == rerun.get("dtype"):
        return None, f"exact (bitwise) comparison: same device ({dev}) and dtype ({dtype})"
    rtol = RTOL.get(str(rerun.get("dtype")), RTOL["float32"])
    return rtol, (f"comparison within rtol={rtol:g}: device {dev} -> {rerun.get('device')}, "
                  f"dtype {dtype} -> {rerun.get('dtype')}")  # fmt: skip


def cmd_rerun(args: argparse.Namespace) -> int:
    """Fetch the run's config, run it into --out, log it (tag rerun_of), print the comparison.

    Returns 0 when every compared key matches, 1 when one differs, 3 when MLflow is down.
    """
    from mlflow_index import TrackingUnavailable, fetch_source_run, log_rerun

    out = Path(args.out) if args.out else Path("runs") / f"rerun-{args.run_id}"
    try:
        with tempfile.TemporaryDirectory(prefix="ntkdiv-rerun-") as scratch:
            source = fetch_source_run(args.tracking_uri, args.run_id, Path(scratch))
    except TrackingUnavailable as err:
        print(f"ntkdiv: error: {err}", file=sys.stderr)
        return 3
    config = local_config(config_from_dict(source.config))
    print(f"rerun of MLflow run {source.run_id} (config from {source.config_source}) -> {out}")
    summary = run_trial(config, out, progress=sys.stderr.isatty())
    try:
        new_id = log_rerun(args.tracking_uri, source, out)
        print(f"logged as MLflow run {new_id} (tag rerun_of={source.run_id})")
    except TrackingUnavailable as err:
        print(f"ntkdiv: warning: rerun not logged: {err}", file=sys.stderr)
    if not source.summary:
        print("the original run holds no summary; nothing to compare")
        return 0
    rtol, how = mode(source.summary, summary)
    rows, ok = comparison(source.summary, summary, rtol)
    print(format_table(rows))
    print(f"{'MATCH' if ok else 'MISMATCH'}: {how}")
    return 0 if ok else 1
