"""Empirical-NTK benchmark: the per-linear-map identity against the torch.func Jacobian contraction.

Goals (issue "ntk"):
- at n = 64, L = 3, m = 1024: >= 20x faster than the Jacobian contraction (functional_call +
  vmap(jacrev), then J J^T) with <= 1/10 of its peak memory;
- the NTK costs <= 3x one full-batch forward + backward training step on the same points (n <= m);
- memory grows like O(n m L) for the retained features plus O(n^2) per map.

Times are medians of interleaved repeats in this process. Peak memory is measured in a fresh
spawned process per measurement: after building the model and the points, the process resets
its resident-set high-water mark (``/proc/self/clear_refs``, Linux) and reports VmHWM after one
call minus VmRSS before it, i.e. the peak of what the call itself adds. glibc is told to mmap
every block >= 64 KiB and its freed heap is trimmed first, so the call cannot reuse freed pages
unseen. Where clear_refs is not writable it falls back to getrusage's ru_maxrss.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import resource
from collections.abc import Callable

import torch
import torch.nn.functional as F

from core import build_model, empirical_ntk, jacobian_ntk, n_params

from ._common import interleaved, machine, median, table

D = 10  # input dimension of the benchmark points (unit sphere)
DTYPE = torch.float64  # the tracker's default precision
THREADS = 1  # torch threads, here and in every child: on a shared 2-core machine, 2 OpenMP
# threads spin against other processes and timings swing by 10x; one thread keeps ratios stable
JACOBIAN_CAP_GIB = 6.0  # skip the Jacobian when J alone would exceed this (the machine is shared)
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
METHODS: dict[str, Callable[..., torch.Tensor]] = {
    "per-map": empirical_ntk,
    "jacobian": jacobian_ntk,
}
HEADER = ["arch", "n", "m", "L", "per-map s", "jacobian s", "speedup", "per-map MiB",
          "jacobian MiB", "memory ratio"]  # fmt: skip


def points(n: int, d: int = D, seed: int = 0) -> torch.Tensor:
    """n points drawn uniformly on the unit sphere S^{d-1}: (n, d), float64."""
    X = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return X / X.norm(dim=1, keepdim=True)


def jacobian_gib(arch: str, n: int, m: int, L: int) -> float:
    """Size of the n x P Jacobian alone, GiB."""
    return n * n_params(arch, D, m, L) * DTYPE.itemsize / 2**30


def feature_mib(arch: str, n: int, m: int, L: int) -> float:
    """The retained per-map features U (n, in) and G (n, out), MiB: the O(n m L) term."""
    widths = [(D, m)] + [(m, m)] * (L - 1) + [(m, 1)]  # FCN maps: (in, out)
    if arch == "resnet":
        widths = [(D, m)] + [(m, m)] * (2 * L) + [(m, 1)]
    return n * sum(i + o for i, o in widths) * DTYPE.itemsize / 2**20


# --- peak memory in a fresh process -----------------------------------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith(key + ":"))
    return int(line.split()[1])


def _exact_malloc():
    """Make glibc mmap every block >= 64 KiB (a fixed threshold: by default it grows after large
    frees), so freed tensors leave the resident set and a later call cannot reuse them unseen.
    Returns libc, or None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        return libc
    except (OSError, AttributeError):
        return None


def _peak_child(arch: str, n: int, m: int, L: int, method: str) -> float:
    """Runs in a fresh process: peak MiB added by one call of ``method``.

    A tiny call first pays the one-time lazy initializations (autograd engine, BLAS buffers),
    which are not part of the method's memory.
    """
    torch.set_num_threads(THREADS)
    libc = _exact_malloc()
    METHODS[method](build_model(arch, D, 4, 1, dtype=DTYPE), points(2))
    model, X = build_model(arch, D, m, L, dtype=DTYPE), points(n)
    if libc is not None:
        libc.malloc_trim(0)  # hand freed heap pages back, so the call cannot hide in them
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the high-water mark to the current RSS
        before = _status_kib("VmRSS")
        METHODS[method](model, X)
        return (_status_kib("VmHWM") - before) / 1024
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        METHODS[method](model, X)
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


