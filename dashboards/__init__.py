"""ntkdiv dashboards: the aggregator's verdicts and fits, figures and the HTML report.

``aggregate(sweep_dir)`` reads a sweep store (``core/store.py``'s layout) and writes
``<sweep_dir>/report``; ``ntkdiv aggregate STORE`` is its command line. dashboards reads the
store only: it imports neither Ray (save ``_raydata``, the Ray Data path) nor MLflow.
"""

from ._aggregate import AggregateResult, Engine, aggregate
from ._tables import RESOLUTION_SAFETY, resolution
from ._verdict import Verdict

__all__ = ["RESOLUTION_SAFETY", "AggregateResult", "Engine", "Verdict", "aggregate", "resolution"]
