"""flows.csv: per day and flow email message, what the store's live flows did.

Calls (for F kept flows): flows list pages + F definition reads (only with enrichment) + ONE
flow-series report for the whole window. The old producer made one values report per day, which
the 2-per-minute report limit throttled, and swallowed the 429s, so days silently had no rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TextIO

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.jsonapi import attribute
from klaviyo_dagster.producers.csvfile import CsvSummary, CsvWriter
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.reports import all_of, contains_any, equals, query_report, report_body
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


@dataclass(frozen=True)
class FlowMessage:
    flow_id: str
    flow_name: str
    message_id: str
    message_name: str


def write_flows_csv(
    client: KlaviyoClient, options: SyncOptions, window: Window, metric_id: str, out: TextIO
) -> CsvSummary:
    """Writes flows.csv for ``window`` to ``out``; raises KlaviyoError rather than write a partial file."""
    options = options.effective()
    writer = CsvWriter(out, FLOWS_HEADER, final_newline=False)
    flows = live_flows(client, options.limit_flows)
    if flows:
        series = flow_series(client, window, metric_id, list(flows))
        if options.enrich_message_names:
            messages = [
                m for flow_id, name in flows.items() for m in flow_email_messages(client, flow_id, name)
            ]
            messages = _first_per_flow(messages, options.limit_messages)
        else:
            messages = _messages_with_activity(series, flows, options.limit_messages)
        _write_rows(writer, window, messages, series)
    writer.close()
    return writer.summary()


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
            flows[flow["id"]] = attribute(flow, "name", "")
        if len(flows) == limit:
            break
    return flows


def flow_email_messages(client: KlaviyoClient, flow_id: str, flow_name: str) -> list[FlowMessage]:
    """The flow's email messages in definition order, named, from one definition read."""
    params = {"additional-fields[flow]": "definition", "fields[flow]": "definition"}
    flow = client.get(f"/api/flows/{flow_id}", params).data[0]
    messages = []
    for action in attribute(flow, "definition.actions", []) or []:
        message = (action.get("data") or {}).get("message") or {}
        if action.get("type") == "send-email" and message.get("id"):
            messages.append(
                FlowMessage(flow_id, flow_name, message["id"], message.get("name") or message["id"])
            )
    return messages


SeriesByMessage = dict[tuple[str, str], dict[str, dict[str, float]]]  # (flow, message) -> day -> stats


def flow_series(
    client: KlaviyoClient, window: Window, metric_id: str, flow_ids: list[str]
) -> SeriesByMessage:
    """One daily series report for the window, email only, as {(flow, message): {day: statistics}}."""
    body = report_body(
        "flow-series-report",
        statistics=FLOW_STATISTICS,
        timeframe=window.timeframe(),
        conversion_metric_id=metric_id,
        group_by=("flow_id", "flow_message_id", "send_channel"),
        filter_=all_of(contains_any("flow_id", flow_ids), equals("send_channel", "email")),
        interval="daily",
    )
    rows, date_times = query_report(client, "/api/flow-series-reports", body)
    days = [moment[:10] for moment in date_times]  # local midnights: the date part is the local day
    series: SeriesByMessage = {}
    for row in rows:
        if row.groupings.get("send_channel", "email") != "email":
            continue
        key = (row.groupings["flow_id"], row.groupings["flow_message_id"])
        per_day = series.setdefault(key, {})
        for name, values in row.statistics.items():
            # An array may be shorter than date_times, or null: the missing days are 0.
            for day, value in zip(days, values or [], strict=False):
                per_day.setdefault(day, {})[name] = value
    return series


def _first_per_flow(messages: list[FlowMessage], limit: int) -> list[FlowMessage]:
    kept: list[FlowMessage] = []
    per_flow: dict[str, int] = {}
    for message in messages:
        per_flow[message.flow_id] = per_flow.get(message.flow_id, 0) + 1
        if per_flow[message.flow_id] <= limit:
            kept.append(message)
    return kept


def _messages_with_activity(series: SeriesByMessage, flows: dict[str, str], limit: int) -> list[FlowMessage]:
    """Without enrichment the messages are those the report knows, named by their id."""
    found = [FlowMessage(f, flows[f], m, m) for f, m in sorted(series) if f in flows]
    return _first_per_flow(found, limit)


def _write_rows(
    writer: CsvWriter, window: Window, messages: list[FlowMessage], series: SeriesByMessage
) -> None:
    ordered = sorted(messages, key=lambda m: (m.flow_id, m.message_id))
    for day in window.days:
        for message in ordered:
            stats = series.get((message.flow_id, message.message_id), {}).get(day.isoformat(), {})
            writer.write_row(_row(day.isoformat(), message, stats))


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
