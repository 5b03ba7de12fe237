"""The tracker: every quantity of DESIGN §1 at the tracked steps, kept as plain column lists.

Its whole state is a dict of lists and tensors, so it goes into a ``weights_only`` checkpoint and
a resumed run continues to the same bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ._analytic import NTKReference
from ._empirical import EmpiricalNTK, ntk_with_patterns
from ._models import SeedNet

COLUMNS = (
    "step", "t", "h", "loss", "accuracy", "f", "f_probe", "f_abs_min", "gap", "drift",
    "drift_smooth", "step_jump", "flip_jump", "step_flips", "lambda_min", "kernel", "theta_inf",
    "theta_l2", "flips", "near_kink", "gap_avg",
)  # fmt: skip


EXPLODED = 1e8  # ||theta_t - theta_0||_inf past this: the run diverged, whatever the loss says


def exploded(rows: dict[str, list]) -> bool:
    """True when the last row's parameter distance is not finite or past EXPLODED."""
    dist = rows["theta_inf"][-1] if rows["theta_inf"] else 0.0
    return not math.isfinite(dist) or dist > EXPLODED


def kernel_pairs(n: int, full_max_n: int, chosen: list[tuple[int, int]] | None) -> list:
    """Pairs (i, j) whose K_t entries are stored: the upper triangle up to ``full_max_n`` points,
    otherwise the chosen pairs (default: the seed's Figure 2 style, three points and their pairs).
    """
    if n <= full_max_n:
        return [[i, j] for i in range(n) for j in range(i, n)]
    if chosen:
        return [[int(i), int(j)] for i, j in chosen]
    return [[0, 0], [1, 1], [2, 2], [0, 1], [0, 2], [1, 2]]


def param_distance(params: list[torch.Tensor], theta0: list[torch.Tensor]) -> tuple[float, float]:
    """(||theta - theta_0||_inf, ||theta - theta_0||_2) over all trained parameters.

    One tensor's difference at a time (in place), so the peak is one layer, not one network.
    """
    inf, squares = 0.0, 0.0
    with torch.no_grad():
        for p, p0 in zip(params, theta0, strict=True):
            d = p - p0
            squares += float(torch.linalg.vector_norm(d)) ** 2
            inf = max(inf, float(d.abs_().max()))
    return inf, math.sqrt(squares)


