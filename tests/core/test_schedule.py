import numpy as np

from core._schedule import checkpoint_due, tracked_steps


def test_schedule_is_sorted_unique_and_spans_the_run():
    steps = tracked_steps(10**6, 200, every=0)
    assert steps[0] == 0 and steps[-1] == 10**6
    assert np.all(np.diff(steps) > 0)
    assert len(steps) <= 202


def test_log_spacing_is_dense_early_and_sparse_late():
    steps = tracked_steps(10**5, 100)
    assert np.sum(steps <= 100) > np.sum(steps > 10**4) / 2
    assert set(range(0, 6)) <= set(steps.tolist())


def test_periodic_steps_are_added():
    steps = set(tracked_steps(1000, 10, every=100).tolist())
    assert {0, 100, 500, 1000} <= steps


def test_zero_epochs_tracks_only_the_start():
    assert tracked_steps(0, 50).tolist() == [0]


def test_checkpoint_due():
    assert [s for s in range(0, 10) if checkpoint_due(s, 3)] == [3, 6, 9]
    assert not any(checkpoint_due(s, 0) for s in range(10))
