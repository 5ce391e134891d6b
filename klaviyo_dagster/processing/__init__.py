"""Processing: a snapshot's derived metrics (``snapshot_totals``, ``snapshot_series``, ``last_email_date``).

``metrics`` computes them in plain Python (no Dagster, no database) from a snapshot's flows.csv and
campaigns.csv plus the previous snapshot's series, for history; ``remote`` asks the web app's
processor endpoint to do it instead, when one is configured. Neither touches the store: publishing
(``publishing/publish.py``) brings the two together.
"""
