"""``ntkdiv sweep`` on a real local Ray cluster: bad input, dispatch, resume, failures, MLflow."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
import yaml

from dashboards._read import open_store
from sweep._progress import HEARTBEAT_S, LOG_EVERY_S, Counts, Progress
from sweep._runner import run_sweep
from sweep._spec import load_spec, parse_spec
from tests.sweep.conftest import REPO, attempts, spec_dict, summaries, write_spec

FIXTURES = Path(__file__).parent / "fixtures"
BAD = {
    "unknown_grid_key": "'grid.model.widht': unknown config key 'model.widht'; did you mean "
                        "'model.width'?",
    "empty_grid_list": "'grid.model.width' = []",
    "wrong_type": "'grid.model.width' = 'wide'",
    "path_name": "'name' = '../outside'",
    "unknown_resource": "'resources.tpus_per_trial': unknown key",
    "zip_unequal": "lists must have equal lengths, got train.loss: 2, train.lr: 1",
    "malformed": "malformed YAML",
    "unknown_top_level": "'grids': unknown key; did you mean 'grid'?",
    "negative_retries": "'retries' = -1",
    "missing_base": "'base' = '../no_such_base.yaml': no such file",
    "missing_data_file": "/nonexistent/mnist",
    "object_storage": "'storage' = 's3://bucket/ntkdiv-store'",
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_nothing_created(where: Path) -> None:
    assert not (where / "ntkdiv-store").exists()
    assert not (where / "mlflow.db").exists()
    assert not (where / "mlruns").exists()


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ntkdiv: error: "), err
    assert needle in lines[0], lines[0]


# --- bad input: exit 2, one line, nothing created ----------------------------------------------


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_spec_exits_2_and_creates_nothing(cli, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # the default storage and mlflow.db are relative to the cwd
    code, _, err = cli("sweep", FIXTURES / "bad" / f"{name}.yaml")
    assert_one_line_error(code, err, BAD[name])
    assert_nothing_created(tmp_path)


def test_missing_spec_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("sweep", tmp_path / "nope.yaml")
    assert_one_line_error(code, err, "nope.yaml")


@pytest.mark.parametrize(
    "address,needle",
    [("127.0.0.1:{port}", "no Ray cluster answers"), ("http://127.0.0.1:8265", "dashboard URL"),
     ("nonsense", "expected HOST:PORT")],
)  # fmt: skip
def test_unreachable_address_exits_2_and_creates_nothing(cli, tmp_path, monkeypatch, address,
                                                          needle):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    address = address.format(port=free_port())
    code, _, err = cli("sweep", FIXTURES / "good.yaml", "--address", address)
    assert_one_line_error(code, err, needle)
    assert_nothing_created(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", address)  # as `ray job submit` sets it
    code, _, err = cli("sweep", FIXTURES / "good.yaml")
    assert_one_line_error(code, err, needle)
    assert_nothing_created(tmp_path)


def test_storage_that_is_a_file(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocked").write_text("")
    code, _, err = cli("sweep", FIXTURES / "good.yaml", "--storage", tmp_path / "blocked" / "s")
    assert_one_line_error(code, err, "not a writable directory")
    assert not (tmp_path / "mlflow.db").exists()


def test_gpus_on_a_cluster_without_gpus(cli, tmp_path, monkeypatch):
    """Caught only once the (local, GPU-less) cluster is up; still nothing is created."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("sweep", FIXTURES / "bad" / "gpus_without_gpu.yaml")
    assert_one_line_error(code, err, "'resources.gpus_per_trial' = 0.5: the local cluster")
    assert_nothing_created(tmp_path)


# --- a sweep, then the same sweep again ------------------------------------------------------


def test_sweep_runs_and_then_skips_everything(cli, tmp_path):
    path = write_spec(tmp_path, spec_dict(tmp_path))
    code, out, _ = cli("sweep", path, "--no-aggregate", "--quiet")
    assert code == 0
    sweep_dir = tmp_path / "store" / "t"
    done = summaries(sweep_dir)
    assert len(done) == 2 and {s["status"] for s in done.values()} == {"completed"}
    assert "2 completed" in out
    saved = yaml.safe_load((sweep_dir / "spec.yaml").read_text())
    assert saved["base"]["model"]["width"] == 32  # the base travels with the store
    assert sorted(open_store(sweep_dir).summary["model.width"]) == [16, 32]
    for tid in done:
        assert [a["status"] for a in attempts(sweep_dir, tid)] == ["completed"]

    code, out, _ = cli("sweep", path, "--no-aggregate", "--quiet")
    assert code == 0 and "2 from earlier runs, 0 completed" in out
    for tid in done:  # nothing ran again
        assert len(attempts(sweep_dir, tid)) == 1


