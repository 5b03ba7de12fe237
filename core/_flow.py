"""Gradient flow to far times: adaptive Euler steps with an error estimate that costs nothing.

Gradient flow theta' = -grad L(theta) drives the outputs by f' = J theta' = -K_t dL/df. Late
under cross-entropy, min|f| grows like log t, the loss like 1/t, and the loss Hessian in f
(sigmoid(f)(1 - sigmoid(f)) per point) shrinks with it: GD's stability limit 2 / (c lambda_max)
grows like t, so a step h ~ c t stays stable and far times (t = 1e40) take a few thousand steps.

Error control. One Euler step from theta_k with step h changes the outputs by
    Delta f = f(theta_k - h g_k) - f_k = h f'_k + (h^2/2) d^2f[g, g] + O(h^3),
while the exact flow gives h f'_k + (h^2/2) f''_k with f'' = d^2f[g, g] + J H g. The trapezoid
rule (h/2)(f'_k + f'_{k+1}) equals h f'_k + (h^2/2) f''_k + O(h^3), so

    e_k = max_i |Delta f_i - (h/2)(f'_k + f'_{k+1})_i|   = (h^2/2) |J H g| + O(h^3)

is the leading local error of the step in f, computed from quantities every step needs anyway
(f'_{k+1} comes from the next point's evaluation). A step is accepted when e_k <= tol; the next
step is h * clip(0.9 sqrt(tol / e_k), 0.2, 2). The tolerance is absolute in f because the loss
gradient depends on f through exp(-|f|): an error of tol in f is a relative error of tol in the
gradient, at every t. Why f and not K: the finite ReLU kernel is discontinuous in theta (one
activation flip moves it by ~C/m), so an error norm on K would hunt flips; f is continuous and
its error bounds the error of the trajectory the kernel is read from. A step across a kink
has a first-order error (after the crossing it moves along the other side's derivative), and
e_k counts it: late in a run, when every step carries flips, e_k ~ h and halving tol doubles the
steps (docs/concepts.md, chattering), at a constant h / t.

A step is also capped at 1 / (c lambda_max(K_t)), c the largest loss curvature in f over the
points (1 for squared loss, sigmoid(f)(1 - sigmoid(f)) for cross-entropy): half the GD stability
limit, where Euler's linear amplification stays in (0, 1), so the estimate is not fooled by a
step that oscillates.

The kernel averaged over a short window. Where units chatter across their kinks (exact gradient
flow slides along the kink, a Filippov solution), the kernel at one instant carries the side each
unit happens to be on after the last step, which no tolerance pins down: the instantaneous gap
moves by many flips' worth between tolerances. Its time average does converge (Euler's time
on each side of a sliding kink tends to the Filippov weights). Each tracked row at T therefore
also records ``gap_avg`` = max|mean of K_t over [T 10^-AVERAGE_DECADES, T] - K|, the integral
taken by the trapezoid rule over the accepted steps (K linear within a step). By convexity
gap_avg <= the largest instantaneous gap in the window: gap_avg >= bound says that the kernel
was out of the band somewhere in that window, at any tolerance.

Squared loss converges, and then its stability cap (1 / lambda_max) stops the steps growing. Once
the residual r = f - y is so small that the whole remaining flow moves theta by less than
|r|_2 / sqrt(lambda_min(K_t)) <= STATIONARY_MOVE, theta is held there: later tracked times record
the same state (the summary's ``stationary_t`` says from when).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch

from ._config import TrainConfig
from ._empirical import EmpiricalNTK, _block_features, _Features, _kernel_block
from ._models import SeedNet
from ._tracker import Tracker, exploded
from ._train import LoopState, data_loss, decay_gradient, soft_targets

Tensor = torch.Tensor

STATIONARY_MOVE = 1e-10  # remaining l2 displacement of theta below which the flow has stopped
MAX_FLOW_STEPS = 1_000_000  # accepted + rejected evaluations; a run that needs more is stopped
GROWTH, SHRINK, SAFETY = 2.0, 0.2, 0.9  # step-size controller for an O(h^2) local error
AVERAGE_DECADES = 0.1  # gap_avg averages K_t over the last tenth of a decade of t before a row


def loss_gradient(f: Tensor, target: Tensor, loss: str) -> Tensor:
    """dL/df, shape (n,): sigmoid(f) - y for cross-entropy, f - y for mse (summed losses).

    Cross-entropy is evaluated as (1 - y) sigmoid(f) - y sigmoid(-f), equal to sigmoid(f) - y but
    without its cancellation: for y = 1 and f > 36.7, 1 - sigmoid(f) < 2^-53 rounds to 0 or one
    ulp of 1, which stalls that point and switches the flow's direction between two values.
    """
    if loss != "cross_entropy":
        return f - target
    return (1.0 - target) * torch.sigmoid(f) - target * torch.sigmoid(-f)


def loss_curvature(f: Tensor, loss: str) -> float:
    """max_i d^2 L / df_i^2: sigmoid(f) sigmoid(-f) for cross-entropy (<= 1/4), 1 for mse."""
    if loss != "cross_entropy":
        return 1.0
    return float((torch.sigmoid(f) * torch.sigmoid(-f)).max())


@dataclass
class Evaluation:
    """Everything one step needs at theta, from one forward and one backward pass.

    f (n,), K (n, n) the empirical NTK, fdot (n,) = f' = J theta', patterns (n, H) bool,
    near_kink (pre-activations with |h| < NEAR_KINK), loss (the summed data loss). The loss
    gradient is kept factored: for each map, dL/dW = Gr^T U with Gr = diag(dL/df) G (n, out) and
    U (n, in), so a step is a rank-n update of W and the (out, in) gradient is never formed.
    """

    f: Tensor
    K: Tensor
    fdot: Tensor
    patterns: Tensor
    near_kink: int
    loss: float
    factors: list[tuple[Tensor, Tensor, Tensor, Tensor | None]]  # (W, Gr, U, b) per map
    decay: list[Tensor] | None = None  # the weight-decay gradient per trained tensor

    @cached_property
    def K_host(self) -> Tensor:
        """K in float64 on the CPU, made once per evaluation: the stability cap, the remaining
        move and the averaging windows all read it."""
        return self.K.detach().to("cpu", torch.float64)


def evaluate(
    model: SeedNet,
    X: Tensor,
    target: Tensor,
    loss: str,
    params: list[Tensor],
    decay: Callable[[list[Tensor]], list[Tensor]] | None = None,
) -> Evaluation:
    """f, K_t, the loss gradient and f' at the model's current parameters.

    The empirical NTK's one forward and one backward pass (``_empirical._block_features``) give
    each linear map's input U (n, in) and output gradient G (n, out) (DESIGN §1). Then K is the
    NTK's own contraction (``_kernel_block``), dL/dW = G^T diag(r) U with r = dL/df, and
    f' = -J grad L = -K r exactly. With weight decay, f' also gets -J (wd (theta - c)),
    contracted per map. ``decay(params)`` returns the weight-decay gradient per tensor, or is None.
    """
    feats, f, patterns, near = _block_features(model, X)
    r = loss_gradient(f, target, loss)  # (n,)
    K = _kernel_block(feats, feats)
    K = 0.5 * (K + K.T)  # exact symmetry, as empirical_ntk
    factors = []
    for U, G, W, b in zip(feats.U, feats.G, feats.weights, feats.bias_params, strict=True):
        assert W is not None
        factors.append((W, G * r[:, None], U, b))
    fdot = -(K @ r)  # (n,)
    decay_grads = None
    if decay is not None:
        decay_grads = decay(params)
        fdot = fdot - _jvp(feats, params, decay_grads)
    return Evaluation(f=f, K=K, fdot=fdot, patterns=patterns, near_kink=near,
                      loss=float(data_loss(f, target, loss)), factors=factors,
                      decay=decay_grads)  # fmt: skip


def _jvp(feats: _Features, params: list[Tensor], vec: list[Tensor]) -> Tensor:
    """J v (n,) for a direction v given per trained tensor: sum_maps rows of G . (V_W u + v_b)."""
    by_id = {id(p): v for p, v in zip(params, vec, strict=True)}
    out = torch.zeros(feats.G[0].shape[0], dtype=feats.G[0].dtype, device=feats.G[0].device)
    for U, G, W, b in zip(feats.U, feats.G, feats.weights, feats.bias_params, strict=True):
        move = U @ by_id[id(W)].T  # (n, out)
        if b is not None:
            move = move + by_id[id(b)]
        out += (G * move).sum(1)
    return out


def apply_step(ev: Evaluation, params: list[Tensor], h: float) -> None:
    """theta <- theta - h grad L (weight decay included), in place, as rank-n updates.

    ``apply_step(ev, params, -h)`` undoes it up to rounding (one ulp per entry), which is how a
    rejected step returns to theta_k without keeping a copy of every parameter.
    """
    with torch.no_grad():
        for W, Gr, U, b in ev.factors:
            W.addmm_(Gr.T, U, alpha=-h)  # (out, n) @ (n, in)
            if b is not None:
                b.add_(Gr.sum(0), alpha=-h)
        if ev.decay is not None:
            for p, d in zip(params, ev.decay, strict=True):
                p.add_(d, alpha=-h)


def step_error(before: Evaluation, after: Evaluation, h: float) -> float:
    """The step's local error in f: max |Delta f - (h/2)(f'_k + f'_{k+1})| (module docstring)."""
    trapezoid = 0.5 * h * (before.fdot + after.fdot)
    return float(((after.f - before.f) - trapezoid).abs().max())


