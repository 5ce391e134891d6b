"""A snapshot's derived metrics: what the dashboard charts (series) and headlines (totals).

The web app's ``/api/snapshots/process`` did this before; we keep its metric keys and formulas
(``contracts/supabase.md``, "Snapshot processing") and fix its history bug: the old series kept only
the dashboard keys per day, so opens, clicks, unsubscribes, spam complaints and bounces of carried
days were lost and the totals drifted as the series grew. Here every day's series carries the counts
too, so any snapshot's totals can be rebuilt from its series alone.

History (``contracts/supabase.md``, "Snapshot processing", History): a snapshot's series holds its
own window (:class:`OwnActivity`, from its files) and, before the window, the days carried forward
from the account's previous snapshot. Publishing the partitions of an account in date order gives
each snapshot ``k`` the chain value of a day ``d``: its own value when ``d`` is in its window, else
(``d`` before the window) snapshot ``k-1``'s chain value; days after the window are not kept. That
chain does not depend on the order the runs happened in when it is computed from each snapshot's
*own* window rows (``IngestTables.history`` does it from the stored rows), so the caller hands
:func:`compute_metrics` a :class:`History` built that way rather than one snapshot's stored series.

Plain Python, no Dagster, no database: the caller reads the CSVs and the history and writes the
result. The values it takes and gives (:class:`SeriesPoint`, :class:`SnapshotMetrics`,
:class:`History`) live in ``derived_rows.py``, which storage writes them from.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import date
from itertools import chain
from typing import TextIO

from klaviyo_dagster.derived_rows import History, SeriesPoint, SnapshotMetrics
from klaviyo_dagster.producers.csvfile import READ_FIELD_SIZE_LIMIT
from klaviyo_dagster.producers.window import calendar_days

# The keys the dashboard reads, per day and for the whole snapshot (rates are percentages).
DASHBOARD_KEYS = (
    "totalRevenue",
    "emailsSent",
    "totalOrders",
    "openRate",
    "clickRate",
    "clickToOpenRate",
    "conversionRate",
    "unsubscribeRate",
    "spamRate",
    "bounceRate",
    "avgOrderValue",
    "revenuePerEmail",
)
# The counts behind the rates; the old app wrote them only as totals.
COUNT_KEYS = ("uniqueOpens", "uniqueClicks", "unsubscribesCount", "spamComplaintsCount", "bouncesCount")
# Fix: the series carries the counts as well, so carried days keep every base sum.
SERIES_KEYS = DASHBOARD_KEYS + COUNT_KEYS
TOTAL_KEYS = DASHBOARD_KEYS + COUNT_KEYS
# The series keys a day's base sums are rebuilt from, by DayTotals field.
BASE_KEYS = {
    "revenue": "totalRevenue",
    "emails": "emailsSent",
    "orders": "totalOrders",
    "unique_opens": "uniqueOpens",
    "unique_clicks": "uniqueClicks",
    "unsubscribes": "unsubscribesCount",
    "spam_complaints": "spamComplaintsCount",
    "bounces": "bouncesCount",
}
# For a snapshot written by the old app (no count keys): each count's rate, a percentage of emails sent.
RATE_OF_COUNT = {
    "uniqueOpens": "openRate",
    "uniqueClicks": "clickRate",
    "unsubscribesCount": "unsubscribeRate",
    "spamComplaintsCount": "spamRate",
    "bouncesCount": "bounceRate",
}
# flows.csv rows of other channels (SMS, push) are not email activity.
EMAIL_CHANNELS = frozenset({"", "email", "Email"})

FLOWS_COLUMNS = (
    "Day",
    "Flow Message Channel",
    "Delivered",
    "Unique Opens",
    "Unique Clicks",
    "Placed Order",
    "Revenue",
    "Unsub Rate",
    "Complaint Rate",
    "Bounce Rate",
)
CAMPAIGNS_COLUMNS = (
    "Send Time",
    "Total Recipients",
    "Unique Placed Order",
    "Revenue",
    "Unique Opens",
    "Unique Clicks",
    "Unsubscribes",
    "Spam Complaints",
    "Bounces",
)

csv.field_size_limit(READ_FIELD_SIZE_LIMIT)


@dataclass(frozen=True)
class DayTotals:
    """The base sums of one day of email activity; every metric derives from these."""

    revenue: float = 0
    emails: float = 0
    orders: float = 0
    unique_opens: float = 0
    unique_clicks: float = 0
    unsubscribes: float = 0
    spam_complaints: float = 0
    bounces: float = 0

    def __add__(self, other: DayTotals) -> DayTotals:
        if not isinstance(other, DayTotals):
            return NotImplemented
        return DayTotals(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class OwnActivity:
    """A snapshot's own email activity: the :func:`daily_totals` of its files over its window.

    Raises ValueError when the window is reversed or a day lies outside it (see :func:`check_window`).
    """

    window: tuple[date, date]  # first, last; inclusive
    days: Mapping[date, DayTotals]

    def __post_init__(self) -> None:
        check_window(self.days, self.window)

    @classmethod
    def from_series(cls, window: tuple[date, date], points: Iterable[SeriesPoint]) -> OwnActivity:
        """A stored snapshot's own activity: its series ``points`` inside ``window`` rebuilt as base
        sums (:func:`rebuild_days`; values are stored exactly, so they come back exactly)."""
        return cls(window, rebuild_days(points))

    def metrics(self, history: History) -> SnapshotMetrics:
        """The snapshot's derived rows: this window on top of ``history``."""
        return compute_metrics(dict(self.days), self.window, history.series, history.last_email_date)


