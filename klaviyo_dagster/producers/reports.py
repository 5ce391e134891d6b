"""Klaviyo's Reporting API as the producers use it: one request body shape, every page read.

Report calls are the scarcest thing we have (1/s, 2/min, 225/day per account), so each file asks
for everything it needs in as few calls as the API allows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoDataError

MAX_FILTER_VALUES = 100  # Klaviyo's cap on a contains-any list


@dataclass(frozen=True)
class ReportRow:
    """One result: its groupings and statistics (numbers for values reports, arrays for series)."""

    groupings: dict[str, Any]
    statistics: dict[str, Any]


def grouping(row: ReportRow, name: str, path: str) -> str:
    """A grouping the request's ``group_by`` asked for, as text; raises ``KlaviyoDataError`` when
    Klaviyo left it out (the row could not be told apart from another)."""
    value = row.groupings.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise KlaviyoDataError(
            f"Klaviyo's report POST {path} returned a row without its {name!r} grouping "
            f"(groupings {row.groupings!r}); nothing was written",
            endpoint=f"POST {path}",
        )
    return str(value)


def series_days(date_times: Sequence[Any], tz: ZoneInfo, path: str) -> list[str]:
    """The local date (``YYYY-MM-DD`` in the account's zone) of each series bucket.

    Klaviyo may send a bucket's start with the account's offset or in UTC (the spec's example is
    ``+00:00``), so each instant is converted to the account's zone before taking its date; a naive
    one is read as local. Two buckets on one local date, or an unreadable one, raise
    ``KlaviyoDataError``: a day's numbers would otherwise overwrite another's.
    """
    days = []
    for moment in date_times:
        try:
            parsed = datetime.fromisoformat(str(moment))
        except ValueError:
            raise _bad_series(path, f"a bucket start {moment!r} that is not a date-time") from None
        local = parsed.astimezone(tz) if parsed.tzinfo else parsed
        days.append(local.date().isoformat())
    if len(set(days)) != len(days):
        raise _bad_series(path, f"two daily buckets on one local date in {list(date_times)!r}")
    return days


def _bad_series(path: str, what: str) -> KlaviyoDataError:
    return KlaviyoDataError(
        f"Klaviyo's report POST {path} returned {what}; nothing was written", endpoint=f"POST {path}"
    )


def series_values(values: Any, days: Sequence[str], name: str, path: str) -> list[int | float]:
    """A series statistic's values, one per bucket: null is no activity, a shorter array leaves the
    last days at 0; an array longer than ``date_times`` raises (which day would the rest be?)."""
    if values is None:
        return []
    if not isinstance(values, list):
        raise _bad_series(path, f"statistic {name!r} as {values!r}, not an array")
    if len(values) > len(days):
        raise _bad_series(path, f"statistic {name!r} with {len(values)} values for {len(days)} date_times")
    return values


def contains_any(field: str, values: Sequence[str]) -> str:
    return f"contains-any({field},{json.dumps(list(values), separators=(',', ':'))})"


def equals(field: str, value: str) -> str:
    return f"equals({field},{json.dumps(value)})"


def all_of(*conditions: str) -> str:
    return conditions[0] if len(conditions) == 1 else f"and({','.join(conditions)})"


def chunks(values: Sequence[str], size: int = MAX_FILTER_VALUES) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def report_body(
    report_type: str,
    *,
    statistics: Iterable[str],
    timeframe: dict[str, str],
    conversion_metric_id: str,
    group_by: Sequence[str],
    filter_: str,
    interval: str | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "statistics": list(statistics),
        "timeframe": timeframe,
        "conversion_metric_id": conversion_metric_id,
        "group_by": list(group_by),
        "filter": filter_,
    }
    if interval is not None:
        attributes["interval"] = interval
    return {"data": {"type": report_type, "attributes": attributes}}


def query_report(client: KlaviyoClient, path: str, body: dict[str, Any]) -> tuple[list[ReportRow], list[str]]:
    """Every result row of a report (all pages) and, for series reports, its ``date_times``.

    Statistics are checked here, once: a missing or null value (or array item) becomes 0, a number
    stays as it is, and anything else (``"NaN"``, ``"12abc"``, ``Infinity``, ``true``) raises
    ``KlaviyoDataError`` naming the statistic, its groupings and the value (contracts/csv.md,
    "Common rules": a file never carries a number Klaviyo did not report).
    """
    rows: list[ReportRow] = []
    date_times: list[str] = []
    for page in client.iter_report_pages(path, body):
        attributes = (page.raw.get("data") or {}).get("attributes") or {}
        date_times = attributes.get("date_times") or date_times
        for result in attributes.get("results") or []:
            groupings = result.get("groupings") or {}
            statistics = {
                name: _checked(value, name, groupings, path)
                for name, value in (result.get("statistics") or {}).items()
            }
            rows.append(ReportRow(groupings, statistics))
    return rows, date_times


def _checked(value: Any, name: str, groupings: dict[str, Any], path: str) -> Any:
    """A statistic (a number, or a series array of numbers) with nulls as 0; raises on a non-number."""
    if isinstance(value, list):
        return [_number(item, name, groupings, path) for item in value]
    return _number(value, name, groupings, path)


def _number(value: Any, name: str, groupings: dict[str, Any], path: str) -> int | float:
    if value is None:
        return 0
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return value
    where = ", ".join(f"{key}={groupings[key]}" for key in sorted(groupings))
    raise KlaviyoDataError(
        f"Klaviyo's report POST {path} gave statistic {name!r} the value {value!r} ({where}), which is "
        "not a number; nothing was written for this file. Run again later, and report it to Klaviyo "
        "if it persists.",
        endpoint=f"POST {path}",
    )
