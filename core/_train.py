"""Full-batch gradient descent on the seed's losses, with tracking and checkpoints.

The loop reads top to bottom: set up, resume, then per step: track, check, update, checkpoint.
Gradient-flow time is t = step * lr. Losses are sums over points, as in the seed.
"""

from __future__ import annotations

import io
import math
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ._config import TrainConfig
from ._empirical import EmpiricalNTK
from ._models import SeedNet
from ._schedule import checkpoint_due
from ._tracker import Tracker, exploded
from .store import StorePath, atomic_write_bytes, locate


def soft_targets(y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label-smoothed targets y (1 - e) + e / 2; e = 0 gives the hard labels back. Shape (n,)."""
    return y * (1.0 - smoothing) + 0.5 * smoothing


Tensors = list[torch.Tensor]


def decay_gradient(cfg: TrainConfig, theta0: Tensors) -> Callable[..., Tensors] | None:
    """The gradient of (wd/2) |theta - c|^2 per tensor, c = theta_0 or 0; None without decay.

    ``grad(params)`` is the decay term alone (gradient flow contracts it with the Jacobian);
    ``grad(params, grads)`` adds it to the loss gradients in one fused ``add`` per tensor, the
    gradient-descent step's form (so its trajectories keep their bits)."""
    if cfg.weight_decay <= 0:
        return None
    wd, init = cfg.weight_decay, cfg.weight_decay_center == "init"

    def grad(params: Tensors, grads: Tensors | None = None) -> Tensors:
        out = []
        for i, p in enumerate(params):
            x = p.detach() - theta0[i] if init else p.detach()
            out.append(wd * x if grads is None else grads[i].add(x, alpha=wd))
        return out

    return grad


def data_loss(f: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Summed training loss.

    cross_entropy: sum_i y_i softplus(-f_i) + (1 - y_i) softplus(f_i), the seed's
        sum_i log(1 + exp(-(2 y_i - 1) f_i)) for hard labels and the binary cross-entropy with
        soft targets otherwise. Written so that a well-classified point keeps its tiny loss
        and gradient exp(-|f|): softplus(f) - y f, the same number on paper, rounds a label-1
        point's loss and gradient to exactly 0 once f > 20 (softplus returns f there).
    mse: 0.5 * sum_i (f_i - y_i)^2, the regression control.
    """
    if loss == "cross_entropy":
        return (target * F.softplus(-f) + (1 - target) * F.softplus(f)).sum()
    return 0.5 * ((f - target) ** 2).sum()


@dataclass
class LoopState:
    """Everything a checkpoint needs, besides the tracker."""

    step: int  # updates made (gradient flow: accepted steps)
    params: list[torch.Tensor]
    theta0: list[torch.Tensor]
    wall_s: float = 0.0  # wall time spent in earlier (interrupted) processes
    diverged_step: int | None = None  # the loss, an output or a parameter stopped being finite
    stopped_step: int | None = None  # set when a monitor stopped the run early
    t: float = 0.0  # gradient-flow time reached (plain GD: step * lr)
    h: float = 0.0  # gradient flow: the controller's next step size (0: start from train.lr)
    jump: float = 0.0  # gradient flow: largest one-step kernel jump since the last row
    flip_jump: float = 0.0  # ... largest kernel change per activation flip in one step
    step_flips: int = 0  # ... most activation flips in one step
    rejected: int = 0  # gradient flow: steps rejected by the error control
    stationary_t: float | None = None  # gradient flow: from here theta is held (module _flow)
    stopped_by_budget: bool = False  # gradient flow: MAX_FLOW_STEPS reached before t_max
    # gradient flow: per row not yet recorded (its index in the tracked times), the integral of
    # K_t over the part of its averaging window passed so far (module _flow, "gap_avg")
    windows: dict[int, tuple[torch.Tensor, float]] = field(default_factory=dict)

    FLOW_KEYS = ("t", "h", "jump", "flip_jump", "step_flips", "rejected", "stationary_t",
                 "stopped_by_budget", "windows")  # fmt: skip


def save_checkpoint(path: str | Path | StorePath, state: LoopState, tracker: Tracker) -> None:
    """Atomically write a ``torch.load(weights_only=True)``-safe checkpoint."""
    payload = {  # CPU tensors are saved as they are (no copy); GPU ones are copied to the host
        "step": state.step,
        "params": [p.detach().cpu() for p in state.params],
        "theta0": [p.detach().cpu() for p in state.theta0],
        "wall_s": state.wall_s,
        "tracker": tracker.state(),
        "flow": {k: getattr(state, k) for k in LoopState.FLOW_KEYS},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    with buf.getbuffer() as view:  # the serialized bytes, written without a second copy
        atomic_write_bytes(path, view)


def load_checkpoint(path: str | Path | StorePath, state: LoopState, tracker: Tracker) -> None:
    """Restore params, theta_0, step and tracker state in place from ``path``.

    Raises:
        ValueError: a record of the checkpoint fails its CRC-32. ``torch.load`` alone would load
            a flipped bit in a tensor's data silently, and the trial would resume from other
            parameters; ``torch.save`` writes the CRCs that this checks.
    """
    raw = locate(path).read_bytes()
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise ValueError(f"record {bad} fails its CRC-32")
    payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    with torch.no_grad():
        for p, saved in zip(state.params, payload["params"], strict=True):
            p.copy_(saved)
        for p, saved in zip(state.theta0, payload["theta0"], strict=True):
            p.copy_(saved)
    state.step = int(payload["step"])
    state.wall_s = float(payload["wall_s"])
    for key, value in payload.get("flow", {}).items():
        setattr(state, key, value)
    tstate = payload["tracker"]
    device = state.params[0].device
    for key in ("K0", "patterns"):
        if tstate[key] is not None:
            tstate[key] = tstate[key].to(device if key == "patterns" else "cpu")
    tracker.load_state(tstate)


def train(
    model: SeedNet,
    X: torch.Tensor,
    y: torch.Tensor,
    X_probe: torch.Tensor | None,
    cfg: TrainConfig,
    tracked: set[int],
    tracker: Tracker,
    state: LoopState,
    checkpoint: Callable[[LoopState], None] | None = None,
    checkpoint_every: int = 0,
    checkpoint_minutes: float = 0.0,
    on_step: Callable[[int], None] | None = None,
    monitor: Callable[[dict], bool] | None = None,
) -> LoopState:
    """Run full-batch GD from ``state.step`` to ``cfg.epochs``, tracking at ``tracked`` steps.

    Args:
        X: (n, d) training inputs; y: (n,) labels in {0, 1}; X_probe: (p, d) or None.
        tracked: steps s at which theta_s is recorded (before the update of step s).
        state: parameters (the model's own tensors), theta_0 and the starting step.
        checkpoint: called with the state after the update that reaches a checkpoint step.
        monitor: called after each tracked row with the tracker's columns; returning True stops
            the run early (``state.stopped_step`` records where), e.g. for exact pruning.

    Returns the final state; ``state.diverged_step`` is set if the loss stopped being finite.
    """
    # --- set up -------------------------------------------------------------------------------
    params, theta0, lr = state.params, state.theta0, cfg.lr
    target = soft_targets(y, cfg.label_smoothing)  # (n,)
    decay = decay_gradient(cfg, theta0)
    last_ckpt = time.monotonic()
    step = state.step
    ahead: tuple[int, EmpiricalNTK | None] | None = None  # K at the step after a tracked one
    while True:
        # --- step: loss and gradient at theta_s --------------------------------------------------
        f = model(X)  # (n,)
        loss = data_loss(f, target, cfg.loss)
        loss_value = loss.item()  # the overflow check (an infinite f makes the loss inf or nan)
        if not math.isfinite(loss_value) or not bool(torch.isfinite(f).all()):
            state.diverged_step = step
            break
        # --- track every scheduled step ----------------------------------------------------------
        recorded = tracker.rows["step"] and tracker.rows["step"][-1] >= step  # after a stop
        track_now = step in tracked and not recorded
        jump_from = None  # the kernel at this step, when this step's jump is to be sampled
        if recorded and step in tracked and tracker.rows["step_jump"][-1] is None:
            jump_from = tracker.kernel(model, X)  # a stop left its last row without the jump
        if track_now:
            out = ahead[1] if ahead and ahead[0] == step else tracker.kernel(model, X)
            jump_from = out
            f_row = out.f if out is not None else f.detach()
            tracker.record(step, step * lr, lr, out, f_row, loss_value, y, model, X, X_probe,
                           params, theta0)  # fmt: skip
            if exploded(tracker.rows):
                state.diverged_step = step
                break
            if monitor is not None and step < cfg.epochs and monitor(tracker.rows):
                state.stopped_step = step
                break
        if step >= cfg.epochs:
            break
        grads = list(torch.autograd.grad(loss, params))
        with torch.no_grad():
            if decay is not None:
                grads = decay(params, grads)
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-lr)
        step += 1
        state.step, state.t = step, step * lr
        if jump_from is not None:  # the kernel's one-step jump, sampled here
            nxt = tracker.kernel(model, X)
            assert nxt is not None
            flips = int((nxt.patterns != jump_from.patterns).sum())
            jump = float((nxt.K - jump_from.K).abs().max())
            tracker.set_jump(jump, jump / flips if flips else 0.0, flips)
            ahead = (step, nxt)
        if on_step is not None:
            on_step(step)
        # --- checkpoint ------------------------------------------------------------------------
        timed = checkpoint_minutes > 0 and time.monotonic() - last_ckpt > 60 * checkpoint_minutes
        if checkpoint is not None and (checkpoint_due(step, checkpoint_every) or timed):
            checkpoint(state)
            last_ckpt = time.monotonic()
    state.step = step
    return state
