"""The Reporting API: request validation and report computation over the synthetic activity.

Every statistic is derived from integer ``Counts`` summed over the activities inside the window,
so a series report's buckets always add up to the values report of the same window (counts and
``conversion_value`` in cents), and rates always agree with the counts they come from.
"""

from __future__ import annotations

import calendar
import json
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from klaviyo_dagster.klaviyo.spec import Operation
from klaviyo_dagster.sim import filters, schema
from klaviyo_dagster.sim.data import REPORT_CHANNELS, Account, Counts

PAGE_SIZE = 500
MAX_FILTER_VALUES = 100
SEND_CHANNELS = REPORT_CHANNELS  # the reports' send_channel values
INTERVAL_LIMITS = {
    "hourly": timedelta(days=7),
    "daily": timedelta(days=60),
    "weekly": timedelta(days=366),
    "monthly": timedelta(weeks=52),
}
KINDS = {
    "query_flow_series": ("flow", True),
    "query_flow_values": ("flow", False),
    "query_campaign_values": ("campaign", False),
}
REQUIRED_GROUP_BY = {
    "flow": ("flow_id", "flow_message_id"),
    "campaign": ("campaign_id", "campaign_message_id"),
}
DEFAULT_GROUP_BY = {
    "flow": ["flow_id", "flow_message_id", "send_channel"],
    "campaign": ["campaign_id", "campaign_message_id", "send_channel"],
}
SUPPORTED_GROUP_BY = {
    "flow": ("flow_id", "flow_message_id", "send_channel", "flow_name", "flow_message_name"),
    "campaign": ("campaign_id", "campaign_message_id", "send_channel", "campaign_message_name"),
}
SCALAR_FILTERS = {
    "flow": ("flow_id", "flow_name", "send_channel", "flow_message_id", "flow_message_name"),
    "campaign": ("send_channel", "campaign_id", "campaign_message_id", "campaign_message_name"),
}
LIST_FILTERS = ("tag_id", "tag_name")
Unit = tuple[dict[str, Any], list[tuple[datetime, Counts]]]


class ReportError(ValueError):
    def __init__(self, detail: str, pointer: str = "/data/attributes"):
        super().__init__(detail)
        self.detail = detail
        self.pointer = pointer


@dataclass(frozen=True)
class ReportRequest:
    operation_id: str
    kind: str  # flow | campaign
    series: bool
    statistics: list[str]
    start: datetime  # account-local, naive, inclusive
    end: datetime  # account-local, naive, inclusive (rounded up to :59:59)
    interval: str | None
    group_by: list[str]
    conditions: list[filters.Condition]
    conversion_metric_id: str

    def fingerprint(self) -> str:
        """Binds a page cursor to the body it paginates."""
        return json.dumps(
            [
                self.operation_id,
                self.statistics,
                self.start.isoformat(),
                self.end.isoformat(),
                self.interval,
                self.group_by,
                [(c.operator, c.field, c.value) for c in self.conditions],
                self.conversion_metric_id,
            ],
            default=str,
        )


def parse_request(operation: Operation, body: Any, account: Account) -> ReportRequest:
    """Validate a report body (schema + Klaviyo's extra rules) into a ReportRequest."""
    assert operation.request_body is not None
    try:
        schema.validate(body, operation.request_body)
    except schema.SchemaError as err:
        raise ReportError(str(err), err.pointer or "/") from err
    kind, series = KINDS[operation.operation_id]
    attrs = body["data"]["attributes"]
    statistics = attrs["statistics"]
    if not statistics:
        raise ReportError("At least one statistic is required.", "/data/attributes/statistics")
    start, end = _timeframe(attrs["timeframe"], account)
    interval = attrs.get("interval") if series else None
    if interval is not None and end + timedelta(seconds=1) - start > INTERVAL_LIMITS[interval]:
        raise ReportError(
            f"The timeframe is too long for the '{interval}' interval.", "/data/attributes/interval"
        )
    group_by = attrs.get("group_by") or list(DEFAULT_GROUP_BY[kind])
    missing = [name for name in REQUIRED_GROUP_BY[kind] if name not in group_by]
    if missing:
        raise ReportError(
            f"group_by must include {' and '.join(REQUIRED_GROUP_BY[kind])}.", "/data/attributes/group_by"
        )
    unsupported = [name for name in group_by if name not in SUPPORTED_GROUP_BY[kind]]
    if unsupported:
        raise ReportError(
            f"The simulator does not support group_by {unsupported[0]!r}.", "/data/attributes/group_by"
        )
    conditions = _report_filter(attrs.get("filter"), kind)
    metric = account.metrics_by_id.get(attrs["conversion_metric_id"])
    if metric is None:
        raise ReportError(
            f"Metric {attrs['conversion_metric_id']!r} not found.", "/data/attributes/conversion_metric_id"
        )
    if not metric.supports_conversions:
        raise ReportError(
            f"The conversion metric {metric.id} ({metric.name}) does not support querying for values data.",
            "/data/attributes/conversion_metric_id",
        )
    return ReportRequest(
        operation.operation_id,
        kind,
        series,
        statistics,
        start,
        end,
        interval,
        group_by,
        conditions,
        metric.id,
    )