def stability_cap(ev: Evaluation, loss: str) -> float:
    """1 / (c lambda_max(K_t)): half of gradient descent's stability limit at this point."""
    lam = float(torch.linalg.eigvalsh(ev.K_host)[-1])
    return 1.0 / max(loss_curvature(ev.f, loss) * lam, 1e-300)


def next_step(h: float, err: float, tol: float) -> float:
    """The controller: h * clip(0.9 sqrt(tol / err), 0.2, 2) for an O(h^2) local error."""
    if err <= 0.0 or not math.isfinite(err):
        return h * (GROWTH if err == 0.0 else SHRINK)
    return h * min(GROWTH, max(SHRINK, SAFETY * math.sqrt(tol / err)))


def remaining_move(ev: Evaluation, target: Tensor, loss: str) -> float:
    """Bound on how far the rest of the flow moves theta: |dL/df|_2 / sqrt(lambda_min(K_t)).

    Exact for the linearized flow of squared loss (theta_inf - theta_t = -J^T K^-1 r); used only
    for squared loss, whose flow converges. Cross-entropy never stops (returns inf).
    """
    if loss == "cross_entropy":
        return math.inf
    lam = float(torch.linalg.eigvalsh(ev.K_host)[0])
    if lam <= 0.0:
        return math.inf
    r = loss_gradient(ev.f, target, loss)
    return float(torch.linalg.vector_norm(r.double())) / math.sqrt(lam)


