"""Publishing a partition: a run's staged files and its snapshot, all or nothing for the dashboard.

A domain operation of its own, above the two packages it uses: it checks the staged files and
computes the snapshot's metrics with ``processing``, and moves the files and writes the snapshot with
``storage`` (``publish.py``). Neither of those imports it; it knows nothing of Dagster.
"""
