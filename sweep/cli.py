"""The ``ntkdiv`` command line. Each subcommand imports its implementation lazily, so that
``ntkdiv run`` never pays for importing Ray or MLflow.

Bad input (any :class:`core.NtkdivError`) exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

# subcommand -> "module:function"; each function takes the parsed args and returns an exit code
_COMMANDS = {
    "run": "sweep._local:cmd_run",
    "ntk": "sweep._local:cmd_ntk",
    "sweep": "sweep._commands:cmd_sweep",
    "sync": "sweep._sync:cmd_sync",
    "rerun": "sweep._rerun:cmd_rerun",
    "search": "sweep._search:cmd_search",
    "aggregate": "sweep._commands:cmd_aggregate",
    "bench": "bench._cli:cmd_bench",
    "docs": "sweep._docs:cmd_docs",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2, as for every bad input
        self.exit(2, f"ntkdiv: error: {message}\n")


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field by dotted key, e.g. --set model.width=4096",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ntkdiv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run one trial locally")
    p.add_argument("config", help="trial config YAML")
    _overrides(p)
    p.add_argument("--out", default=None, help="output directory (default runs/<trial_id>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("ntk", help="analytic kernel, lambda0 and the bound for a config's data")
    p.add_argument("config")
    _overrides(p)

    p = sub.add_parser("sweep", help="run a sweep spec on Ray (resumes by itself)")
    p.add_argument("spec", help="sweep spec YAML")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or local)")
    p.add_argument("--storage", default=None, help="override the spec's storage")
    p.add_argument("--tracking-uri", default=None, help="override the spec's MLflow URI")
    p.add_argument("--no-aggregate", action="store_true", help="skip the final verdict")
    p.add_argument("--quiet", action="store_true", help="no live progress")

    p = sub.add_parser("sync", help="backfill MLflow from a sweep's store")
    p.add_argument("store", help="a sweep directory <storage>/<sweep>")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--experiment", default=None)

    p = sub.add_parser("rerun", help="rerun an MLflow run's config locally and compare")
    p.add_argument("run_id")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--out", default=None)

    p = sub.add_parser("search", help="Optuna search over a spec's search space")
    p.add_argument("spec")
    p.add_argument("--address", default=None)
    p.add_argument("--storage", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--no-prune", action="store_true", help="turn exact pruning off")

    p = sub.add_parser("aggregate", help="verdict tables, fits, figures and the HTML report")
    p.add_argument("store", help="a sweep directory, or a storage root holding sweeps")
    p.add_argument("--out", default=None, help="report directory (default <sweep>/report)")
    p.add_argument("--tracking-uri", default=None, help="also log the report to MLflow")

    p = sub.add_parser("bench", help="benchmarks; results go to docs/performance.md")
    p.add_argument(
        "which",
        nargs="*",
        default=["all"],
        help="ntk | train | flow | sweep | aggregate | search | all",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke check")
    p.add_argument("--doc", default="docs/performance.md", help="where to write the results")

    p = sub.add_parser("docs", help="regenerate docs/configs.md from the typed models")
    p.add_argument("--out", default="docs/configs.md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = _COMMANDS[args.command].split(":")
    from core import NtkdivError

    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except NtkdivError as err:
        print(f"ntkdiv: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ntkdiv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
