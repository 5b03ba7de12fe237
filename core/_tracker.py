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
from ._empirical import ntk_with_patterns

COLUMNS = (
    "step", "t", "loss", "accuracy", "f", "f_probe", "f_abs_min", "gap", "drift",
    "lambda_min", "kernel", "theta_inf", "theta_l2", "flips",
)  # fmt: skip


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
    """(||theta - theta_0||_inf, ||theta - theta_0||_2) over all trained parameters."""
    with torch.no_grad():
        diffs = torch._foreach_sub(params, theta0)
    inf = max(float(d.abs().max()) for d in diffs)
    l2 = math.sqrt(sum(float(n) ** 2 for n in torch._foreach_norm(diffs)))
    return inf, l2


@dataclass
class Tracker:
    """Records one row per tracked step. ``K0`` and ``patterns`` carry state between rows."""

    ref: NTKReference  # analytic kernel on the training points (float64, CPU)
    pairs: list  # [[i, j], ...] kernel entries to store
    with_kernel: bool = True
    with_flips: bool = True
    block_size: int | None = None
    threshold: float = 0.0  # f > threshold predicts class 1 (0 for logits, 0.5 for mse)
    rows: dict[str, list] = field(default_factory=lambda: {c: [] for c in COLUMNS})
    K0: torch.Tensor | None = None  # (n, n) float64 empirical kernel at step 0
    patterns: torch.Tensor | None = None  # (n, H) bool activation pattern at the last row

    def record(self, step, lr, model, X, y_pred_target, X_probe, loss, params, theta0) -> None:
        """Append the row for ``step``; ``loss`` is the (unpenalized) training loss at theta_s."""
        if self.with_kernel:
            out = ntk_with_patterns(model, X, block_size=self.block_size)
            f, K = out.f, out.K.to(device="cpu", dtype=torch.float64)  # (n,), (n, n)
            self._kernel_columns(K)
            self._flip_column(out.patterns)
        else:
            with torch.no_grad():
                f = model(X)
            for c in ("gap", "drift", "lambda_min"):
                self.rows[c].append(None)
            self.rows["kernel"].append([])
            self.rows["flips"].append(None)
        self._output_columns(step, lr, f, y_pred_target, model, X_probe, loss)
        inf, l2 = param_distance(params, theta0)
        self.rows["theta_inf"].append(inf)
        self.rows["theta_l2"].append(l2)

    def _kernel_columns(self, K: torch.Tensor) -> None:
        if self.K0 is None:
            self.K0 = K.clone()
        self.rows["gap"].append(float((K - self.ref.K).abs().max()))
        self.rows["drift"].append(float((K - self.K0).abs().max()))
        self.rows["lambda_min"].append(float(torch.linalg.eigvalsh(K)[0]))
        idx = torch.tensor(self.pairs, dtype=torch.long)
        self.rows["kernel"].append(K[idx[:, 0], idx[:, 1]].tolist())

    def _flip_column(self, patterns: torch.Tensor) -> None:
        if not self.with_flips:
            self.rows["flips"].append(None)
            return
        prev = self.patterns
        self.rows["flips"].append(0 if prev is None else int((patterns != prev).sum()))
        self.patterns = patterns

    def _output_columns(self, step, lr, f, target, model, X_probe, loss) -> None:
        f64 = f.detach().to(device="cpu", dtype=torch.float64)
        self.rows["step"].append(int(step))
        self.rows["t"].append(float(step) * lr)
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
        self.rows = {c: list(state["rows"][c]) for c in COLUMNS}
        self.K0 = state["K0"]
        self.patterns = state["patterns"]
