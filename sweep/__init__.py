"""Sweeps and searches: specs and grids, Ray dispatch, resume, the Optuna search; each finished
trial is logged through ``mlflow_index``. The command line that composes this package with
``dashboards`` is ``ntkdiv/``.

Ray and Optuna are each imported in exactly one adapter (``_ray``, ``_optuna``), and only when a
command needs them. ``docs/architecture.md`` maps the modules.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the type checker sees; at run time, __getattr__ below
    from ._progress import Stage, end_line
    from ._runner import SweepResult, run_sweep
    from ._search import SearchResult, run_search
    from ._spec import SweepSpec, load_spec, parse_spec

# the public names, each loaded from its module on first use (``ntkdiv`` commands stay light)
_LAZY = {"run_sweep": "._runner", "SweepResult": "._runner", "load_spec": "._spec",
         "parse_spec": "._spec", "SweepSpec": "._spec", "run_search": "._search",
         "SearchResult": "._search", "Stage": "._progress", "end_line": "._progress"}  # fmt: skip
__all__ = ["SearchResult", "Stage", "SweepResult", "SweepSpec", "end_line", "load_spec",
           "parse_spec", "run_search", "run_sweep"]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'sweep' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
