"""The module layout that docs/architecture.md draws, checked from the source: the packages import
each other in one direction, each outside project is imported by its one adapter, and no module
grows past the size a reader takes in at once.

Imports are read with ``ast`` from every file, the ones inside functions (lazy imports) included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "sweep", "mlflow_index", "ntkdiv", "dashboards", "cluster", "bench")
# package -> the project packages it may import (the arrows of docs/architecture.md)
ALLOWED = {
    "core": set(),
    "mlflow_index": {"core"},
    "dashboards": {"core"},
    "sweep": {"core", "mlflow_index"},
    "ntkdiv": {"core", "sweep", "mlflow_index", "dashboards"},
    "cluster": {"core"},
    "bench": {"core", "sweep", "mlflow_index", "ntkdiv", "dashboards", "cluster"},
}
# an outside project -> the only files of the shipped packages that import it (a folder: any file
# in it); the benchmarks (bench/) may time an outside project directly
ADAPTERS = {
    "ray": ("sweep/_ray.py",),
    "mlflow": ("mlflow_index/",),
    "optuna": ("sweep/_optuna.py",),
}
MAX_LINES = 400


def _files(packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports (relative imports resolved)."""
    rel = path.relative_to(ROOT)
    own = rel.parts[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            out.add(own if node.level else (node.module or "").split(".")[0])
    return out


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_packages_import_each_other_in_one_direction():
    wrong = []
    for path in _files():
        own = path.relative_to(ROOT).parts[0]
        for name in _imports(path) & set(PACKAGES):
            if name != own and name not in ALLOWED[own]:
                wrong.append(f"{_rel(path)} imports {name}")
    assert not wrong, wrong


def test_packages_reach_each_other_through_their_init_only():
    """``from sweep._runner import ...`` in another package would tie it to a private module;
    the benchmarks may time a private step (bench/)."""
    wrong = []
    for path in _files(tuple(p for p in PACKAGES if p != "bench")):
        own = path.relative_to(ROOT).parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                parts = name.split(".")
                private = any(part.startswith("_") for part in parts[1:])
                if parts[0] in PACKAGES and parts[0] != own and private:
                    wrong.append(f"{_rel(path)}: {name}")
    assert not wrong, wrong


def test_the_allowed_imports_have_no_cycle():
    """The table itself is a partial order, so the packages can be read bottom-up."""
    seen: dict[str, int] = {}

    def visit(pkg: str, path: tuple[str, ...]) -> None:
        assert pkg not in path, " -> ".join((*path, pkg))
        if seen.get(pkg):
            return
        for dep in ALLOWED[pkg]:
            visit(dep, (*path, pkg))
        seen[pkg] = 1

    for pkg in PACKAGES:
        visit(pkg, ())


@pytest.mark.parametrize("outside", sorted(ADAPTERS))
def test_each_outside_project_has_one_adapter(outside: str):
    where = ADAPTERS[outside]
    shipped = tuple(p for p in PACKAGES if p != "bench")
    users = [_rel(p) for p in _files(shipped) if outside in _imports(p)]
    assert users, f"nothing imports {outside}: the table is stale"
    stray = [u for u in users if not u.startswith(where)]
    assert not stray, f"{outside} is imported outside {where}: {stray}"


def test_no_module_is_longer_than_a_reader_takes_in():
    long = {_rel(p): n for p in _files() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_check_sees_an_import_that_breaks_the_rule(tmp_path: Path):
    """The reader is not blind: a lazy import inside a function is found, relative ones too."""
    probe = ROOT / "core" / "_layout_probe_tmp.py"
    probe.write_text("def f():\n    import sweep\n    from . import _status\n")
    try:
        assert _imports(probe) == {"sweep", "core"}
    finally:
        probe.unlink()