def _finite(ev: Evaluation) -> bool:
    return math.isfinite(ev.loss) and bool(torch.isfinite(ev.f).all())


def _as_kernel(ev: Evaluation) -> EmpiricalNTK:
    return EmpiricalNTK(K=ev.K, f=ev.f, patterns=ev.patterns, near_kink=ev.near_kink)


@dataclass
class FlowRun:
    """What ``integrate`` needs besides the state: the data, the horizon and the callbacks."""

    model: SeedNet
    X: Tensor  # (n, d)
    y: Tensor  # (n,) labels
    X_probe: Tensor | None  # (p, d)
    cfg: TrainConfig
    times: list[float]  # tracked times, ascending, times[0] = 0, times[-1] = t_max
    tracker: Tracker
    checkpoint: Callable[[LoopState], None] | None = None
    checkpoint_minutes: float = 0.0
    on_step: Callable[[float], None] | None = None  # called with t after each accepted step
    monitor: Callable[[dict], bool] | None = None


def integrate(run: FlowRun, state: LoopState) -> LoopState:
    """Integrate gradient flow from ``state.t`` to ``run.times[-1]`` with adaptive Euler steps.

    Every tracked time is landed on exactly (the step before it is shortened), so rows of runs
    with different widths, seeds and losses share their t. Per accepted step: one forward and
    one backward pass (``evaluate``); a rejected step costs one more. Returns the final state;
    ``diverged_step``, ``stopped_step``, ``stationary_t`` or ``stopped_by_budget`` say why it
    ended early, if it did.
    """
    # --- set up -------------------------------------------------------------------------------
    cfg, tracker, params = run.cfg, run.tracker, state.params
    target = soft_targets(run.y.to(run.X.dtype), cfg.label_smoothing)  # (n,)
    decay = decay_gradient(cfg, state.theta0)
    ev = evaluate(run.model, run.X, target, cfg.loss, params, decay)
    h = state.h if state.h > 0 else cfg.lr
    last_ckpt, evaluations = time.monotonic(), 0
    k = _next_time_index(run.times, tracker, state.t)
    while True:
        if not _finite(ev):
            state.diverged_step = state.step
            break
        # --- track: every tracked time is landed on exactly ---------------------------------------
        if k < len(run.times) and state.t >= run.times[k]:
            _record(run, state, ev, h, k)
            k += 1
            if exploded(tracker.rows):
                state.diverged_step = state.step
                break
            done = k >= len(run.times)
            if run.monitor is not None and not done and run.monitor(tracker.rows):
                state.stopped_step = state.step
                break
            if done:
                break
        # --- a converged squared-loss flow stays where it is ------------------------------------
        if state.stationary_t is not None or _stopped(ev, target, cfg, decay):
            state.stationary_t = state.t if state.stationary_t is None else state.stationary_t
            average_into(state.windows, run.times, k, state.t, run.times[k], ev.K_host, ev.K_host)
            state.t = run.times[k]
            continue
        if evaluations >= MAX_FLOW_STEPS:
            state.stopped_by_budget = True
            break
        # --- step: Euler, then the error estimate at the new point -------------------------------
        step = min(h, stability_cap(ev, cfg.loss), run.times[k] - state.t)
        landing = step == run.times[k] - state.t and step < h
        apply_step(ev, params, step)
        new = evaluate(run.model, run.X, target, cfg.loss, params, decay)
        evaluations += 1
        err = step_error(ev, new, step) if _finite(new) else math.inf
        if err > cfg.flow_tol:  # rejected: back to theta_k with a smaller step
            apply_step(ev, params, -step)
            state.rejected += 1
            h = next_step(step, err, cfg.flow_tol)
            if h < 1e-12 * max(state.t, run.cfg.lr):  # no step small enough: the flow blew up
                state.diverged_step = state.step
                break
            continue
        # --- accepted ------------------------------------------------------------------------
        jump, flips = float((new.K - ev.K).abs().max()), int((new.patterns != ev.patterns).sum())
        state.jump = max(state.jump, jump)
        state.step_flips = max(state.step_flips, flips)
        if flips > 0:
            state.flip_jump = max(state.flip_jump, jump / flips)
        t_before = state.t
        state.t = run.times[k] if landing or state.t + step > run.times[k] else state.t + step
        average_into(state.windows, run.times, k, t_before, state.t, ev.K_host, new.K_host)
        state.step += 1
        grown = next_step(step, err, cfg.flow_tol)
        h = max(h, grown) if landing else grown
        state.h, ev = h, new
        if run.on_step is not None:
            run.on_step(state.t)
        # --- checkpoint ------------------------------------------------------------------------
        minutes = (time.monotonic() - last_ckpt) / 60
        if run.checkpoint is not None and 0 < run.checkpoint_minutes < minutes:
            run.checkpoint(state)
            last_ckpt = time.monotonic()
    state.h = h
    return state


