"""Typed, frozen trial configs, YAML loading, dotted ``--set`` overrides and ``did you mean``.

A trial is fully described by a :class:`TrialConfig`. Every field has a default and a comment
that says why. The config is unpacked once at the entry point (:func:`core.run_trial`), and every
saved result carries its full config (``config.yaml`` in the trial directory).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._errors import ConfigError

MAX_EPOCHS = 10**9  # beyond this t = step * lr loses integer exactness in float64 bookkeeping
MAX_TRACKED = 200_000  # tracked rows per trial; more would make a trajectory of gigabytes


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class ModelConfig(_Frozen):
    arch: Literal["fcn", "resnet"] = "fcn"  # the seed's two architectures
    width: int = Field(256, gt=0)  # m: hidden width of every layer
    depth: int = Field(3, gt=0)  # L: hidden layers (fcn) or residual blocks (resnet)
    alpha: float = Field(1.0, gt=0)  # residual branch scale (resnet only); the seed uses 1


class DataConfig(_Frozen):
    kind: Literal["circle", "sphere", "digits", "mnist"] = "circle"  # circle = the seed's points
    n: int = Field(6, ge=2)  # training points; the seed's synthetic run uses 6
    d: int = Field(2, ge=1)  # input dimension (circle forces 2; digits 64; mnist 784)
    classes: list[int] | Literal["parity"] = "parity"  # two digits, or odd (1) vs even (0)
    path: str | None = None  # mnist only: IDX files (optionally .gz) or a torchvision folder
    seed: int = 0  # seeds point sampling and sphere labels, independent of the net's seed
    normalize: Literal["unit", "standardize", "none"] = "unit"  # unit: every x on S^{d-1}
    n_probe: int = Field(0, ge=0)  # extra untrained points whose outputs are tracked


class TrainConfig(_Frozen):
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"  # mse is the lazy-regime control
    lr: float = Field(0.1, gt=0)  # full-batch GD step; gradient-flow time t = step * lr
    epochs: int = Field(1000, ge=0)  # full-batch steps (one epoch = one step); plain GD
    # gradient-flow time to reach with adaptive steps (train.lr is then the first step and
    # train.epochs is ignored); late cross-entropy dynamics live in log t, see core/_flow.py
    t_max: float | None = Field(None, gt=0)
    flow_tol: float = Field(1e-3, gt=0)  # adaptive steps: local error allowed in f per step
    weight_decay: float = Field(0.0, ge=0)  # L2 penalty strength; 0 is the seed's setting
    weight_decay_center: Literal["init", "zero"] = "init"  # penalize theta - theta_0, or theta
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)  # soft targets y(1-e) + e/2; 0 = hard

    @field_validator("lr", "t_max")
    @classmethod
    def _finite_lr(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return v


class TrackConfig(_Frozen):
    log_points: int = Field(200, ge=0)  # log-spaced tracked steps over [1, epochs]
    every: int = Field(0, ge=0)  # also track every k steps (0 = off); periodic and log mix
    kernel: bool = True  # compute K_t at tracked steps (the expensive part, O(n^2 m L))
    kernel_full_max_n: int = Field(32, ge=1)  # store all kernel pairs up to this many points
    kernel_pairs: list[tuple[int, int]] | None = None  # pairs stored above that n (default diag+)
    ntk_block: int | None = Field(None, gt=0)  # points per block in empirical_ntk (memory cap)
    flips: bool = True  # count ReLU activation-pattern flips between tracked steps


class CheckpointConfig(_Frozen):
    every: int = Field(0, ge=0)  # steps between checkpoints; 0 = no periodic checkpoints
    minutes: float = Field(5.0, ge=0)  # also checkpoint after this much wall time (0 = off)
    keep_final: bool = True  # keep the final parameters (checkpoint.pt) after the run ends


class TrialConfig(_Frozen):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    track: TrackConfig = TrackConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    seed: int = 0  # seeds the network's N(0,1) initialization only
    dtype: Literal["float64", "float32"] = "float64"  # float64 where precision is under test
    device: str = "auto"  # auto | cpu | cuda | cuda:K

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"must be auto, cpu, cuda or cuda:K, got {v!r}")
        return v

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrialConfig:
        if self.train.epochs > MAX_EPOCHS:
            raise ValueError(f"train.epochs={self.train.epochs} exceeds {MAX_EPOCHS}")
        every = self.track.every
        rows = self.track.log_points + (self.train.epochs // every if every else 0)
        if rows > MAX_TRACKED:
            raise ValueError(
                f"track schedule gives {rows} tracked steps, over {MAX_TRACKED}; "
                "raise track.every or lower track.log_points"
            )
        return self


def trial_id(config: TrialConfig) -> str:
    """A stable 16-hex-digit hash of the full resolved config (canonical, sorted JSON)."""
    blob = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --- building configs from user input -------------------------------------------------------


def _field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(prefix + name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names.extend(_field_names(ann, prefix + name + "."))
    return names


def known_keys() -> list[str]:
    """Every dotted key a trial config accepts, e.g. ``model.width``."""
    return _field_names(TrialConfig)


def _did_you_mean(key: str) -> str:
    close = difflib.get_close_matches(key, known_keys(), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _format_validation(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).isdigit() or True)
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{loc}'{_did_you_mean(loc)}"
    value = first.get("input")
    shown = value if not isinstance(value, dict) else "{...}"
    msg = first["msg"]
    return f"config field '{loc or '<root>'}' = {shown!r}: {msg}"


def config_from_dict(raw: dict[str, Any]) -> TrialConfig:
    """Validate a nested dict into a :class:`TrialConfig`; raise :class:`ConfigError` if bad."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping, got {type(raw).__name__}")
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation(err)) from None


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side as YAML (so ``4096``, ``0.1``, ``[1, 2]`` work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for key ``a.b.c``; unknown keys fail with did-you-mean."""
    if key not in known_keys():
        raise ConfigError(f"unknown config key '{key}'{_did_you_mean(key)}")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{part}' is not a section, got {child!r}")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` strings (dotted keys) to a nested dict, returning a new dict."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        set_dotted(out, key.strip(), parse_value(text))
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or malformed YAML is a :class:`ConfigError`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"malformed YAML in {p}{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p} must hold a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrialConfig:
    """Load a trial config from YAML, apply ``--set`` overrides and validate it."""
    return config_from_dict(apply_overrides(read_yaml(path), overrides or []))


def config_to_yaml(config: TrialConfig) -> str:
    """The full resolved config as YAML (every field, defaults included)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def flatten(config: TrialConfig) -> dict[str, Any]:
    """Dotted-key view of the config (``model.width`` -> 256), e.g. for MLflow params."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(config.model_dump(mode="json"), "")
    return out
