"""A sweep run again under the same name with another grid: one warning naming what changed,
and the report restricted to the spec's own trials (the store keeps the others)."""

from __future__ import annotations

import dashboards
from bench.aggregate import SyntheticGroup, write_sweep
from core import store as st
from core import trial_id
from sweep._prepare import prepare_store
from sweep._spec import expand, parse_spec

from .conftest import spec_dict


def test_a_changed_grid_is_named_in_one_warning(tmp_path):
    notes: list[str] = []
    first = parse_spec(spec_dict(tmp_path, grid={"model.width": [16, 32]}))
    prepare_store(first, [trial_id(c) for c in expand(first)], notes.append)
    assert notes == []  # a first run: nothing to compare with
    prepare_store(first, [trial_id(c) for c in expand(first)], notes.append)
    assert notes == []  # the same grid again
    second = parse_spec(spec_dict(tmp_path, grid={"model.width": [16, 64]}))
    prepare_store(second, [trial_id(c) for c in expand(second)], notes.append)
    assert len(notes) == 1 and notes[0].startswith("ntkdiv: warning: the grid of sweep")
    assert "grid: {'model.width': [16, 32]} -> {'model.width': [16, 64]}" in notes[0]
    assert "this spec's 2 trial(s) only" in notes[0]


def test_the_report_covers_only_the_given_trials(tmp_path):
    sweep = tmp_path / "s"
    write_sweep(sweep, [SyntheticGroup(widths=(64, 128), seeds=(0, 1), epochs=100,
                                       log_points=20)])  # fmt: skip
    ids = [t.name for t in st.trial_dirs(sweep)]
    assert len(ids) == 4
    everything = dashboards.aggregate(sweep, tmp_path / "all", figures=False)
    some = dashboards.aggregate(sweep, tmp_path / "some", figures=False, only=ids[:2])
    assert len(everything.trials) == 4
    assert sorted(some.trials["trial_id"]) == sorted(ids[:2])
