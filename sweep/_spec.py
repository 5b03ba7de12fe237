"""Sweep specs: a typed, frozen model of ``SPEC.yaml`` and its grid expansion.

A spec names a base trial config and a grid of dotted config keys. ``expand`` applies every grid
point to the base (keys checked with did-you-mean), validates each point as a
:class:`core.TrialConfig`, and collapses points that resolve to the same config (same trial_id).

Example::

    name: width_scaling
    base: ../configs/fig1_circle.yaml        # relative to the spec file, or an inline mapping
    grid:
      model.width: [256, 1024, 4096]
      train.loss: [cross_entropy, mse]
      train.lr: [0.1, 0.02]
      seed: [0, 1, 2]
    zip: [[train.loss, train.lr]]            # these lists advance together
    exclude: [{model.width: 4096, seed: 2}]  # drop the matching points
    resources: {gpus_per_trial: auto, cpus_per_trial: 1}

Every user error is a :class:`core.ConfigError` whose one line names the spec field and the value.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core import (
    ConfigError,
    TrialConfig,
    apply_overrides,
    config_from_dict,
    did_you_mean,
    format_validation,
    read_yaml,
    set_dotted,
    shown,
    trial_id,
)
from core import store as st
from core.store import STORE_SCHEMES

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
MAX_POINTS = 100_000  # default spec.max_points: about 5 s of validation and 1 GB of configs


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resources(_Frozen):
    """What each trial asks Ray for."""

    gpus_per_trial: float | Literal["auto"] = 0.0  # GPU share in [0, 1]; auto: from memory estimate
    cpus_per_trial: float = Field(1.0, gt=0)  # Ray CPUs per trial; also torch's thread count
    gpu_memory_gb: float | None = Field(None, gt=0)  # per-GPU memory for auto (default: probed)

    @field_validator("gpus_per_trial", mode="before")
    @classmethod
    def _one_gpu_at_most(cls, v: Any) -> Any:
        if isinstance(v, str) and v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("must be a number in [0, 1] or auto")
        if not 0 <= v <= 1 or not math.isfinite(v):
            raise ValueError(f"must be in [0, 1] or auto (a trial uses one device), got {v}")
        return v


class MlflowSection(_Frozen):
    """Where the sweep is indexed in MLflow (the store stays the source of truth)."""

    tracking_uri: str = "sqlite:///mlflow.db"  # a sqlite file, a server http://HOST:5000, ...
    experiment: str | None = None  # MLflow experiment; default: the sweep name
    enabled: bool = True  # false: write the store only (``ntkdiv sync`` can backfill later)


class SweepSpec(_Frozen):
    """A sweep: a base trial config, a grid over dotted keys, resources, storage, MLflow."""

    name: str  # the sweep's directory under storage: letters, digits, '_', '.', '-'
    base: str | dict[str, Any] = Field(default_factory=dict)  # trial config path or mapping
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # dotted key -> values (product)
    zip: list[list[str]] = Field(default_factory=list)  # groups of grid keys that advance together
    exclude: list[dict[str, Any]] = Field(default_factory=list)  # partial points to drop
    resources: Resources = Resources()
    storage: str = "ntkdiv-store"  # a path, file://, s3:// or gs:// root; sweep in <root>/<name>
    mlflow: MlflowSection = MlflowSection()
    retries: int = Field(3, ge=0)  # reruns after a node death; failed trials: by later sweeps
    # the grid's size (before excludes) above which the spec is refused: a typo such as a
    # range of 10^6 seeds would otherwise build every point in memory before any check
    max_points: int = Field(MAX_POINTS, gt=0)
    search: dict[str, Any] | None = None  # `ntkdiv search` settings (checked there); sweep skips it

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or not NAME_RE.match(v) or ".." in v or v == "." or len(v) > 100:
            raise ValueError(
                "must be 1-100 characters from [A-Za-z0-9_.-] with no '/' and no '..' "
                "(it names a directory)"
            )
        return v

    @field_validator("storage")
    @classmethod
    def _known_storage(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a directory path or a URI (s3://bucket/prefix)")
        scheme = v.split("://", 1)[0] if "://" in v else ""
        if scheme and scheme not in STORE_SCHEMES:
            raise ValueError(
                f"scheme '{scheme}://' is not a store; use a path, file://, "
                + ", ".join(f"{s}://" for s in STORE_SCHEMES if s != "file")
            )
        if scheme and scheme != "file" and not v.split("://", 1)[1].strip("/"):
            raise ValueError(f"{v!r} names no bucket; write {scheme}://BUCKET/PREFIX")
        return v

    @property
    def experiment(self) -> str:
        return self.mlflow.experiment or self.name

    def storage_path(self) -> st.StorePath:
        """The store root: absolute (workers may run in other working directories) or a URI."""
        return st.locate(self.storage)

    def sweep_dir(self) -> st.StorePath:
        return self.storage_path() / self.name


# --- loading -------------------------------------------------------------------------------


def spec_error(err: ValidationError, model: type[BaseModel] | None = None,
               prefix: str = "") -> ConfigError:  # fmt: skip
    """A spec's first validation error as one line naming the field (its location below
    ``prefix``, a section's name) and the value; an unknown key gets a did-you-mean from the
    fields of its section. ``model``: the model validated (default :class:`SweepSpec`)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *first["loc"]) if p != "") or "<root>"
    if first["type"] == "extra_forbidden":
        hint = did_you_mean(str(first["loc"][-1]), _fields(model or SweepSpec, first["loc"][:-1]))
        return ConfigError(f"sweep spec field '{loc}': unknown key{hint}")
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        return ConfigError(f"sweep spec field '{loc}': missing; add it to the spec")
    if not first["loc"]:  # a rule over the whole section: its fields name themselves
        return ConfigError(f"sweep spec field '{loc}': {msg}")
    return ConfigError(f"sweep spec field '{loc}' = {shown(first.get('input'))}: {msg}")


