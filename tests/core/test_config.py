"""Trial configs: numbers stay numbers, one data type per kind, stable ids, overrides, encodings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import (
    ConfigError,
    DigitsData,
    MnistData,
    apply_overrides,
    config_from_dict,
    did_you_mean,
    encode_value,
    known_keys,
    load_config,
    set_dotted,
    trial_id,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"


def test_ids_of_existing_configs_are_unchanged():
    """Ids computed by the config code from before data kinds and adaptive steps existed."""
    expected = json.loads((FIXTURES / "trial_ids.json").read_text())
    for key, want in expected.items():
        if key.startswith("configs/"):
            assert trial_id(load_config(REPO / key)) == want, key
        else:
            assert trial_id(config_from_dict(want["config"])) == want["id"], key


@pytest.mark.parametrize(
    "kind, field, value",
    [
        ("circle", "seed", 7),
        ("circle", "classes", [3, 8]),
        ("circle", "path", "/data/mnist"),
        ("sphere", "classes", [3, 8]),
        ("digits", "d", 5),
        ("digits", "path", "/data/mnist"),
        ("mnist", "d", 5),
    ],
)
def test_a_field_the_kind_ignores_does_not_change_the_id(kind, field, value):
    base = {"kind": kind, "n": 10, **({"path": "/x"} if kind == "mnist" else {})}
    plain = config_from_dict({"data": base})
    extra = config_from_dict({"data": {**base, field: value}})
    assert trial_id(extra) == trial_id(plain)
    assert field not in extra.data.model_dump()


def test_a_field_the_kind_uses_changes_the_id():
    a = config_from_dict({"data": {"kind": "sphere", "d": 3, "seed": 0}})
    b = config_from_dict({"data": {"kind": "sphere", "d": 3, "seed": 1}})
    assert trial_id(a) != trial_id(b)


def test_flow_tol_counts_only_with_t_max():
    gd = [config_from_dict({"train": {"flow_tol": tol}}) for tol in (1e-3, 1e-5)]
    assert trial_id(gd[0]) == trial_id(gd[1])
    flow = [config_from_dict({"train": {"t_max": 10.0, "flow_tol": tol}}) for tol in (1e-3, 1e-5)]
    assert trial_id(flow[0]) != trial_id(flow[1])
    assert trial_id(flow[0]) != trial_id(gd[0])


def test_each_kind_has_only_its_fields():
    digits = config_from_dict({"data": {"kind": "digits", "n": 10}}).data
    assert isinstance(digits, DigitsData) and not hasattr(digits, "path") and digits.input_dim == 64
    mnist = config_from_dict({"data": {"kind": "mnist", "path": "/x"}}).data
    assert isinstance(mnist, MnistData) and mnist.input_dim == 784
    assert set(config_from_dict({}).data.model_dump()) == {"kind", "n", "d", "normalize", "n_probe"}


@pytest.mark.parametrize(
    "override",
    [
        "model.width=true",
        "model.depth=false",
        "model.alpha=true",
        "train.lr=true",
        "train.epochs=true",
        "data.n=true",
        "seed=true",
        "data.classes=[true, false]",
        "track.kernel_pairs=[[true, 0]]",
    ],
)
def test_a_boolean_is_not_a_number(override):
    raw = {"data": {"kind": "digits"}} if "classes" in override else {}
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=f"'{key}'.*boolean"):
        config_from_dict(apply_overrides(raw, [override]))


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.width=1000000000", "need about .* GiB .*lower model.width"),
        ("data.n=10000000", "data.n=10000000, data.n_probe=0 need about"),
        ("seed=100000000000000000000000", "'seed' = 100000000000000000000000"),
        ("data.seed=-1", "'data.seed' = -1"),
        ("model.depth=1000000", "'model.depth' = 1000000.*1000"),
    ],
)
def test_sizes_are_refused_in_one_line(override, message):
    raw = {"data": {"kind": "sphere"}}
    with pytest.raises(ConfigError, match=message) as err:
        config_from_dict(apply_overrides(raw, [override]))
    assert "\n" not in str(err.value)


def test_unknown_kind_names_the_choices():
    with pytest.raises(ConfigError, match="'data.kind' = 'spheres'.*circle, sphere"):
        config_from_dict({"data": {"kind": "spheres"}})


def test_errors_name_the_field_without_the_kind_tag():
    with pytest.raises(ConfigError, match=r"^config field 'data.d' = 1: .*data.d >= 2"):
        config_from_dict({"data": {"kind": "sphere", "d": 1}})


def test_did_you_mean():
    assert did_you_mean("model.widht", known_keys()) == "; did you mean 'model.width'?"
    assert did_you_mean("zzz", ["model.width"]) == ""
    with pytest.raises(ConfigError, match="did you mean 'data.classes'"):
        set_dotted({}, "data.clases", [3, 8])


def test_known_keys_cover_every_kind():
    keys = known_keys()
    assert {"data.path", "data.classes", "data.seed", "data.d", "train.t_max"} <= set(keys)


def test_apply_overrides_takes_strings_or_a_mapping_and_copies():
    base = {"model": {"width": 8}}
    a = apply_overrides(base, ["model.width=16", "data.kind=digits"])
    b = apply_overrides(base, {"model.width": 16, "data.kind": "digits"})
    assert a == b == {"model": {"width": 16}, "data": {"kind": "digits"}}
    assert base == {"model": {"width": 8}}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(base, ["model.width"])


def test_encode_value():
    assert encode_value([3, 8]) == "[3, 8]"
    assert encode_value((0, 1)) == "[0, 1]"
    assert encode_value({"a": 1}) == '{"a": 1}'
    assert encode_value(0.1) == 0.1 and encode_value("parity") == "parity"
    assert encode_value(None) is None and encode_value(None, keep_none=False) == "null"


def test_core_exports_resolve_and_commands_load_torch_only_when_needed():
    """Every name in ``core.__all__``, ``sweep.__all__`` and ``mlflow_index.__all__`` resolves,
    the lazy ones to their module's object; and reading configs and the store imports neither
    torch, Ray nor MLflow (a fresh interpreter)."""
    import importlib
    import subprocess
    import sys

    import core
    import mlflow_index
    import sweep

    for package in (core, sweep, mlflow_index):
        for name in package.__all__:
            value = getattr(package, name)
            if name in package._LAZY:
                module = importlib.import_module(package._LAZY[name], package.__name__)
                assert value is getattr(module, name), name
    with pytest.raises(AttributeError):
        sweep.no_such_name  # noqa: B018
    probe = (
        "import sys, core, core.store, dashboards, ntkdiv.cli, sweep._runner, sweep._search; "
        "core.config_from_dict; print([m in sys.modules for m in ('torch', 'ray', 'mlflow')])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[False, False, False]", out.stderr[-2000:]