def _next_time_index(times: list[float], tracker: Tracker, t: float) -> int:
    """Index of the first tracked time not yet recorded (a resumed run continues there)."""
    done = tracker.rows["t"]
    last = done[-1] if done else -math.inf
    return next((i for i, T in enumerate(times) if last < T and t <= T), len(times))


def _stopped(ev: Evaluation, target: Tensor, cfg: TrainConfig, decay) -> bool:
    """True when a squared-loss flow has converged: the rest of it moves theta < STATIONARY_MOVE."""
    if cfg.loss == "cross_entropy" or decay is not None:
        return False
    return remaining_move(ev, target, cfg.loss) < STATIONARY_MOVE


def _record(run: FlowRun, state: LoopState, ev: Evaluation, h: float, k: int) -> None:
    tracker = run.tracker
    averaged = window_gap(state.windows, run.times, k, tracker.ref.K)
    held = state.stationary_t is not None and tracker.rows["t"]
    if held and tracker.rows["t"][-1] >= state.stationary_t:  # theta has not moved since
        tracker.repeat_last(state.step, state.t, h)
    else:
        out = _as_kernel(ev) if tracker.with_kernel else None
        tracker.record(state.step, state.t, h, out, ev.f, ev.loss, run.y, run.model, run.X,
                       run.X_probe, state.params, state.theta0)  # fmt: skip
        if out is not None and state.step > 0:
            tracker.set_jump(state.jump, state.flip_jump, state.step_flips)
        state.jump, state.flip_jump, state.step_flips = 0.0, 0.0, 0
    if tracker.with_kernel:
        tracker.set_average(averaged)


