"""Configs from user input: YAML files, dotted ``--set`` overrides, "did you mean", encodings.

Every user-facing error here is a one-line :class:`ConfigError` naming the field and the value.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ._config import DATA_FIELDS, DATA_KINDS, TrialConfig
from ._errors import ConfigError
from .store import StorePath


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice to ``word``, or ``""`` if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(prefix + name)
        if name == "data" and model is TrialConfig:  # one type per kind: the union of fields
            names.extend(f"data.{f}" for f in DATA_FIELDS)
            continue
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names.extend(_field_names(ann, prefix + name + "."))
    return names


def known_keys() -> list[str]:
    """Every dotted key a trial config accepts, e.g. ``model.width`` (data: any kind's field)."""
    return _field_names(TrialConfig)


def encode_value(value: Any, *, keep_none: bool = True) -> Any:
    """A config value as a flat column or an MLflow param holds it.

    Lists, tuples and dicts become their JSON text (``[3, 8]``); numbers, strings and booleans
    are returned as they are; None stays None, or becomes ``"null"`` with ``keep_none=False``.
    """
    if value is None:
        return None if keep_none else "null"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def shown(value: Any, limit: int = 60) -> str:
    """A value as an error message shows it: JSON for lists and dicts, repr otherwise, cut short."""
    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation(err: ValidationError) -> str:
    """The first error of a TrialConfig validation as one line: field, value seen, what is wrong."""
    first = err.errors()[0]
    loc = _without_tags(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"unknown config key '{loc}'{did_you_mean(loc, known_keys())}"
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = first.get("ctx", {}).get("tag")
        return f"config field '{loc}.kind' = {tag!r}: use one of circle, sphere, digits, mnist"
    if not loc:
        return f"config: {msg}"
    value = first.get("input")
    return (
        f"config field '{loc}' = {shown(value) if not isinstance(value, dict) else '{...}'}: {msg}"
    )


def _without_tags(loc: tuple[Any, ...]) -> str:
    """The dotted key of an error location, without the union members pydantic names in it.

    ``('data', 'circle', 'd')`` -> ``data.d``; ``('data', 'digits', 'classes', 'list[...]', 0)``
    -> ``data.classes``: neither the kind's tag nor the union member nor a list index is a key.
    """
    parts = [p for p in loc if isinstance(p, str) and p.isidentifier()]
    if len(parts) > 1 and parts[0] == "data" and parts[1] in DATA_KINDS:
        del parts[1]
    return ".".join(parts)


def config_from_dict(raw: dict[str, Any]) -> TrialConfig:
    """Validate a nested dict into a :class:`TrialConfig`; raise :class:`ConfigError` if bad."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config must be a mapping, got {type(raw).__name__}")
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation(err)) from None


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side as YAML (so ``4096``, ``0.1``, ``[1, 2]`` work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for key ``a.b.c``, in place; an unknown key: did-you-mean."""
    if key not in known_keys():
        raise ConfigError(f"unknown config key '{key}'{did_you_mean(key, known_keys())}")
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key '{part}' is not a section, got {child!r}")
        node = child
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``raw`` with dotted overrides applied (``raw`` itself is left as it was).

    Args:
        raw: a nested config dict (a base config).
        overrides: ``key=value`` strings (the value parsed as YAML, as ``--set`` gives them), or
            a mapping of dotted keys to values (a sweep's grid point, an Optuna sample).
    """
    out = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else map(_split, overrides)
    for key, value in items:
        set_dotted(out, key, value)
    return out


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, text = item.split("=", 1)
    return key.strip(), parse_value(text)


def read_yaml(path: str | Path | StorePath) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or malformed YAML is a :class:`ConfigError`."""
    p = path if isinstance(path, StorePath) else Path(path)
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
    """The full resolved config as YAML (every field the trial uses, defaults included)."""
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
