"""campaigns.csv: one row per email campaign sent in the partition window, with its metrics.

Calls: campaign list pages (messages and tags included), one read per distinct audience for its
name, and one values report per 100 campaigns. "Sent" is decided by the spec's status enum, and
the summary's reconciliation counts every campaign seen by status and why any was left out. The old producer made one report call per campaign,
wrote no CSV quoting, put unique counts in Total Opens/Total Clicks, 0 in Bounces, and fell back to
"the first 20 campaigns of any date" when none matched; none of that survives here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoDataError, KlaviyoRequestError
from klaviyo_dagster.klaviyo.jsonapi import Document, attribute
from klaviyo_dagster.producers.csvfile import CsvSummary, CsvWriter
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.reports import chunks, contains_any, grouping, query_report, report_body
from klaviyo_dagster.producers.window import Window

CAMPAIGNS_HEADER = (
    "Campaign Name",
    "Tags",
    "Subject",
    "List",
    "Send Time",
    "Send Weekday",
    "Total Recipients",
    "Unique Placed Order",
    "Placed Order Rate",
    "Revenue",
    "Unique Opens",
    "Open Rate",
    "Total Opens",
    "Unique Clicks",
    "Click Rate",
    "Total Clicks",
    "Unsubscribes",
    "Spam Complaints",
    "Spam Complaints Rate",
    "Successful Deliveries",
    "Bounces",
    "Bounce Rate",
    "Campaign ID",
    "Campaign Channel",
)
# The Klaviyo statistics behind the metric columns, in file order after "Send Weekday".
CAMPAIGN_STATISTICS = (
    "recipients",
    "conversion_uniques",
    "conversion_rate",
    "conversion_value",
    "opens_unique",
    "open_rate",
    "opens",
    "clicks_unique",
    "click_rate",
    "clicks",
    "unsubscribes",
    "spam_complaints",
    "spam_complaint_rate",
    "delivered",
    "bounced",
    "bounce_rate",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# The statuses of the spec's campaign status enum that mean the campaign has sent (contracts/csv.md,
# "campaigns.csv"). Every other one (Draft, Scheduled, Queued without Recipients, Adding Recipients,
# Preparing to send/schedule, every Cancelled…, Unknown) has not, and is left out and counted.
SENT_STATUSES = frozenset({"Sent", "Variations Sent", "Sending", "Sending Segments"})
CAMPAIGNS_PAGE_SIZE = 100
VALUES_PATH = "/api/campaign-values-reports"
# Why a campaign, or a values-report row, may be left out of the file; anything else is a bug.
ALLOWED_CAMPAIGNS_LEFT_OUT = frozenset({"not_sent", "no_send_time", "sent_outside_window"})
ALLOWED_REPORT_ROWS_LEFT_OUT = frozenset({"not_the_email_message"})


@dataclass(frozen=True)
class SentCampaign:
    id: str
    name: str
    sent_at: datetime  # send_time, else scheduled_at (aware)
    message_id: str | None  # the email message whose subject and metrics the file reports
    subject: str
    tags: tuple[str, ...]
    audience_ids: tuple[str, ...]


@dataclass
class CampaignTally:
    """What the campaign list held, by status and by why a campaign was left out."""

    seen_by_status: Counter[str] = field(default_factory=Counter)
    left_out: Counter[str] = field(default_factory=Counter)


def write_campaigns_csv(
    client: KlaviyoClient,
    options: SyncOptions,
    window: Window,
    metrics_window: Window,
    metric_id: str,
    out: TextIO,
) -> CsvSummary:
    """Writes campaigns.csv: campaigns sent in ``window``, metrics over ``metrics_window``.

    Returns the summary with the reconciliation: campaigns seen by status, left out by reason, and
    the values report's rows and totals against what the file holds.
    """
    writer = CsvWriter(out, CAMPAIGNS_HEADER, final_newline=False)
    tally = CampaignTally()
    campaigns = sent_email_campaigns(client, window, tally)
    metrics: dict[tuple[str, str], dict[str, Any]] = {}
    if campaigns:
        metrics = campaign_values(client, metrics_window, metric_id, [c.id for c in campaigns])
        audience_names = AudienceNames(client)
        for campaign in campaigns:
            stats = metrics.get((campaign.id, campaign.message_id or ""), {})
            writer.write_row(_row(campaign, stats, audience_names, window))
    writer.close()
    return writer.summary(_reconciliation(tally, campaigns, metrics))


def sent_email_campaigns(client: KlaviyoClient, window: Window, tally: CampaignTally) -> list[SentCampaign]:
    """Email campaigns that have sent and whose send time (else scheduled time) falls on a window
    day, oldest first.

    No server-side time filter: the only one the API offers that could cut pages is ``updated_at``,
    and a campaign is not guaranteed to be updated when it sends, so it would lose campaigns.
    """
    params = {
        "filter": "equals(messages.channel,'email')",
        "include": "campaign-messages,tags",
        "fields[campaign]": "name,status,audiences,send_time,scheduled_at",
        "fields[campaign-message]": "definition",
        "fields[tag]": "name",
        "page[size]": str(CAMPAIGNS_PAGE_SIZE),
    }
    found = []
    for page in client.iter_pages("/api/campaigns", params):
        for campaign in page.data:
            status = str(attribute(campaign, "status", ""))
            tally.seen_by_status[status] += 1
            reason = _left_out_reason(campaign, status, window)
            if reason:
                tally.left_out[reason] += 1
            else:
                found.append(_sent_campaign(page, campaign))
    return sorted(found, key=lambda c: (c.sent_at, c.id))


def _left_out_reason(campaign: dict[str, Any], status: str, window: Window) -> str | None:
    if status not in SENT_STATUSES:
        return "not_sent"
    moment = _send_moment(campaign)
    if moment is None:
        return "no_send_time"
    return None if window.contains(moment) else "sent_outside_window"


def _send_moment(campaign: dict[str, Any]) -> datetime | None:
    """``send_time``, else ``scheduled_at``, as an aware datetime (naive ones read as UTC)."""
    raw = attribute(campaign, "send_time") or attribute(campaign, "scheduled_at")
    if not raw:
        return None
    moment = datetime.fromisoformat(str(raw))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sent_campaign(page: Document, campaign: dict[str, Any]) -> SentCampaign:
    email = _email_message(list(page.related(campaign, "campaign-messages")))
    sent_at = _send_moment(campaign)
    assert sent_at is not None  # _left_out_reason kept only campaigns with a send moment
    return SentCampaign(
        id=campaign["id"],
        name=attribute(campaign, "name") or campaign["id"],
        sent_at=sent_at,
        message_id=email["id"] if email else None,
        subject=attribute(email, "definition.content.subject", "") if email else "",
        tags=tuple(attribute(tag, "name", "") for tag in page.related(campaign, "tags")),
        audience_ids=tuple(attribute(campaign, "audiences.included", []) or []),
    )


def _email_message(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The campaign's email message: the one whose definition says email, else its only message
    (the list is already filtered to email campaigns; a message may come with a null definition)."""
    for message in messages:
        if str(attribute(message, "definition.channel", "")).lower() == "email":
            return message
    return messages[0] if len(messages) == 1 else None


