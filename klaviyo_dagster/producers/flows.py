"""flows.csv: per day and flow email message, what the store's live flows did.

Calls (for F kept flows): flows list pages + F definition reads (only with enrichment) + ONE
flow-series report for the whole window. Every email message of a kept flow is written: those
anywhere in its definition (A/B test variations and branches included) and those only the report
still knows (removed from the flow after sending), so what Klaviyo reported is what the file holds;
the summary's reconciliation says what was returned and what was left out, by reason. The old producer made one values report per day, which
the 2-per-minute report limit throttled, and swallowed the 429s, so days silently had no rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoDataError
from klaviyo_dagster.klaviyo.jsonapi import attribute
from klaviyo_dagster.producers.csvfile import CsvSummary, CsvWriter
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.reports import (
    all_of,
    contains_any,
    equals,
    grouping,
    report_body,
    series_days,
    series_values,
)
from klaviyo_dagster.producers.shared import SharedFetches, series_report
from klaviyo_dagster.producers.window import Window

FLOWS_HEADER = (
    "Day",
    "Flow ID",
    "Flow Name",
    "Flow Message ID",
    "Flow Message Name",
    "Flow Message Channel",
    "Status",
    "Delivered",
    "Unique Opens",
    "Open Rate",
    "Unique Clicks",
    "Click Rate",
    "Placed Order",
    "Placed Order Rate",
    "Revenue",
    "Revenue per Recipient",
    "Unsub Rate",
    "Complaint Rate",
    "Bounce Rate",
    "Tags",
)
FLOW_STATISTICS = (
    "recipients",
    "delivered",
    "opens_unique",
    "open_rate",
    "clicks_unique",
    "click_rate",
    "conversion_uniques",
    "conversion_rate",
    "conversion_value",
    "unsubscribe_rate",
    "spam_complaint_rate",
    "bounce_rate",
)
FLOWS_PAGE_SIZE = 50  # the API's maximum
SERIES_PATH = "/api/flow-series-reports"


# Report rows that flows.csv may leave out, and why (contracts/csv.md, "flows.csv"): anything else
# the report returned for a kept flow's email channel is written.
ALLOWED_LEFT_OUT = frozenset({"other_channel", "flow_not_selected", "over_limit_messages"})


@dataclass(frozen=True)
class FlowMessage:
    flow_id: str
    flow_name: str
    message_id: str
    message_name: str


@dataclass(frozen=True)
class SeriesRow:
    """One result of the flow-series report: a (flow, message, channel) and its statistics per day."""

    flow_id: str
    message_id: str
    channel: str
    per_day: dict[str, dict[str, float]]  # "YYYY-MM-DD" (account timezone) -> statistic -> value


def write_flows_csv(
    client: KlaviyoClient,
    options: SyncOptions,
    window: Window,
    metric_id: str,
    out: TextIO,
    shared: SharedFetches | None = None,
) -> CsvSummary:
    """Writes flows.csv for ``window`` to ``out`` and returns its summary with the reconciliation.

    With ``shared``, the series report may come from (or be asked for over) the windows of the
    account's other partitions of the day (``producers/shared.py``); the file is the same.

    Raises KlaviyoError (including KlaviyoDataError for a non-numeric statistic) rather than write
    a partial file.
    """
    options = options.effective()
    writer = CsvWriter(out, FLOWS_HEADER, final_newline=False)
    flows = live_flows(client, options.limit_flows)
    report: list[SeriesRow] = []
    defined: list[FlowMessage] = []
    if flows:
        report = flow_series(client, window, metric_id, list(flows), shared)
        if options.enrich_message_names:
            defined = [
                m for flow_id, name in flows.items() for m in flow_email_messages(client, flow_id, name)
            ]
    messages = _selected_messages(flows, defined, report, options.limit_messages)
    _write_rows(writer, window, messages, report)
    writer.close()
    enriched = options.enrich_message_names
    return writer.summary(_reconciliation(flows, defined if enriched else None, messages, report, window))


def live_flows(client: KlaviyoClient, limit: int) -> dict[str, str]:
    """The first ``limit`` live, unarchived flows in the API's order: {flow id: name}."""
    params = {
        "filter": all_of(equals("status", "live"), "equals(archived,false)"),
        "fields[flow]": "name,status,archived",
        "page[size]": str(FLOWS_PAGE_SIZE),
    }
    flows: dict[str, str] = {}
    for flow in client.iter_resources("/api/flows", params):
        # Checked again here: the filter is an optimisation, the rule is the contract's.
        if str(attribute(flow, "status", "")).lower() == "live" and not attribute(flow, "archived", False):
            flows[flow["id"]] = attribute(flow, "name", "") or flow["id"]
        if len(flows) == limit:
            break
    return flows