def js_math_round(x: float) -> float:
    """JavaScript's ``Math.round``, which the dashboard's processor uses (contracts/supabase.md).

    The integer nearest ``x``, halves towards +infinity (Python's ``round`` goes to even). Computed
    as ``floor(x)`` plus one when the fraction is at least a half: ``x - floor(x)`` is exact for
    doubles, whereas ``floor(x + 0.5)`` rounds the sum first and turns 0.49999999999999994 into 1.
    """
    if not math.isfinite(x):
        return x
    whole = math.floor(x)
    return float(whole + 1 if x - whole >= 0.5 else whole)


# --- Reading the CSVs -------------------------------------------------------------------------------


def daily_totals(flows_csv: TextIO, campaigns_csv: TextIO) -> dict[date, DayTotals]:
    """Sums each day's email activity over flows.csv and campaigns.csv, reading them row by row.

    Days are the account's local dates: flows ``Day``, campaigns the date part of ``Send Time``.
    Raises ValueError, naming the file and line, for a missing column, a bad date or a non-number:
    a snapshot built on a misread file would show the dashboard wrong numbers.
    """
    days: dict[date, DayTotals] = defaultdict(DayTotals)
    for day, totals in chain(_flow_days(flows_csv), _campaign_days(campaigns_csv)):
        days[day] = days[day] + totals
    return dict(days)


def _flow_days(flows_csv: TextIO) -> Iterator[tuple[date, DayTotals]]:
    """flows.csv email rows as (day, totals). Flows have only rates for unsubscribes, spam and bounces."""
    for where, row in _rows(flows_csv, "flows.csv", FLOWS_COLUMNS):
        if (row["Flow Message Channel"] or "") not in EMAIL_CHANNELS:
            continue
        emails = _number(row, "Delivered", where)
        yield (
            _day(row["Day"], "Day", where),
            DayTotals(
                revenue=_number(row, "Revenue", where),
                emails=emails,
                orders=_number(row, "Placed Order", where),
                unique_opens=_number(row, "Unique Opens", where),
                unique_clicks=_number(row, "Unique Clicks", where),
                unsubscribes=js_math_round(emails * _number(row, "Unsub Rate", where)),
                spam_complaints=js_math_round(emails * _number(row, "Complaint Rate", where)),
                bounces=js_math_round(emails * _number(row, "Bounce Rate", where)),
            ),
        )


