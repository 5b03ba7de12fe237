"""The one tolerance helper that every test uses, so tolerances are stated in one place."""

from __future__ import annotations

import numpy as np

# Named tolerances: (rtol, atol)
EXACT_F64 = (1e-10, 1e-12)  # two exact formulas for the same float64 quantity
ANALYTIC = (1e-6, 1e-9)  # published reference values quoted to ~7 digits
GRADIENT_FLOW = (1e-2, 1e-8)  # one small-lr Euler step vs the kernel ODE
QUADRATURE = (1e-7, 1e-9)  # a fine trapezoid rule or central difference vs a closed form


def assert_close(actual, expected, tol=EXACT_F64, what: str = "value") -> None:
    """Assert ``|actual - expected| <= atol + rtol * |expected|`` entrywise, with a message."""
    rtol, atol = tol
    a = np.asarray(getattr(actual, "detach", lambda: actual)(), dtype=np.float64)
    e = np.asarray(getattr(expected, "detach", lambda: expected)(), dtype=np.float64)
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=what)


def max_rel_err(actual, expected) -> float:
    """max |a - e| / max |e|, the scale-free error used for kernel comparisons."""
    a = np.asarray(getattr(actual, "detach", lambda: actual)(), dtype=np.float64)
    e = np.asarray(getattr(expected, "detach", lambda: expected)(), dtype=np.float64)
    return float(np.max(np.abs(a - e)) / np.max(np.abs(e)))
