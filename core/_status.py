"""Trial status: one enum for the whole project (summary.json, attempts, MLflow, verdicts)."""

from __future__ import annotations

from enum import Enum


class TrialStatus(str, Enum):
    """What became of a trial. The value is the string written to summary.json.

    COMPLETED: trained to its horizon (``train.epochs`` steps or gradient-flow time ``t_max``).
    DIVERGED: the loss, an output or a parameter stopped being finite or exploded; the trial is
        finished (rerunning it gives the same bits) but is never counted in a verdict.
    STOPPED: stopped early by a monitor (search pruning); resumable from its checkpoint.
    FAILED: its own code raised; rerun by a sweep while retries remain.
    """

    COMPLETED = "completed"
    DIVERGED = "diverged"
    STOPPED = "stopped"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


# finished trials: a sweep never reruns them
DONE = frozenset({TrialStatus.COMPLETED.value, TrialStatus.DIVERGED.value, "overflow"})
# trials whose trajectories count in verdicts ("overflow" was the pre-0.2 name of diverged)
USABLE = frozenset({TrialStatus.COMPLETED.value})
