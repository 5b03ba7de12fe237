"""The newcomer's path: the README's first command, exactly as written, in a fresh copy of the
repository (it creates its own virtual environment), installs ntkdiv, runs the main job and ends
with a verdict; the README's second command is the test command CI runs.

The README's ```bash blocks are the source: the first installs and runs the main job, the
second runs the tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from dashboards import Direct, Verdict

REPO = Path(__file__).resolve().parents[1]
# the last column of a verdict table: the drift verdict, the direct one, or "-" (not shown)
VERDICTS = {v.value for v in (*Verdict, *Direct)} | {"-"}
# pip installs torch from a local wheel and the rest from the index: ~3 min with pip's cache
# warm, the main job ~1 min; a cold cache or a busy machine takes several times longer
MAIN_JOB_TIMEOUT_S = 2400
# a newcomer's shell has none of these; inherited from a test session they would point the job
# at another interpreter, package path, MLflow server or Ray cluster
FOREIGN_ENV = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")


def readme_commands() -> list[str]:
    """The README's ```bash blocks, in order, each stripped."""
    text = (REPO / "README.md").read_text()
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)]


def fresh_copy(dst: Path) -> Path:
    """Copy the repository's own files (tracked, and untracked ones git does not ignore)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in listed.split("\0"):
        src = REPO / name
        if name and src.is_file():  # a tracked file deleted from the work tree is listed too
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)
    return dst


def run_shell(command: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``bash -c command`` in a session of its own, killed with its children on timeout."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{command!r} ran past {timeout:.0f} s:\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def verdict_rows(stdout: str) -> list[list[str]]:
    """The rows (as words) of the last table whose header has a ``verdict`` column."""
    lines = stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if "verdict" in line.split()]
    assert headers, f"no verdict table in the output:\n{stdout[-3000:]}"
    rows = []
    for line in lines[headers[-1] + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_readme_test_command_is_what_ci_runs():
    """.ci/run ends by running the README's second command, as written there."""
    commands = readme_commands()
    assert len(commands) >= 2, f"README.md has {len(commands)} ```bash blocks, expected 2"
    wanted = commands[1].splitlines()
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    assert ci[-len(wanted) :] == wanted, f"README: {wanted}; .ci/run ends with: {ci[-3:]}"


@pytest.mark.slow
@pytest.mark.timeout(MAIN_JOB_TIMEOUT_S + 300)
def test_readme_main_job_runs_in_a_fresh_copy_and_ends_with_a_verdict(tmp_path):
    """Install and main job as the README writes them: exit 0, a verdict table at the end."""
    command = readme_commands()[0]
    copy = fresh_copy(tmp_path / "repo")
    assert not (copy / ".venv").exists()
    res = run_shell(command, copy, MAIN_JOB_TIMEOUT_S)
    output = f"{res.stdout[-4000:]}\n--- stderr ---\n{res.stderr[-4000:]}"
    assert res.returncode == 0, output
    rows = verdict_rows(res.stdout)
    assert rows and all(row[-1] in VERDICTS for row in rows), output
    # it ran the copy, installed into the environment it created (asked from outside any
    # checkout: the current directory comes first on sys.path)
    where = subprocess.run([str(copy / ".venv" / "bin" / "python"), "-c",
                            "import sweep; print(sweep.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(copy), where.stdout
    assert (copy / "ntkdiv-store" / "smoke" / "report" / "report.html").is_file()
    assert (copy / "mlflow.db").is_file()
