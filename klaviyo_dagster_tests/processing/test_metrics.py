"""Snapshot metrics, worked out by hand: the golden files, edge cases, and history across partitions."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal

import pytest

from klaviyo_dagster.derived_rows import History, SeriesPoint, SnapshotMetrics
from klaviyo_dagster.processing.metrics import (
    COUNT_KEYS,
    DASHBOARD_KEYS,
    SERIES_KEYS,
    TOTAL_KEYS,
    DayTotals,
    OwnActivity,
    compute_metrics,
    daily_totals,
    js_math_round,
    rebuild_days,
)
from klaviyo_dagster.producers.campaigns import CAMPAIGNS_HEADER
from klaviyo_dagster.producers.flows import FLOWS_HEADER
from klaviyo_dagster_tests.producers.test_campaigns import EXPECTED as GOLDEN_CAMPAIGNS
from klaviyo_dagster_tests.producers.test_flows import EXPECTED as GOLDEN_FLOWS

MAR = {day: date(2026, 3, day) for day in range(1, 12)}
GOLDEN_WINDOW = (MAR[7], MAR[9])
ZERO_DAY = dict.fromkeys(SERIES_KEYS, 0)


def text(csv_text: str) -> io.StringIO:
    return io.StringIO(csv_text, newline="")


def flows(*rows: Mapping[str, object]) -> io.StringIO:
    """A flows.csv with the real header; unspecified fields empty, channel email."""
    return _csv(FLOWS_HEADER, [{"Flow Message Channel": "email", **row} for row in rows])


def campaigns(*rows: Mapping[str, object]) -> io.StringIO:
    """A campaigns.csv with the real header; unspecified fields empty."""
    return _csv(CAMPAIGNS_HEADER, [{"Campaign Channel": "Email", **row} for row in rows])


def _csv(header: tuple[str, ...], rows: list[dict[str, object]]) -> io.StringIO:
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out.seek(0)
    return out


def no_flows() -> io.StringIO:
    return flows()


def no_campaigns() -> io.StringIO:
    return campaigns()


def values_by_day(metrics: SnapshotMetrics) -> dict[date, dict[str, float]]:
    days: dict[date, dict[str, float]] = {}
    for point in metrics.series:
        days.setdefault(point.day, {})[point.metric_key] = point.value
    return days


def approx(values: Mapping[str, float]) -> object:
    return pytest.approx(dict(values), rel=1e-12, abs=1e-12)


# --- The golden files ------------------------------------------------------------------------------
# flows.csv (all rows email):
#   03-07 MSG01A: Delivered 98, opens 49, clicks 7, orders 2, revenue 123.45,
#                 Unsub Rate 0.0102040816... → round(98 * 1/98) = 1, Complaint 0 → 0,
#                 Bounce Rate 0.02 → round(98 * 0.02 = 1.96) = 2
#   03-07 MSG02A: Delivered 8, opens 3, clicks 1, orders 1, revenue 19.99, rates 0
#   03-08 MSG01A: Delivered 50, opens 10, Complaint Rate 0.02 → round(50 * 0.02) = 1
#   every other row (MSG01B every day, all of 03-09): zeros
# campaigns.csv:
#   CAMP01, Send Time 2026-03-08T11:30:00-04:00 → 03-08: recipients 1000, orders 10, revenue 999,
#           opens 400, clicks 100, unsubscribes 3, spam complaints 1, bounces 10
#   CAMP06, 2026-03-09T19:00:00-04:00 → 03-09: all zeros
GOLDEN_DAYS = {
    # revenue 123.45 + 19.99; emails 98 + 8; orders 2 + 1; opens 49 + 3; clicks 7 + 1
    MAR[7]: DayTotals(
        revenue=143.44,
        emails=106,
        orders=3,
        unique_opens=52,
        unique_clicks=8,
        unsubscribes=1,
        spam_complaints=0,
        bounces=2,
    ),
    # emails 50 + 1000; opens 10 + 400; spam complaints 1 (flow, from its rate) + 1 (campaign)
    MAR[8]: DayTotals(
        revenue=999,
        emails=1050,
        orders=10,
        unique_opens=410,
        unique_clicks=100,
        unsubscribes=3,
        spam_complaints=2,
        bounces=10,
    ),
    MAR[9]: DayTotals(),
}


def golden_metrics() -> SnapshotMetrics:
    return compute_metrics(daily_totals(text(GOLDEN_FLOWS), text(GOLDEN_CAMPAIGNS)), GOLDEN_WINDOW)


def test_the_golden_files_sum_per_local_day() -> None:
    days = daily_totals(text(GOLDEN_FLOWS), text(GOLDEN_CAMPAIGNS))

    assert days.keys() == GOLDEN_DAYS.keys()
    for day, expected in GOLDEN_DAYS.items():
        assert vars(days[day]) == approx(vars(expected)), day  # 123.45 + 19.99 is 143.44000000000003


def test_the_golden_totals() -> None:
    # Sums over 03-07..03-09: revenue 143.44 + 999 = 1142.44, emails 106 + 1050 = 1156,
    # orders 3 + 10 = 13, opens 52 + 410 = 462, clicks 8 + 100 = 108, unsubscribes 1 + 3 = 4,
    # spam complaints 0 + 2 = 2, bounces 2 + 10 = 12.
    assert golden_metrics().totals == approx(
        {
            "totalRevenue": 1142.44,
            "emailsSent": 1156,
            "totalOrders": 13,
            "openRate": 39.965397923875436,  # 462 / 1156 * 100
            "clickRate": 9.342560553633218,  # 108 / 1156 * 100
            "clickToOpenRate": 23.376623376623375,  # 108 / 462 * 100
            "conversionRate": 12.037037037037036,  # 13 / 108 * 100
            "unsubscribeRate": 0.34602076124567477,  # 4 / 1156 * 100
            "spamRate": 0.17301038062283738,  # 2 / 1156 * 100
            "bounceRate": 1.0380622837370241,  # 12 / 1156 * 100
            "avgOrderValue": 87.88,  # 1142.44 / 13
            "revenuePerEmail": 0.9882698961937717,  # 1142.44 / 1156
            "uniqueOpens": 462,
            "uniqueClicks": 108,
            "unsubscribesCount": 4,
            "spamComplaintsCount": 2,
            "bouncesCount": 12,
        }
    )
    assert list(golden_metrics().totals) == list(TOTAL_KEYS)


def test_the_golden_series_has_every_key_every_day() -> None:
    metrics = golden_metrics()

    assert len(metrics.series) == 3 * 17
    assert [(p.day, p.metric_key) for p in metrics.series] == sorted(
        (day, key) for day in GOLDEN_DAYS for key in SERIES_KEYS
    )
    days = values_by_day(metrics)
    assert days[MAR[7]] == approx(
        {
            "totalRevenue": 143.44,
            "emailsSent": 106,
            "totalOrders": 3,
            "openRate": 49.056603773584904,  # 52 / 106 * 100
            "clickRate": 7.547169811320755,  # 8 / 106 * 100
            "clickToOpenRate": 15.384615384615385,  # 8 / 52 * 100
            "conversionRate": 37.5,  # 3 / 8 * 100
            "unsubscribeRate": 0.9433962264150944,  # 1 / 106 * 100
            "spamRate": 0,
            "bounceRate": 1.8867924528301887,  # 2 / 106 * 100
            "avgOrderValue": 47.81333333333333,  # 143.44 / 3
            "revenuePerEmail": 1.3532075471698113,  # 143.44 / 106
            "uniqueOpens": 52,
            "uniqueClicks": 8,
            "unsubscribesCount": 1,
            "spamComplaintsCount": 0,
            "bouncesCount": 2,
        }
    )
    assert days[MAR[8]] == approx(
        {
            "totalRevenue": 999,
            "emailsSent": 1050,
            "totalOrders": 10,
            "openRate": 39.04761904761905,  # 410 / 1050 * 100
            "clickRate": 9.523809523809524,  # 100 / 1050 * 100
            "clickToOpenRate": 24.390243902439025,  # 100 / 410 * 100
            "conversionRate": 10,  # 10 / 100 * 100
            "unsubscribeRate": 0.2857142857142857,  # 3 / 1050 * 100
            "spamRate": 0.19047619047619047,  # 2 / 1050 * 100
            "bounceRate": 0.9523809523809524,  # 10 / 1050 * 100
            "avgOrderValue": 99.9,  # 999 / 10
            "revenuePerEmail": 0.9514285714285714,  # 999 / 1050
            "uniqueOpens": 410,
            "uniqueClicks": 100,
            "unsubscribesCount": 3,
            "spamComplaintsCount": 2,
            "bouncesCount": 10,
        }
    )
    assert days[MAR[9]] == ZERO_DAY  # CAMP06 and the flow rows of 03-09 are all zeros
    assert metrics.last_email_date == MAR[8]


def test_the_key_lists() -> None:
    """The fix: the series carries the counts, so totals can be rebuilt from any snapshot's series."""
    assert len(DASHBOARD_KEYS) == 12
    assert set(COUNT_KEYS) <= set(SERIES_KEYS)
    assert SERIES_KEYS == TOTAL_KEYS == DASHBOARD_KEYS + COUNT_KEYS


