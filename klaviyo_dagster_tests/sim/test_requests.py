"""Auth, revision, routing and query validation: each bad request gets the right status and source."""

from __future__ import annotations

import httpx
import pytest

from klaviyo_dagster.sim import DEFAULT_API_KEY, SimulatorServer


def _error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    return response.json()["errors"][0]


def test_missing_or_unknown_key_is_401_and_never_echoed(simulator: SimulatorServer) -> None:
    """A client must see not_authenticated, and the key must not leak into the body or the log."""
    for headers in (
        {"revision": "2026-07-15"},
        {"revision": "2026-07-15", "Authorization": "Klaviyo-API-Key pk_wrong"},
    ):
        response = httpx.get(f"{simulator.base_url}/api/flows", headers=headers)
        assert _error(response, 401)["code"] == "not_authenticated"
        assert "pk_" not in response.text
    assert all(DEFAULT_API_KEY not in repr(r) for r in simulator.requests)


@pytest.mark.parametrize(
    ("revision", "status"),
    [(None, 400), ("15-07-2026", 400), ("2026-07-16", 400), ("2024-10-15", 410), ("2023-02-22", 410)],
)
def test_revision_header_is_checked(api: httpx.Client, revision: str | None, status: int) -> None:
    """Missing/malformed/unknown revisions are 400; retired (2024 and older) ones are 410."""
    headers = {"revision": revision} if revision else {}
    client = httpx.Client(
        base_url=str(api.base_url), headers={"Authorization": api.headers["Authorization"], **headers}
    )
    assert _error(client.get("/api/flows"), status)["source"] == {"parameter": "revision"}


def test_unknown_path_is_404_and_trailing_slash_is_accepted(api: httpx.Client) -> None:
    assert _error(api.get("/api/nothing-here"), 404)["code"] == "not_found"
    assert api.get("/api/flows/").status_code == 200


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/api/flows?fields[flow]=name,bogus", "fields[flow]"),
        ("/api/flows?include=campaigns", "include"),
        ("/api/flows?sort=colour", "sort"),
        ("/api/flows?page[size]=51", "page[size]"),
        ("/api/profiles?page[size]=0", "page[size]"),
        ("/api/profiles?additional-fields[profile]=everything", "additional-fields[profile]"),
        ("/api/flows?colour=blue", "colour"),
        ("/api/campaigns", "filter"),
        ("/api/campaigns?filter=equals(status,'Sent')", "filter"),
    ],
)
def test_invalid_query_parameters_are_400_with_source(api: httpx.Client, url: str, parameter: str) -> None:
    """Values outside the spec's enums/ranges name the offending parameter."""
    error = _error(api.get(url), 400)
    assert error["code"] == "invalid"
    assert error["source"] == {"parameter": parameter}


@pytest.mark.parametrize(
    "expression",
    [
        "equals(colour,'red')",  # unknown field
        "contains(status,'live')",  # operator not allowed for the field
        "equals(archived,'false')",  # wrong value type (boolean expected)
        "greater-than(created,'2026-01-01')",  # datetimes are bare, not strings
        "any(id,'abc')",  # list operator with a single value
        "or(equals(status,'live'),equals(status,'draft'))",  # only and()
        "equals(status,'live'",  # syntax
    ],
)
def test_invalid_filters_are_400(api: httpx.Client, expression: str) -> None:
    error = _error(api.get("/api/flows", params={"filter": expression}), 400)
    assert str(error["detail"]).startswith("Invalid filter provided")
    assert error["source"] == {"parameter": "filter"}


def test_profiles_created_accepts_only_strict_comparisons(api: httpx.Client) -> None:
    """Klaviyo allows only greater-than/less-than on profiles.created."""
    bad = api.get("/api/profiles", params={"filter": "greater-or-equal(created,2024-01-01T00:00:00Z)"})
    assert _error(bad, 400)["source"] == {"parameter": "filter"}


def test_filters_are_applied(api: httpx.Client, simulator: SimulatorServer) -> None:
    """and(), equals on strings/booleans and any() select exactly the matching flows."""
    live = {f.id for f in simulator.account.flows if f.status == "live" and not f.archived}
    doc = api.get("/api/flows", params={"filter": 'and(equals(status,"live"),equals(archived,false))'}).json()
    assert {d["id"] for d in doc["data"]} == live
    some = sorted(live)[:2]
    doc = api.get("/api/flows", params={"filter": f"any(id,[\"{some[0]}\",'{some[1]}'])"}).json()
    assert sorted(d["id"] for d in doc["data"]) == some
    metrics = api.get("/api/metrics", params={"filter": "equals(integration.name,'Shopify')"}).json()["data"]
    assert metrics and all(m["attributes"]["integration"]["name"] == "Shopify" for m in metrics)


def test_campaign_channel_filter_selects_channel(api: httpx.Client, simulator: SimulatorServer) -> None:
    sms = api.get("/api/campaigns", params={"filter": "equals(messages.channel,'sms')"}).json()["data"]
    expected = sum(c.channel == "sms" for c in simulator.account.campaigns)
    assert len(sms) == expected > 0


def test_report_body_errors(api: httpx.Client, simulator: SimulatorServer) -> None:
    """Schema and Klaviyo-rule violations in report bodies are 400 with a pointer."""
    account = simulator.account
    good = {
        "statistics": ["delivered"],
        "timeframe": {"key": "last_30_days"},
        "interval": "daily",
        "conversion_metric_id": account.placed_order_metric.id,
    }
    unsupported = next(m for m in account.metrics if not m.supports_conversions)
    cases = [
        ({**good, "statistics": ["colour"]}, "/data/attributes/statistics/0", None),
        ({**good, "interval": "hourly"}, "/data/attributes/interval", None),
        (
            {**good, "timeframe": {"start": "2025-01-01T00:00:00+00:00", "end": "2026-06-01T00:00:00+00:00"}},
            "/data/attributes/timeframe",
            None,
        ),
        ({**good, "group_by": ["flow_id", "send_channel"]}, "/data/attributes/group_by", None),
        ({**good, "filter": "greater-than(flow_id,'x')"}, "/data/attributes/filter", None),
        (
            {**good, "filter": f"contains-any(flow_id,{[str(i) for i in range(101)]})".replace("'", '"')},
            "/data/attributes/filter",
            None,
        ),
        (
            {**good, "conversion_metric_id": unsupported.id},
            "/data/attributes/conversion_metric_id",
            "does not support querying for values data",
        ),
        (
            {k: v for k, v in good.items() if k != "conversion_metric_id"},
            "/data/attributes/conversion_metric_id",
            None,
        ),
    ]
    for attributes, pointer, detail in cases:
        simulator.reset()  # reports allow 1 call/s; this test is about validation, not limits
        response = api.post(
            "/api/flow-series-reports",
            json={"data": {"type": "flow-series-report", "attributes": attributes}},
        )
        error = _error(response, 400)
        assert error["source"] == {"pointer": pointer}, (attributes, error)
        if detail:
            assert detail in str(error["detail"])
    simulator.reset()
    wrong_type = {"data": {"type": "flow-values-report", "attributes": good}}
    assert _error(api.post("/api/flow-series-reports", json=wrong_type), 400)["source"] == {
        "pointer": "/data/type"
    }