def campaign_values(
    client: KlaviyoClient, window: Window, metric_id: str, campaign_ids: list[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Values reports for the campaigns, ≤100 per call: {(campaign id, message id): statistics}."""
    metrics: dict[tuple[str, str], dict[str, Any]] = {}
    for ids in chunks(campaign_ids):
        body = report_body(
            "campaign-values-report",
            statistics=CAMPAIGN_STATISTICS,
            timeframe=window.timeframe(),
            conversion_metric_id=metric_id,
            group_by=("campaign_id", "campaign_message_id"),
            filter_=contains_any("campaign_id", ids),
        )
        rows, _ = query_report(client, VALUES_PATH, body)
        for row in rows:
            key = (
                grouping(row, "campaign_id", VALUES_PATH),
                grouping(row, "campaign_message_id", VALUES_PATH),
            )
            if key in metrics:
                raise KlaviyoDataError(
                    f"Klaviyo's report POST {VALUES_PATH} returned two rows for campaign {key[0]} "
                    f"message {key[1]}; nothing was written",
                    endpoint=f"POST {VALUES_PATH}",
                )
            metrics[key] = row.statistics
    return metrics


def prefetch_campaign_values(
    client: KlaviyoClient,
    windows: list[tuple[Window, Window]],
    metric_id: str,
    keep_going: Callable[[], bool] = lambda: True,
) -> int:
    """Asks the values reports other partitions of a batch will need, so that they find them kept
    (the client's ``read_cache``): the same calls, made while this run waits on the audience
    anyway. ``windows`` are (window, metrics window) pairs, asked in order while ``keep_going()``;
    returns the report calls made."""
    made = 0
    for window, metrics_window in windows:
        if not keep_going():
            break
        campaigns = sent_email_campaigns(client, window, CampaignTally())
        if campaigns:
            campaign_values(client, metrics_window, metric_id, [c.id for c in campaigns])
            made += len(list(chunks([c.id for c in campaigns])))
    return made


def _reconciliation(
    tally: CampaignTally, written: list[SentCampaign], metrics: dict[tuple[str, str], dict[str, Any]]
) -> dict[str, Any]:
    """What Klaviyo returned against what the file holds (contracts/csv.md, "Reconciliation").

    A values-report row is used when it is a written campaign's email message; a row of another
    message of a campaign whose email message has its own row is left out as
    ``not_the_email_message``. A campaign written with no row while the report has rows for it is
    ``unmatched_campaign_message`` (not allowed: its metrics would be written as zeros). The file's
    ``Successful Deliveries`` and ``Revenue`` columns must add up to ``report_delivered`` and
    ``report_revenue``.
    """
    used = {(c.id, c.message_id or "") for c in written}
    left_out = Counter(
        "not_the_email_message"
        if (key[0], _message_of(written, key[0])) in metrics
        else "unmatched_campaign_message"
        for key in metrics
        if key not in used
    )
    return {
        "campaigns_seen": sum(tally.seen_by_status.values()),
        "campaigns_seen_by_status": dict(tally.seen_by_status),
        "campaigns_left_out": dict(tally.left_out),
        "campaigns_written": len(written),
        "campaigns_without_report_row": sum(1 for key in used if key not in metrics),
        "report_rows": len(metrics),
        "report_rows_written": len(metrics) - sum(left_out.values()),
        "report_rows_left_out": dict(left_out),
        "report_delivered": sum(metrics[key].get("delivered") or 0 for key in used if key in metrics),
        "report_revenue": sum(metrics[key].get("conversion_value") or 0 for key in used if key in metrics),
    }


def _message_of(written: list[SentCampaign], campaign_id: str) -> str:
    return next((c.message_id or "" for c in written if c.id == campaign_id), "")


class AudienceNames:
    """Names of lists and segments by id, each read once per file. An id is a list or a segment."""

    def __init__(self, client: KlaviyoClient) -> None:
        self._client = client
        self._names: dict[str, str] = {}

    def __call__(self, audience_id: str) -> str:
        if audience_id not in self._names:
            self._names[audience_id] = self._read(audience_id)
        return self._names[audience_id]

    def _read(self, audience_id: str) -> str:
        for kind, fields in (("lists", "fields[list]"), ("segments", "fields[segment]")):
            try:
                found = self._client.get(f"/api/{kind}/{audience_id}", {fields: "name"}).data
            except KlaviyoRequestError as exc:
                if exc.status == 404:
                    continue
                raise
            return attribute(found[0], "name", audience_id) if found else audience_id
        return audience_id  # deleted since the send: the id still says which audience it was


def _row(
    campaign: SentCampaign, stats: dict[str, Any], audience_names: AudienceNames, window: Window
) -> list[Any]:
    local = campaign.sent_at.astimezone(window.tz)
    return [
        campaign.name,
        "|".join(campaign.tags),
        campaign.subject,
        "|".join(audience_names(a) for a in campaign.audience_ids),
        local.isoformat(timespec="seconds"),
        WEEKDAYS[local.weekday()],
        *(stats.get(name) or 0 for name in CAMPAIGN_STATISTICS),
        campaign.id,
        "Email",
    ]
