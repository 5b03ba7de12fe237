"""Sweep specs: validation messages, grid expansion (product, zip, exclude, collapse), sizing."""

from __future__ import annotations

import math

import pytest

from core import ConfigError, config_from_dict, cpu_memory_bytes, gpu_memory_bytes, trial_id
from sweep._resources import gpu_fraction, plan_resources
from sweep._spec import expand, grid_points, load_spec, parse_spec
from tests.sweep.conftest import REPO, spec_dict, tiny_base, write_spec


def test_grid_is_the_cartesian_product_first_key_slowest(tmp_path):
    spec = parse_spec(spec_dict(tmp_path, grid={"model.width": [16, 32], "seed": [0, 1, 2]}))
    points = grid_points(spec)
    assert points[:3] == [{"model.width": 16, "seed": s} for s in (0, 1, 2)]
    configs = expand(spec)
    expected = [(w, s) for w in (16, 32) for s in (0, 1, 2)]
    assert [(c.model.width, c.seed) for c in configs] == expected


def test_zip_advances_together(tmp_path):
    grid = {"train.loss": ["cross_entropy", "mse"], "train.lr": [0.1, 0.02], "seed": [0, 1]}
    spec = parse_spec(spec_dict(tmp_path, grid=grid, zip=[["train.loss", "train.lr"]]))
    pairs = {(c.train.loss, c.train.lr) for c in expand(spec)}
    assert pairs == {("cross_entropy", 0.1), ("mse", 0.02)}
    assert len(expand(spec)) == 4


def test_exclude_removes_matching_points(tmp_path):
    grid = {"model.width": [16, 32], "seed": [0, 1]}
    spec = parse_spec(spec_dict(tmp_path, grid=grid, exclude=[{"model.width": 32, "seed": 1}]))
    assert sorted((c.model.width, c.seed) for c in expand(spec)) == [(16, 0), (16, 1), (32, 0)]


def test_identical_configs_collapse(tmp_path):
    # 32 is the base width, so {width: 32} and the no-op {depth: 2} give the same config
    grid = {"model.width": [32, 32, 16], "model.depth": [2]}
    configs = expand(parse_spec(spec_dict(tmp_path, grid=grid)))
    assert [c.model.width for c in configs] == [32, 16]
    assert len({trial_id(c) for c in configs}) == 2


def test_empty_grid_is_the_base_alone(tmp_path):
    configs = expand(parse_spec(spec_dict(tmp_path, grid={})))
    assert configs == [config_from_dict(tiny_base())]


def test_base_path_is_relative_to_the_spec_file(tmp_path):
    (tmp_path / "configs").mkdir()
    write_spec(tmp_path / "configs", tiny_base(model={"width": 48}), "base.yaml")
    (tmp_path / "sweeps").mkdir()
    path = write_spec(tmp_path / "sweeps", spec_dict(tmp_path, base="../configs/base.yaml",
                                                     grid={"seed": [0, 1]}))  # fmt: skip
    spec = load_spec(path)
    assert isinstance(spec.base, dict) and spec.base["model"]["width"] == 48
    assert {c.model.width for c in expand(spec)} == {48}


def test_overrides_and_file_uri_storage(tmp_path):
    path = write_spec(tmp_path, spec_dict(tmp_path))
    spec = load_spec(path, storage=f"file://{tmp_path}/elsewhere", tracking_uri="sqlite:///x.db")
    assert spec.sweep_dir().path == str(tmp_path / "elsewhere" / "t")
    assert spec.mlflow.tracking_uri == "sqlite:///x.db"
    assert spec.experiment == "t"


def test_search_section_is_kept_opaque(tmp_path):
    search = {"space": {"model.width": {"type": "log_int", "low": 16, "high": 64}}}
    spec = parse_spec(spec_dict(tmp_path, search=search))
    assert spec.search == search


