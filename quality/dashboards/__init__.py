"""The admin console's dashboards (issue 14): progress, taxonomy, annotators, label issues over
runs, models over time, active learning.

``snapshots`` computes what cannot be read per request on a large project (one row per page in
:class:`~quality.models.DashboardSnapshot`, refreshed by a worker); ``selectors`` reads the snapshot
and the few cheap live aggregates; ``figures`` turns frames into plotly figures (no queries);
``views`` parses, reads, renders.
"""
