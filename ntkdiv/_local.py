"""``ntkdiv run`` and ``ntkdiv ntk``: one config, locally, through the same ``core.run_trial``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from core import DONE, load_config, lr_warning, prepare, run_trial, trial_id
from core import store as st

SHOWN_KEYS = (
    "status", "steps", "lambda0", "bound", "gap_init", "gap_sup", "drift_sup", "t_exceed",
    "lambda_min_emp_min", "f_abs_min_final", "theta_inf_final", "loss_final", "wall_s",
)  # fmt: skip


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "never" if value is None else str(value)


def format_summary(summary: dict) -> str:
    """A two-column text table of the main summary keys."""
    width = max(len(k) for k in SHOWN_KEYS)
    return "\n".join(f"  {k:<{width}}  {_fmt(summary.get(k))}" for k in SHOWN_KEYS)


def cmd_run(args: argparse.Namespace) -> int:
    """Run one trial from a YAML config; print where it went and its summary."""
    config = load_config(args.config, args.overrides)
    _, ref = prepare(config)  # every input error surfaces before anything is written
    warning = lr_warning(config, ref)
    if warning:
        print(f"ntkdiv: warning: {warning}", file=sys.stderr)
    out = st.locate(args.out if args.out else Path("runs") / trial_id(config))
    logging.getLogger("ntkdiv").setLevel(logging.ERROR)  # the warning is printed above
    summary = run_trial(config, out, progress=not args.quiet)
    print(f"trial {summary['trial_id']} -> {out}")
    print(format_summary(summary))
    return 0 if summary["status"] in DONE else 1


def cmd_ntk(args: argparse.Namespace) -> int:
    """Print the analytic kernel, lambda0, lambda_max, the bound and GD stability limits."""
    config = load_config(args.config, args.overrides)
    data, ref = prepare(config)
    m = config.model
    print(f"data: {data.description}")
    print(f"model: {m.arch}, depth {m.depth}, alpha {m.alpha:g} (analytic, infinite width)")
    print(f"lambda0     = {ref.lambda0:.6f}   (lambda_min of K(X, X), float64)")
    print(f"lambda_max  = {ref.lambda_max:.6f}")
    print(f"bound       = {ref.bound:.6g}   (lambda0 / (2 n^2), n = {ref.K.shape[0]})")
    print(f"max |K|     = {ref.max_abs:.6g}")
    print(f"lr limits   = mse {ref.lr_limit_mse:.4g} (2/lambda_max), "
          f"cross_entropy {ref.lr_limit_ce:.4g} (8/lambda_max)")  # fmt: skip
    n = ref.K.shape[0]
    shown = ref.K if n <= 12 else ref.K[:12, :12]
    print(f"K(X, X){'' if n <= 12 else ' (first 12 x 12)'}:")
    with np.printoptions(precision=4, suppress=True, linewidth=120):
        print(shown.to(torch.float64).numpy())
    return 0
