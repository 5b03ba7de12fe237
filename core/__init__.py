"""ntkdiv core: the seed's networks, analytic and empirical NTK, data sets and one tracked trial.

core never imports Ray, MLflow or Optuna.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._config import (
    DATA_KINDS,
    MAX_DEPTH,
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
from ._crossings import RESOLUTION_SAFETY, first_exceed, first_leave, resolution
from ._errors import ConfigError, DataError, NtkdivError, StoreError, first_line
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
from ._schedule import tracked_steps, tracked_times
from ._status import DONE, USABLE, TrialStatus

# the torch side (networks, kernels, training) loads on first use: a command that fails on its
# input, or reads the store, answers without importing torch (about 2.5 s)
_LAZY = {
    "NTKReference": "._analytic",
    "analytic_ntk": "._analytic",
    "bound": "._analytic",
    "lambda0": "._analytic",
    "lambda_max": "._analytic",
    "ntk_reference": "._analytic",
    "stability_limits": "._analytic",
    "n_params": "._arch",
    "Dataset": "._data",
    "make_dataset": "._data",
    "EmpiricalNTK": "._empirical",
    "empirical_ntk": "._empirical",
    "jacobian_ntk": "._empirical",
    "ntk_with_patterns": "._empirical",
    "loss_gradient": "._flow",
    "build_model": "._models",
    "MAX_TRIAL_BYTES": "._size",
    "check_fits": "._size",
    "check_machine": "._size",
    "gpu_memory_bytes": "._size",
    "cpu_memory_bytes": "._size",
    "host_memory_bytes": "._size",
    "memory_bytes": "._size",
    "parameter_count": "._size",
    "Tracker": "._tracker",
    "kernel_pairs": "._tracker",
    "LoopState": "._train",
    "data_loss": "._train",
    "train": "._train",
    "lr_warning": "._trial",
    "prepare": "._trial",
    "run_trial": "._trial",
}

if TYPE_CHECKING:
    from ._analytic import (
        NTKReference,
        analytic_ntk,
        bound,
        lambda0,
        lambda_max,
        ntk_reference,
        stability_limits,
    )
    from ._arch import n_params
    from ._data import Dataset, make_dataset
    from ._empirical import EmpiricalNTK, empirical_ntk, jacobian_ntk, ntk_with_patterns
    from ._flow import loss_gradient
    from ._models import build_model
    from ._size import (
        MAX_TRIAL_BYTES,
        check_fits,
        check_machine,
        cpu_memory_bytes,
        gpu_memory_bytes,
        host_memory_bytes,
        memory_bytes,
        parameter_count,
    )
    from ._tracker import Tracker, kernel_pairs
    from ._train import LoopState, data_loss, train
    from ._trial import lr_warning, prepare, run_trial


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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
    "LoopState",
    "MAX_DEPTH",
    "MAX_TRIAL_BYTES",
    "MnistData",
    "ModelConfig",
    "NTKReference",
    "NtkdivError",
    "StoreError",
    "RESOLUTION_SAFETY",
    "SphereData",
    "TrackConfig",
    "Tracker",
    "TrainConfig",
    "TrialConfig",
    "TrialStatus",
    "USABLE",
    "analytic_ntk",
    "apply_overrides",
    "bound",
    "build_model",
    "check_fits",
    "check_machine",
    "config_from_dict",
    "config_to_yaml",
    "data_config",
    "data_loss",
    "did_you_mean",
    "empirical_ntk",
    "encode_value",
    "first_exceed",
    "first_leave",
    "first_line",
    "flatten",
    "format_validation",
    "gpu_memory_bytes",
    "cpu_memory_bytes",
    "host_memory_bytes",
    "id_view",
    "jacobian_ntk",
    "kernel_pairs",
    "known_keys",
    "lambda0",
    "lambda_max",
    "load_config",
    "loss_gradient",
    "lr_warning",
    "make_dataset",
    "memory_bytes",
    "n_params",
    "ntk_reference",
    "ntk_with_patterns",
    "parameter_count",
    "parse_value",
    "prepare",
    "read_yaml",
    "resolution",
    "run_trial",
    "set_dotted",
    "shown",
    "stability_limits",
    "tracked_steps",
    "tracked_times",
    "train",
    "trial_id",
]