@dataclass
class Tracker:
    """Records one row per tracked step. ``K0`` and ``patterns`` (at t = 0) anchor the drifts.

    Columns beyond DESIGN §1: ``h`` the step size in use; ``flips`` ReLU activations whose sign
    differs from t = 0; ``near_kink`` pre-activations with |h| < 1e-9; ``drift_smooth`` =
    max|K(theta_t, pattern_0) - K_0|, the drift with every activation frozen at its t = 0 state
    (the part of the drift that no flip makes); ``step_jump`` the largest one-step kernel jump
    max|K_{s+1} - K_s| measured since the previous row (gradient flow: every step; plain GD: the
    step right after each tracked step); ``step_flips`` the most activation flips (both ways) in
    one of those steps, and ``flip_jump`` the largest kernel change per flip, max over those steps
    of step_jump / flips: the kernel's granularity, which a step of any size cannot go below;
    ``gap_avg`` (gradient flow) the gap of K_t averaged over the last tenth of a decade of t,
    which does not depend on which side of its kink each chattering unit last landed.
    """

    ref: NTKReference  # analytic kernel on the training points (float64, CPU)
    pairs: list  # [[i, j], ...] kernel entries to store
    with_kernel: bool = True
    with_flips: bool = True
    block_size: int | None = None
    threshold: float = 0.0  # f > threshold predicts class 1 (0 for logits, 0.5 for mse)
    rows: dict[str, list] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    K0: torch.Tensor | None = None  # (n, n) float64 empirical kernel at step 0
    patterns: torch.Tensor | None = None  # (n, H) bool activation pattern at t = 0

    def kernel(self, model: SeedNet, X: torch.Tensor) -> EmpiricalNTK | None:
        """K_t, f and the activation pattern at the model's parameters (None without kernels)."""
        if not self.with_kernel:
            return None
        return ntk_with_patterns(model, X, block_size=self.block_size)

    def record(self, step, t, h, out, f, loss, target, model, X, X_probe, params, theta0) -> None:
        """Append the row for ``step`` at gradient-flow time ``t``.

        ``out``: the EmpiricalNTK at theta_s (None when kernels are off); ``f`` (n,) the outputs;
        ``loss`` the (unpenalized) training loss at theta_s; ``h`` the step size in use.
        """
        if out is not None:
            K = out.K.to(device="cpu", dtype=torch.float64)  # (n, n)
            self._kernel_columns(K, model, X)
            self._flip_columns(out.patterns, out.near_kink)
        else:
            for c in ("gap", "drift", "drift_smooth", "lambda_min", "flips", "near_kink"):
                self.rows[c].append(None)
            self.rows["kernel"].append([])
        for c in ("step_jump", "flip_jump", "step_flips", "gap_avg"):
            self.rows[c].append(None)
        self.rows["h"].append(float(h))
        self._output_columns(step, t, f, target, model, X_probe, loss)
        inf, l2 = param_distance(params, theta0)
        self.rows["theta_inf"].append(inf)
        self.rows["theta_l2"].append(l2)

    def repeat_last(self, step: int, t: float, h: float) -> None:
        """Append a copy of the last row at time ``t``: the state has not moved since (a
        converged flow held still), so every other column would be recomputed to the same bits."""
        for c in COLUMNS:
            self.rows[c].append(self.rows[c][-1])
        self.rows["step"][-1], self.rows["t"][-1], self.rows["h"][-1] = int(step), float(t), h
        if self.rows["step_jump"][-1] is not None:
            self.rows["step_jump"][-1], self.rows["flip_jump"][-1] = 0.0, 0.0
            self.rows["step_flips"][-1] = 0

    def set_jump(self, jump: float, flip_jump: float, step_flips: int) -> None:
        """Set the last row's ``step_jump``, ``flip_jump`` and ``step_flips`` (class docstring)."""
        self.rows["step_jump"][-1] = float(jump)
        self.rows["flip_jump"][-1] = float(flip_jump)
        self.rows["step_flips"][-1] = int(step_flips)

    def set_average(self, gap_avg: float | None) -> None:
        """Set the last row's ``gap_avg`` (gradient flow: the gap of K_t averaged over the last
        tenth of a decade of t, core._flow; None where the run has no such window)."""
        self.rows["gap_avg"][-1] = gap_avg

    def _kernel_columns(self, K: torch.Tensor, model, X) -> None:
        if self.K0 is None:
            self.K0 = K.clone()
        self.rows["gap"].append(float((K - self.ref.K).abs().max()))
        self.rows["drift"].append(float((K - self.K0).abs().max()))
        self.rows["drift_smooth"].append(self._drift_smooth(K, model, X))
        self.rows["lambda_min"].append(float(torch.linalg.eigvalsh(K)[0]))
        idx = torch.tensor(self.pairs, dtype=torch.long)
        self.rows["kernel"].append(K[idx[:, 0], idx[:, 1]].tolist())

    def _drift_smooth(self, K: torch.Tensor, model, X) -> float | None:
        """max|K(theta_t, pattern_0) - K_0|: one more forward + backward with frozen activations."""
        if not self.with_flips:
            return None
        if self.patterns is None or self.K0 is None:  # the first row: theta_0 itself
            return 0.0
        frozen = ntk_with_patterns(model, X, self.block_size, frozen=self.patterns)
        Ks = frozen.K.to(device="cpu", dtype=torch.float64)
        return float((Ks - self.K0).abs().max())

    def _flip_columns(self, patterns: torch.Tensor, near_kink: int) -> None:
        self.rows["near_kink"].append(int(near_kink))
        if not self.with_flips:
            self.rows["flips"].append(None)
            return
        if self.patterns is None:
            self.patterns = patterns.clone()
        self.rows["flips"].append(int((patterns != self.patterns).sum()))

    def _output_columns(self, step, t, f, target, model, X_probe, loss) -> None:
        f64 = f.detach().to(device="cpu", dtype=torch.float64)
        self.rows["step"].append(int(step))
        self.rows["t"].append(float(t))
        self.rows["loss"].append(float(loss))
        correct = ((f64 > self.threshold) == (target.cpu() > 0.5)).double().mean()
        self.rows["accuracy"].append(float(correct))
        self.rows["f"].append(f64.tolist())
        self.rows["f_abs_min"].append(float(f64.abs().min()))
        if X_probe is not None and X_probe.shape[0] > 0:
            with torch.no_grad():
                fp = model(X_probe).detach().to(device="cpu", dtype=torch.float64)
            self.rows["f_probe"].append(fp.tolist())
        else:
            self.rows["f_probe"].append([])

    # --- checkpoint state ------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"rows": self.rows, "K0": self.K0, "patterns": self.patterns}

    def load_state(self, state: dict[str, Any]) -> None:
        n = len(state["rows"]["step"])  # a column newer than the checkpoint: None in its rows
        self.rows = {c: list(state["rows"].get(c, [None] * n)) for c in COLUMNS}
        self.K0 = state["K0"]
        self.patterns = state["patterns"]
