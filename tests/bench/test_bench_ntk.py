"""Smoke test of ``ntkdiv bench ntk`` at quick size."""

from __future__ import annotations

from bench import ntk


def test_quick_run_returns_the_section(capsys):
    section = ntk.run(quick=True)
    assert section.startswith("## Empirical NTK")
    assert "| " + " | ".join(ntk.HEADER) + " |" in section
    assert "| " + " | ".join(ntk.TRAIN_HEADER) + " |" in section
    assert "| " + " | ".join(ntk.SCALING_HEADER) + " |" in section
    assert "Goal >= 20x faster" in section
    assert "| fcn | 16 | 64 | 2 |" in capsys.readouterr().out  # rows print as they come
