"""The one module that imports Optuna: studies, storages, samplers and ask/tell.

Storage URLs:
- ``sqlite:///path.db``: Optuna's RDB storage. Right for one driver on one machine; SQLite with
  several processes writing at once is not safe (locking over network filesystems is unreliable).
- ``journal:///path/to/study.log`` (or a path ending in ``.log``): Optuna's journal file, safe for
  several writers on a shared filesystem with proper locking; the choice for clusters.
- ``postgresql://...`` / ``mysql://...``: an RDB server, for clusters with a database.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

optuna.logging.set_verbosity(logging.WARNING)


def make_storage(url: str) -> Any:
    """An Optuna storage object from a URL (see the module docstring)."""
    if url.startswith("journal://") or url.endswith(".log"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal://")
        return JournalStorage(JournalFileBackend(path))
    return optuna.storages.RDBStorage(url)


def distribution(kind: str, low=None, high=None, choices=None) -> BaseDistribution:
    """Map a search-space entry to an Optuna distribution."""
    if kind == "int":
        return IntDistribution(int(low), int(high))
    if kind == "log_int":
        return IntDistribution(int(low), int(high), log=True)
    if kind == "float":
        return FloatDistribution(float(low), float(high))
    if kind == "log_float":
        return FloatDistribution(float(low), float(high), log=True)
    return CategoricalDistribution(list(choices))


def make_sampler(kind: str, seed: int) -> Any:
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class Study:
    """A thin handle on an Optuna study, for the search driver, through Optuna's public API.

    Trials are told and annotated through the ``optuna.Trial`` objects that :meth:`ask`
    returned in this process. A trial that a lost driver left RUNNING has no such object here:
    :meth:`requeue_lost` fails it and asks its parameters again as a new trial that carries the
    user attribute ``replaces`` (its number); :meth:`trials` leaves the replaced ones out.
    """

    def __init__(self, study: Any) -> None:
        self.study = study
        self.live: dict[int, Any] = {}  # number -> optuna.Trial asked by this process

    @classmethod
    def open(cls, name: str, storage_url: str, direction: str, sampler: str, seed: int) -> Study:
        """Create or resume the study. A resumed study's sampler is seeded with ``seed`` plus
        the trials it holds: a seeded sampler started again would otherwise replay its first
        draws and ask for configurations the study already ran."""
        storage = make_storage(storage_url)
        held = 0
        if name in optuna.get_all_study_names(storage):
            held = len(
                optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
            )
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=direction,  # type: ignore[arg-type]  # validated by the spec
            sampler=make_sampler(sampler, seed + held),
            load_if_exists=True,
        )
        return cls(study)

    def ask(self, space: dict[str, BaseDistribution]) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(space)
        self.live[trial.number] = trial
        return trial.number, dict(trial.params)

    def requeue_lost(self, space: dict[str, BaseDistribution]) -> list[tuple[int, dict[str, Any]]]:
        """Fail every trial left RUNNING by a lost driver and ask its parameters again:
        (number, params) of each new trial, to submit (the same config resumes its checkpoint).
        A driver killed while Optuna wrote a trial's parameters leaves only some of them; that
        trial was never dispatched, and the new one draws the missing ones."""
        again = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in self.live:
                continue
            self.study.tell(t.number, state=TrialState.FAIL)
            self.study.enqueue_trial(dict(t.params), user_attrs={**t.user_attrs,
                                                                 "replaces": t.number})  # fmt: skip
            again.append(self.ask(space))
        return again

    def set_attr(self, number: int, key: str, value: Any) -> None:
        self.live[number].set_user_attr(key, value)

    def tell(self, number: int, value: float | None, pruned: bool = False, step: int = 0) -> None:
        """Finish a trial: complete with ``value``, or pruned with ``value`` as its bound."""
        trial = self.live.pop(number)
        if pruned:
            if value is not None and math.isfinite(value):
                trial.report(value, step)
            self.study.tell(trial, state=TrialState.PRUNED)
        elif value is None or math.isnan(value):
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    def trials(self) -> list[dict[str, Any]]:
        """Every trial as a plain dict: number, state, value, params, user_attrs; a trial that
        another replaced (:meth:`requeue_lost`) is left out."""
        out = []
        trials = self.study.get_trials(deepcopy=False)
        replaced = {t.user_attrs.get("replaces") for t in trials}
        for t in trials:
            if t.number in replaced:
                continue
            out.append({"number": t.number, "state": t.state.name, "value": t.value,
                        "params": dict(t.params), "user_attrs": dict(t.user_attrs),
                        "intermediate": dict(t.intermediate_values)})  # fmt: skip
        return out