MEM_FLOOR_MIB = 1.0  # a peak below this is noise of the resident set (it can even read < 0)


def _mib(value: float) -> float | str:
    """A peak as measured, or "< 1" below the resolution of the measurement."""
    return value if value >= MEM_FLOOR_MIB else f"< {MEM_FLOOR_MIB:g}"


def peak_mib(arch: str, n: int, m: int, L: int, method: str) -> float:
    """Peak memory (MiB) one call adds, measured in a freshly spawned process."""
    with mp.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(_peak_child, (arch, n, m, L, method)))


# --- the three measurements -------------------------------------------------------------------


def versus_jacobian(arch: str, n: int, m: int, L: int, repeats: int) -> list:
    """One row of HEADER: both methods timed side by side, then their peaks in fresh processes."""
    model, X = build_model(arch, D, m, L, dtype=DTYPE), points(n)
    fns: dict[str, Callable[[], object]] = {"per-map": lambda: empirical_ntk(model, X)}
    if jacobian_gib(arch, n, m, L) <= JACOBIAN_CAP_GIB:
        fns["jacobian"] = lambda: jacobian_ntk(model, X)
    for fn in fns.values():
        fn()  # warm up (torch.func traces on its first call)
    times = interleaved(fns, repeats)
    t_map, mem_map = median(times["per-map"]), peak_mib(arch, n, m, L, "per-map")
    if "jacobian" not in times:
        skipped = f"skipped (J alone {jacobian_gib(arch, n, m, L):.1f} GiB)"
        return [arch, n, m, L, t_map, skipped, "-", _mib(mem_map), "-", "-"]
    t_jac, mem_jac = median(times["jacobian"]), peak_mib(arch, n, m, L, "jacobian")
    resolved = min(mem_map, mem_jac) >= MEM_FLOOR_MIB
    return [arch, n, m, L, t_map, t_jac, t_jac / t_map, _mib(mem_map), _mib(mem_jac),
            mem_map / mem_jac if resolved else "-"]  # fmt: skip


def _train_step(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, lr: float) -> None:
    """One full-batch cross-entropy GD step: forward, backward, update."""
    f = model(X)
    (F.softplus(f) - y * f).sum().backward()
    with torch.no_grad():
        for p in model.parameters():
            assert p.grad is not None
            p.sub_(lr * p.grad)
            p.grad = None


def versus_training(arch: str, n: int, m: int, L: int, repeats: int) -> list:
    """[arch, n, m, L, NTK s, step s, ratio] on the same points."""
    model, X = build_model(arch, D, m, L, dtype=DTYPE), points(n)
    y = (torch.arange(n) % 2).to(DTYPE)
    fns: dict[str, Callable[[], object]] = {
        "ntk": lambda: empirical_ntk(model, X),
        "step": lambda: _train_step(model, X, y, 1e-6),
    }
    for fn in fns.values():
        fn()  # warm up
    times = interleaved(fns, repeats)
    t_ntk, t_step = median(times["ntk"]), median(times["step"])
    return [arch, n, m, L, t_ntk, t_step, t_ntk / t_step]


def scaling(arch: str, n: int, m: int, L: int) -> list[list]:
    """Per-map peak memory at a base size and with each of n, m, L doubled."""
    rows = []
    for size in ((n, m, L), (2 * n, m, L), (n, 2 * m, L), (n, m, 2 * L)):
        peak, feats = peak_mib(arch, *size, "per-map"), feature_mib(arch, *size)
        rows.append([arch, *size, feats, peak, peak / feats])
        print(table(SCALING_HEADER, rows[-1:]), flush=True)
    return rows


SCALING_HEADER = ["arch", "n", "m", "L", "features MiB", "peak MiB", "peak / features"]
TRAIN_HEADER = ["arch", "n", "m", "L", "NTK s", "train step s", "NTK / step"]


