"""The report's figures, as PNG files (matplotlib, Agg backend; no display, no network).

A *family* is (arch, depth, data): its groups (one per loss, lr and variant) are drawn side by
side, so cross-entropy and the squared-loss control sit next to each other. Medians over seeds are
lines; the band spans the seeds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ._fits import JUMP_KEY, left_out, starts_inside  # noqa: E402
from ._tables import T_GRID  # noqa: E402

DPI = 90
MAX_PANELS = 6  # groups per family figure; more are listed in the caption and left out
MAX_POINTS = 12  # f_t lines in the outputs figure
SMOOTH = 9  # rows in the centred moving average of the kernel figure (rows are log-spaced in t)
MARGINS = (0.95, 0.15, 0.55, 0.5, 1.0, 0.35)  # inches: left, right, bottom, top, wgap, hgap


@dataclass(frozen=True)
class Figure:
    """A written figure: its file, a title and a caption for the report."""

    path: Path
    title: str
    caption: str


def _panel_name(g: pd.Series) -> str:
    variant = f"\n{g['variant']}" if g["variant"] else ""
    return f"{g['loss']} lr={g['lr']:g}{variant}"


def _width_colors(widths) -> dict:
    ws = sorted(set(int(w) for w in widths))
    cmap = plt.get_cmap("viridis")
    return {w: cmap(i / max(1, len(ws) - 1) * 0.9) for i, w in enumerate(ws)}


def _save(fig, path: Path, title: str, caption: str) -> Figure:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)  # fixed margins: one draw (bbox_inches="tight" costs two)
    plt.close(fig)
    return Figure(path, title, caption)


def _panels(n: int, rows: int = 1, size=(4.6, 3.4)):
    """A rows x n grid of axes with fixed margins, in inches (MARGINS): room for log tick
    labels, an axis label and a two-line title. A layout engine would find them by drawing the
    figure three times, which was half of the aggregator's figure time."""
    left, right, bottom, top, wgap, hgap = MARGINS
    w, h = size[0] * n, size[1] * rows
    fig, axes = plt.subplots(rows, n, figsize=(w, h), squeeze=False)
    aw = (w - left - right - (n - 1) * wgap) / n
    ah = (h - bottom - top - (rows - 1) * hgap) / rows
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wgap / aw, hspace=hgap / ah)  # fmt: skip
    return fig, axes


def _single():
    fig, axes = _panels(1, size=(5.5, 3.8))
    return fig, axes[0][0]


def _groups(family: pd.DataFrame) -> list[tuple[pd.Series, pd.DataFrame]]:
    """(group keys, its usable trials) for each group in a family, cross-entropy first."""
    out = []
    for _, sub in family.groupby(["loss", "lr", "variant"], sort=True):
        out.append((sub.iloc[0], sub))
    return out[:MAX_PANELS]