def _fields(model: Any, path: tuple[Any, ...]) -> list[str]:
    """The field names of the section at ``path`` below ``model`` (a dict's keys are skipped)."""
    for part in path:
        if typing.get_origin(model) is dict:
            model = typing.get_args(model)[1]
        elif _is_model(model) and part in model.model_fields:
            model = model.model_fields[str(part)].annotation
        else:
            return []
    return list(model.model_fields) if _is_model(model) else []


def _is_model(model: Any) -> bool:
    return isinstance(model, type) and issubclass(model, BaseModel)


def parse_spec(raw: Any, spec_dir: Path | None = None) -> SweepSpec:
    """Validate a spec mapping; a path ``base`` is read relative to ``spec_dir`` and inlined.

    Raises:
        ConfigError: naming the field and the value, for every error of the spec and its base.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a sweep spec must be a mapping, got {type(raw).__name__}")
    if isinstance(raw.get("name"), (int, float)):  # YAML reads `name: 2024` as a number
        raw = {**raw, "name": str(raw["name"])}
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise spec_error(err) from None
    if isinstance(spec.base, str):
        spec = spec.model_copy(update={"base": _read_base(spec.base, spec_dir)})
    check_grid(spec)
    return spec


def _read_base(path: str, spec_dir: Path | None) -> dict[str, Any]:
    p = Path(path).expanduser()
    if not p.is_absolute() and spec_dir is not None:
        p = spec_dir / p
    if not p.is_file():
        raise ConfigError(
            f"sweep spec field 'base' = {path!r}: no such file ({p}); paths are relative to "
            "the spec file"
        )
    try:
        return read_yaml(p)
    except ConfigError as err:
        raise ConfigError(f"sweep spec field 'base' = {path!r}: {err}") from None


def load_spec(
    path: str | Path, *, storage: str | None = None, tracking_uri: str | None = None
) -> SweepSpec:
    """Read and validate ``SPEC.yaml``; ``storage`` / ``tracking_uri`` override the spec's."""
    raw = read_yaml(path)
    if storage is not None:
        raw["storage"] = storage
    if tracking_uri is not None:
        raw["mlflow"] = {**(raw.get("mlflow") or {}), "tracking_uri": tracking_uri}
    return parse_spec(raw, Path(path).parent)


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """The resolved spec (base inlined, storage absolute), as written to ``<sweep>/spec.yaml``."""
    out = spec.model_dump(mode="json")
    out["storage"] = str(spec.storage_path())
    return out


# --- the grid ------------------------------------------------------------------------------


def check_grid(spec: SweepSpec) -> None:
    """Grid keys exist, zip groups are well formed, the grid is no larger than
    ``spec.max_points``, every value is valid, exclude entries name grid keys."""
    base = _base_config(spec)
    for key in spec.grid:
        try:
            set_dotted({}, key, None)
        except ConfigError as err:
            raise ConfigError(f"sweep spec field 'grid.{key}': {err}") from None
        if not spec.grid[key]:
            raise ConfigError(f"sweep spec field 'grid.{key}' = []: give at least one value")
    seen: set[str] = set()
    for i, group in enumerate(spec.zip):
        _check_zip_group(spec, i, group, seen)
    check_size(spec)
    for key in spec.grid:
        for value in spec.grid[key]:
            _validate_point(spec, base, {key: value})
    for i, entry in enumerate(spec.exclude):
        for key in entry:
            if key not in spec.grid:
                hint = did_you_mean(key, list(spec.grid))
                raise ConfigError(
                    f"sweep spec field 'exclude[{i}]' = {shown(entry)}: '{key}' is not a grid "
                    f"key{hint}"
                )


