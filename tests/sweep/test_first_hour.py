"""A new user's first hour: the MLflow experiment opens on its runs, runs last as long as their
trials, charts over log t, a help that helps, Ctrl-C on its own line, no needless rebuild.

MLflow is a real sqlite store (one per module); the CLI runs in-process or as the console script.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pty
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bench.aggregate import SyntheticGroup, write_sweep
from core import config_from_dict, run_trial, trial_id
from core import store as st
from mlflow_index import MlflowLogger
from mlflow_index._logger import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from mlflow_index._runs import LOG_T_PREFIX, LOG_T_SCALE
from ntkdiv._commands import aggregate_once, headline
from ntkdiv.cli import build_parser, interrupted, main
from sweep._progress import Counts, Progress, Stage
from tests._signals import sigint_as_in_a_terminal

REPO = Path(__file__).resolve().parents[2]
COMMANDS_WITH_OPTIONS = ("run", "ntk", "sweep", "sync", "rerun", "search", "aggregate", "docs")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real sqlite MLflow store shared by the module (its tables cost ~1.5 s to create)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def trial(sweep_dir: Path, lr: float = 0.1, attempts: bool = True) -> str:
    """A tiny real trial; with ``attempts``, recorded as the Ray task records it."""
    cfg = config_from_dict({
        "model": {"arch": "fcn", "width": 32, "depth": 2}, "data": {"kind": "circle", "n": 6},
        "train": {"loss": "cross_entropy", "lr": lr, "epochs": 30}, "track": {"log_points": 12},
    })  # fmt: skip
    tdir = st.trial_dir(sweep_dir, trial_id(cfg))
    index = st.begin_attempt(tdir) if attempts else None
    summary = run_trial(cfg, tdir)
    if attempts:
        time.sleep(0.05)  # a measurable duration even on a fast machine
        st.end_attempt(tdir, index, summary["status"])
    return trial_id(cfg)


def logger_for(uri: str, sweep_dir: Path, experiment: str | None = None) -> MlflowLogger:
    return MlflowLogger(uri, experiment or f"exp-{uuid.uuid4().hex[:8]}", sweep_dir.name,
                        sweep_dir)  # fmt: skip


# --- MLflow: the experiment, the runs, the charts ----------------------------------------------


def test_experiment_opens_on_its_runs_and_the_url_names_the_table(tracking_uri, tmp_path):
    client = MlflowClient(tracking_uri)
    made_elsewhere = f"exp-{uuid.uuid4().hex[:8]}"  # an experiment created without the tag
    client.create_experiment(made_elsewhere)
    for name in (None, made_elsewhere):
        logger = logger_for(tracking_uri, tmp_path / "s", name)
        logger.ensure_parent({"name": "s"})
        exp = client.get_experiment_by_name(logger.experiment)
        assert exp.tags.get(EXPERIMENT_KIND_TAG) == EXPERIMENT_KIND, exp.tags
    assert logger.runs_url() is None  # a sqlite store: `mlflow ui` decides the address
    assert logger.ui_runs_url("http://127.0.0.1:5000") == (
        f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
        "?workflowType=machine_learning"
    )


def test_sync_ends_with_where_to_open_the_runs(tracking_uri, tmp_path, capsys):
    sweep = tmp_path / "s"
    trial(sweep)
    name = f"exp-{uuid.uuid4().hex[:8]}"
    assert main(["sync", str(sweep), "--tracking-uri", tracking_uri, "--experiment", name]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    exp = MlflowClient(tracking_uri).get_experiment_by_name(name)
    assert last.startswith("mlflow: ") and f"ui --backend-store-uri {tracking_uri} " in last
    assert last.endswith(f"/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")


def test_child_run_spans_its_trials_attempts(tracking_uri, tmp_path):
    sweep = tmp_path / "s"
    tid = trial(sweep)
    logger = logger_for(tracking_uri, sweep)
    run = MlflowClient(tracking_uri).get_run(logger.log_trial(tid))
    (attempt,) = st.read_attempts(st.trial_dir(sweep, tid))
    assert run.info.start_time == round(attempt["start"] * 1000)
    assert run.info.end_time == round(attempt["end"] * 1000)
    assert run.info.end_time - run.info.start_time >= 50, run.info


def test_trial_without_attempts_lasts_its_wall_time(tracking_uri, tmp_path):
    sweep = tmp_path / "s"
    tid = trial(sweep, attempts=False)
    run = MlflowClient(tracking_uri).get_run(logger_for(tracking_uri, sweep).log_trial(tid))
    wall_ms = st.read_json(st.trial_dir(sweep, tid) / st.SUMMARY)["wall_s"] * 1000
    assert abs(run.info.end_time - run.info.start_time - wall_ms) <= 2, (run.info, wall_ms)


def test_charts_over_log_t_carry_the_bound(tracking_uri, tmp_path):
    """The log-t series sit at step round(1000 log10 t), evenly spread for log-spaced rows; the
    bound rides on both axes, and drift/bound is the drift over the bound."""
    sweep = tmp_path / "s"
    tid = trial(sweep)
    client = MlflowClient(tracking_uri)
    run_id = logger_for(tracking_uri, sweep).log_trial(tid)
    tdir = st.trial_dir(sweep, tid)
    bound = st.read_json(tdir / st.SUMMARY)["bound"]
    table = st.read_trajectory(tdir / st.TRAJECTORY).to_pydict()
    rows = [(t, d) for t, d in zip(table["t"], table["drift"], strict=True) if t > 0]
    history = {m.step: m.value for m in client.get_metric_history(run_id, LOG_T_PREFIX + "drift")}
    assert sorted(history) == sorted({round(LOG_T_SCALE * math.log10(t)) for t, _ in rows})
    for t, drift in rows:
        assert history[round(LOG_T_SCALE * math.log10(t))] == pytest.approx(drift, rel=1e-12)
    ratio = client.get_metric_history(run_id, LOG_T_PREFIX + "drift_over_bound")
    assert {m.step: m.value * bound for m in ratio} == pytest.approx(history, rel=1e-12)
    steps = sorted(m.step for m in client.get_metric_history(run_id, "drift"))
    bounds = client.get_metric_history(run_id, "bound")
    assert set(steps) <= {m.step for m in bounds} and {m.value for m in bounds} == {bound}


def test_parent_holds_the_grid_and_the_headline(tracking_uri, tmp_path):
    sweep = tmp_path / "s"
    tid = trial(sweep)
    logger = logger_for(tracking_uri, sweep)
    spec = {"name": "s", "grid": {"model.width": [16, 32], "seed": [0, 1]}}
    parent = logger.ensure_parent(spec)
    logger.log_trial(tid)
    report = aggregate_once(sweep, None, io.StringIO(), quiet=True)
    numbers = headline(report)
    assert numbers["trials"] == 1 and numbers["trials_completed"] == 1, numbers
    logger.log_report(report.report_dir, report.verdict_text, numbers)
    run = MlflowClient(tracking_uri).get_run(parent)
    assert run.data.params["grid.model.width"] == "[16, 32]", run.data.params
    assert run.data.params["grid.seed"] == "[0, 1]"
    assert run.data.metrics["trials"] == 1 and run.info.status == "FINISHED"
    assert any(k.startswith("rows_direct/") for k in run.data.metrics), run.data.metrics
    # the grid edited under the same sweep name: the params stay, a tag names what changed
    again = logger_for(tracking_uri, sweep, logger.experiment)
    again.ensure_parent({**spec, "grid": {"model.width": [64], "seed": [0, 1]}})
    run = MlflowClient(tracking_uri).get_run(parent)
    assert run.data.params["grid.model.width"] == "[16, 32]"
    assert run.data.tags["ntkdiv.grid_changed"] == "grid.model.width"


# --- the command line ----------------------------------------------------------------------------


def test_plain_ntkdiv_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ntkdiv") and "COMMAND" in err and "--help" in err, err


def test_help_is_whole_with_examples_and_every_option_explained():
    parser = build_parser()
    text = parser.format_help()
    assert parser.description.endswith(".") and "examples:" in text, text
    assert "ntkdiv sweep sweeps/smoke.yaml" in text
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in COMMANDS_WITH_OPTIONS:
        for action in sub.choices[name]._actions:
            if action.dest != "help":
                assert action.help, f"ntkdiv {name}: {action.option_strings or action.dest}"


def test_interrupt_ends_the_progress_line_and_says_what_to_type(monkeypatch):
    """On a terminal (a real pty) the progress line is redrawn without a newline; the
    interruption starts a line of its own and names the command that resumes."""
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        progress = Progress(Counts(total=4, running=2), tty)
        assert progress.tty
        progress.update(force=True)
        print(interrupted(["sweep", "sweeps/smoke.yaml"], "sweep"), file=tty, flush=True)
        out = ""
        while "again" not in out:  # a pty hands over what was written in pieces
            out += os.read(master, 65536).decode()
    os.close(master)
    drawn, said = out.rsplit("ntkdiv: interrupted", 1)
    assert "sweep: 0/4 done" in drawn and drawn.endswith("\n"), repr(out)
    assert "'ntkdiv sweep sweeps/smoke.yaml' again" in said, repr(out)


def test_stage_shows_long_work_on_a_log_and_keeps_errors_to_one_line():
    log = io.StringIO()
    with Stage("aggregating s", log, log_every=0.05):
        time.sleep(0.3)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and lines[0].startswith("aggregating s ... "), lines
    assert lines[-1].startswith("aggregating s: done in"), lines
    quick = io.StringIO()
    with pytest.raises(RuntimeError), Stage("aggregating s", quick):
        raise RuntimeError("bad store")
    assert quick.getvalue() == ""  # the error's own line is all a short failed stage shows


@pytest.mark.slow
def test_ctrl_c_during_a_sweep_on_a_terminal(tmp_path):
    """The console script on a real pty with a real local Ray cluster: SIGINT while trials run
    ends the progress line, then one line names the command that resumes; exit 130."""
    spec = {"name": "ctrlc", "storage": str(tmp_path / "store"), "mlflow": {"enabled": False},
            "base": {"model": {"arch": "fcn", "width": 32, "depth": 2},
                     "data": {"kind": "circle", "n": 6},
                     "train": {"loss": "cross_entropy", "lr": 0.1, "epochs": 100_000}},
            "grid": {"model.width": [16, 32]}}  # fmt: skip
    (tmp_path / "spec.yaml").write_text(json.dumps(spec))
    env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}  # as CI
    master, slave = pty.openpty()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("ntkdiv")), "sweep", "spec.yaml"],
                            stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, env=env,
                            start_new_session=True, preexec_fn=sigint_as_in_a_terminal)  # fmt: skip
    os.close(slave)
    out, deadline, sent = b"", time.monotonic() + 600, False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([master], [], [], 0.5)[0]:
                with contextlib.suppress(OSError):
                    out += os.read(master, 65536)
            if not sent and b"elapsed" in out:
                os.killpg(proc.pid, signal.SIGINT)
                sent = True
        assert proc.wait(timeout=120) == 130, out[-2000:]
        with contextlib.suppress(OSError):
            while select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        os.close(master)
    text = out.decode(errors="replace")
    before, line = text.rsplit("ntkdiv: interrupted", 1)
    assert "elapsed" in before and before.endswith("\n"), repr(text[-1500:])
    assert "'ntkdiv sweep spec.yaml' again: it resumes" in line, repr(text[-1500:])


# --- a finished sweep run again does not rebuild its report -------------------------------------


def test_report_is_kept_while_the_store_is_unchanged(tmp_path):
    sweep = tmp_path / "s"
    write_sweep(sweep, [SyntheticGroup(widths=(64, 128), seeds=(0,), epochs=50,
                                       log_points=10)])  # fmt: skip
    spec = "name: s\ngrid: {model.width: [64, 128]}\n"
    st.atomic_write_text(sweep / st.SPEC, spec)
    log = io.StringIO()
    first = aggregate_once(sweep, None, log)
    html = first.report_dir / "report.html"
    built = html.stat().st_mtime_ns
    st.atomic_write_text(sweep / st.SPEC, spec)  # as every `ntkdiv sweep` rewrites it
    kept = aggregate_once(sweep, None, log)
    assert html.stat().st_mtime_ns == built and "kept" in log.getvalue()
    assert kept.verdict_text == first.verdict_text
    assert headline(kept) == headline(first)
    # a trial changed (a rerun rewrote its summary): rebuilt
    summary = next((sweep / "trials").glob("*/summary.json"))
    os.utime(summary, ns=(built + 10**9, built + 10**9))
    aggregate_once(sweep, None, log)
    assert html.stat().st_mtime_ns != built
    # the report deleted: rebuilt as well
    shutil.rmtree(first.report_dir / "figures")
    html.unlink()
    aggregate_once(sweep, None, log)
    assert html.is_file()


# --- the README's MLflow lines hold for any user -------------------------------------------------


def test_readme_lists_the_smoke_runs_by_experiment_name(tmp_path):
    """No hard-coded experiment id: the README's listing finds the runs of experiment `smoke` in
    a store where it is not experiment 1."""
    readme = (REPO / "README.md").read_text()
    assert "--experiment-id" not in readme
    (line,) = [ln for ln in readme.splitlines() if "search_runs(experiment_names=['smoke']" in ln]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the README's ./mlflow.db, run from tmp_path
    MlflowClient(uri).create_experiment("someone-else's")  # takes an id before smoke's
    sweep = tmp_path / "store" / "smoke"
    tid = trial(sweep)
    logger = MlflowLogger(uri, None, "smoke", sweep)
    child = logger.log_trial(tid)
    assert logger.experiment_id() != "1"
    command = line.replace(".venv/bin/python", shlex.quote(sys.executable))
    out = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert child in out and "smoke" in out, out


@pytest.mark.slow
def test_smoke_sweep_prints_its_runs_url_and_logs_durations_and_headline(smoke_sweep):
    """The README's main job (the session's smoke sweep, on a real server): the last line is the
    runs table's URL for experiment smoke; every child run lasts > 0 ms; the parent has the
    grid and the headline; the report's key lies beside it."""
    assert smoke_sweep.code == 0, smoke_sweep.stderr[-3000:]
    client = MlflowClient(smoke_sweep.tracking_uri)
    exp = client.get_experiment_by_name("smoke")
    last = smoke_sweep.stdout.strip().splitlines()[-1]
    assert last == (f"mlflow: {smoke_sweep.tracking_uri}/#/experiments/{exp.experiment_id}/runs"
                    "?workflowType=machine_learning"), last  # fmt: skip
    runs = client.search_runs([exp.experiment_id], "tags.`ntkdiv.sweep` = 'smoke'")
    children = [r for r in runs if r.data.tags.get("ntkdiv.role") == "trial"]
    (parent,) = [r for r in runs if r.data.tags.get("ntkdiv.role") == "parent"]
    assert len(children) == 8 and all(r.info.end_time > r.info.start_time for r in children)
    assert "grid.model.width" in parent.data.params and parent.data.metrics["trials"] == 8
    assert (smoke_sweep.sweep_dir / "report" / "inputs.json").is_file()