@pytest.mark.slow
def test_smoke_spec_end_to_end_with_mlflow(smoke_sweep, cli):
    """The README's main job: 8 trials, the verdict, one MLflow run per trial; run again, it
    runs nothing and creates no run."""
    from mlflow import MlflowClient

    assert smoke_sweep.code == 0, smoke_sweep.stderr[-3000:]
    assert "8 completed" in smoke_sweep.stdout and "verdict" in smoke_sweep.stdout
    sweep_dir = smoke_sweep.sweep_dir
    assert (sweep_dir / "report" / "report.html").is_file()
    client = MlflowClient(smoke_sweep.tracking_uri)
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    children = [r for r in runs if "trial_id" in r.data.tags]
    assert sorted(r.data.tags["trial_id"] for r in children) == sorted(summaries(sweep_dir))
    parent = {r.info.run_id for r in runs} - {r.info.run_id for r in children}
    assert len(parent) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == parent
    for tid, summary in summaries(sweep_dir).items():  # how far each task got, while it ran
        assert 0 <= attempts(sweep_dir, tid)[-1]["progress"]["step"] <= summary["steps"]

    code, out, _ = cli("sweep", REPO / "sweeps" / "smoke.yaml", "--storage", smoke_sweep.storage,
                       "--tracking-uri", smoke_sweep.tracking_uri, "--no-aggregate")  # fmt: skip
    assert code == 0 and "8 from earlier runs" in out
    assert len(client.search_runs([exp.experiment_id], max_results=100)) == len(runs)


@pytest.mark.slow
def test_trial_exception_is_recorded_and_retried_by_later_runs(cli, tmp_path):
    """A CUDA-only trial fails in trial code on this CPU machine: the sweep goes on, the failure
    is recorded, later runs retry it until ``retries`` is used up."""
    spec = spec_dict(tmp_path, grid={"device": ["cpu", "cuda"]}, retries=1)
    path = write_spec(tmp_path, spec)
    sweep_dir = tmp_path / "store" / "t"
    for run in range(3):
        code, out, _ = cli("sweep", path, "--no-aggregate", "--quiet")
        assert code == 1
        by_status = {s["status"]: tid for tid, s in summaries(sweep_dir).items()}
        assert set(by_status) == {"completed", "failed"}
        failed = by_status["failed"]
        assert "CUDA is not available" in summaries(sweep_dir)[failed]["error"]
        assert [a["status"] for a in attempts(sweep_dir, failed)] == ["failed"] * min(run + 1, 2)
        assert len(attempts(sweep_dir, by_status["completed"])) == 1
    assert "out of retries" in out
    assert sorted(open_store(sweep_dir).summary["status"]) == ["completed", "failed"]


@pytest.mark.slow
def test_width_scaling_spec_at_smoke_size(tmp_path):
    """The GPU spec on this CPU-only machine: 'auto' falls back to CPU trials."""
    spec = load_spec(REPO / "sweeps" / "width_scaling.yaml", storage=str(tmp_path / "store"))
    raw = spec.model_dump(mode="json")
    raw["grid"].update({"model.width": [16, 32], "seed": [0]})
    raw["base"] = {**raw["base"], "train": {"epochs": 30}, "track": {"log_points": 10},
                   "checkpoint": {"every": 10}}  # fmt: skip
    raw["mlflow"]["enabled"] = False
    small = parse_spec(raw)
    res = run_sweep(small, quiet=True)
    assert res.exit_code == 0
    done = summaries(res.sweep_dir)
    assert len(done) == 8 and {s["device"] for s in done.values()} == {"cpu"}


def test_unreachable_mlflow_server_warns_once_and_the_store_is_complete(cli, tmp_path):
    spec = spec_dict(tmp_path, mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}"})
    code, out, err = cli("sweep", write_spec(tmp_path, spec), "--no-aggregate")
    assert code == 0
    assert err.count("MLflow unavailable") == 1, err
    assert len(summaries(tmp_path / "store" / "t")) == 2