def _timeframe(timeframe: dict[str, Any], account: Account) -> tuple[datetime, datetime]:
    if "key" in timeframe:
        first, last = timeframe_dates(timeframe["key"], account.local_today())
        return datetime.combine(first, time()), datetime.combine(last, time(23, 59, 59))
    # Offsets are ignored: the wall-clock time is read in the account's timezone.
    start = datetime.fromisoformat(timeframe["start"].replace("Z", "+00:00")).replace(
        tzinfo=None, microsecond=0
    )
    end = datetime.fromisoformat(timeframe["end"].replace("Z", "+00:00")).replace(tzinfo=None, microsecond=0)
    end = end.replace(minute=59, second=59)
    if end < start:
        raise ReportError("The timeframe end must be after its start.", "/data/attributes/timeframe")
    if end - start > timedelta(days=366):
        raise ReportError("The timeframe cannot be longer than one year.", "/data/attributes/timeframe")
    return start, end


def _month_start(day: date, months_back: int) -> date:
    month = day.year * 12 + day.month - 1 - months_back
    return date(month // 12, month % 12 + 1, 1)


def timeframe_dates(key: str, today: date) -> tuple[date, date]:
    """First and last local date of a relative timeframe key (``last_N_days`` excludes today)."""
    if key.startswith("last_") and key.endswith("_days"):
        days = int(key.split("_")[1])
        return today - timedelta(days=days), today - timedelta(days=1)
    monday = today - timedelta(days=today.weekday())
    month = today.replace(day=1)
    table = {
        "today": (today, today),
        "yesterday": (today - timedelta(days=1), today - timedelta(days=1)),
        "this_week": (monday, today),
        "last_week": (monday - timedelta(days=7), monday - timedelta(days=1)),
        "this_month": (month, today),
        "last_month": (_month_start(today, 1), month - timedelta(days=1)),
        "last_3_months": (_month_start(today, 3), month - timedelta(days=1)),
        "last_12_months": (_month_start(today, 12), month - timedelta(days=1)),
        "this_year": (date(today.year, 1, 1), today),
        "last_year": (date(today.year - 1, 1, 1), date(today.year - 1, 12, 31)),
    }
    return table[key]


def _report_filter(text: str | None, kind: str) -> list[filters.Condition]:
    if not text:
        return []
    try:
        conditions = filters.parse(text)
    except filters.FilterError as err:
        raise ReportError(f"Invalid filter provided. {err}", "/data/attributes/filter") from err
    seen: set[str] = set()
    for cond in conditions:
        problem = None
        if cond.field in seen:
            problem = f"only one filter can be used per attribute ('{cond.field}')"
        elif cond.field in SCALAR_FILTERS[kind]:
            if cond.operator not in ("equals", "contains-any"):
                problem = (
                    f"'{cond.operator}' is not supported for '{cond.field}' (use equals or contains-any)"
                )
        elif cond.field in LIST_FILTERS:
            if cond.operator not in ("contains-any", "contains-all"):
                problem = f"'{cond.operator}' is not supported for '{cond.field}'"
        else:
            problem = f"'{cond.field}' is not a valid filter attribute"
        if problem is None:
            problem = _filter_value_problem(cond)
        if problem:
            raise ReportError(f"Invalid filter provided. {problem}", "/data/attributes/filter")
        seen.add(cond.field)
    return conditions


def _filter_value_problem(cond: filters.Condition) -> str | None:
    listy = cond.operator in ("contains-any", "contains-all")
    values = cond.value if isinstance(cond.value, list) else [cond.value]
    if listy != isinstance(cond.value, list):
        return f"'{cond.operator}' takes {'a list' if listy else 'a single value'}"
    if len(values) > MAX_FILTER_VALUES:
        return f"at most {MAX_FILTER_VALUES} values per list filter"
    if not all(isinstance(v, str) for v in values):
        return f"values for '{cond.field}' must be strings"
    if cond.field == "send_channel" and any(v not in SEND_CHANNELS for v in values):
        return f"send_channel must be one of {', '.join(SEND_CHANNELS)}"
    return None


# --- computation ---------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def statistic(name: str, c: Counts) -> float | int:
    """One Klaviyo statistic from counts (rates are fractions 0..1, 0 when the base is 0)."""
    value = c.conversion_value_cents / 100
    spend = c.text_message_spend_cents / 100
    formulas: dict[str, Any] = {
        "recipients": c.recipients,
        "delivered": c.delivered,
        "bounced": c.bounced,
        "failed": c.failed,
        "bounced_or_failed": c.bounced + c.failed,
        "opens": c.opens,
        "opens_unique": c.opens_unique,
        "clicks": c.clicks,
        "clicks_unique": c.clicks_unique,
        "conversions": c.conversions,
        "conversion_uniques": c.conversion_uniques,
        "conversion_value": value,
        "unsubscribes": c.unsubscribes,
        "unsubscribe_uniques": c.unsubscribe_uniques,
        "spam_complaints": c.spam_complaints,
        "message_segment_count_sum": c.message_segment_count_sum,
        "text_message_credit_usage_amount": c.text_message_credit_usage_amount,
        "text_message_spend": spend,
        "delivery_rate": _ratio(c.delivered, c.recipients),
        "bounce_rate": _ratio(c.bounced, c.recipients),
        "failed_rate": _ratio(c.failed, c.recipients),
        "bounced_or_failed_rate": _ratio(c.bounced + c.failed, c.recipients),
        "open_rate": _ratio(c.opens_unique, c.delivered),
        "click_rate": _ratio(c.clicks_unique, c.delivered),
        "click_to_open_rate": _ratio(c.clicks_unique, c.opens_unique),
        "conversion_rate": _ratio(c.conversion_uniques, c.delivered),
        "unsubscribe_rate": _ratio(c.unsubscribe_uniques, c.delivered),
        "spam_complaint_rate": _ratio(c.spam_complaints, c.delivered),
        "revenue_per_recipient": _ratio(value, c.delivered),
        "average_order_value": _ratio(value, c.conversions),
        "text_message_roi": _ratio(value - spend, spend),
    }
    return formulas[name]


def _scaled(counts: Counts, factor: int) -> Counts:
    """Conversion counters for another conversion metric (factor in quarters); everything else as is."""
    if factor == 4:
        return counts
    scaled = Counts(**{name: getattr(counts, name) for name in Counts.__dataclass_fields__})
    scaled.conversions = counts.conversions * factor // 4
    scaled.conversion_uniques = min(scaled.conversions, counts.conversion_uniques * factor // 4)
    scaled.conversion_value_cents = counts.conversion_value_cents * factor // 4
    return scaled


def buckets(req: ReportRequest, tz: tzinfo) -> list[datetime]:
    """Start of each series bucket, as an aware account-local time.

    Hourly buckets are real hours (a DST change day has 23 or 25 of them); daily, weekly and monthly
    buckets start at local midnight (so a day bucket lasts 23 or 25 hours across a DST change).
    """
    starts: list[datetime] = []
    if req.interval == "hourly":
        moment = req.start.replace(minute=0, second=0, tzinfo=tz).astimezone(UTC)
        end = req.end.replace(tzinfo=tz).astimezone(UTC)
        while moment <= end:
            starts.append(moment.astimezone(tz))
            moment += timedelta(hours=1)
        return starts
    day = req.start.date()
    while day <= req.end.date():
        starts.append(datetime.combine(day, time()).replace(tzinfo=tz))
        if req.interval == "weekly":
            day += timedelta(days=7)
        elif req.interval == "monthly":
            day = day.replace(day=1) + timedelta(days=calendar.monthrange(day.year, day.month)[1])
        else:
            day += timedelta(days=1)
    return starts


def _flow_units(account: Account, req: ReportRequest, factor: int) -> list[Unit]:
    """One unit per message a flow's reports can show: the definition's and the removed ones."""
    days = [req.start.date() + timedelta(days=n) for n in range((req.end.date() - req.start.date()).days + 1)]
    units = []
    for flow in account.flows:
        tag_ids = flow.tag_ids
        for message in flow.report_messages:
            record = {
                "flow_id": flow.id,
                "flow_name": flow.name,
                "flow_message_id": message.id,
                "flow_message_name": message.name,
                "send_channel": message.channel,
                "tag_id": tag_ids,
                "tag_name": [account.tags_by_id[t].name for t in tag_ids],
            }
            if not filters.matches_all(req.conditions, record):
                continue
            events = []
            for day in days:
                activity = account.flow_activity(message, day)
                if activity is not None and req.start <= activity.at <= req.end:
                    events.append((activity.at, _scaled(activity.counts, factor)))
            units.append((record, events))
    return units


def _campaign_units(account: Account, req: ReportRequest, factor: int) -> list[Unit]:
    units = []
    for campaign in account.campaigns:
        record = {
            "campaign_id": campaign.id,
            "campaign_message_id": campaign.message_id,
            "campaign_message_name": campaign.message_label,
            "send_channel": campaign.channel,
            "tag_id": campaign.tag_ids,
            "tag_name": [account.tags_by_id[t].name for t in campaign.tag_ids],
        }
        if not filters.matches_all(req.conditions, record):
            continue
        events = [
            (a.at, _scaled(a.counts, factor))
            for a in account.campaign_activity(campaign)
            if req.start <= a.at <= req.end
        ]
        units.append((record, events))
    return units


def _units(account: Account, req: ReportRequest) -> list[Unit]:
    """(full grouping record, [(local time, counts)]) for each message, activity inside the window only."""
    factor = account.metric_factor(req.conversion_metric_id)
    return (_flow_units if req.kind == "flow" else _campaign_units)(account, req, factor)


def compute(account: Account, req: ReportRequest) -> tuple[list[dict[str, Any]], list[str]]:
    """All result rows (sorted by grouping) and, for series, the bucket date_times."""
    grouped: dict[tuple[str, ...], tuple[dict[str, str], list[tuple[datetime, Counts]]]] = {}
    for record, events in _units(account, req):
        key = tuple(str(record[name]) for name in req.group_by)
        groupings = {name: record[name] for name in req.group_by}
        grouped.setdefault(key, (groupings, []))[1].extend(events)
    starts = buckets(req, account.tz) if req.series else []
    # Compared as UTC instants: same-zone aware datetimes compare by wall time, which repeats at DST's end.
    instants = [start.astimezone(UTC) for start in starts]
    results = []
    for key in sorted(grouped):
        groupings, events = grouped[key]
        total = Counts()
        for _, counts in events:
            total.add(counts)
        if total.is_empty():
            continue  # groupings without activity in the window are absent, as in Klaviyo
        if not req.series:
            results.append(
                {"groupings": groupings, "statistics": {s: statistic(s, total) for s in req.statistics}}
            )
            continue
        per_bucket = [Counts() for _ in starts]
        for at, counts in events:
            instant = at.replace(tzinfo=account.tz).astimezone(UTC)
            per_bucket[max(0, bisect_right(instants, instant) - 1)].add(counts)
        if account.omits_trailing_buckets(groupings):
            # Klaviyo sometimes omits trailing empty buckets: an array shorter than date_times.
            while len(per_bucket) > 1 and per_bucket[-1].is_empty():
                per_bucket.pop()
        results.append(
            {
                "groupings": groupings,
                "statistics": {s: [statistic(s, c) for c in per_bucket] for s in req.statistics},
            }
        )
    return results, [start.isoformat() for start in starts]