def _median_curve(tids, curves: dict, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, min and max over trials of one curve on T_GRID (NaN where no trial has data)."""
    block = np.stack([curves[t].on_grid(which) for t in tids if t in curves])
    with warnings.catch_warnings():  # grid points beyond every horizon are all-NaN columns
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(block, 0), np.nanmin(block, 0), np.nanmax(block, 0)


def _curves_by_width(ax, sub: pd.DataFrame, curves: dict, which: str, colors: dict) -> None:
    for width, wsub in sub.groupby("width"):
        med, lo, hi = _median_curve(wsub["trial_id"], curves, which)
        ok = np.isfinite(med)
        ax.plot(T_GRID[ok], med[ok], color=colors[int(width)], label=f"m={int(width)}")
        if len(wsub) > 1:
            ax.fill_between(T_GRID[ok], lo[ok], hi[ok], color=colors[int(width)], alpha=0.15)
    ax.set_xscale("log")


def drift_figure(family: pd.DataFrame, curves: dict, path: Path, name: str) -> Figure:
    """drift_t = max|K_t - K_0| against t, one line per width, each group in its own panel."""
    groups = _groups(family)
    fig, axes = _panels(len(groups))
    colors = _width_colors(family["width"])
    for ax, (g, sub) in zip(axes[0], groups, strict=False):
        _curves_by_width(ax, sub, curves, "drift", colors)
        ax.axhline(g["bound"], color="red", ls="--", lw=1, label="bound")
        ax.set_yscale("log")
        ax.set(title=_panel_name(g), xlabel="gradient-flow time t", ylabel="drift_t")
        ax.legend(fontsize=7)
    cap = ("Training-induced kernel change max|K_t - K_0| against gradient-flow time (log); "
           "median over seeds, band over seeds; dashed: the bound lambda0/(2n^2).")  # fmt: skip
    return _save(fig, path, f"drift_t against t: {name}", cap)


def _fit_line(ax, fits: pd.DataFrame, quantity: str, widths, color, label: str) -> None:
    sel = fits[fits["quantity"] == quantity]
    if sel.empty or not math.isfinite(sel.iloc[0]["exponent"]):
        return
    r = sel.iloc[0]
    m = np.geomspace(min(widths), max(widths), 20)
    ax.plot(m, r["prefactor"] * m ** r["exponent"], color=color, lw=1,
            label=f"{label} ~ m^{r['exponent']:.2f}")  # fmt: skip


def width_figure(family: pd.DataFrame, fits: pd.DataFrame, path: Path, name: str) -> Figure:
    """gap_init and drift_sup against width (log-log), fits and the bound."""
    groups = _groups(family)
    fig, axes = _panels(len(groups))
    for ax, (g, sub) in zip(axes[0], groups, strict=False):
        gf = _select(fits, g)
        ax.scatter(sub["width"], sub["gap_init"], s=12, color="C0", label="gap_init (per seed)")
        ax.scatter(sub["width"], sub["drift_sup"], s=12, color="C1", label="drift_sup (per seed)")
        _fit_line(ax, gf, "gap_init", sub["width"], "C0", "gap_init")
        _fit_line(ax, gf, "drift_sup_horizon", sub["width"], "C1", "drift_sup")
        ax.axhline(g["bound"], color="red", ls="--", lw=1, label="bound")
        ax.set(xscale="log", yscale="log", title=_panel_name(g), xlabel="width m")
        ax.legend(fontsize=7)
    cap = ("gap_0 = max|K_0 - K| and drift_sup = sup_t max|K_t - K_0| within the horizon, per "
           "trial, with power-law fits; dashed: the bound.")  # fmt: skip
    return _save(fig, path, f"gap_init and drift_sup against width: {name}", cap)


def _select(fits: pd.DataFrame, g: pd.Series) -> pd.DataFrame:
    sel = np.ones(len(fits), dtype=bool)
    for k in ("arch", "depth", "loss", "lr", "data", "variant"):
        sel &= (fits[k] == g[k]).to_numpy()
    return fits[sel]


def gap_figure(family: pd.DataFrame, curves: dict, path: Path, name: str) -> Figure:
    """gap_t / bound against t (log t), one line per width; the bound is the line at 1."""
    cap = ("gap_t = max|K_t - K| over the bound lambda0/(2n^2), against t (log); median over "
           "seeds, band over seeds; dotted, where recorded: gap_avg, the gap of K_t averaged "
           "over the last tenth of a decade of t. Above the dashed line the kernel is out of the "
           "bound; a width whose line starts above it is outside from t = 0.")  # fmt: skip
    groups = _groups(family)
    fig, axes = _panels(len(groups))
    colors = _width_colors(family["width"])
    for ax, (g, sub) in zip(axes[0], groups, strict=False):
        for width, wsub in sub.groupby("width"):
            tids = [t for t in wsub["trial_id"] if t in curves]
            bound = wsub.set_index("trial_id")["bound"]
            block = np.stack([curves[t].on_grid("gap") / bound[t] for t in tids])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med, lo, hi = np.nanmedian(block, 0), np.nanmin(block, 0), np.nanmax(block, 0)
            ok = np.isfinite(med)
            ax.plot(T_GRID[ok], med[ok], color=colors[int(width)], label=f"m={int(width)}")
            if len(tids) > 1:
                ax.fill_between(T_GRID[ok], lo[ok], hi[ok], color=colors[int(width)], alpha=0.15)
            averaged = np.stack([curves[t].on_grid("gap_avg") / bound[t] for t in tids])
            if np.isfinite(averaged).any():  # gradient-flow runs that recorded gap_avg
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    avg = np.nanmedian(averaged, 0)
                ok = np.isfinite(avg)
                named = any(line.get_label() == "gap_avg" for line in ax.get_lines())
                ax.plot(T_GRID[ok], avg[ok], color=colors[int(width)], ls=":", lw=1.2,
                        label="_" if named else "gap_avg")  # fmt: skip
        ax.axhline(1.0, color="red", ls="--", lw=1, label="bound")
        ax.set(xscale="log", yscale="log", title=_panel_name(g), xlabel="gradient-flow time t",
               ylabel="gap_t / bound")  # fmt: skip
        ax.legend(fontsize=7)
    return _save(fig, path, f"gap_t / bound against t: {name}", cap)


def t_leave_figure(family: pd.DataFrame, fits: pd.DataFrame, path: Path, name: str,
                   contested: frozenset = frozenset()) -> Figure:  # fmt: skip
    """t_leave against width (log-log) with its fit; seeds that never left sit at their
    horizon as ^ (a lower bound on their t_leave). Where the squared-loss control left the bound
    too (``contested``, :data:`PAIR_KEYS` tuples), a cross-entropy seed is drawn hollow: the fit
    leaves it out."""
    groups = _groups(family)
    fig, axes = _panels(len(groups))
    averaged = False  # a t_leave_avg series drawn in some panel
    for ax, (g, sub) in zip(axes[0], groups, strict=False):
        ax.set(xscale="log", yscale="log")
        ax.set_autoscaley_on(False)  # equal values would give a singular autoscaled range
        t_leave = sub["t_leave"].to_numpy(float)
        inside = starts_inside(
            sub["gap_init"].to_numpy(float),
            sub[JUMP_KEY].to_numpy(float),
            sub["bound"].to_numpy(float),
        )
        hit = inside & np.isfinite(t_leave) & (t_leave > 0)
        never = inside & np.isinf(t_leave)
        out = left_out(sub, contested)
        ax.scatter(sub["width"][hit & ~out], t_leave[hit & ~out], s=14, color="C2",
                   label="t_leave")  # fmt: skip
        if (hit & out).any():
            ax.scatter(sub["width"][hit & out], t_leave[hit & out], s=18, facecolors="none",
                       edgecolors="C2", label="left out: the control left too")  # fmt: skip
        if never.any():
            ax.scatter(sub["width"][never], sub["t_horizon"][never], marker="^", s=30,
                       color="gray", label="did not leave by (horizon)")  # fmt: skip
        _fit_line(ax, _select(fits, g), "t_leave", sub["width"], "C2", "t_leave")
        shown = [t_leave[hit], sub["t_horizon"].to_numpy(float)[never]]
        if "t_leave_avg" in sub:  # gradient flow: the window-averaged kernel's crossing
            avg = sub["t_leave_avg"].to_numpy(float)
            got = inside & ~out & np.isfinite(avg) & (avg > 0)
            if got.any():
                ax.scatter(sub["width"][got], avg[got], s=22, marker="x", color="C4",
                           label="t_leave_avg")  # fmt: skip
                _fit_line(ax, _select(fits, g), "t_leave_avg", sub["width"], "C4", "t_leave_avg")
                shown.append(avg[got])
                averaged = True
        ax.set(title=_panel_name(g), xlabel="width m", ylabel="first t with gap_t >= bound")
        _open_ylim(ax, np.concatenate(shown))
        ax.legend(fontsize=7)
    cap = ("t_leave: first tracked t at which gap_t = max|K_t - K| reaches the bound, per seed "
           "that started inside it; the line is the fit log t_leave ~ log m (from >= 3 widths "
           "only). Hollow: a width where the squared-loss control left the bound too, left out "
           "of the fit.")  # fmt: skip
    if averaged:
        cap += (" x: t_leave_avg, the same for the gap of K_t averaged over the last tenth of a "
                "decade of t, with its own fit.")  # fmt: skip
    return _save(fig, path, f"t_leave against width: {name}", cap)


def _open_ylim(ax, y: np.ndarray) -> None:
    """Set a log y range around the data, with room when every point has the same value."""
    y = y[np.isfinite(y) & (y > 0)]
    if y.size:
        ax.set_ylim(y.min() / 3, y.max() * 3)


def lambda_theta_figure(family: pd.DataFrame, curves: dict, path: Path, name: str) -> Figure:
    """lambda_min(K_t) (top) and ||theta_t - theta_0||_inf (bottom) against t, per width."""
    groups = _groups(family)
    fig, axes = _panels(len(groups), rows=2)
    colors = _width_colors(family["width"])
    for i, (g, sub) in enumerate(groups):
        _curves_by_width(axes[0][i], sub, curves, "lambda_min", colors)
        axes[0][i].axhline(g["lambda0"], color="gray", ls=":", lw=1, label="lambda0 (analytic)")
        axes[0][i].set(title=_panel_name(g), ylabel="lambda_min(K_t)")
        _curves_by_width(axes[1][i], sub, curves, "theta_inf", colors)
        axes[1][i].set(yscale="log", xlabel="t", ylabel="||theta_t - theta_0||_inf")
        axes[0][i].legend(fontsize=7)
    cap = "Smallest eigenvalue of the empirical kernel and the largest parameter move."
    return _save(fig, path, f"lambda_min(K_t) and ||theta_t - theta_0||_inf: {name}", cap)


def crossing_figure(family: pd.DataFrame, crossing: pd.DataFrame, path: Path, name: str):
    """m*(t), the width at which the drift at t would fall below the bound, against t."""
    groups = _groups(family)
    fig, ax = _single()
    drawn = False
    for i, (g, _) in enumerate(groups):
        f = _select(crossing, g) if len(crossing) else crossing
        f = f[np.isfinite(f["m_star"].to_numpy(float))] if len(f) else f
        if f.empty:
            continue
        mid = f["m_star"].to_numpy(float)
        lo = np.nan_to_num(mid - f["m_star_lo"].to_numpy(float), nan=0.0, posinf=0.0).clip(0)
        hi = np.nan_to_num(f["m_star_hi"].to_numpy(float) - mid, nan=0.0, posinf=0.0).clip(0)
        ax.errorbar(f["t"], mid, yerr=[lo, hi], marker="o", capsize=3, color=f"C{i}",
                    label=_panel_name(g).replace("\n", " "))  # fmt: skip
        drawn = True
    ax.set(xscale="log", yscale="log", xlabel="gradient-flow time t", ylabel="crossing width m*")
    if drawn:
        ax.legend(fontsize=7)
    cap = ("Width at which the fitted drift at t (equal t for every loss) would fall below the "
           "bound; bars: 95% bootstrap interval over seeds. Growing with t: the drift outruns "
           "width; flat: a fixed width suffices at every t.")  # fmt: skip
    return _save(fig, path, f"crossing width m*(t): {name}", cap)


def outputs_figure(dense: dict, path: Path, name: str) -> Figure:
    """The seed's Figure 1: f_t(x_i) on each training point against t."""
    fig, ax = _single()
    t, f = dense["t"], dense["f"]
    pos = t > 0
    for i in range(min(f.shape[1], MAX_POINTS)):
        ax.plot(t[pos], f[pos, i], lw=1, label=f"x_{i + 1}")
    ax.set(xscale="log", xlabel="t", ylabel="f_t(x_i)", title=name)
    ax.legend(fontsize=6, ncol=2)
    shown = f" (first {MAX_POINTS} of {f.shape[1]})" if f.shape[1] > MAX_POINTS else ""
    return _save(fig, path, f"Outputs f_t on the training points: {name}",
                 f"The network's output on each training point{shown} against t.")  # fmt: skip


def chosen_pairs(pairs: list) -> list[int]:
    """Indices into ``pairs`` of the seed's Figure 2 entries: the first three points' pairs."""
    wanted = [[0, 0], [1, 1], [2, 2], [0, 1], [0, 2], [1, 2]]
    idx = [pairs.index(p) for p in wanted if p in pairs]
    return idx or list(range(min(6, len(pairs))))


def kernel_figure(dense: dict, pairs: list, path: Path, name: str) -> Figure:
    """The seed's Figure 2: chosen K_t entries against t, raw (thin) and smoothed (thick)."""
    fig, ax = _single()
    t, k = dense["t"], dense["kernel"]
    pos = t > 0
    kernel = np.ones(SMOOTH) / SMOOTH
    for c, j in enumerate(chosen_pairs(pairs)):
        raw = k[pos, j]
        pad = np.pad(raw, SMOOTH // 2, mode="edge")
        ax.plot(t[pos], raw, lw=0.6, alpha=0.5, color=f"C{c}")
        ax.plot(t[pos], np.convolve(pad, kernel, mode="valid"), lw=1.8, color=f"C{c}",
                label=f"K(x_{pairs[j][0] + 1}, x_{pairs[j][1] + 1})")  # fmt: skip
    ax.set(xscale="log", xlabel="t", ylabel="K_t entry", title=name)
    ax.legend(fontsize=6, ncol=2)
    cap = f"Chosen NTK entries: raw (thin) and a {SMOOTH}-row moving average (thick)."
    return _save(fig, path, f"NTK entries against t: {name}", cap)
