"""The ``search:`` section of a sweep spec, the objectives, and the exact pruning rule.

Exact pruning rests on one fact: drift_sup(t) = sup_{s <= t} drift_s never decreases.
- ``min_drift_ratio`` (minimize drift_sup / bound at the horizon): once a running trial's
  drift_sup / bound is above the best final value so far, its final value is too. Stop it.
- ``max_t_exceed`` (maximize the first t with drift_t >= bound, "never" = +inf): once a running
  trial's drift reaches the bound at t < best, its t_exceed is fixed at t < best. Stop it.
Neither rule ever stops a trial that could still win (ties are kept).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core import ConfigError, did_you_mean, first_exceed, known_keys
from core import store as st


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Param(_Frozen):
    """One search dimension over a dotted trial-config key."""

    type: Literal["int", "log_int", "float", "log_float", "categorical"]  # the distribution
    low: float | None = None  # lower end (inclusive); log types need low > 0
    high: float | None = None  # upper end (inclusive); must exceed low
    choices: list[Any] | None = None  # categorical only: the values to pick from

    @model_validator(mode="after")
    def _range(self) -> Param:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"empty range: low={self.low:g} must be below high={self.high:g}")
        if self.type.startswith("log") and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low:g}")
        return self


class SearchSpec(_Frozen):
    """An Optuna search over dotted config keys, evaluated by ``core.run_trial`` on Ray."""

    space: dict[str, Param]  # dotted trial-config key -> distribution
    objective: Literal["min_drift_ratio", "max_t_exceed"] = "min_drift_ratio"  # see module doc
    n_trials: int = Field(20, gt=0)  # total trials in the study (resuming counts old ones)
    parallel: int = Field(2, gt=0)  # trials evaluated at once on Ray
    sampler: Literal["tpe", "random"] = "tpe"  # TPE (constant liar for parallel asks)
    seed: int = 0  # sampler seed: the same spec asks the same first configurations
    prune: bool = True  # exact pruning (never stops a trial that could still win)
    study: str | None = None  # study name; default: the sweep name
    storage: str = "sqlite:///optuna.db"  # sqlite (one driver), journal:///x.log or postgresql://

    @model_validator(mode="after")
    def _keys(self) -> SearchSpec:
        if not self.space:
            raise ValueError("the search space is empty")
        keys = known_keys()
        for key in self.space:
            if key not in keys:
                raise ValueError(f"unknown config key '{key}' in space{did_you_mean(key, keys)}")
        return self


def parse_search(raw: Any) -> SearchSpec:
    """Validate a spec's ``search:`` mapping; errors name the field and value."""
    from pydantic import ValidationError

    from ._spec import spec_error

    if not isinstance(raw, dict):
        raise ConfigError("sweep spec field 'search' must be a mapping with a 'space'")
    try:
        return SearchSpec.model_validate(raw)
    except ValidationError as err:
        raise spec_error(err, SearchSpec, "search") from None


def direction(objective: str) -> str:
    return "minimize" if objective == "min_drift_ratio" else "maximize"


def objective_value(summary: dict[str, Any], objective: str) -> float:
    """The final objective of a finished trial (max_t_exceed: +inf when never exceeded)."""
    if objective == "min_drift_ratio":
        return float(summary["drift_sup"]) / float(summary["bound"])
    t = summary.get("t_exceed")
    return math.inf if t is None else float(t)


def running_value(rows: dict[str, list], bound: float, objective: str) -> float | None:
    """The objective's bound from the rows so far: a lower bound on the final drift ratio, or
    the final t_exceed once the drift has reached the bound (None while still open)."""
    drifts = [d for d in rows["drift"] if d is not None]
    if objective == "min_drift_ratio":
        return max(drifts) / bound if drifts else None
    return first_exceed(rows, bound)


def beaten(value: float | None, best: float | None, objective: str) -> bool:
    """True when a running trial can no longer beat ``best`` (strictly worse; ties kept)."""
    if value is None or best is None:
        return False
    return value > best if objective == "min_drift_ratio" else value < best


class PruneMonitor:
    """The ``monitor`` handed to ``core.run_trial`` on a worker: stops a beaten trial.

    The best final value so far lives in a small JSON file that the driver rewrites atomically;
    the monitor rereads it at each tracked step (a few hundred reads per trial).
    """

    def __init__(self, best_path: str | Path | st.StorePath, bound: float, objective: str) -> None:
        self.best_path, self.bound, self.objective = str(best_path), bound, objective

    def _best(self) -> float | None:
        import json

        try:
            value = json.loads(st.locate(self.best_path).read_text()).get("best")
        except (OSError, ValueError):
            return None
        return None if value is None else float(value)

    def __call__(self, rows: dict[str, list]) -> bool:
        return beaten(running_value(rows, self.bound, self.objective), self._best(),
                      self.objective)  # fmt: skip
