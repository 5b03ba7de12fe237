"""Synthetic sweep stores with known answers, written through core/store/ (bench.aggregate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.aggregate import (
    CIRCLE_BOUND,
    SyntheticGroup,
    constant,
    linear_until,
    log_growth,
    saturating,
    write_sweep,
)

WIDTHS = (64, 128, 256, 512, 1024)


def growth_groups() -> list[SyntheticGroup]:
    """Cross-entropy drift growing like log t, squared-loss drift saturating; both ~ m^-1/2.

    No scatter (noise 0), so exponents and crossing widths are exact; the cross-entropy group
    has one failed trial (m=64, seed 1) and one missing trial (m=128, seed 2).
    """
    ce = SyntheticGroup(widths=WIDTHS, noise=0.0, drift=log_growth(), failed=[(64, 1)],
                        missing=[(128, 2)])  # fmt: skip
    mse = SyntheticGroup(loss="mse", lr=0.02, widths=WIDTHS, noise=0.0, drift=saturating())
    return [ce, mse]


def verdict_groups() -> list[SyntheticGroup]:
    """One group per remaining verdict (distinct depths keep them apart)."""
    return [
        # drift 0.01 < bound 0.0247 < gap_0 (4.2 at m = 128): exceeds only at init
        SyntheticGroup(depth=1, widths=(64, 256), seeds=(0, 1), drift=constant(0.01)),
        # gap_0 and drift both tiny: below the bound
        SyntheticGroup(
            depth=2, widths=(64, 256), seeds=(0, 1), drift=constant(0.001), gap_init_c=1e-3
        ),  # fmt: skip
        # float32 and a bound of 1e-6: below eps32 * max|K| * 1e3 ~ 1.5e-3, unresolvable
        SyntheticGroup(
            depth=4, widths=(64, 256), seeds=(0, 1), dtype="float32", bound=1e-6, n=200
        ),  # fmt: skip
        # every trial failed: no data
        SyntheticGroup(depth=5, widths=(64,), seeds=(0, 1), failed=[(64, 0), (64, 1)]),
    ]


def texceed_group(exponent: float = 0.5) -> SyntheticGroup:
    """drift = bound * t / tau(m), tau(m) = 1 * (m/64)^exponent: t_exceed ~ m^exponent."""
    return SyntheticGroup(
        depth=6,
        widths=WIDTHS,
        seeds=(0,),
        noise=0.0,
        epochs=20_000,
        log_points=400,
        drift=linear_until(CIRCLE_BOUND, 1.0, 64, exponent),
    )


@pytest.fixture(scope="session")
def growth_store(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("growth") / "sweep"
    write_sweep(sweep, growth_groups())
    return sweep


@pytest.fixture(scope="session")
def verdict_store(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("verdicts") / "sweep"
    write_sweep(sweep, [*verdict_groups(), texceed_group()])
    return sweep


@pytest.fixture(scope="session")
def growth_result(growth_store, tmp_path_factory):
    import dashboards

    return dashboards.aggregate(growth_store, tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="session")
def verdict_result(verdict_store, tmp_path_factory):
    import dashboards

    return dashboards.aggregate(verdict_store, tmp_path_factory.mktemp("report"), figures=False)
