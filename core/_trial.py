"""One trial: ``run_trial(config, out_dir)``, the same function locally and on a Ray worker.

Files in ``out_dir`` (all written atomically): ``config.yaml`` first, ``checkpoint.pt`` as the run
goes, then ``trajectory.parquet`` and last ``summary.json``, whose presence marks the trial done.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import store
from ._analytic import NTKReference, ntk_reference
from ._config import TrialConfig, trial_id
from ._crossings import first_exceed, first_leave, last_leave, resolution
from ._data import Dataset, make_dataset
from ._errors import ConfigError, DataError, first_line
from ._flow import FlowRun, integrate
from ._models import build_model
from ._overrides import config_from_dict, config_to_yaml
from ._schedule import tracked_steps, tracked_times
from ._size import check_machine
from ._status import DONE, TrialStatus
from ._tracker import Tracker, kernel_pairs
from ._train import LoopState, load_checkpoint, save_checkpoint, train

log = logging.getLogger("ntkdiv")


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when the worker has it, else CPU; ``cuda`` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config field 'device' = {device!r}: CUDA is not available; use auto")
    return torch.device(device)


def prepare(config: TrialConfig) -> tuple[Dataset, NTKReference]:
    """Build the data and the analytic reference; every user-input error surfaces here.

    Nothing is written before this returns, so bad input leaves no trace.
    """
    data = make_dataset(config.data, dtype=torch.float64, device="cpu")
    if config.train.loss == "cross_entropy" and len(torch.unique(data.y)) < 2:
        raise DataError(
            f"data ({data.name}) has a single class {float(data.y[0]):g}; "
            "cross-entropy needs both labels 0 and 1"
        )
    pairs = config.track.kernel_pairs or []
    bad = [p for p in pairs if not (0 <= p[0] < data.X.shape[0] and 0 <= p[1] < data.X.shape[0])]
    if bad:
        raise ConfigError(f"config field 'track.kernel_pairs' = {bad[0]}: index out of range")
    ref = ntk_reference(config.model.arch, data.X, config.model.depth, config.model.alpha)
    return data, ref


def lr_warning(config: TrialConfig, ref: NTKReference) -> str | None:
    """A one-line warning when lr exceeds the GD stability limit at initialization."""
    limit = ref.lr_limit_ce if config.train.loss == "cross_entropy" else ref.lr_limit_mse
    if config.train.lr <= limit:
        return None
    factor = "8" if config.train.loss == "cross_entropy" else "2"
    return (
        f"train.lr={config.train.lr:g} exceeds the {config.train.loss} stability limit "
        f"{factor}/lambda_max={limit:.4g} at initialization (lambda_max={ref.lambda_max:.4g}); "
        "gradient descent will likely diverge"
    )


def _check_out_dir(config: TrialConfig, out_dir: store.StorePath) -> dict[str, Any] | None:
    """Return a finished summary if ``out_dir`` already holds this trial; refuse a foreign dir."""
    cfg_path = out_dir / store.CONFIG
    if cfg_path.exists():
        existing = config_from_dict(yaml.safe_load(cfg_path.read_text()))
        if trial_id(existing) != trial_id(config):
            raise ConfigError(
                f"output directory {out_dir} holds another trial ({trial_id(existing)}); "
                "choose another --out"
            )
    summary = store.read_summary(out_dir)
    return summary if summary is not None and summary.get("status") in DONE else None


def run_trial(
    config: TrialConfig,
    out_dir: str | Path | store.StorePath,
    *,
    progress: bool = False,
    resume: bool = True,
    monitor: Callable[[dict], bool] | None = None,
) -> dict[str, Any]:
    """Run one trial (train + track) and write its files into ``out_dir``.

    Args:
        config: the full trial config.
        out_dir: the trial directory (created if missing): a local path, or a location in an
            object store (``s3://bucket/...``, see :func:`core.store.locate`).
        progress: show a progress bar on stderr.
        resume: continue from ``out_dir/checkpoint.pt`` if present.
        monitor: called with the tracked columns after each tracked row; True stops the run,
            which is then written with status ``stopped`` (resumable: a later call continues it
            from its checkpoint).

    Returns:
        The summary dict (the keys of DESIGN §3 and extras), also written to summary.json.
    """
    out_dir = store.locate(out_dir)
    done = _check_out_dir(config, out_dir)
    if done is not None:
        return done
    data, ref = prepare(config)
    check_machine(config, resolve_device(config.device))  # where it runs: a worker's own memory
    warning = lr_warning(config, ref)
    if warning:
        log.warning(warning)
    store.atomic_write_text(out_dir / store.CONFIG, config_to_yaml(config))
    return _execute(config, out_dir, data, ref, progress, resume, monitor)


def _setup(config, data, ref, device) -> tuple[Any, LoopState, Tracker]:
    """A fresh network, loop state and tracker at t = 0."""
    dtype = getattr(torch, config.dtype)
    m = config.model
    model = build_model(m.arch, data.X.shape[1], m.width, m.depth, m.alpha, config.seed, dtype,
                        device)  # fmt: skip
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    state = LoopState(step=0, params=params, theta0=[p.detach().clone() for p in params])
    tracker = Tracker(
        ref=ref,
        pairs=kernel_pairs(
            data.X.shape[0], config.track.kernel_full_max_n, config.track.kernel_pairs
        ),  # fmt: skip
        with_kernel=config.track.kernel,
        with_flips=config.track.flips,
        block_size=config.track.ntk_block,
        threshold=0.0 if config.train.loss == "cross_entropy" else 0.5,
    )
    return model, state, tracker


def _resume(ckpt: store.StorePath, state: LoopState, tracker: Tracker) -> str | None:
    """Load the checkpoint into ``state`` and ``tracker``; a corrupt one (truncated, garbage,
    another trial's shapes) is quarantined instead: returns the line that says so, and the
    caller starts from scratch. An OSError is the store's, not the file's: it propagates."""
    try:
        load_checkpoint(ckpt, state, tracker)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a bad file
        target = store.quarantine(ckpt)
        text = (
            f"corrupt checkpoint.pt ({first_line(err)}) moved to {target}; the trial "
            "started from scratch"
        )
        log.warning(text)
        return text
    return None


def _execute(config, out_dir, data, ref, progress, resume, monitor) -> dict[str, Any]:
    # --- set up -----------------------------------------------------------------------------
    t_start = time.monotonic()
    device = resolve_device(config.device)
    dtype = getattr(torch, config.dtype)
    model, state, tracker = _setup(config, data, ref, device)
    X, y = data.X.to(device, dtype), data.y.to(device, dtype)
    X_probe = data.X_probe.to(device, dtype) if data.X_probe.shape[0] else None
    # --- resume -----------------------------------------------------------------------------
    ckpt = out_dir / store.CHECKPOINT
    store.remove_partial_writes(out_dir)  # a killed writer's leftovers; this run writes here now
    resumed_from, quarantined = None, None
    if resume and ckpt.exists():
        quarantined = _resume(ckpt, state, tracker)
        if quarantined is None:
            resumed_from = state.step
        else:  # the failed load may have written into the fresh state
            model, state, tracker = _setup(config, data, ref, device)
    prior_wall = state.wall_s

    def checkpoint(s: LoopState) -> None:
        s.wall_s = prior_wall + time.monotonic() - t_start
        save_checkpoint(ckpt, s, tracker)

    # --- train ------------------------------------------------------------------------------
    bar = _Bar(config, state) if progress else None
    if config.train.t_max is None:  # plain GD, train.epochs steps of train.lr
        tracked = set(tracked_steps(config.train.epochs, config.track.log_points,
                                    config.track.every).tolist())  # fmt: skip
        train(model, X, y, X_probe, config.train, tracked, tracker, state, checkpoint,
              config.checkpoint.every, config.checkpoint.minutes,
              on_step=bar.step if bar else None, monitor=monitor)  # fmt: skip
    else:  # gradient flow to t_max with adaptive steps
        times = tracked_times(config.train.t_max, config.track.log_points, config.train.lr)
        run = FlowRun(model, X, y, X_probe, config.train, times, tracker, checkpoint,
                      config.checkpoint.minutes, bar.time if bar else None, monitor)  # fmt: skip
        integrate(run, state)
    if bar is not None:
        bar.close()
    # --- write results ----------------------------------------------------------------------
    wall = prior_wall + time.monotonic() - t_start
    summary = summarize(config, ref, tracker, state, wall, device, resumed_from)
    if quarantined is not None:
        summary["quarantined"] = [quarantined]
    tid = summary["trial_id"]
    table = store.trajectory_table(tracker.rows, {"trial_id": tid, "kernel_pairs": tracker.pairs})
    store.write_trajectory(out_dir / store.TRAJECTORY, table)
    if config.checkpoint.keep_final or state.stopped_step is not None:
        checkpoint(state)  # a stopped run must be resumable
    elif ckpt.exists():
        ckpt.unlink()
    store.write_json(out_dir / store.SUMMARY, summary)
    return summary


class _Bar:
    """A tqdm bar over steps (plain GD) or over decades of t (gradient flow)."""

    def __init__(self, config: TrialConfig, state: LoopState) -> None:
        from tqdm import tqdm

        m, tr = config.model, config.train
        desc = f"{m.arch} m={m.width} L={m.depth} {tr.loss}"
        self.t0 = tr.lr
        if tr.t_max is None:
            self.bar = tqdm(total=tr.epochs, initial=state.step, desc=desc, unit="step",
                            mininterval=0.5, dynamic_ncols=True)  # fmt: skip
        else:
            total = round(self._decades(tr.t_max), 2)
            self.bar = tqdm(total=total, desc=desc, unit="decade of t", mininterval=0.5,
                            dynamic_ncols=True, bar_format="{l_bar}{bar}| {postfix}")  # fmt: skip
            self.time(state.t)

    def _decades(self, t: float) -> float:
        return max(0.0, math.log10(max(t, self.t0) / self.t0))

    def step(self, _step: int) -> None:
        self.bar.update(1)

    def time(self, t: float) -> None:
        self.bar.n = round(min(self._decades(t), self.bar.total), 2)
        self.bar.set_postfix_str(f"t={t:.3g}", refresh=False)
        if self.bar.n == self.bar.total:  # mininterval would hide the last update
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _finite_min(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.min(vals)) if vals else None


def _finite_max(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.max(vals)) if vals else None


def trial_status(state: LoopState) -> TrialStatus:
    """diverged beats stopped beats completed."""
    if state.diverged_step is not None:
        return TrialStatus.DIVERGED
    if state.stopped_step is not None:
        return TrialStatus.STOPPED
    return TrialStatus.COMPLETED


def summarize(config, ref, tracker, state, wall, device, resumed_from) -> dict[str, Any]:
    """The summary.json content (DESIGN §3 keys first, then extras)."""
    rows = tracker.rows
    last = {k: (v[-1] if v else None) for k, v in rows.items()}
    return {
        "trial_id": trial_id(config),
        "status": trial_status(state).value,
        "lambda0": ref.lambda0,
        "bound": ref.bound,
        "gap_init": rows["gap"][0] if rows["gap"] else None,
        "gap_sup": _finite_max(rows["gap"]),
        "drift_sup": _finite_max(rows["drift"]),
        "t_exceed": first_exceed(rows, ref.bound),
        "lambda_min_emp_min": _finite_min(rows["lambda_min"]),
        "f_abs_min_final": last["f_abs_min"],
        "theta_inf_final": last["theta_inf"],
        "loss_final": last["loss"],
        "steps": state.step,
        "wall_s": wall,
        "device": device.type,
        "dtype": config.dtype,
        "lambda_max": ref.lambda_max,
        "max_K": ref.max_abs,
        "resolution": resolution(config.dtype, ref.max_abs),
        "loss_init": rows["loss"][0] if rows["loss"] else None,
        "accuracy_final": last["accuracy"],
        "resumed_from_step": resumed_from,
        "diverged_step": state.diverged_step,
        "t_max": config.train.t_max,
        "horizon_t": last["t"],
        "t_leave": first_leave(rows, ref.bound),
        "t_stay": last_leave(rows, ref.bound),
        "t_leave_avg": first_leave(rows, ref.bound, "gap_avg"),
        "t_stay_avg": last_leave(rows, ref.bound, "gap_avg"),
        "step_jump_max": _finite_max(rows["step_jump"]),
        "flip_jump_max": _finite_max(rows["flip_jump"]),
        "step_flips_max": _finite_max(rows["step_flips"]),
        "drift_smooth_sup": _finite_max(rows["drift_smooth"]),
        "flips_final": last["flips"],
        "near_kink_max": _finite_max(rows["near_kink"]),
        "rejected_steps": state.rejected,
        "stationary_t": state.stationary_t,
        "stopped_by_budget": state.stopped_by_budget,
        "kernel_pairs": tracker.pairs,
        "n": int(ref.K.shape[0]),
        "tracked_rows": len(rows["step"]),
        "error": None,
    }
