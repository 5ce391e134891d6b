"""campaigns.csv against the tiny store: the whole file, byte for byte, and the calls it took."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import date, timedelta

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.campaigns import write_campaigns_csv
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.window import Window
from klaviyo_dagster.sim import DEFAULT_API_KEY
from klaviyo_dagster.sim.data import Campaign
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE, TIMEZONE, TinyStore

HEADER = (
    "Campaign Name,Tags,Subject,List,Send Time,Send Weekday,Total Recipients,Unique Placed Order,"
    "Placed Order Rate,Revenue,Unique Opens,Open Rate,Total Opens,Unique Clicks,Click Rate,Total Clicks,"
    "Unsubscribes,Spam Complaints,Spam Complaints Rate,Successful Deliveries,Bounces,Bounce Rate,"
    "Campaign ID,Campaign Channel"
)
# Worked out from tiny_store: CAMP01 sent 2026-03-08 15:30 UTC = 11:30 EDT, a Sunday, to the
# "Newsletter" list and the "Repeat Buyers, 2+" segment, tagged Promo and Été. 1000 recipients,
# 990 delivered, 10 bounced (10/1000); 400 unique / 500 total opens (400/990), 100 unique / 120 total
# clicks (100/990), 10 orders (10/990) worth 999, 3 unsubscribes, 1 spam complaint (1/990).
# CAMP06 has no send_time; its scheduled_at 2026-03-09 23:00 UTC is 19:00 EDT on Monday the 9th,
# in the window; no activity, so every metric is 0. CAMP02 (February), CAMP03 (SMS), CAMP04 (draft)
# and CAMP05 (03-06 23:30 in New York although 03-07 in UTC) are not in the file.
EXPECTED = "\n".join(
    [
        HEADER,
        '"Spring Sale, ""VIP"" Edition",Promo|Été,"Save 20%, today only - ""really""",'
        '"Newsletter|Repeat Buyers, 2+",2026-03-08T11:30:00-04:00,Sunday,1000,10,0.010101010101010102,999,'
        "400,0.40404040404040403,500,100,0.10101010101010101,120,3,1,0.00101010101010101,990,10,0.01,"
        "CAMP01,Email",
        "Scheduled only,,About Scheduled only,Newsletter,2026-03-09T19:00:00-04:00,Monday,"
        "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,CAMP06,Email",
    ]
)


def write(client: KlaviyoClient, options: SyncOptions, window: Window, metric_id: str) -> tuple[str, object]:
    out = io.StringIO(newline="")
    metrics_window = Window.ending_on(window.last_day, options.campaign_metrics_days, window.timezone)
    summary = write_campaigns_csv(client, options, window, metrics_window, metric_id, out)
    return out.getvalue(), summary


def test_the_tiny_store_gives_the_hand_worked_file(
    tiny_client, tiny_options, tiny_window, tiny_metric_id
) -> None:
    text, summary = write(tiny_client, tiny_options, tiny_window, tiny_metric_id)

    assert text == EXPECTED
    assert summary.rows == 2


def test_metrics_come_from_one_values_report_over_the_metrics_window(
    tiny_sim, tiny_client, tiny_window, tiny_metric_id
) -> None:
    write(tiny_client, SyncOptions(days=3, timeframe_key="last_7_days"), tiny_window, tiny_metric_id)

    reports = [r for r in tiny_sim.requests if r.operation_id == "query_campaign_values"]
    assert len(reports) == 1
    attributes = reports[0].body["data"]["attributes"]
    assert attributes["timeframe"] == {
        "start": "2026-03-03T00:00:00-05:00",
        "end": "2026-03-09T23:59:59-04:00",
    }
    assert attributes["filter"] == 'contains-any(campaign_id,["CAMP01","CAMP06"])'
    assert attributes["group_by"] == ["campaign_id", "campaign_message_id"]
    campaigns_call = next(r for r in tiny_sim.requests if r.operation_id == "get_campaigns")
    # Only the required channel clause: updated_at does not always move when a campaign sends.
    assert campaigns_call.query["filter"] == "equals(messages.channel,'email')"


def test_a_window_without_campaigns_is_a_header_only_file(tiny_sim, tiny_client, tiny_metric_id) -> None:
    """The old producer fell back to "the first 20 campaigns of any date" here."""
    quiet = Window.ending_on(date(2026, 1, 15), 3, TIMEZONE)
    text, summary = write(tiny_client, SyncOptions(days=3), quiet, tiny_metric_id)

    assert (text, summary.rows) == (HEADER, 0)
    assert "query_campaign_values" not in [r.operation_id for r in tiny_sim.requests]


class BusyStore(TinyStore):
    """The tiny store plus 150 email campaigns sent on the partition date."""

    def _build_campaigns(self) -> list[Campaign]:
        campaigns = super()._build_campaigns()
        template = campaigns[0]
        sent = template.send_time
        extra = [
            replace(
                template,
                id=f"BULK{n:03d}",
                message_id=f"BULK{n:03d}-MSG",
                send_time=sent + timedelta(minutes=n),
            )
            for n in range(150)
        ]
        return campaigns + extra


def test_values_reports_take_at_most_100_campaigns_each(simulator_factory, monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory(account_factory=BusyStore, time_scale=0.01)
    with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, time_scale=0.01) as client:
        window = Window.ending_on(PARTITION_DATE, 3, TIMEZONE)
        _, summary = write(client, SyncOptions(days=3), window, sim.account.placed_order_metric.id)

    reports = [r for r in sim.requests if r.operation_id == "query_campaign_values"]
    sizes = [r.body["data"]["attributes"]["filter"].count('"') // 2 for r in reports]
    assert sizes == [100, 52]
    assert summary.rows == 152
