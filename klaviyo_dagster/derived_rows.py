"""A snapshot's derived rows as plain values: its ``snapshot_series`` points, its ``snapshot_totals``
and ``last_email_date`` (``contracts/supabase.md``, "Snapshot processing"), and the history it carries.

A leaf module that imports nothing of the project, so that both sides can use it and neither
depends on the other: processing computes these values (``processing/metrics.py``) and storage
reads and writes them (``storage/tables.py``). Not in storage, because processing is plain
arithmetic on files and must not import the store; not in processing, because the store only keeps
what processing derives and must not import the formulas. The values are the contract between the
two (the tables' columns), the formulas that fill them are processing's alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True)
class SeriesPoint:
    """One ``snapshot_series`` row: a metric's value on one day."""

    metric_key: str
    day: date
    value: float


@dataclass(frozen=True)
class SnapshotMetrics:
    """Everything processing writes for a snapshot."""

    series: list[SeriesPoint]  # sorted by (day, metric_key)
    totals: dict[str, float]
    last_email_date: date | None


@dataclass(frozen=True)
class History:
    """What a snapshot carries forward from the account's earlier partitions, as an in-order run of
    them would give it (``contracts/supabase.md``, "History").

    ``series`` holds the days of the in-order chain (days on or after the new window's first day, if
    any, are ignored by ``processing.metrics.compute_metrics``); ``last_email_date`` is the latest day
    with emails sent that the chain ever saw (the previous snapshot's ``last_email_date`` in an
    in-order run). ``IngestTables.history`` reads it from the stored rows.
    """

    series: list[SeriesPoint] = field(default_factory=list)
    last_email_date: date | None = None
