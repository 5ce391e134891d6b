"""campaigns.csv: one row per email campaign sent in the partition window, with its metrics.

Calls: campaign list pages (messages and tags included), one read per distinct audience for its
name, and one values report per 100 campaigns. The old producer made one report call per campaign,
wrote no CSV quoting, put unique counts in Total Opens/Total Clicks, 0 in Bounces, and fell back to
"the first 20 campaigns of any date" when none matched; none of that survives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.klaviyo.errors import KlaviyoRequestError
from klaviyo_dagster.klaviyo.jsonapi import Document, attribute
from klaviyo_dagster.producers.csvfile import CsvSummary, CsvWriter
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.reports import chunks, contains_any, query_report, report_body
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
NOT_SENT_STATUSES = ("Draft", "Cancelled")  # "Cancelled: Smart Sending" etc. start with it too
CAMPAIGNS_PAGE_SIZE = 100


@dataclass(frozen=True)
class SentCampaign:
    id: str
    name: str
    sent_at: datetime  # send_time, else scheduled_at (aware)
    message_id: str | None  # the email message whose subject and metrics the file reports
    subject: str
    tags: tuple[str, ...]
    audience_ids: tuple[str, ...]


def write_campaigns_csv(
    client: KlaviyoClient,
    options: SyncOptions,
    window: Window,
    metrics_window: Window,
    metric_id: str,
    out: TextIO,
) -> CsvSummary:
    """Writes campaigns.csv: campaigns sent in ``window``, metrics over ``metrics_window``."""
    writer = CsvWriter(out, CAMPAIGNS_HEADER, final_newline=False)
    campaigns = sent_email_campaigns(client, window)
    if campaigns:
        metrics = campaign_values(client, metrics_window, metric_id, [c.id for c in campaigns])
        audience_names = AudienceNames(client)
        for campaign in campaigns:
            stats = metrics.get((campaign.id, campaign.message_id or ""), {})
            writer.write_row(_row(campaign, stats, audience_names, window))
    writer.close()
    return writer.summary()


def sent_email_campaigns(client: KlaviyoClient, window: Window) -> list[SentCampaign]:
    """Email campaigns whose send time (else scheduled time) falls on a window day, oldest first."""
    params = {
        # Sending a campaign updates it, so nothing updated before the window can have been sent in
        # it: the updated_at bound cuts the pages read without losing a campaign.
        "filter": f"and(equals(messages.channel,'email'),greater-or-equal(updated_at,{window.start_utc:%Y-%m-%dT%H:%M:%SZ}))",
        "include": "campaign-messages,tags",
        "fields[campaign]": "name,status,audiences,send_time,scheduled_at",
        "fields[campaign-message]": "definition",
        "fields[tag]": "name",
        "page[size]": str(CAMPAIGNS_PAGE_SIZE),
    }
    found = []
    for page in client.iter_pages("/api/campaigns", params):
        for campaign in page.data:
            sent = _sent_campaign(page, campaign)
            if sent is not None and window.contains(sent.sent_at):
                found.append(sent)
    return sorted(found, key=lambda c: (c.sent_at, c.id))


def _sent_campaign(page: Document, campaign: dict[str, Any]) -> SentCampaign | None:
    status = str(attribute(campaign, "status", ""))
    moment = attribute(campaign, "send_time") or attribute(campaign, "scheduled_at")
    if not moment or status.startswith(NOT_SENT_STATUSES):
        return None
    email = next(
        (
            m
            for m in page.related(campaign, "campaign-messages")
            if attribute(m, "definition.channel") == "email"
        ),
        None,
    )
    return SentCampaign(
        id=campaign["id"],
        name=attribute(campaign, "name") or campaign["id"],
        sent_at=datetime.fromisoformat(moment),
        message_id=email["id"] if email else None,
        subject=attribute(email, "definition.content.subject", "") if email else "",
        tags=tuple(attribute(tag, "name", "") for tag in page.related(campaign, "tags")),
        audience_ids=tuple(attribute(campaign, "audiences.included", []) or []),
    )


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
        rows, _ = query_report(client, "/api/campaign-values-reports", body)
        for row in rows:
            metrics[(row.groupings["campaign_id"], row.groupings["campaign_message_id"])] = row.statistics
    return metrics


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
