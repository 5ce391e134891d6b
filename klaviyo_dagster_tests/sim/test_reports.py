"""Report numbers are internally consistent: series sum to values, rates agree with counts."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx

from klaviyo_dagster.sim import SimulatorServer
from klaviyo_dagster_tests.sim.conftest import client_for, report_body

COUNTS = (
    "recipients",
    "delivered",
    "opens_unique",
    "clicks_unique",
    "conversion_uniques",
    "bounced",
    "opens",
    "clicks",
)


def _report(api: httpx.Client, sim: SimulatorServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """All result rows of a report, following page_cursor links."""
    rows: list[dict[str, Any]] = []
    url: str | None = path
    while url:
        sim.reset()  # reports are limited to 1/s, 2/min; these tests are about numbers
        response = api.post(url, json=body)
        assert response.status_code == 200, response.text
        doc = response.json()
        rows += doc["data"]["attributes"]["results"]
        url = doc["links"]["next"]
    return rows


def _window(sim: SimulatorServer, days: int) -> tuple[str, str, date]:
    last = sim.account.local_today() - timedelta(days=1)
    return f"{last - timedelta(days=days - 1)}T00:00:00+00:00", f"{last}T23:59:59+00:00", last


def _cents(value: float) -> int:
    return round(value * 100)


def test_series_sums_equal_values(simulator: SimulatorServer, api: httpx.Client) -> None:
    """For every grouping, daily counts and revenue (in cents) add up exactly to the values report."""
    start, end, _ = _window(simulator, 14)
    metric = simulator.account.placed_order_metric.id
    series = _report(
        api,
        simulator,
        "/api/flow-series-reports",
        report_body("flow-series-report", metric, start, end, interval="daily"),
    )
    values = _report(
        api, simulator, "/api/flow-values-reports", report_body("flow-values-report", metric, start, end)
    )
    key = lambda row: tuple(sorted(row["groupings"].items()))  # noqa: E731
    by_group = {key(row): row["statistics"] for row in values}
    assert {key(row) for row in series} == set(by_group)
    for row in series:
        total = by_group[key(row)]
        for name in COUNTS:
            assert sum(row["statistics"][name]) == total[name]
        assert sum(_cents(v) for v in row["statistics"]["conversion_value"]) == _cents(
            total["conversion_value"]
        )
        if total["delivered"]:
            assert total["open_rate"] == total["opens_unique"] / total["delivered"]
            assert 0 <= total["click_rate"] <= 1


def test_series_shape(simulator: SimulatorServer, api: httpx.Client) -> None:
    """date_times are local midnights; some arrays are shorter (trailing days omitted), none longer."""
    start, end, last = _window(simulator, 30)
    response = api.post(
        "/api/flow-series-reports",
        json=report_body(
            "flow-series-report", simulator.account.placed_order_metric.id, start, end, interval="daily"
        ),
    )
    doc = response.json()["data"]["attributes"]
    assert len(doc["date_times"]) == 30
    assert (
        doc["date_times"][-1]
        == datetime(last.year, last.month, last.day, tzinfo=simulator.account.tz).isoformat()
    )
    lengths = {len(row["statistics"]["delivered"]) for row in doc["results"]}
    assert max(lengths) == 30 and min(lengths) < 30


def test_end_is_rounded_up_to_the_hour(simulator: SimulatorServer, api: httpx.Client) -> None:
    """An end at 00:00:00 includes the first hour of that day (Klaviyo's rounding), so it can differ."""
    _, _, last = _window(simulator, 1)
    metric = simulator.account.placed_order_metric.id
    totals = []
    for end in (f"{last}T23:59:59+00:00", f"{last + timedelta(days=1)}T00:00:00+00:00"):
        rows = _report(
            api,
            simulator,
            "/api/flow-values-reports",
            report_body("flow-values-report", metric, f"{last - timedelta(days=29)}T00:00:00+00:00", end),
        )
        totals.append(sum(r["statistics"]["recipients"] for r in rows))
    assert totals[1] >= totals[0]


def test_campaign_activity_only_after_send(simulator: SimulatorServer, api: httpx.Client) -> None:
    """Campaigns report nothing for windows that end before they were sent, and only sent ones appear."""
    account = simulator.account
    start, end, _ = _window(simulator, 60)
    rows = _report(
        api,
        simulator,
        "/api/campaign-values-reports",
        report_body("campaign-values-report", account.placed_order_metric.id, start, end),
    )
    assert rows
    for row in rows:
        campaign = account.campaigns_by_id[row["groupings"]["campaign_id"]]
        assert campaign.send_time is not None
        assert row["groupings"]["campaign_message_id"] == campaign.message_id
    target = account.campaigns_by_id[rows[0]["groupings"]["campaign_id"]]
    assert target.send_time is not None
    before = target.send_time.astimezone(account.tz).date() - timedelta(days=1)
    body = report_body(
        "campaign-values-report",
        account.placed_order_metric.id,
        f"{before - timedelta(days=5)}T00:00:00+00:00",
        f"{before}T23:59:59+00:00",
        filter=f'equals(campaign_id,"{target.id}")',
    )
    assert _report(api, simulator, "/api/campaign-values-reports", body) == []


def test_report_results_paginate_with_page_cursor(simulator_factory: Any) -> None:
    """A large account's values report spans several pages linked by page_cursor."""
    sim = simulator_factory(profiles=10, flows=250, seed=2)
    start, end, _ = _window(sim, 60)
    with client_for(sim) as api:
        first = api.post(
            "/api/flow-values-reports",
            json=report_body("flow-values-report", sim.account.placed_order_metric.id, start, end),
        ).json()
        assert len(first["data"]["attributes"]["results"]) == 500
        assert "page_cursor=" in first["links"]["next"]
        rows = _report(
            api,
            sim,
            "/api/flow-values-reports",
            report_body("flow-values-report", sim.account.placed_order_metric.id, start, end),
        )
    assert len(rows) > 500
    assert len({tuple(sorted(r["groupings"].items())) for r in rows}) == len(rows)


def test_same_seed_gives_identical_bytes(simulator_factory: Any) -> None:
    """Two servers with the same config answer byte for byte the same (links differ only by port)."""
    bodies = []
    for _ in range(2):
        sim = simulator_factory(profiles=50, seed=11, anchor=date(2026, 7, 1))
        with client_for(sim) as api:
            start, end, _ = _window(sim, 7)
            out = [
                api.get(url).text.replace(sim.base_url, "")
                for url in (
                    "/api/flows?include=flow-actions",
                    "/api/profiles?additional-fields[profile]=subscriptions",
                    "/api/campaigns?filter=equals(messages.channel,'email')&include=campaign-messages,tags",
                )
            ]
            out.append(
                api.post(
                    "/api/flow-series-reports",
                    json=report_body(
                        "flow-series-report", sim.account.placed_order_metric.id, start, end, interval="daily"
                    ),
                ).text.replace(sim.base_url, "")
            )
        bodies.append(out)
    assert bodies[0] == bodies[1]
    other = simulator_factory(profiles=50, seed=12, anchor=date(2026, 7, 1))
    with client_for(other) as api:
        assert api.get("/api/flows?include=flow-actions").text.replace(other.base_url, "") != bodies[0][0]


def test_data_mix(simulator: SimulatorServer) -> None:
    """The synthetic account has the awkward cases the producers must handle."""
    account = simulator.account
    profiles = [account.profile(i) for i in range(account.profile_count)]
    # Some profiles come without subscriptions (as on real accounts): test_variety covers those.
    marketing = [p["subscriptions"]["email"]["marketing"] for p in profiles if "subscriptions" in p]
    assert any(p["email"] is None and p["phone_number"] for p in profiles)
    assert any(not m["can_receive_email_marketing"] for m in marketing)
    assert any(m["suppression"] for m in marketing)
    assert any(m["consent"] == "NEVER_SUBSCRIBED" for m in marketing)
    assert any(
        "First Active" in (p["properties"] or {}) or "first_active" in (p["properties"] or {})
        for p in profiles
    )
    names = [p["first_name"] + p["last_name"] for p in profiles]
    assert any("," in n for n in names) and any('"' in n for n in names) and any("\n" in n for n in names)
    live = [f for f in account.flows if f.status == "live" and not f.archived]
    assert 20 <= len(live) <= 30
    assert 120 <= sum(m.channel == "email" for f in account.flows for m in f.messages) <= 200
    placed = [m for m in account.metrics if m.name == "Placed Order"]
    assert {m.integration["name"] for m in placed} == {"Shopify", "WooCommerce"}
    assert len(account.metrics) == 80