def _campaign_days(campaigns_csv: TextIO) -> Iterator[tuple[date, DayTotals]]:
    """campaigns.csv rows (all email) as (day, totals); campaigns have real counts."""
    for where, row in _rows(campaigns_csv, "campaigns.csv", CAMPAIGNS_COLUMNS):
        # Send Time is already in the account's timezone (2026-03-08T11:30:00-04:00): its first
        # 10 characters are the local date, with no timezone conversion.
        yield (
            _day((row["Send Time"] or "")[:10], "Send Time", where),
            DayTotals(
                revenue=_number(row, "Revenue", where),
                emails=_number(row, "Total Recipients", where),
                orders=_number(row, "Unique Placed Order", where),
                unique_opens=_number(row, "Unique Opens", where),
                unique_clicks=_number(row, "Unique Clicks", where),
                unsubscribes=_number(row, "Unsubscribes", where),
                spam_complaints=_number(row, "Spam Complaints", where),
                bounces=_number(row, "Bounces", where),
            ),
        )


def _rows(text: TextIO, name: str, columns: Iterable[str]) -> Iterator[tuple[str, Mapping[str, str | None]]]:
    """The data rows of a CSV by column name, each with "file line N" for error messages."""
    reader = csv.DictReader(text)
    missing = [c for c in columns if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"{name} has no column {', '.join(repr(c) for c in missing)}")
    for row in reader:
        yield f"{name} line {reader.line_num}", row


def _number(row: Mapping[str, str | None], column: str, where: str) -> float:
    """A numeric field as JavaScript wrote it; an empty (or absent) field counts as 0."""
    text = (row.get(column) or "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{where}: {column} is not a number: {text!r}")
    return value


def _day(text: str | None, column: str, where: str) -> date:
    try:
        return date.fromisoformat(text or "")
    except ValueError:
        raise ValueError(f"{where}: {column} is not a YYYY-MM-DD date: {text!r}") from None


# --- Metrics -----------------------------------------------------------------------------------------


def metric_values(t: DayTotals) -> dict[str, float]:
    """Every metric key's value for a day's (or the whole snapshot's) base sums, as the app defines them.

    Rates are percentages: open, click, unsubscribe, spam and bounce over emails sent; click-to-open
    over unique opens; conversion over unique clicks. A ratio with a zero divisor is 0.
    """
    return {
        "totalRevenue": t.revenue,
        "emailsSent": t.emails,
        "totalOrders": t.orders,
        "openRate": _percent(t.unique_opens, t.emails),
        "clickRate": _percent(t.unique_clicks, t.emails),
        "clickToOpenRate": _percent(t.unique_clicks, t.unique_opens),
        "conversionRate": _percent(t.orders, t.unique_clicks),
        "unsubscribeRate": _percent(t.unsubscribes, t.emails),
        "spamRate": _percent(t.spam_complaints, t.emails),
        "bounceRate": _percent(t.bounces, t.emails),
        "avgOrderValue": _ratio(t.revenue, t.orders),
        "revenuePerEmail": _ratio(t.revenue, t.emails),
        "uniqueOpens": t.unique_opens,
        "uniqueClicks": t.unique_clicks,
        "unsubscribesCount": t.unsubscribes,
        "spamComplaintsCount": t.spam_complaints,
        "bouncesCount": t.bounces,
    }


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _percent(part: float, whole: float) -> float:
    return _ratio(part, whole) * 100


