"""Klaviyo's Reporting API as the producers use it: one request body shape, every page read.

Report calls are the scarcest thing we have (1/s, 2/min, 225/day per account), so each file asks
for everything it needs in as few calls as the API allows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from klaviyo_dagster.klaviyo.client import KlaviyoClient

MAX_FILTER_VALUES = 100  # Klaviyo's cap on a contains-any list


@dataclass(frozen=True)
class ReportRow:
    """One result: its groupings and statistics (numbers for values reports, arrays for series)."""

    groupings: dict[str, Any]
    statistics: dict[str, Any]


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
    """Every result row of a report (all pages) and, for series reports, its ``date_times``."""
    rows: list[ReportRow] = []
    date_times: list[str] = []
    for page in client.iter_report_pages(path, body):
        attributes = (page.raw.get("data") or {}).get("attributes") or {}
        date_times = attributes.get("date_times") or date_times
        rows += [
            ReportRow(result.get("groupings") or {}, result.get("statistics") or {})
            for result in attributes.get("results") or []
        ]
    return rows, date_times