def flow_email_messages(client: KlaviyoClient, flow_id: str, flow_name: str) -> list[FlowMessage]:
    """Every email message in the flow's definition, in definition order, from one definition read.

    An email can sit anywhere in a definition (spec: ``FlowDefinition.actions``): a top-level
    ``send-email`` action, an ``ab-test`` action's ``main_action`` and each of its
    ``current_experiment.variations``, and any action reached through splits and branches (the
    actions list is flat, so those are in it too).
    """
    params = {"additional-fields[flow]": "definition", "fields[flow]": "definition"}
    flow = client.get(f"/api/flows/{flow_id}", params).data[0]
    found: dict[str, FlowMessage] = {}
    for message in _email_sends(attribute(flow, "definition.actions", [])):
        message_id = str(message["id"])
        if message_id not in found:
            found[message_id] = FlowMessage(flow_id, flow_name, message_id, message.get("name") or message_id)
    return list(found.values())


def _email_sends(node: Any) -> Iterator[dict[str, Any]]:
    """The ``data.message`` of every ``send-email`` action nested anywhere in ``node``."""
    if isinstance(node, list):
        for item in node:
            yield from _email_sends(item)
    elif isinstance(node, dict):
        if node.get("type") == "send-email":
            message = (node.get("data") or {}).get("message") or {}
            if isinstance(message, dict) and message.get("id"):
                yield message
            return
        for value in node.values():
            yield from _email_sends(value)


def flow_series(
    client: KlaviyoClient,
    window: Window,
    metric_id: str,
    flow_ids: list[str],
    shared: SharedFetches | None = None,
) -> list[SeriesRow]:
    """The window's rows of one daily series report, filtered to the flows and the email channel.

    The report may cover more days than the window (one call shared by a batch of partitions):
    only the window's days are kept, and a row only when it had activity in them, as Klaviyo would
    answer for the window alone.
    """

    def body_for(asked: Window) -> dict[str, object]:
        return report_body(
            "flow-series-report",
            statistics=FLOW_STATISTICS,
            timeframe=asked.timeframe(),
            conversion_metric_id=metric_id,
            group_by=("flow_id", "flow_message_id", "send_channel"),
            filter_=all_of(contains_any("flow_id", flow_ids), equals("send_channel", "email")),
            interval="daily",
        )

    report = series_report(client, SERIES_PATH, body_for, window, shared)
    days = series_days(report.date_times, window.tz, SERIES_PATH)
    # Days the report was asked for that belong to other partitions; any other day is kept, so that
    # a day Klaviyo put outside what was asked shows in the reconciliation instead of vanishing.
    others = {day.isoformat() for day in report.window.days} - {day.isoformat() for day in window.days}
    series: dict[tuple[str, str, str], SeriesRow] = {}
    for row in report.rows:
        per_day: dict[str, dict[str, float]] = {}
        for name, values in row.statistics.items():
            # An array may be shorter than date_times, or null: the missing days are 0.
            for day, value in zip(days, series_values(values, days, name, SERIES_PATH), strict=False):
                if day not in others:
                    per_day.setdefault(day, {})[name] = value
        if report.window != window and not _active(per_day):
            continue
        channel = row.groupings.get("send_channel", "email")  # asked for; absent = the filter's email
        key = (grouping(row, "flow_id", SERIES_PATH), grouping(row, "flow_message_id", SERIES_PATH))
        found = SeriesRow(*key, str(channel).lower(), per_day)
        if (*key, found.channel) in series:
            raise KlaviyoDataError(
                f"Klaviyo's report POST {SERIES_PATH} returned two rows for flow {key[0]} message "
                f"{key[1]} ({found.channel}); nothing was written",
                endpoint=f"POST {SERIES_PATH}",
            )
        series[(*key, found.channel)] = found
    return list(series.values())


def _active(per_day: dict[str, dict[str, float]]) -> bool:
    return any(value for stats in per_day.values() for value in stats.values())


