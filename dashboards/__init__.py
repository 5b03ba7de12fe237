"""ntkdiv dashboards: the aggregator's verdicts and fits, figures and the HTML report.

``aggregate(sweep_dir)`` reads a sweep store (``core/store/``'s layout) and writes
``<sweep_dir>/report``, which opens with the direct verdict (:class:`Direct`);
``study_crossing()`` re-reads the committed six-point width study at equal t. ``ntkdiv aggregate
STORE`` is the command line. dashboards reads the store only: it imports neither Ray nor MLflow.
"""

from ._aggregate import AggregateResult, aggregate
from ._direct import Direct
from ._headline import direct_markdown
from ._read import find_sweeps
from ._verdict import Verdict
from ._widthstudy import study_crossing, study_markdown, study_table

__all__ = ["AggregateResult", "Direct", "Verdict", "aggregate", "direct_markdown", "find_sweeps",
           "study_crossing", "study_markdown", "study_table"]  # fmt: skip
