"""flows.csv against the tiny store: the whole file, byte for byte, and the calls it took."""

from __future__ import annotations

import csv
import io
from datetime import date

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.flows import write_flows_csv
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.window import Window
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig

HEADER = (
    "Day,Flow ID,Flow Name,Flow Message ID,Flow Message Name,Flow Message Channel,Status,Delivered,"
    "Unique Opens,Open Rate,Unique Clicks,Click Rate,Placed Order,Placed Order Rate,Revenue,"
    "Revenue per Recipient,Unsub Rate,Complaint Rate,Bounce Rate,Tags"
)
WELCOME = 'FLW001,"Welcome, New ""Friends"""'
CAFE = "FLW002,Café ☕ Flow"
ZEROS = "0,0,0,0,0,0,0,0,0,0,0,0,"
SCALE = 0.01  # rate-limit windows 100x shorter, for the tests that read a whole synthetic store

# Worked out from tiny_store.FLOW_ACTIVITY. MSG01A on 03-07: 100 recipients, 98 delivered, 2 bounced,
# 49 unique opens (49/98 = 0.5), 7 unique clicks (7/98), 2 orders (2/98) worth 123.45 (123.45/98 per
# recipient), 1 unsubscribe (1/98), bounce rate 2/100. On 03-08: 50 delivered, 10 opens (0.2), one
# spam complaint (1/50). Its 03-06 23:00 activity is outside the window. MSG01B never sent: zeros on
# every day. MSG02A on 03-07: 8 delivered, 3 opens (0.375), 1 click and 1 order (1/8) worth 19.99
# (19.99/8 = 2.49875); Klaviyo drops its empty trailing days, which are zeros here.
EXPECTED = "\n".join(
    [
        HEADER,
        f"2026-03-07,{WELCOME},MSG01A,Bienvenue à bord,email,live,98,49,0.5,7,0.07142857142857142,2,"
        "0.02040816326530612,123.45,1.2596938775510205,0.01020408163265306,0,0.02,",
        f'2026-03-07,{WELCOME},MSG01B,"Second email, no activity",email,live,{ZEROS}',
        f'2026-03-07,{CAFE},MSG02A,"Line one\nline two",email,live,8,3,0.375,1,0.125,1,0.125,19.99,2.49875,0,0,0,',
        f"2026-03-08,{WELCOME},MSG01A,Bienvenue à bord,email,live,50,10,0.2,0,0,0,0,0,0,0,0.02,0,",
        f'2026-03-08,{WELCOME},MSG01B,"Second email, no activity",email,live,{ZEROS}',
        f'2026-03-08,{CAFE},MSG02A,"Line one\nline two",email,live,{ZEROS}',
        f"2026-03-09,{WELCOME},MSG01A,Bienvenue à bord,email,live,{ZEROS}",
        f'2026-03-09,{WELCOME},MSG01B,"Second email, no activity",email,live,{ZEROS}',
        f'2026-03-09,{CAFE},MSG02A,"Line one\nline two",email,live,{ZEROS}',
    ]
)


def write(client: KlaviyoClient, options: SyncOptions, window: Window, metric_id: str) -> tuple[str, object]:
    out = io.StringIO(newline="")
    summary = write_flows_csv(client, options, window, metric_id, out)
    return out.getvalue(), summary


def test_the_tiny_store_gives_the_hand_worked_file(
    tiny_client, tiny_options, tiny_window, tiny_metric_id
) -> None:
    text, summary = write(tiny_client, tiny_options, tiny_window, tiny_metric_id)

    assert text == EXPECTED  # no newline after the last row
    assert summary.rows == 9
    assert summary.preview == tuple(EXPECTED.split("\n")[:3])


def test_one_series_report_covers_the_whole_window(
    tiny_sim, tiny_client, tiny_options, tiny_window, tiny_metric_id
) -> None:
    write(tiny_client, tiny_options, tiny_window, tiny_metric_id)

    reports = [r for r in tiny_sim.requests if r.path.startswith("/api/flow-series-reports")]
    assert len(reports) == 1
    attributes = reports[0].body["data"]["attributes"]
    assert attributes["timeframe"] == {
        "start": "2026-03-07T00:00:00-05:00",
        "end": "2026-03-09T23:59:59-04:00",
    }
    assert attributes["interval"] == "daily"
    assert attributes["group_by"] == ["flow_id", "flow_message_id", "send_channel"]
    assert (
        attributes["filter"] == 'and(contains-any(flow_id,["FLW001","FLW002"]),equals(send_channel,"email"))'
    )
    assert attributes["conversion_metric_id"] == tiny_metric_id