def _selected_messages(
    flows: dict[str, str], defined: list[FlowMessage], report: list[SeriesRow], limit: int
) -> list[FlowMessage]:
    """Per kept flow, its defined email messages then those only the report knows (named by their
    id: an email removed, or an A/B variation ended, after it sent), the first ``limit`` of them."""
    candidates = list(defined)
    known = {(m.flow_id, m.message_id) for m in defined}
    reported = sorted(
        {(r.flow_id, r.message_id) for r in report if r.channel == "email" and r.flow_id in flows}
    )
    candidates += [FlowMessage(f, flows[f], m, m) for f, m in reported if (f, m) not in known]
    kept: list[FlowMessage] = []
    per_flow: Counter[str] = Counter()
    for message in candidates:
        per_flow[message.flow_id] += 1
        if per_flow[message.flow_id] <= limit:
            kept.append(message)
    return kept


def _write_rows(
    writer: CsvWriter, window: Window, messages: list[FlowMessage], report: list[SeriesRow]
) -> None:
    series = {(r.flow_id, r.message_id): r.per_day for r in report if r.channel == "email"}
    ordered = sorted(messages, key=lambda m: (m.flow_id, m.message_id))
    for day in window.days:
        for message in ordered:
            stats = series.get((message.flow_id, message.message_id), {}).get(day.isoformat(), {})
            writer.write_row(_row(day.isoformat(), message, stats))


def _reconciliation(
    flows: dict[str, str],
    defined: list[FlowMessage] | None,  # None: definitions not read (no enrichment)
    written: list[FlowMessage],
    report: list[SeriesRow],
    window: Window,
) -> dict[str, Any]:
    """What the report returned against what the file holds (contracts/csv.md, "Reconciliation").

    ``report_delivered``/``report_revenue`` sum every day of every report row the file writes; the
    file's ``Delivered``/``Revenue`` columns must add up to them (a day outside the window would
    not be written, and shows here as a difference).
    """
    kept = {(m.flow_id, m.message_id) for m in written}
    defined_ids = {(m.flow_id, m.message_id) for m in defined or ()}
    window_days = {day.isoformat() for day in window.days}
    by_channel: Counter[str] = Counter()
    left_out: Counter[str] = Counter()
    delivered = revenue = 0.0
    outside: set[str] = set()
    for row in report:
        by_channel[row.channel] += 1
        reason = _left_out_reason(row, flows, kept)
        if reason:
            left_out[reason] += 1
            continue
        for day, stats in row.per_day.items():
            delivered += stats.get("delivered") or 0
            revenue += stats.get("conversion_value") or 0
            if day not in window_days:
                outside.add(day)
    not_in_definition = sorted(
        m.message_id for m in written if defined is not None and (m.flow_id, m.message_id) not in defined_ids
    )
    return {
        "flows_kept": len(flows),
        "messages_in_definitions": len(defined) if defined is not None else None,
        "messages_written": len(written),
        "messages_not_in_definition": len(not_in_definition),
        "messages_not_in_definition_ids": not_in_definition[:20],
        "report_rows": len(report),
        "report_rows_by_channel": dict(by_channel),
        "report_rows_written": len(report) - sum(left_out.values()),
        "report_rows_left_out": dict(left_out),
        "report_days_outside_window": sorted(outside),
        "report_delivered": delivered,
        "report_revenue": revenue,
    }


def _left_out_reason(row: SeriesRow, flows: dict[str, str], kept: set[tuple[str, str]]) -> str | None:
    if row.channel != "email":
        return "other_channel"
    if row.flow_id not in flows:
        return "flow_not_selected"
    if (row.flow_id, row.message_id) not in kept:
        return "over_limit_messages"
    return None


def _row(day: str, message: FlowMessage, stats: dict[str, Any]) -> list[Any]:
    def stat(name: str) -> float:
        return stats.get(name) or 0

    delivered, revenue = stat("delivered"), stat("conversion_value")
    return [
        day,
        message.flow_id,
        message.flow_name,
        message.message_id,
        message.message_name,
        "email",
        "live",
        delivered,
        stat("opens_unique"),
        stat("open_rate"),
        stat("clicks_unique"),
        stat("click_rate"),
        stat("conversion_uniques"),
        stat("conversion_rate"),
        revenue,
        revenue / delivered if delivered else 0,
        stat("unsubscribe_rate"),
        stat("spam_complaint_rate"),
        stat("bounce_rate"),
        "",
    ]
