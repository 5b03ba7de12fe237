"""The ``ntkdiv`` command line. Each subcommand imports its implementation lazily, so that
``ntkdiv run`` never pays for importing Ray or MLflow.

Bad input (any :class:`core.NtkdivError`) exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

# subcommand -> "module:function"; each function takes the parsed args and returns an exit code
_COMMANDS = {
    "run": "ntkdiv._local:cmd_run",
    "ntk": "ntkdiv._local:cmd_ntk",
    "sweep": "ntkdiv._commands:cmd_sweep",
    "sync": "ntkdiv._sync:cmd_sync",
    "rerun": "ntkdiv._rerun:cmd_rerun",
    "search": "ntkdiv._search:cmd_search",
    "aggregate": "ntkdiv._commands:cmd_aggregate",
    "bench": "bench._cli:cmd_bench",
    "docs": "ntkdiv._docs:cmd_docs",
}


DESCRIPTION = (
    "Test whether training moves a network's neural tangent kernel out of the bound "
    "lambda0/(2 n^2): run trials and Ray sweeps, log them to MLflow, and aggregate a store "
    "into verdicts and an HTML report."
)
EPILOG = """examples:
  ntkdiv sweep sweeps/smoke.yaml                 run the smoke sweep (resumes by itself)
  ntkdiv aggregate ntkdiv-store/smoke            rebuild its verdicts and report.html
  ntkdiv ntk configs/fig1_circle.yaml            lambda0 and the bound of a config's data
  ntkdiv run configs/fig1_circle.yaml --set model.width=256 --out runs/fig1
  ntkdiv sync ntkdiv-store/smoke                 backfill MLflow from the store
  ntkdiv rerun RUN_ID                            rerun a logged trial locally and compare
  mlflow ui --backend-store-uri sqlite:///mlflow.db   browse the runs (URL printed by sweep)

'ntkdiv COMMAND --help' shows a command's options. Bad input exits 2 with one line."""
# what to type after an interrupted command, which picks up where it stopped
RESUMES = {"sweep": "resumes", "search": "resumes", "sync": "logs what is missing",
           "aggregate": "rebuilds the report"}  # fmt: skip


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2, as for every bad input
        self.exit(2, f"ntkdiv: error: {message} (see 'ntkdiv --help')\n")


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field by dotted key, e.g. --set model.width=4096",
    )  # fmt: skip


def _driver(p: argparse.ArgumentParser) -> None:
    """The options of the commands that drive a sweep directory (sweep, search)."""
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or local)")
    p.add_argument("--storage", default=None, help="override the spec's storage")
    p.add_argument("--tracking-uri", default=None, help="override the spec's MLflow URI")
    p.add_argument("--wait", action="store_true",
                   help="when another driver runs this sweep directory, wait for it to finish "
                        "instead of refusing")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ntkdiv", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="run one trial locally")
    p.add_argument("config", help="trial config YAML")
    _overrides(p)
    p.add_argument("--out", default=None, help="output directory (default runs/<trial_id>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("ntk", help="analytic kernel, lambda0 and the bound for a config's data")
    p.add_argument("config", help="trial config YAML (its model and data are used)")
    _overrides(p)

    p = sub.add_parser("sweep", help="run a sweep spec on Ray (resumes by itself)")
    p.add_argument("spec", help="sweep spec YAML")
    _driver(p)
    p.add_argument("--no-aggregate", action="store_true", help="skip the final verdict")
    p.add_argument("--quiet", action="store_true", help="no live progress")
    p.add_argument("--retry-failed", action="store_true",
                   help="rerun trials whose own code failed more often than the spec's retries "
                        "allow (their earlier attempts stay in attempts.json)")  # fmt: skip

    p = sub.add_parser("sync", help="backfill MLflow from a sweep's store")
    p.add_argument("store", help="a sweep directory <storage>/<sweep>")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow URI (default: the spec's mlflow.tracking_uri, else "
                        "sqlite:///mlflow.db)")  # fmt: skip
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment name (default: the spec's, else the sweep's name)",
                   )  # fmt: skip

    p = sub.add_parser("rerun", help="rerun an MLflow run's config locally and compare")
    p.add_argument("run_id", help="id of a trial's MLflow run (the UI's run page shows it)")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow URI holding the run (default sqlite:///mlflow.db)",
    )
    p.add_argument("--out", default=None, help="output directory (default runs/rerun-<run_id>)")

    p = sub.add_parser("search", help="Optuna search over a spec's search space")
    p.add_argument("spec", help="search spec YAML (a sweep spec with a search: section)")
    _driver(p)
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
    p.add_argument("--out", default="docs/configs.md", help="where to write (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `ntkdiv`: what there is to type, not a bare error
        parser.print_usage(sys.stderr)
        print("ntkdiv: error: a COMMAND is required; 'ntkdiv --help' lists them with examples",
              file=sys.stderr)  # fmt: skip
        return 2
    module_name, func_name = _COMMANDS[args.command].split(":")
    from core import NtkdivError

    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except NtkdivError as err:  # bad input: 2; a store that failed mid-run (StoreError): 1
        print(f"ntkdiv: error: {err}", file=sys.stderr)
        return int(getattr(err, "exit_code", 2))
    except KeyboardInterrupt:
        print(interrupted(argv, args.command), file=sys.stderr, flush=True)
        return 130


def interrupted(argv: Sequence[str], command: str) -> str:
    """The line printed on Ctrl-C, on a line of its own, with the command that picks up."""
    from sweep import end_line

    end_line(sys.stderr)
    again = shlex.join(["ntkdiv", *argv])
    if command in RESUMES:
        return (f"ntkdiv: interrupted; the store keeps what finished. Run '{again}' again: it "
                f"{RESUMES[command]}.")  # fmt: skip
    return f"ntkdiv: interrupted; run '{again}' to start it again."


if __name__ == "__main__":
    sys.exit(main())