def grid_size(spec: SweepSpec) -> tuple[int, list[int]]:
    """(the number of grid points before excludes, each axis's length), counted without
    building a point: a zip group is one axis."""
    zipped = {key: group for group in spec.zip for key in group}
    lengths, done = [], set()
    for key in spec.grid:
        if key not in done:
            done.update(zipped.get(key, [key]))
            lengths.append(len(spec.grid[key]))
    return math.prod(lengths), lengths


def check_size(spec: SweepSpec) -> None:
    """Refuse a grid above ``spec.max_points`` before it is expanded (milliseconds).

    Raises:
        ConfigError: naming the size, its factors and the limit.
    """
    size, lengths = grid_size(spec)
    if size > spec.max_points:
        factors = " x ".join(str(n) for n in lengths)
        raise ConfigError(
            f"sweep spec field 'grid' has {size:,} points ({factors}), above max_points = "
            f"{spec.max_points:,}; narrow the grid or split it into several sweeps, or raise "
            "'max_points' in the spec if you mean it"
        )


def _check_zip_group(spec: SweepSpec, i: int, group: list[str], seen: set[str]) -> None:
    where = f"sweep spec field 'zip[{i}]' = {shown(group)}"
    if len(group) < 2:
        raise ConfigError(f"{where}: a zip group needs at least two grid keys")
    for key in group:
        if key not in spec.grid:
            hint = did_you_mean(key, list(spec.grid))
            raise ConfigError(f"{where}: '{key}' is not a grid key{hint}")
        if key in seen:
            raise ConfigError(f"{where}: '{key}' is already in another zip group")
        seen.add(key)
    lengths = {key: len(spec.grid[key]) for key in group}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ConfigError(f"{where}: the value lists must have equal lengths, got {sizes}")


def _axes(spec: SweepSpec) -> list[list[dict[str, Any]]]:
    """One axis per zip group or free key; each axis lists partial assignments."""
    zipped = {key: group for group in spec.zip for key in group}
    axes, done = [], set()
    for key in spec.grid:
        if key in done:
            continue
        group = zipped.get(key, [key])
        done.update(group)
        columns = [spec.grid[k] for k in group]
        rows = zip(*columns, strict=True)
        axes.append([dict(zip(group, values, strict=True)) for values in rows])
    return axes


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every grid point, in order (the product over axes, the first key slowest), less excludes.

    Raises:
        ConfigError: the grid is above ``spec.max_points``, an exclude entry matches no
            point, or nothing is left.
    """
    check_size(spec)
    points = [
        {k: v for part in combo for k, v in part.items()}
        for combo in itertools.product(*_axes(spec))
    ]
    for i, entry in enumerate(spec.exclude):
        hit = [p for p in points if all(_same(p[k], v) for k, v in entry.items())]
        if not hit:
            raise ConfigError(
                f"sweep spec field 'exclude[{i}]' = {shown(entry)}: matches no grid point; "
                "check the values against the grid"
            )
        points = [p for p in points if p not in hit]
    if not points:
        raise ConfigError("sweep spec field 'exclude': it removes every grid point")
    return points


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) or a == b


def _base_config(spec: SweepSpec) -> dict[str, Any]:
    base = spec.base if isinstance(spec.base, dict) else {}
    try:
        config_from_dict(base)
    except ConfigError as err:
        raise ConfigError(f"sweep spec field 'base': {err}") from None
    return base


def _validate_point(spec: SweepSpec, base: dict[str, Any], point: dict[str, Any]) -> TrialConfig:
    raw = apply_overrides(base, point)
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        loc = ".".join(str(p) for p in err.errors()[0]["loc"])
        owner = next((k for k in point if loc == k or loc.startswith(k + ".")), None)
        if owner is not None:
            where = f"'grid.{owner}' = {shown(point[owner])}"
        else:
            where = f"'grid' at {shown(point)}"
        raise ConfigError(f"sweep spec field {where}: {format_validation(err)}") from None


def expand(spec: SweepSpec) -> list[TrialConfig]:
    """The trial configs of a spec, in grid order; points with equal configs collapse into one."""
    base = _base_config(spec)
    configs: dict[str, TrialConfig] = {}
    for point in grid_points(spec):
        config = _validate_point(spec, base, point)
        configs.setdefault(trial_id(config), config)
    return list(configs.values())