def test_example_specs_expand():
    smoke = load_spec(REPO / "sweeps" / "smoke.yaml")
    assert len(expand(smoke)) == 8
    scaling = load_spec(REPO / "sweeps" / "width_scaling.yaml")
    configs = expand(scaling)
    assert len(configs) == 2 * 2 * 7 * 5
    assert {c.model.width for c in configs} == {2**k for k in range(8, 15)}
    width = expand(load_spec(REPO / "sweeps" / "results_width.yaml"))
    # FCN: 2 losses x 2 data sets, ResNet: 2 losses x the circle; 6 widths, 3 seeds each
    assert len(width) == (2 * 2 + 2) * 6 * 3
    seeds = {}
    for c in width:
        seeds.setdefault((c.model.arch, c.train.loss, c.data.kind, c.model.width), set()).add(
            c.seed
        )
    assert all(s == {0, 1, 2} for s in seeds.values())


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_spec_loads_and_expands(path):
    assert expand(load_spec(path))


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"grid": {"model.widht": [64]}}, "'grid.model.widht': unknown config key 'model.widht'; "
                                          "did you mean 'model.width'?"),
        ({"grid": {"model.width": []}}, "'grid.model.width' = []: give at least one value"),
        ({"grid": {"model.width": 64}}, "'grid.model.width' = 64: Input should be a valid list"),
        ({"grid": {"model.width": [0]}}, "'grid.model.width' = 0: config field 'model.width'"),
        ({"grid": {"model.arch": ["cnn"]}}, "'grid.model.arch' = 'cnn'"),
        ({"name": "../escape"}, "'name' = '../escape'"),
        ({"name": "a/b"}, "'name' = 'a/b'"),
        ({"name": ""}, "'name' = ''"),
        ({"resources": {"tpus": 1}}, "'resources.tpus': unknown key"),
        ({"resources": {"gpus_per_trial": 2}}, "'resources.gpus_per_trial' = 2"),
        ({"resources": {"gpus_per_trial": "some"}}, "'resources.gpus_per_trial"),
        ({"resources": {"cpus_per_trial": 0}}, "'resources.cpus_per_trial' = 0"),
        ({"retries": -1}, "'retries' = -1"),
        ({"storage": "http://host/x"}, "'storage' = 'http://host/x': scheme 'http://' is not"),
        ({"storage": "s3://"}, "'storage' = 's3://': 's3://' names no bucket"),
        ({"name": "."}, "'name' = '.': must be"),
        ({"gird": {}}, "'gird': unknown key; did you mean 'grid'?"),
        ({"zip": [["model.width", "seed"]], "grid": {"model.width": [16, 32], "seed": [0]}},
         "'zip[0]' = [\"model.width\", \"seed\"]: the value lists must have equal lengths"),
        ({"zip": [["model.width", "seed"]]}, "'seed' is not a grid key"),
        ({"exclude": [{"model.width": 99}]}, "'exclude[0]' = {\"model.width\": 99}: matches no"),
        ({"exclude": [{"sed": 1}]}, "'sed' is not a grid key"),
        ({"base": "missing.yaml"}, "'base' = 'missing.yaml': no such file"),
        ({"base": {"model": {"width": -1}}}, "'base': config field 'model.width' = -1"),
        ({"mlflow": {"enabeld": False}}, "'mlflow.enabeld': unknown key; did you mean 'enabled'?"),
    ],
)  # fmt: skip
def test_bad_specs_name_the_field_and_value(tmp_path, fields, needle):
    raw = spec_dict(tmp_path, **fields)
    with pytest.raises(ConfigError) as info:
        expand(parse_spec(raw, tmp_path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("sweep spec field ")
    for part in needle.split("..."):
        assert part.strip() in message, message


def test_missing_name_is_reported(tmp_path):
    raw = spec_dict(tmp_path)
    del raw["name"]
    with pytest.raises(ConfigError, match="sweep spec field 'name': missing"):
        parse_spec(raw)


# --- GPU shares (the memory estimate is core's, tested in tests/core/test_size.py) ------


def test_gpu_fraction_rounds_up_and_never_oversubscribes():
    gib = 2**30
    assert gpu_fraction(gib, 80 * gib) == 0.02  # 0.0125 -> 0.02
    assert gpu_fraction(1, 80 * gib) == 0.01
    assert gpu_fraction(20 * gib, 80 * gib) == 0.25
    assert gpu_fraction(200 * gib, 80 * gib) == 1.0
    for est in range(1, 80, 3):  # as many trials as Ray packs on one GPU fit in its memory
        share = gpu_fraction(est * gib, 80 * gib)
        assert int(1 / share + 1e-9) * est * gib <= 80 * gib


class _Cluster:  # the fields plan_resources reads from sweep._ray.Cluster
    def __init__(self, cpus: float, gpus: float, local: bool, memory: float = math.inf) -> None:
        self.cpus, self.gpus, self.local, self.memory = cpus, gpus, local, memory


def test_auto_shares_follow_the_estimate(tmp_path):
    grid = {"model.width": [16, 8192]}
    spec = parse_spec(spec_dict(tmp_path, grid=grid, resources={"gpus_per_trial": "auto",
                                                                "gpu_memory_gb": 8}))  # fmt: skip
    configs = expand(spec)
    plan = plan_resources(spec, configs, _Cluster(8, 2, local=False), print)
    shares = [plan[trial_id(c)].gpus for c in configs]
    assert shares == [gpu_fraction(gpu_memory_bytes(c), 8 * 2**30) for c in configs]
    assert 0.01 <= shares[0] < shares[1] <= 1.0
    assert {plan[trial_id(c)].memory for c in configs} == {0}  # a GPU trial reserves no memory


def test_auto_without_gpus_runs_on_cpu(tmp_path):
    spec = parse_spec(spec_dict(tmp_path, resources={"gpus_per_trial": "auto"}))
    plan = plan_resources(spec, expand(spec), _Cluster(2, 0, local=True), print)
    assert {r.gpus for r in plan.values()} == {0.0}


def test_cpu_trials_reserve_their_memory_estimate_within_the_largest_node(tmp_path):
    """A CPU trial reserves core.cpu_memory_bytes (Ray's memory resource), so that a node does
    not start two trials that cannot both fit; one larger than every node reserves that node
    whole (it runs alone), with one line saying so."""
    spec = parse_spec(spec_dict(tmp_path, grid={"model.width": [16, 8192]}))
    small, large = expand(spec)
    need = [cpu_memory_bytes(small), cpu_memory_bytes(large)]
    assert need[0] < 2**30 < need[1]  # the process and tiny tensors; 8192 float64 at depth 2
    notes: list[str] = []
    plan = plan_resources(spec, [small, large], _Cluster(2, 0, local=True, memory=64 * 2**30),
                          notes.append)  # fmt: skip
    assert [plan[trial_id(c)].memory for c in (small, large)] == need and notes == []
    node = (need[0] + need[1]) / 2
    plan = plan_resources(spec, [small, large], _Cluster(2, 0, local=True, memory=node),
                          notes.append)  # fmt: skip
    assert [plan[trial_id(c)].memory for c in (small, large)] == [need[0], int(node)]
    (line,) = notes
    assert f"1 trial(s) (the largest: {trial_id(large)}, width 8192)" in line
    assert "each runs alone there and may run out of memory" in line


def test_gpus_on_a_local_cluster_without_gpus_is_an_error(tmp_path):
    spec = parse_spec(spec_dict(tmp_path, resources={"gpus_per_trial": 0.5}))
    with pytest.raises(ConfigError, match="'resources.gpus_per_trial' = 0.5: the local cluster"):
        plan_resources(spec, expand(spec), _Cluster(2, 0, local=True), print)
    notes: list[str] = []
    plan_resources(spec, expand(spec), _Cluster(2, 0, local=False), notes.append)
    assert "autoscaler" in notes[0]  # a remote cluster may add GPU nodes on demand


def test_too_many_cpus_per_trial_for_the_local_cluster(tmp_path):
    spec = parse_spec(spec_dict(tmp_path, resources={"cpus_per_trial": 4}))
    with pytest.raises(ConfigError, match="'resources.cpus_per_trial' = 4: the local cluster"):
        plan_resources(spec, expand(spec), _Cluster(2, 0, local=True), print)
