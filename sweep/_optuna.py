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
from dataclasses import dataclass
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


@dataclass
class Study:
    """A thin handle on an Optuna study, for the search driver."""

    study: Any

    @classmethod
    def open(cls, name: str, storage_url: str, direction: str, sampler: str, seed: int) -> Study:
        study = optuna.create_study(
            study_name=name,
            storage=make_storage(storage_url),
            direction=direction,  # type: ignore[arg-type]  # validated by the spec
            sampler=make_sampler(sampler, seed),
            load_if_exists=True,
        )
        return cls(study)

    def ask(self, space: dict[str, BaseDistribution]) -> tuple[int, dict[str, Any]]:
        trial = self.study.ask(space)
        return trial.number, dict(trial.params)

    def set_attr(self, number: int, key: str, value: Any) -> None:
        self.study._storage.set_trial_user_attr(self._trial_id(number), key, value)

    def _trial_id(self, number: int) -> int:
        return self.study._storage.get_trial_id_from_study_id_trial_number(
            self.study._study_id, number
        )

    def tell(self, number: int, value: float | None, pruned: bool = False, step: int = 0) -> None:
        """Finish a trial: complete with ``value``, or pruned with ``value`` as its bound."""
        if pruned:
            if value is not None and math.isfinite(value):
                self.study._storage.set_trial_intermediate_value(self._trial_id(number), step,
                                                                 value)  # fmt: skip
            self.study.tell(number, state=TrialState.PRUNED)
        elif value is None or math.isnan(value):
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, value)

    def trials(self) -> list[dict[str, Any]]:
        """Every trial as a plain dict: number, state, value, params, user_attrs."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            out.append({"number": t.number, "state": t.state.name, "value": t.value,
                        "params": dict(t.params), "user_attrs": dict(t.user_attrs),
                        "intermediate": dict(t.intermediate_values)})  # fmt: skip
        return out
