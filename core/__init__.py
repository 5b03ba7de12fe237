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
from ._arch import MAX_DEPTH, n_params
from ._config import (
    DATA_KINDS,
    CheckpointConfig,
    CircleData,
    DataConfig,
    DigitsData,
    MnistData,
    ModelConfig,
    SphereData,
    TrackConfig,
    TrainConfig,
    TrialConfig,
    data_config,
    id_view,
    trial_id,
)
from ._data import Dataset, make_dataset
from ._empirical import EmpiricalNTK, empirical_ntk, jacobian_ntk, ntk_with_patterns
from ._errors import ConfigError, DataError, NtkdivError
from ._models import build_model
from ._overrides import (
    apply_overrides,
    config_from_dict,
    config_to_yaml,
    did_you_mean,
    encode_value,
    flatten,
    format_validation,
    known_keys,
    load_config,
    parse_value,
    read_yaml,
    set_dotted,
    shown,
)
from ._size import (
    MAX_TRIAL_BYTES,
    check_fits,
    gpu_memory_bytes,
    memory_bytes,
    parameter_count,
)
from ._status import DONE, TrialStatus
from ._trial import run_trial

__all__ = [
    "CheckpointConfig",
    "CircleData",
    "ConfigError",
    "DATA_KINDS",
    "DONE",
    "DataConfig",
    "DataError",
    "Dataset",
    "DigitsData",
    "EmpiricalNTK",
    "MAX_DEPTH",
    "MAX_TRIAL_BYTES",
    "MnistData",
    "ModelConfig",
    "NTKReference",
    "NtkdivError",
    "SphereData",
    "TrackConfig",
    "TrainConfig",
    "TrialConfig",
    "TrialStatus",
    "analytic_ntk",
    "apply_overrides",
    "bound",
    "build_model",
    "check_fits",
    "config_from_dict",
    "config_to_yaml",
    "data_config",
    "did_you_mean",
    "empirical_ntk",
    "encode_value",
    "flatten",
    "format_validation",
    "gpu_memory_bytes",
    "id_view",
    "jacobian_ntk",
    "known_keys",
    "lambda0",
    "lambda_max",
    "load_config",
    "make_dataset",
    "memory_bytes",
    "n_params",
    "ntk_reference",
    "ntk_with_patterns",
    "parameter_count",
    "parse_value",
    "read_yaml",
    "run_trial",
    "set_dotted",
    "shown",
    "stability_limits",
    "trial_id",
]
