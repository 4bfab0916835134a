"""Read and report: the records become one table, then tables, comparisons, the papers' layouts
and figures (`build.py`, the command `python -m harness.report`). The package imports nothing at
init, so its commands (`python -m harness.report.claims`, `.verify`, `.baselines`) run once."""
