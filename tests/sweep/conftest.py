"""Shared helpers for the sweep tests: tiny specs on disk, the CLI in-process, store readers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ntkdiv.cli import main

REPO = Path(__file__).resolve().parents[2]


def tiny_base(**sections: Any) -> dict[str, Any]:
    """A trial config that runs in well under a second: FCN m=32, L=2, 40 steps, 6 points."""
    base: dict[str, Any] = {
        "model": {"arch": "fcn", "width": 32, "depth": 2},
        "data": {"kind": "circle", "n": 6},
        "train": {"loss": "cross_entropy", "lr": 0.1, "epochs": 40},
        "track": {"log_points": 10},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return base


def spec_dict(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    """A valid spec: two widths of the tiny base, MLflow off, storage under tmp_path."""
    spec: dict[str, Any] = {
        "name": "t",
        "base": tiny_base(),
        "grid": {"model.width": [16, 32]},
        "storage": str(tmp_path / "store"),
        "mlflow": {"enabled": False},
    }
    spec.update(fields)
    return spec


def write_spec(tmp_path: Path, spec: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
    """Write a spec mapping (or raw YAML text) to tmp_path/name."""
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
    return path


def summaries(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    """trial_id -> summary.json of every trial directory that has one."""
    out = {}
    sweep_dir = Path(sweep_dir)  # a local StorePath is a path-like
    for path in sorted((sweep_dir / "trials").glob("*/summary.json")):
        out[path.parent.name] = json.loads(path.read_text())
    return out


def attempts(sweep_dir: Path, tid: str) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / "trials" / tid / "attempts.json"
    return json.loads(path.read_text())["attempts"] if path.exists() else []


@pytest.fixture
def cli(capsys):
    """Run ``ntkdiv ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