# --- in the browser: the MLflow UI of a real server ------------------------------------------


@pytest.mark.slow
def test_printed_url_opens_the_runs_table_and_charts_span_log_t(mlflow_server, tmp_path):
    """Headless Chromium on the session's ``mlflow server``: the URL a sweep prints shows the
    runs table (not the GenAI overview), and a trial's charts have the log10 t section, whose
    step axis runs through negative and positive thousandths of a decade."""
    from tests._chromium import Chromium, chromium_binary, parse_page

    sweep = tmp_path / "first-hour"
    tids = [trial(sweep, lr) for lr in (0.1, 0.05)]
    logger = logger_for(mlflow_server, sweep)
    logger.ensure_parent({"name": sweep.name, "grid": {"train.lr": [0.1, 0.05]}})
    run_ids = [logger.log_trial(t) for t in tids]
    browser = Chromium(chromium_binary(), tmp_path / "profile", window=(1600, 1000))
    url = logger.runs_url()
    page = parse_page(browser.dump_dom(url))
    assert page.title.startswith("Runs - Experiment"), page.title
    assert sweep.name in page.words and "Duration" in page.words, page.text[:1500]
    assert "Traces 0" not in page.text, page.text[:1500]  # the GenAI overview's first card
    browser.screenshot(url, tmp_path / "runs.png")
    charts = url.replace("/runs?", f"/runs/{run_ids[0]}/model-metrics?")
    drawn = lambda dom: "drift_over_bound" in parse_page(dom).text  # noqa: E731
    text = parse_page(browser.dump_dom(charts, drawn)).text
    assert "log10t" in text and "drift_over_bound" in text, text[:1500]
    assert "−1000" in text or "-1000" in text, text[:1500]  # t = 0.1 .. 3, lr = 0.1