def _window_start(T: float) -> float:
    return T * 10.0**-AVERAGE_DECADES


def average_into(
    windows: dict[int, tuple[Tensor, float]],
    times: list[float],
    k: int,
    t_a: float,
    t_b: float,
    Ka: Tensor,
    Kb: Tensor,
) -> None:
    """Add the integral of K over [t_a, t_b] (K linear from Ka to Kb, float64 on the CPU:
    ``Evaluation.K_host``) to the window of every row j >= k that the interval meets;
    ``windows[j]`` = (integral so far, time covered)."""
    if t_b <= t_a:
        return
    j = k
    while j < len(times) and _window_start(times[j]) < t_b:
        lo, hi = max(t_a, _window_start(times[j])), min(t_b, times[j])
        if hi > lo:
            mid = 0.5 * ((lo - t_a) + (hi - t_a)) / (t_b - t_a)  # K's value mid-way is its mean
            integral, covered = windows.get(j, (torch.zeros_like(Ka), 0.0))
            windows[j] = (integral + (hi - lo) * (Ka + mid * (Kb - Ka)), covered + (hi - lo))
        j += 1


def window_gap(
    windows: dict[int, tuple[Tensor, float]], times: list[float], j: int, K_ref: Tensor
) -> float | None:
    """gap_avg of row j: max|mean of K over its window - K_ref|, removing the window; None at
    t = 0 or for a window the run did not wholly pass (resumed from an older checkpoint)."""
    got = windows.pop(j, None)
    length = times[j] - _window_start(times[j])
    if got is None or length <= 0.0 or got[1] < length * (1.0 - 1e-9):
        return None
    integral, covered = got
    return float((integral / covered - K_ref.to(torch.float64)).abs().max())
