"""ntkdiv dashboards: the aggregator's verdicts and fits, figures and the HTML report."""
