"""The resolution's safety factor, checked against the rounding of the real empirical kernel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core import (
    RESOLUTION_SAFETY,
    build_model,
    config_from_dict,
    empirical_ntk,
    make_dataset,
    resolution,
)

MARGIN = 100.0  # measured rounding must sit this far below the resolution (1-3 eps measured)


@pytest.mark.parametrize(("arch", "width"), [("fcn", 64), ("fcn", 1024), ("resnet", 1024)])
def test_float32_kernel_rounding_is_far_below_resolution(arch, width):
    X = make_dataset(config_from_dict({}).data).X  # the seed's six circle points
    m32 = build_model(arch, 2, width, 3, seed=0, dtype=torch.float32)
    m64 = build_model(arch, 2, width, 3, seed=0, dtype=torch.float64)
    with torch.no_grad():  # the same weights, exactly: only the kernel's arithmetic differs
        for p64, p32 in zip(m64.parameters(), m32.parameters(), strict=True):
            p64.copy_(p32.double())
    k64 = empirical_ntk(m64, X)
    err = float((empirical_ntk(m32, X).double() - k64).abs().max())
    res = resolution("float32", float(k64.abs().max()))
    assert err * MARGIN < res, f"rounding {err:.3g} vs resolution {res:.3g}"
    assert err > res / RESOLUTION_SAFETY / 100  # float32 rounding is visible: the test can fail


def test_resolution_formula():
    eps = float(np.finfo(np.float64).eps)
    assert resolution("float64", 13.0) == eps * 13.0 * RESOLUTION_SAFETY
    assert np.isnan(resolution("bfloat16", 13.0))