# --- Edge cases of the files -----------------------------------------------------------------------


def test_only_email_flow_rows_count() -> None:
    days = daily_totals(
        flows(
            {"Day": "2026-03-07", "Flow Message Channel": "email", "Delivered": 1},
            {"Day": "2026-03-07", "Flow Message Channel": "Email", "Delivered": 10},
            {"Day": "2026-03-07", "Flow Message Channel": "", "Delivered": 100},
            {"Day": "2026-03-07", "Flow Message Channel": "sms", "Delivered": 1000, "Revenue": 5},
            {"Day": "2026-03-08", "Flow Message Channel": "SMS", "Delivered": 1000},
        ),
        no_campaigns(),
    )

    assert days == {MAR[7]: DayTotals(emails=111)}  # 1 + 10 + 100; no SMS day at all


def test_rate_only_columns_round_like_javascript_math_round() -> None:
    days = daily_totals(
        flows(
            # 2 * 0.25 = 0.5 → 1 (Python's round would give 0); 10 * 0.25 = 2.5 → 3 (round: 2);
            # 2 * 0.245 = 0.49 → 0
            {"Day": "2026-03-07", "Delivered": 2, "Unsub Rate": 0.25, "Bounce Rate": 0.245},
            {"Day": "2026-03-07", "Delivered": 10, "Complaint Rate": 0.25},
        ),
        no_campaigns(),
    )

    assert days[MAR[7]] == DayTotals(emails=12, unsubscribes=1, spam_complaints=3, bounces=0)
    assert [js_math_round(x) for x in (0.5, 1.5, 2.5, 0.49, -0.5)] == [1, 2, 3, 0, 0]