def test_a_backfill_asks_klaviyo_for_the_same_window_as_the_nightly_run(
    simulator_factory, monkeypatch
) -> None:
    """The partition, not the day it runs, decides the window: run it "today" and a year later."""
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    bodies = []
    for today in (date(2026, 3, 10), date(2027, 3, 10)):
        sim = simulator_factory(anchor=today, profiles=0, time_scale=SCALE)
        metric_id = sim.account.placed_order_metric.id
        with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, time_scale=SCALE) as client:
            write(client, SyncOptions(), Window.ending_on(date(2026, 3, 9), 7, "America/New_York"), metric_id)
        bodies += [r.body for r in sim.requests if r.operation_id == "query_flow_series"]

    assert len(bodies) == 2
    assert bodies[0] == bodies[1]


def test_two_partition_dates_ask_for_two_different_windows(tiny_sim, tiny_client, tiny_metric_id) -> None:
    for day in (date(2026, 3, 8), date(2026, 3, 9)):
        write(tiny_client, SyncOptions(days=2), Window.ending_on(day, 2, "America/New_York"), tiny_metric_id)

    timeframes = [r.body["data"]["attributes"]["timeframe"] for r in tiny_sim.requests if r.body]
    assert [t["start"][:10] for t in timeframes] == ["2026-03-07", "2026-03-08"]
    assert [t["end"][:10] for t in timeframes] == ["2026-03-08", "2026-03-09"]


def test_limits_keep_the_first_flows_and_messages(tiny_sim, tiny_client, tiny_window, tiny_metric_id) -> None:
    text, summary = write(
        tiny_client, SyncOptions(days=3, limit_flows=1, limit_messages=1), tiny_window, tiny_metric_id
    )

    assert summary.rows == 3  # one message of one flow, three days
    rows = list(csv.reader(io.StringIO(text)))[1:]
    assert {(row[1], row[3]) for row in rows} == {("FLW001", "MSG01A")}
    assert "MSG01B" not in text


def test_fast_mode_reads_no_definitions_and_names_messages_by_id(
    tiny_sim, tiny_client, tiny_window, tiny_metric_id
) -> None:
    text, summary = write(tiny_client, SyncOptions(days=3, fast=True), tiny_window, tiny_metric_id)

    assert [r.operation_id for r in tiny_sim.requests] == ["get_flows", "query_flow_series"]
    assert summary.rows == 3
    assert text.split("\n")[1].startswith(f"2026-03-07,{WELCOME},MSG01A,MSG01A,email,live,98,")


def test_without_live_flows_the_file_is_the_header_and_no_report_is_asked(
    simulator_factory, monkeypatch
) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory(profiles=0, flows=0)
    with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url) as client:
        text, summary = write(client, SyncOptions(), Window.ending_on(date(2026, 3, 9), 7, "UTC"), "METRIC")

    assert (text, summary.rows) == (HEADER, 0)
    assert [r.operation_id for r in sim.requests] == ["get_flows"]


def test_the_default_store_fills_every_day_of_every_live_email_message(
    simulator_factory, monkeypatch
) -> None:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    sim = simulator_factory(profiles=0, anchor=date(2026, 3, 10), time_scale=SCALE)
    account = sim.account
    live = [f for f in account.flows if f.status == "live" and not f.archived]
    window = Window.ending_on(date(2026, 3, 9), 7, account.timezone)
    # Every email anywhere in a definition (A/B variations, behind splits), and every email removed
    # from its flow that still reports in the window, each with a row for every day.
    defined = [m for f in live for m in f.email_messages]
    removed = [
        m
        for f in live
        for m in f.removed_messages
        if m.channel == "email" and any(account.flow_activity(m, day) for day in window.days)
    ]
    with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, time_scale=SCALE) as client:
        _, summary = write(client, SyncOptions(), window, account.placed_order_metric.id)

    assert any(m.variation_of for m in defined) and removed  # the store has both kinds
    assert summary.rows == 7 * (len(defined) + len(removed))
    assert summary.reconciliation["messages_not_in_definition"] == len(removed)
    assert [r.operation_id for r in sim.requests].count("query_flow_series") == 1
    assert SimConfig().flows == len(account.flows)
