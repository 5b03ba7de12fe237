"""The search section and the exact pruning rule, without Ray."""

from __future__ import annotations

import json
import math

import pytest

from core import ConfigError
from sweep._search_spec import PruneMonitor, beaten, objective_value, parse_search, running_value

SPACE = {"model.width": {"type": "log_int", "low": 16, "high": 256}}


@pytest.mark.parametrize(
    "space,needle",
    [
        ({"model.width": {"type": "int", "low": 64, "high": 64}}, "empty range"),
        ({"train.lr": {"type": "log_float", "low": 0.0, "high": 0.1}}, "log scale"),
        ({"model.widht": {"type": "int", "low": 1, "high": 9}}, "did you mean 'model.width'"),
        ({"model.arch": {"type": "categorical", "choices": []}}, "choices"),
        ({}, "empty"),
        ({"model.width": {"type": "gaussian", "low": 1, "high": 2}}, "search.space"),
    ],
)
def test_bad_spaces_name_the_field(space, needle):
    with pytest.raises(ConfigError) as err:
        parse_search({"space": space})
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_objective_values():
    summary = {"drift_sup": 0.5, "bound": 0.25, "t_exceed": None}
    assert objective_value(summary, "min_drift_ratio") == 2.0
    assert objective_value(summary, "max_t_exceed") == math.inf
    assert objective_value({**summary, "t_exceed": 3.0}, "max_t_exceed") == 3.0


def test_running_value_is_a_bound_on_the_final_objective():
    rows = {"t": [0.0, 1.0, 2.0], "drift": [0.0, 0.3, 0.2]}
    assert running_value(rows, 0.1, "min_drift_ratio") == pytest.approx(3.0)
    assert running_value(rows, 0.25, "max_t_exceed") == 1.0
    assert running_value(rows, 1.0, "max_t_exceed") is None


def test_beaten_keeps_ties_and_unknowns():
    assert beaten(3.0, 2.0, "min_drift_ratio") and not beaten(2.0, 2.0, "min_drift_ratio")
    assert beaten(1.0, math.inf, "max_t_exceed") and not beaten(5.0, 5.0, "max_t_exceed")
    assert not beaten(None, 1.0, "min_drift_ratio") and not beaten(1.0, None, "max_t_exceed")


def test_monitor_reads_the_best_value_file(tmp_path):
    best = tmp_path / "best.json"
    monitor = PruneMonitor(best, bound=0.1, objective="min_drift_ratio")
    rows = {"t": [0.0, 1.0], "drift": [0.0, 0.5]}
    assert not monitor(rows)  # no best yet
    best.write_text(json.dumps({"best": 10.0}))
    assert not monitor(rows)  # 5 < 10: could still win
    best.write_text(json.dumps({"best": 4.0}))
    assert monitor(rows)  # 5 > 4 and drift_sup never decreases