def test_a_count_just_under_a_half_rounds_down_as_the_dashboard_does() -> None:
    # 49 * 0.01020408163265306 is 0.49999999999999994 in doubles: Math.round gives 0, while
    # floor(x + 0.5) gave 1 (the sum rounds up to exactly 1.0).
    days = daily_totals(
        flows({"Day": "2026-03-07", "Delivered": 49, "Unsub Rate": 0.01020408163265306}), no_campaigns()
    )

    assert 49 * 0.01020408163265306 == 0.49999999999999994
    assert days[MAR[7]].unsubscribes == 0


def test_js_math_round_matches_javascript_on_edge_values() -> None:
    # Values and results as node's Math.round gives them.
    cases = {
        0.49999999999999994: 0,
        -0.49999999999999994: 0,
        -1.5: -1,
        -2.5: -2,
        2.5: 3,
        4503599627370495.5: 4503599627370496,
        4503599627370497.0: 4503599627370497,
        -4503599627370495.5: -4503599627370495,
    }
    assert {x: js_math_round(x) for x in cases} == cases


def test_campaigns_use_their_counts_not_their_rates() -> None:
    days = daily_totals(
        no_flows(),
        campaigns(
            {
                "Send Time": "2026-03-08T23:30:00-04:00",  # local date 03-08 (03-09 in UTC)
                "Total Recipients": 100,
                "Successful Deliveries": 90,
                "Unsubscribes": 2,
                "Spam Complaints Rate": 0.5,  # a rate without its count: not used
                "Bounces": 10,
                "Bounce Rate": 0.9,
            }
        ),
    )

    assert days == {MAR[8]: DayTotals(emails=100, unsubscribes=2, bounces=10)}