# --- progress ----------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_counts_and_eta():
    p = Progress(Counts(total=10, earlier=2, completed=3, failed=1, retried=1, running=2),
                 io.StringIO())  # fmt: skip
    p.started -= 40.0  # 4 trials finished in 40 s: 4 remain, about 40 s
    line = p.line()
    assert line.startswith("sweep: 5/10 done, 2 running, 2 queued, 1 failed, 1 retried")
    assert "ETA 40s" in line


def test_progress_line_names_how_far_the_running_trials_got(tmp_path):
    """A trial task's monitor records its last tracked row in its open attempt (at most every
    PROGRESS_EVERY_S, passing the search's verdict through); the driver reads attempts.json and
    its line names how far the first two running trials got, in t or in steps."""
    from core import config_from_dict, trial_id
    from core import store as st
    from sweep._dispatch import Dispatch, Outcome
    from sweep._ray import AttemptProgress

    base = {"model": {"width": 8, "depth": 2}, "data": {"kind": "circle", "n": 2}}
    configs = [config_from_dict({**base, "train": {"t_max": 1e40}}),
               *(config_from_dict({**base, "train": {"epochs": 20000}, "seed": s})
                 for s in (0, 1))]  # fmt: skip
    sweep_dir = st.locate(tmp_path / "sweep")
    rows = [({"step": [0, 156], "t": [0.0, 48.2]}, True), ({"step": [0, 9], "t": [0, 0.9]}, False),
            ({"step": [0, 1200], "t": [0, 120.0]}, False)]  # fmt: skip
    for config, (row, stop) in zip(configs, rows, strict=True):
        tdir = st.trial_dir(sweep_dir, trial_id(config))
        tdir.mkdir()
        monitor = AttemptProgress(tdir, st.begin_attempt(tdir), lambda _, stop=stop: stop)
        assert monitor(row) is stop  # the search's verdict, passed through
        assert monitor({"step": [0, 99999], "t": [0.0, 1e30]}) is stop  # too soon: not recorded
    ids = [trial_id(c) for c in configs]
    d = Dispatch(sweep_dir, dict(zip(ids, configs, strict=True)), Outcome(Counts(total=3)),
                 ray=None, before=dict.fromkeys(ids, 0), handles=dict(enumerate(ids)))  # fmt: skip
    running, detail = d._running()
    assert running == 3
    first, second = f"{ids[0][:8]} at t = 48.2 of 1e+40", f"{ids[1][:8]} at step 9 of 20,000"
    assert detail == f"{first}; {second} (+1 more)"
    p = Progress(Counts(total=3, running=3), io.StringIO(), detail=detail)
    assert p.line().endswith(f"elapsed, ETA ? | {detail}")
    p.counts.running = 0
    assert not p.line().endswith(detail)


def test_progress_in_a_log_prints_only_on_change_and_rarely():
    stream = io.StringIO()
    p = Progress(Counts(total=4), stream)
    p.update()
    assert stream.getvalue() == ""  # nothing finished yet
    p.counts.completed = 1
    p.update()
    p.counts.completed = 2
    p.update()  # within LOG_EVERY_S of the last line
    assert stream.getvalue().count("\n") == 1
    p._last -= LOG_EVERY_S
    p.update()
    assert stream.getvalue().count("\n") == 2 and "\r" not in stream.getvalue()
    p.started -= 2 * HEARTBEAT_S
    p._last -= HEARTBEAT_S - 1
    p.update()  # nothing finished since, and not yet HEARTBEAT_S: silent
    assert stream.getvalue().count("\n") == 2
    p._last -= 1
    p.update()  # a sweep of long trials still says it is alive
    assert stream.getvalue().count("\n") == 3


def test_progress_on_a_terminal_redraws_in_place():
    stream = _Tty()
    p = Progress(Counts(total=2), stream)
    p.update(force=True)
    p.message("ntkdiv: warning: something")
    p.close()
    text = stream.getvalue()
    assert text.startswith("\rsweep: 0/2 done") and "\rntkdiv: warning: something\n" in text
    assert text.endswith("\n")


def test_quiet_prints_nothing():
    stream = _Tty()
    p = Progress(Counts(total=2), stream, quiet=True)
    p.update(force=True)
    p.close()
    assert stream.getvalue() == ""


def test_a_search_spec_is_refused(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("sweep", REPO / "sweeps" / "search_smoke.yaml")
    assert_one_line_error(code, err, "run it with 'ntkdiv search SPEC'")
    assert_nothing_created(tmp_path)
