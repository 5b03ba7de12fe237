"""ntkdiv core: the seed's networks, analytic and empirical NTK, data sets and one tracked trial.

core never imports Ray, MLflow or Optuna.
"""

from ._analytic import (
    NTKReference,
    analytic_ntk,
    bound,
    lambda0,
    lambda_max,
    ntk_reference,
    stability_limits,
)
from ._config import (
    CheckpointConfig,
    DataConfig,
    ModelConfig,
    TrackConfig,
    TrainConfig,
    TrialConfig,
    config_from_dict,
    load_config,
    trial_id,
)
from ._data import Dataset, make_dataset
from ._empirical import EmpiricalNTK, empirical_ntk, jacobian_ntk, ntk_with_patterns
from ._errors import ConfigError, DataError, NtkdivError
from ._models import build_model
from ._trial import run_trial

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Dataset",
    "EmpiricalNTK",
    "ModelConfig",
    "NTKReference",
    "NtkdivError",
    "TrackConfig",
    "TrainConfig",
    "TrialConfig",
    "analytic_ntk",
    "bound",
    "build_model",
    "config_from_dict",
    "empirical_ntk",
    "jacobian_ntk",
    "lambda0",
    "lambda_max",
    "load_config",
    "make_dataset",
    "ntk_reference",
    "ntk_with_patterns",
    "run_trial",
    "stability_limits",
    "trial_id",
]