def test_empty_fields_count_as_zero() -> None:
    days = daily_totals(
        flows({"Day": "2026-03-07", "Delivered": "", "Revenue": 12.5, "Unsub Rate": ""}),
        campaigns({"Send Time": "2026-03-07T09:00:00+00:00", "Unique Opens": 4}),
    )

    assert days == {MAR[7]: DayTotals(revenue=12.5, unique_opens=4)}


def test_divisors_of_zero_give_zero() -> None:
    # Revenue without orders or emails; clicks without opens; opens without emails.
    current = {MAR[7]: DayTotals(revenue=50, unique_opens=3, unique_clicks=2)}

    metrics = compute_metrics(current, (MAR[7], MAR[7]))

    assert values_by_day(metrics)[MAR[7]] == {
        **ZERO_DAY,
        "totalRevenue": 50,
        "uniqueOpens": 3,
        "uniqueClicks": 2,
        "clickToOpenRate": 2 / 3 * 100,  # the only rate with a divisor
    }
    assert metrics.totals == values_by_day(metrics)[MAR[7]]
    assert metrics.last_email_date is None  # activity, but no email sent


def test_columns_are_read_by_name_with_quoted_fields() -> None:
    """Column order is the producer's business; a quoted comma or newline stays inside its field."""
    flows_csv = (
        'Revenue,Flow Message Channel,Day,Delivered,Unique Opens,Unique Clicks,Placed Order,Flow Name,"Unsub Rate",'
        "Complaint Rate,Bounce Rate\n"
        '10,email,2026-03-07,4,2,1,1,"Hello, ""you""\nthere",0.5,0,0'
    )

    days = daily_totals(text(flows_csv), no_campaigns())

    assert days == {
        MAR[7]: DayTotals(revenue=10, emails=4, orders=1, unique_opens=2, unique_clicks=1, unsubscribes=2)
    }


def test_header_only_files_give_a_quiet_window() -> None:
    metrics = compute_metrics(daily_totals(no_flows(), no_campaigns()), GOLDEN_WINDOW)

    assert values_by_day(metrics) == dict.fromkeys(GOLDEN_DAYS, ZERO_DAY)
    assert metrics.totals == dict.fromkeys(TOTAL_KEYS, 0)
    assert metrics.last_email_date is None