def compute_metrics(
    current: dict[date, DayTotals],
    window: tuple[date, date],
    previous: Iterable[SeriesPoint] = (),
    previous_last_email_date: date | None = None,
) -> SnapshotMetrics:
    """The series, totals and last email date of a snapshot covering ``window`` (first, last; inclusive).

    ``current`` is this snapshot's :func:`daily_totals`; every window day appears in the series (zeros
    without activity), so the dashboard sees quiet days rather than gaps. ``previous`` is the history
    the snapshot carries: the series of its previous snapshot in an in-order run, which publishing
    computes from every earlier snapshot's own window whatever order the runs happened in
    (:class:`History`, ``IngestTables.history``; ``contracts/supabase.md``, "History"). Its days before
    the window are carried forward, so the series keeps growing; its days inside or after the window
    are replaced by this window. ``previous_last_email_date`` goes with it (:func:`last_email_date`).
    Totals cover every series day, carried history included.

    Raises ValueError when ``current`` has a day outside the window: the files and the window
    disagree, and dropping or keeping those rows would both misreport the snapshot.
    """
    check_window(current, window)
    first, last = window
    days = carried_days(previous, before=first)
    for day in calendar_days(first, last):
        days[day] = current.get(day, DayTotals())
    whole = sum((days[day] for day in sorted(days)), DayTotals())  # in day order: stable float sums
    return SnapshotMetrics(
        series=series_points(days),
        totals=_pick(metric_values(whole), TOTAL_KEYS),
        last_email_date=last_email_date(days, previous_last_email_date),
    )


def check_window(current: Iterable[date], window: tuple[date, date]) -> None:
    """Raises ValueError unless ``window`` is ordered and every day of ``current`` lies inside it."""
    first, last = window
    if first > last:
        raise ValueError(f"window starts after it ends: {first} > {last}")
    outside = sorted(day for day in current if not first <= day <= last)
    if outside:
        raise ValueError(f"activity outside the window {first}..{last}: {', '.join(map(str, outside))}")


def series_points(days: Mapping[date, DayTotals]) -> list[SeriesPoint]:
    """Every SERIES_KEYS point of every day, sorted by (day, metric_key)."""
    return [
        SeriesPoint(key, day, value)
        for day in sorted(days)
        for key, value in sorted(_pick(metric_values(days[day]), SERIES_KEYS).items())
    ]


def carried_days(previous: Iterable[SeriesPoint], before: date) -> dict[date, DayTotals]:
    """The previous snapshot's (or a :class:`History`'s) days before ``before``, rebuilt as base sums
    from its series points."""
    return rebuild_days(point for point in previous if point.day < before)


def rebuild_days(points: Iterable[SeriesPoint]) -> dict[date, DayTotals]:
    """Each day of ``points`` rebuilt as base sums (:func:`rebuild_day`).

    Values may arrive as ``Decimal`` (Postgres ``numeric``); they become floats. Unknown keys are ignored.
    """
    by_day: dict[date, dict[str, float]] = defaultdict(dict)
    for point in points:
        by_day[point.day][point.metric_key] = float(point.value)
    return {day: rebuild_day(values) for day, values in by_day.items()}


def rebuild_day(values: Mapping[str, float]) -> DayTotals:
    """A day's base sums from its series values (metric key → value)."""
    emails = values.get("emailsSent", 0.0)

    def base(key: str) -> float:
        if key in values:
            return values[key]
        rate = RATE_OF_COUNT.get(key)
        if rate is None:
            return 0.0
        # A snapshot written by the old app has no count keys in its series: derive the count from the
        # day's rate (a percentage of emails sent). The rate was count / emails * 100, so this gives
        # the count back, up to rounding.
        return js_math_round(values.get(rate, 0.0) / 100 * emails)

    return DayTotals(**{name: base(key) for name, key in BASE_KEYS.items()})


def last_email_date(days: Mapping[date, DayTotals], previous: date | None = None) -> date | None:
    """The latest day that sent email, or the previous snapshot's last email date if that is later.

    The dashboard shows it as "last email sent"; a quiet window must not move it back.
    """
    candidates = [day for day, totals in days.items() if totals.emails > 0]
    if previous is not None:
        candidates.append(previous)
    return max(candidates, default=None)


def _pick(values: Mapping[str, float], keys: Iterable[str]) -> dict[str, float]:
    return {key: values[key] for key in keys}
