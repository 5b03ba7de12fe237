"""Training-loop benchmark: ntkdiv's loop against a plain PyTorch loop, side by side.

Goals (issue "core"): with tracking off, >= 0.9x the plain loop's steps per second; with the
default tracking schedule, tracking adds <= 15%.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch

from core import (
    LoopState,
    TrackConfig,
    Tracker,
    analytic_ntk,
    build_model,
    config_from_dict,
    data_loss,
    kernel_pairs,
    make_dataset,
    ntk_reference,
    tracked_steps,
    train,
)

from ._common import interleaved, machine, median, table


def _setup(width: int, depth: int):
    data = make_dataset(config_from_dict({}).data)
    model = build_model("fcn", 2, width, depth, seed=0)
    return data, model


def plain_loop(width: int, depth: int, epochs: int, lr: float = 0.1) -> None:
    """model(X), loss.backward(), manual SGD: the baseline every PyTorch user would write."""
    data, model = _setup(width, depth)
    for _ in range(epochs):
        loss = data_loss(model(data.X), data.y, "cross_entropy")
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
                p.grad = None


def ntkdiv_loop(width: int, depth: int, epochs: int, tracking: bool) -> None:
    """core's loop, with the default tracking schedule or with tracking off."""
    data, model = _setup(width, depth)
    cfg = config_from_dict({"train": {"epochs": epochs, "lr": 0.1}}).train
    params = list(model.parameters())
    state = LoopState(step=0, params=params, theta0=[p.detach().clone() for p in params])
    ref = ntk_reference("fcn", data.X, depth)
    track = TrackConfig()
    tracker = Tracker(ref=ref, pairs=kernel_pairs(6, track.kernel_full_max_n, None))
    steps = (
        set(tracked_steps(epochs, track.log_points, track.every).tolist()) if tracking else set()
    )
    train(model, data.X, data.y, None, cfg, steps, tracker, state)


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared machine, 2 threads make timings swing wildly
    analytic_ntk("fcn", torch.eye(2), 1)  # warm up imports
    sizes = [(256, 3)] if quick else [(128, 3), (512, 3)]
    epochs, repeats = (300, 2) if quick else (10_000, 3)  # the seed's horizon
    rows = []
    for width, depth in sizes:
        fns: dict[str, Callable[[], object]] = {
            "plain": partial(plain_loop, width, depth, epochs),
            "off": partial(ntkdiv_loop, width, depth, epochs, tracking=False),
            "default": partial(ntkdiv_loop, width, depth, epochs, tracking=True),
        }
        times = interleaved(fns, repeats)
        plain, off, on = (median(times[k]) for k in ("plain", "off", "default"))
        rows.append([width, depth, epochs, epochs / plain, epochs / off, plain / off,
                     100 * (on - off) / off])  # fmt: skip
        print(table(HEADER, rows[-1:]), flush=True)
    torch.set_num_threads(threads)
    ok_speed = all(r[5] >= 0.9 for r in rows)
    ok_track = all(r[6] <= 15 for r in rows)
    return "\n".join([
        "## Training loop vs a plain PyTorch loop (`ntkdiv bench train`)",
        "",
        f"Six circle points, FCN, cross-entropy, lr 0.1, float64, CPU ({machine()}), 1 torch "
        "thread. "
        f"Medians of {repeats} interleaved repeats of {epochs} full-batch steps. "
        "`speed ratio` = ntkdiv (tracking off) steps/s over the plain loop's "
        "(model, loss.backward(), manual SGD); `tracking overhead` = default schedule "
        f"(log-spaced, {TrackConfig().log_points} points, kernel on) over tracking off.",
        "",
        table(HEADER, rows),
        "",
        f"- Goal >= 0.9x the plain loop with tracking off: {'met' if ok_speed else 'NOT met'}.",
        f"- Goal tracking overhead <= 15%: {'met' if ok_track else 'NOT met'}.",
    ])  # fmt: skip


HEADER = ["m", "L", "steps", "plain steps/s", "ntkdiv steps/s", "speed ratio",
          "tracking overhead %"]  # fmt: skip