@pytest.mark.parametrize(
    ("flows_csv", "campaigns_csv", "message"),
    [
        (
            text("Day,Delivered\n2026-03-07,1"),
            no_campaigns(),
            "flows.csv has no column 'Flow Message Channel'",
        ),
        (no_flows(), text(""), "campaigns.csv has no column 'Send Time'"),
        (
            flows({"Day": "2026-03-07", "Delivered": "12 "}, {"Day": "2026-03-07", "Revenue": "n/a"}),
            no_campaigns(),
            "flows.csv line 3: Revenue is not a number: 'n/a'",
        ),
        (flows({"Day": "2026-03-07", "Delivered": "NaN"}), no_campaigns(), "Delivered is not a number"),
        (flows({"Day": "07/03/2026"}), no_campaigns(), "flows.csv line 2: Day is not a YYYY-MM-DD date"),
        (
            no_flows(),
            campaigns({"Send Time": ""}),
            "campaigns.csv line 2: Send Time is not a YYYY-MM-DD date",
        ),
    ],
)
def test_a_misread_file_fails_loudly(
    flows_csv: io.StringIO, campaigns_csv: io.StringIO, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        daily_totals(flows_csv, campaigns_csv)


def test_day_totals_add_field_by_field() -> None:
    a = DayTotals(1, 2, 3, 4, 5, 6, 7, 8)
    b = DayTotals(revenue=0.5, bounces=1)

    assert a + b == DayTotals(1.5, 2, 3, 4, 5, 6, 7, 9)
    assert sum([a, b], DayTotals()) == a + b


def test_the_window_must_hold_the_activity() -> None:
    with pytest.raises(ValueError, match="starts after it ends"):
        compute_metrics({}, (MAR[9], MAR[7]))
    with pytest.raises(ValueError, match=re.escape("outside the window 2026-03-07..2026-03-09: 2026-03-06")):
        compute_metrics({MAR[6]: DayTotals(emails=1)}, GOLDEN_WINDOW)


# --- History across partitions ---------------------------------------------------------------------
# Three-day windows. D1 = 03-08 (03-06..03-08), D2 = 03-09 (03-07..03-09), D3 = 03-10 (03-08..03-10).


def d1_files() -> tuple[io.StringIO, io.StringIO]:
    return (
        flows(
            # 03-06: Unsub Rate 0.01 → round(100 * 0.01) = 1; Bounce Rate 0.03 → 3
            {
                "Day": "2026-03-06",
                "Delivered": 100,
                "Unique Opens": 40,
                "Unique Clicks": 10,
                "Placed Order": 2,
                "Revenue": 50,
                "Unsub Rate": 0.01,
                "Bounce Rate": 0.03,
            },
            # D1's early view of 03-07, which D2's window replaces
            {"Day": "2026-03-07", "Delivered": 10, "Unique Opens": 5, "Revenue": 1000},
        ),
        no_campaigns(),
    )


def d2_files() -> tuple[io.StringIO, io.StringIO]:
    return (
        no_flows(),
        campaigns(
            {
                "Send Time": "2026-03-07T10:00:00-05:00",
                "Total Recipients": 20,
                "Unique Opens": 8,
                "Unique Clicks": 2,
                "Unique Placed Order": 1,
                "Revenue": 30,
                "Unsubscribes": 1,
            },
            {
                "Send Time": "2026-03-08T10:00:00-04:00",
                "Total Recipients": 50,
                "Unique Opens": 20,
                "Unique Clicks": 5,
                "Spam Complaints": 1,
                "Bounces": 2,
            },
        ),
    )


D1_WINDOW = (MAR[6], MAR[8])
D2_WINDOW = (MAR[7], MAR[9])
D3_WINDOW = (MAR[8], MAR[10])
DAY_0306 = DayTotals(
    revenue=50, emails=100, orders=2, unique_opens=40, unique_clicks=10, unsubscribes=1, bounces=3
)


def test_partitions_run_out_of_order_still_build_the_history() -> None:
    # The later partition first, with no previous snapshot yet: history starts at its window.
    d2_alone = compute_metrics(daily_totals(*d2_files()), D2_WINDOW)
    assert sorted(values_by_day(d2_alone)) == [MAR[7], MAR[8], MAR[9]]
    assert d2_alone.totals["emailsSent"] == 70  # 20 + 50
    assert d2_alone.last_email_date == MAR[8]

    # Then the backfill of the earlier partition, which has no previous either.
    d1 = compute_metrics(daily_totals(*d1_files()), D1_WINDOW)
    assert sorted(values_by_day(d1)) == [MAR[6], MAR[7], MAR[8]]
    assert d1.totals["emailsSent"] == 110  # 100 + 10
    assert d1.last_email_date == MAR[7]

    # D2 again, now with D1 as its previous snapshot: 03-06 is carried, 03-07 and 03-08 are D2's.
    d2 = compute_metrics(daily_totals(*d2_files()), D2_WINDOW, d1.series, d1.last_email_date)

    days = values_by_day(d2)
    assert sorted(days) == [MAR[6], MAR[7], MAR[8], MAR[9]]
    assert days[MAR[6]] == values_by_day(d1)[MAR[6]]
    assert days[MAR[7]]["emailsSent"] == 20  # D2's 03-07, not D1's 10 nor 10 + 20
    assert days[MAR[7]]["totalRevenue"] == 30
    # 03-06 + D2's window: revenue 50 + 30 = 80, emails 100 + 20 + 50 = 170, orders 2 + 1 = 3,
    # opens 40 + 8 + 20 = 68, clicks 10 + 2 + 5 = 17, unsubscribes 1 + 1 = 2, spam 1, bounces 3 + 2 = 5
    assert d2.totals == approx(
        {
            "totalRevenue": 80,
            "emailsSent": 170,
            "totalOrders": 3,
            "openRate": 40,  # 68 / 170 * 100
            "clickRate": 10,  # 17 / 170 * 100
            "clickToOpenRate": 25,  # 17 / 68 * 100
            "conversionRate": 17.647058823529413,  # 3 / 17 * 100
            "unsubscribeRate": 1.1764705882352942,  # 2 / 170 * 100
            "spamRate": 0.5882352941176471,  # 1 / 170 * 100
            "bounceRate": 2.941176470588235,  # 5 / 170 * 100
            "avgOrderValue": 26.666666666666668,  # 80 / 3
            "revenuePerEmail": 0.47058823529411764,  # 80 / 170
            "uniqueOpens": 68,
            "uniqueClicks": 17,
            "unsubscribesCount": 2,
            "spamComplaintsCount": 1,
            "bouncesCount": 5,
        }
    )
    # The fix: every base sum of the totals adds up from the series alone.
    for key in ("totalRevenue", "emailsSent", "totalOrders", *COUNT_KEYS):
        assert sum(day[key] for day in days.values()) == d2.totals[key], key
    assert d2.last_email_date == MAR[8]

    # D3 (a quiet window) carries both 03-06 (through D2) and D2's 03-07; D2's 03-08 is replaced.
    d3 = compute_metrics({}, D3_WINDOW, d2.series, d2.last_email_date)
    assert sorted(values_by_day(d3)) == [MAR[6], MAR[7], MAR[8], MAR[9], MAR[10]]
    assert values_by_day(d3)[MAR[8]] == ZERO_DAY
    assert d3.totals["emailsSent"] == 120  # 100 + 20
    assert d3.totals["uniqueOpens"] == 48  # 40 + 8
    assert d3.last_email_date == MAR[8]  # the previous snapshot's, later than 03-07


def test_previous_points_inside_or_after_the_window_are_ignored() -> None:
    previous = [
        SeriesPoint("emailsSent", MAR[6], 5),
        SeriesPoint("emailsSent", MAR[7], 500),  # first window day
        SeriesPoint("uniqueOpens", MAR[9], 50),  # last window day
        SeriesPoint("emailsSent", MAR[11], 7),  # after the window
    ]

    metrics = compute_metrics({MAR[7]: DayTotals(emails=1)}, GOLDEN_WINDOW, previous)

    assert sorted(values_by_day(metrics)) == [MAR[6], MAR[7], MAR[8], MAR[9]]
    assert values_by_day(metrics)[MAR[7]]["emailsSent"] == 1
    assert metrics.totals["emailsSent"] == 6  # 5 + 1
    assert metrics.totals["uniqueOpens"] == 0


def test_an_old_app_snapshot_without_counts_gets_them_from_its_rates() -> None:
    # The old app stored only the 12 dashboard keys per day. 03-01: 200 emails, counts come back as
    # round(rate / 100 * 200): opens 25.5 → 51, clicks 5 → 10, unsubscribes 0.5 → 1, spam 0 → 0,
    # bounces 1.5 → 3. Emails, revenue and orders are stored as they are.
    old_day = {
        "totalRevenue": 100,
        "emailsSent": 200,
        "totalOrders": 4,
        "openRate": 25.5,
        "clickRate": 5,
        "clickToOpenRate": 19.607843137254903,
        "conversionRate": 40,
        "unsubscribeRate": 0.5,
        "spamRate": 0,
        "bounceRate": 1.5,
        "avgOrderValue": 25,
        "revenuePerEmail": 0.5,
    }
    previous = [SeriesPoint(key, MAR[1], value) for key, value in old_day.items()]

    metrics = compute_metrics({}, (MAR[2], MAR[2]), previous, previous_last_email_date=MAR[1])

    carried = values_by_day(metrics)[MAR[1]]
    assert {key: carried[key] for key in COUNT_KEYS} == {
        "uniqueOpens": 51,
        "uniqueClicks": 10,
        "unsubscribesCount": 1,
        "spamComplaintsCount": 0,
        "bouncesCount": 3,
    }
    assert carried == approx(old_day | {key: carried[key] for key in COUNT_KEYS})
    assert metrics.totals == approx(carried)  # 03-02 is quiet
    assert metrics.last_email_date == MAR[1]


def test_stored_count_keys_win_over_rates_and_decimals_are_read() -> None:
    """Postgres ``numeric`` comes back as Decimal; a stored count is used as it is."""
    previous = [
        SeriesPoint("emailsSent", MAR[1], Decimal("3")),
        SeriesPoint("openRate", MAR[1], Decimal("100")),  # would give 3
        SeriesPoint("uniqueOpens", MAR[1], Decimal("2")),
        SeriesPoint("totalRevenue", MAR[1], Decimal("0.1")),
        SeriesPoint("someFutureKey", MAR[1], Decimal("9")),
    ]

    metrics = compute_metrics({}, (MAR[2], MAR[2]), previous)

    assert metrics.totals["uniqueOpens"] == 2
    assert metrics.totals["totalRevenue"] == 0.1
    assert "someFutureKey" not in metrics.totals


@pytest.mark.parametrize(
    ("window_emails_day", "carried_emails", "previous_date", "expected"),
    [
        (None, False, None, None),  # nothing sent anywhere, no previous date
        (None, False, MAR[1], MAR[1]),  # a quiet window keeps the previous date
        (MAR[8], False, MAR[1], MAR[8]),  # a later send in the window wins
        (MAR[7], False, MAR[9], MAR[9]),  # the previous snapshot's later date wins
        (None, True, None, MAR[2]),  # a carried day that sent email counts
    ],
)
def test_last_email_date(
    window_emails_day: date | None, carried_emails: bool, previous_date: date | None, expected: date | None
) -> None:
    current = {day: DayTotals(revenue=1) for day in (MAR[7], MAR[8], MAR[9])}  # activity, no emails
    if window_emails_day is not None:
        current[window_emails_day] = DayTotals(emails=1)
    previous = [SeriesPoint("emailsSent", MAR[2], 4 if carried_emails else 0)]

    metrics = compute_metrics(current, GOLDEN_WINDOW, previous, previous_date)

    assert metrics.last_email_date == expected


# --- a snapshot's own activity and its history (contracts/supabase.md, "History") -----------------------


def test_own_activity_checks_its_window_like_compute_metrics() -> None:
    with pytest.raises(ValueError, match="starts after it ends"):
        OwnActivity((MAR[9], MAR[7]), {})
    with pytest.raises(ValueError, match="outside the window"):
        OwnActivity(GOLDEN_WINDOW, {MAR[6]: DayTotals(emails=1)})


def test_own_activity_on_a_history_is_compute_metrics_with_that_history() -> None:
    own = OwnActivity(GOLDEN_WINDOW, {MAR[8]: DAY_0306})
    history = History([SeriesPoint("emailsSent", MAR[5], 4), SeriesPoint("emailsSent", MAR[8], 9)], MAR[10])

    assert own.metrics(history) == compute_metrics({MAR[8]: DAY_0306}, GOLDEN_WINDOW, history.series, MAR[10])
    assert own.metrics(History()) == compute_metrics({MAR[8]: DAY_0306}, GOLDEN_WINDOW)


def test_a_window_rebuilt_from_its_own_series_gives_the_same_rows() -> None:
    """What refreshing a snapshot from its stored rows relies on: its window's series points rebuild
    the very day totals they were computed from, so the rows come out identical."""
    days = {
        MAR[7]: DAY_0306,
        MAR[8]: DayTotals(revenue=0.1 + 0.2, emails=3, unique_opens=1),
        MAR[9]: DayTotals(),
    }
    first = compute_metrics(days, GOLDEN_WINDOW)

    rebuilt = rebuild_days(first.series)

    assert rebuilt == days
    assert compute_metrics(rebuilt, GOLDEN_WINDOW) == first
