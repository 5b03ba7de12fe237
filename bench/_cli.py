"""``ntkdiv bench [ntk|train|sweep|search|aggregate|store|all]``: run benchmarks, update the doc.

Each benchmark returns one Markdown section; the doc keeps one block per benchmark between
``<!-- bench:NAME -->`` markers, so running one benchmark replaces only its own block.
"""

from __future__ import annotations

import argparse
import importlib
import re
import time
from pathlib import Path

from core import ConfigError

BENCHES = ("ntk", "train", "flow", "sweep", "aggregate", "search", "store")
HEAD = (
    "# Performance\n\nMeasured with `ntkdiv bench`. These machines are noisy: every figure is a "
    "median of interleaved repeats, and goals are stated as ratios measured side by side in one "
    "run.\n"
)


def update_doc(doc: Path, name: str, section: str) -> None:
    """Replace (or append) the block for ``name`` in ``doc``."""
    text = doc.read_text() if doc.exists() else HEAD
    stamp = time.strftime("%Y-%m-%d")
    block = f"<!-- bench:{name} -->\n{section}\n\n_Run on {stamp}._\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{name} -->.*?<!-- /bench:{name} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def cmd_bench(args: argparse.Namespace) -> int:
    names = list(BENCHES) if "all" in args.which else args.which
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise ConfigError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHES)}")
    for name in names:
        print(f"== bench {name}", flush=True)
        section = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        if not args.quick:
            update_doc(Path(args.doc), name, section)
        print(section, flush=True)
    return 0