def run(quick: bool = False) -> str:
    """Run the benchmark and return its Markdown section (torch threads restored on return)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return _run(quick)
    finally:
        torch.set_num_threads(threads)


def _run(quick: bool) -> str:
    torch.manual_seed(0)
    n, L, widths, repeats = (16, 2, (64,), 2) if quick else (64, 3, (256, 1024, 2048), 5)
    base = (32, 64, 2) if quick else (256, 1024, 3)
    empirical_ntk(build_model("fcn", D, 8, 1), points(4))  # warm up
    jac_rows, train_rows = [], []
    for arch in ("fcn", "resnet"):
        for m in widths:
            jac_rows.append(versus_jacobian(arch, n, m, L, repeats))
            print(table(HEADER, jac_rows[-1:]), flush=True)
        for m in widths[:2]:
            train_rows.append(versus_training(arch, n, m, L, repeats))
            print(table(TRAIN_HEADER, train_rows[-1:]), flush=True)
    scale_rows = scaling("fcn", *base)
    return _section(quick, n, L, repeats, jac_rows, train_rows, scale_rows)


def _goals(jac_rows: list, train_rows: list, m_goal: int) -> tuple[str, str]:
    at = [r for r in jac_rows if r[2] == m_goal and not isinstance(r[6], str)]
    ok = bool(at) and all(r[6] >= 20 and not isinstance(r[9], str) and r[9] <= 0.1 for r in at)
    speed = ", ".join(f"{r[0]} {r[6]:.1f}x faster, " + ("memory below resolution"
                      if isinstance(r[9], str) else f"{1 / r[9]:.0f}x less memory")
                      for r in at)  # fmt: skip
    jac = f"{'met' if ok else 'NOT met'} ({speed or 'not measured'})"
    worst = max(r[6] for r in train_rows)
    return jac, f"{'met' if worst <= 3 else 'NOT met'} (worst {worst:.2f}x)"


def _section(quick, n, L, repeats, jac_rows, train_rows, scale_rows) -> str:
    m_goal = 1024 if not quick else jac_rows[0][2]
    jac_goal, train_goal = _goals(jac_rows, train_rows, m_goal)
    growth = [scale_rows[i][5] / scale_rows[0][5] for i in (1, 2, 3)]
    return "\n".join([
        "## Empirical NTK (`ntkdiv bench ntk`)",
        "",
        f"{DTYPE} on the CPU ({machine()}), {THREADS} torch thread(s); points uniform on "
        f"S^{D - 1}. Times: medians of "
        f"{repeats} interleaved repeats. Peak memory: what one call adds to the resident set, "
        "measured in a fresh spawned process (high-water mark reset after building the model, "
        "via /proc/self/clear_refs; glibc mmaps blocks >= 64 KiB, so freed pages cannot hide "
        f"the call's allocations). The Jacobian is skipped where J alone exceeds "
        f"{JACOBIAN_CAP_GIB:g} GiB (this machine is shared).",
        "",
        "### Per-linear-map identity vs torch.func Jacobian contraction",
        "",
        table(HEADER, jac_rows),
        "",
        f"- Goal >= 20x faster with <= 1/10 the peak memory at n = {n}, L = {L}, m = {m_goal}: "
        f"{jac_goal}.",
        "",
        "### NTK vs one full-batch training step (forward + backward + update, same points)",
        "",
        table(TRAIN_HEADER, train_rows),
        "",
        f"- Goal NTK <= 3x a training step: {train_goal}.",
        "",
        "### Memory scaling of the per-map NTK",
        "",
        "Retained features: U (n, in) and G (n, out) per map, O(n m L); the forward/backward graph "
        "is O(n m L) too (O(block_size m L) with ``block_size``); each map adds O(n^2) "
        "temporaries for G G^T and U U^T. The model's own O(m^2 L) parameters are excluded.",
        "",
        table(SCALING_HEADER, scale_rows),
        "",
        f"- Peak growth when doubling n, m, L: {growth[0]:.2f}x, {growth[1]:.2f}x, "
        f"{growth[2]:.2f}x (O(n m L) predicts 2x each while n <= m).",
    ])  # fmt: skip


if __name__ == "__main__":
    import sys

    print(run(quick="--quick" in sys.argv))
