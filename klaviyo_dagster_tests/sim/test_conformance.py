"""Every simulator response, success or error, validates against Klaviyo's official OpenAPI spec.

The spec is loaded with two documented relaxations, both about the published file rather than
the API: (1) it uses ``oneOf`` for alternatives that overlap (``EmailSendOptions``,
``SMSSendOptions`` and ``PushSendOptions`` are identical objects), so *any* real campaign fails a
strict ``oneOf`` — we validate those as ``anyOf``; (2) it types ``links.next``/``links.prev`` as
strings although Klaviyo sends ``null`` on the last page (see contracts/klaviyo-api.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from klaviyo_dagster.klaviyo.spec import load_operations
from klaviyo_dagster.sim import SimConfig, SimulatorServer
from klaviyo_dagster_tests.sim.conftest import HEADERS, client_for, report_body

SPEC_PATH = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "klaviyo-openapi" / "stable-2026-07-15.json"
)
KLAVIYO = "https://a.klaviyo.com"


def _relax(node: Any) -> Any:
    if isinstance(node, dict):
        return {("anyOf" if key == "oneOf" else key): _relax(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_relax(item) for item in node]
    return node


@pytest.fixture(scope="module")
def openapi() -> OpenAPI:
    """The official spec (with the relaxations above); a missing file is a failure, not a skip."""
    if not SPEC_PATH.is_file():
        pytest.fail(
            f"Klaviyo OpenAPI spec not found at {SPEC_PATH.resolve()} (expected ../shared/klaviyo-openapi/)"
        )
    spec = _relax(json.loads(SPEC_PATH.read_text()))
    for name in ("prev", "next"):
        spec["components"]["schemas"]["CollectionLinks"]["properties"][name]["nullable"] = True
    from openapi_core import Config

    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    """One server for the module; only the report endpoints keep their real (tiny) limits."""
    roomy = {
        op: {"burst": 10_000, "steady": 10_000} for op in load_operations() if not op.startswith("query_")
    }
    with SimulatorServer(SimConfig(profiles=300, seed=3, rate_limit_overrides=roomy)) as server:
        yield server


def check(openapi: OpenAPI, response: httpx.Response, expected_status: int) -> dict[str, Any]:
    """Validate the request we sent and the response we got; return the body."""
    assert response.status_code == expected_status, response.text
    url = urlsplit(str(response.request.url))
    headers = dict(response.request.headers)
    body = response.request.content or None
    request = MockRequest(
        KLAVIYO,
        response.request.method,
        url.path.rstrip("/") or "/",
        args=dict(parse_qsl(url.query)),
        headers=headers,
        data=body,
        content_type="application/vnd.api+json",
    )
    if expected_status < 400:
        openapi.validate_request(request)
    openapi.validate_response(
        request,
        MockResponse(
            response.content,
            response.status_code,
            headers=dict(response.headers),
            content_type="application/vnd.api+json",
        ),
    )
    return response.json()


def test_collections_includes_and_sparse_fields_conform(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """The list endpoints, with the includes/fields the producers use, match the spec's schemas."""
    with client_for(sim) as api:
        for url in (
            "/api/accounts",
            "/api/metrics?fields[metric]=name,integration",
            "/api/flows?include=flow-actions,tags&page[size]=5",
            "/api/flows?fields[flow]=name,status,archived&filter=equals(status,'live')",
            "/api/campaigns?filter=equals(messages.channel,'email')&include=campaign-messages,tags&page[size]=3",
            "/api/campaigns?filter=equals(messages.channel,'sms')&include=campaign-messages",
            "/api/profiles?additional-fields[profile]=subscriptions,predictive_analytics&page[size]=100",
            "/api/profiles?fields[profile]=email,first_name,created,location.city&additional-fields[profile]=subscriptions",
        ):
            check(openapi, api.get(url), 200)


def test_every_single_resource_endpoint_conforms(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """get_flow (with definition), actions, messages, campaign messages/tags, lists and segments."""
    account = sim.account
    flow = next(f for f in account.flows if any(a.type == "send-sms" for a in f.actions))
    action = next(a for a in flow.actions if a.message)
    campaign = next(c for c in account.campaigns if c.tag_ids)
    sms_campaign = next(c for c in account.campaigns if c.channel == "sms")
    with client_for(sim) as api:
        check(
            openapi,
            api.get(f"/api/flows/{flow.id}?additional-fields[flow]=definition&include=flow-actions,tags"),
            200,
        )
        check(openapi, api.get(f"/api/flows/{flow.id}/flow-actions?page[size]=2"), 200)
        check(openapi, api.get(f"/api/flow-actions/{action.id}/flow-messages"), 200)
        for message in flow.messages:
            check(openapi, api.get(f"/api/flow-messages/{message.id}?include=flow-action"), 200)
        for item in (campaign, sms_campaign):
            check(openapi, api.get(f"/api/campaigns/{item.id}/campaign-messages?include=campaign"), 200)
        check(openapi, api.get(f"/api/campaigns/{campaign.id}/tags"), 200)
        check(
            openapi, api.get(f"/api/lists/{account.lists[0].id}?additional-fields[list]=profile_count"), 200
        )
        check(openapi, api.get(f"/api/segments/{account.segments[0].id}"), 200)


def test_every_page_of_a_paginated_endpoint_conforms(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """Following links.next verbatim yields valid pages to the end, where next is null."""
    with client_for(sim) as api:
        url: str | None = "/api/profiles?page[size]=100&additional-fields[profile]=subscriptions"
        pages = 0
        while url:
            doc = check(openapi, api.get(url), 200)
            url = doc["links"]["next"]
            pages += 1
        assert pages == 3


def test_reports_conform(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """The three report endpoints, with a custom window that has activity."""
    account = sim.account
    last = account.local_today() - timedelta(days=1)
    start, end = f"{last - timedelta(days=6)}T00:00:00+00:00", f"{last}T23:59:59+00:00"
    metric = account.placed_order_metric.id
    with client_for(sim) as api:
        series = check(
            openapi,
            api.post(
                "/api/flow-series-reports",
                json=report_body("flow-series-report", metric, start, end, interval="daily"),
            ),
            200,
        )
        assert series["data"]["attributes"]["results"]
        sim.reset()  # the 1/s report limit would throttle the next call
        check(
            openapi,
            api.post("/api/flow-values-reports", json=report_body("flow-values-report", metric, start, end)),
            200,
        )
        sim.reset()
        window = {"start": f"{last - timedelta(days=60)}T00:00:00+00:00", "end": end}
        body = report_body("campaign-values-report", metric, window["start"], window["end"])
        assert check(openapi, api.post("/api/campaign-values-reports", json=body), 200)["data"]["attributes"][
            "results"
        ]


def test_error_responses_conform(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """400 (bad param, bad filter, bad body), 401, 404, 410 and 429 bodies match the error schema."""
    sim.reset()
    with client_for(sim) as api:
        check(openapi, api.get("/api/flows?page[size]=51"), 400)
        check(openapi, api.get("/api/flows?filter=equals(nope,'x')"), 400)
        check(openapi, api.get("/api/campaigns"), 400)
        check(openapi, api.get("/api/flows/doesnotexist"), 404)
        check(openapi, api.get("/api/flows", headers={"revision": "2024-10-15"}), 410)
        check(
            openapi, api.post("/api/flow-values-reports", json={"data": {"type": "flow-values-report"}}), 400
        )
        check(
            openapi, api.post("/api/flow-values-reports", json={"data": {"type": "flow-values-report"}}), 429
        )
    unauthenticated = httpx.get(f"{sim.base_url}/api/flows", headers={"revision": HEADERS["revision"]})
    check(openapi, unauthenticated, 401)


def test_every_flow_definition_action_and_message_conforms(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """Definitions with every action type, their actions, and messages of every channel (variations too)."""
    account = sim.account
    channels: dict[str, str] = {}
    with client_for(sim) as api:
        for flow in account.flows:
            check(openapi, api.get(f"/api/flows/{flow.id}?additional-fields[flow]=definition"), 200)
            check(openapi, api.get(f"/api/flows/{flow.id}/flow-actions?page[size]=50"), 200)
            for message in flow.messages:
                key = f"{message.channel}:{'variation' if message.variation_of else 'main'}"
                channels.setdefault(key, message.id)
        experiments = [a for f in account.flows for a in f.actions if a.variations]
        for action in experiments[:4]:
            check(openapi, api.get(f"/api/flow-actions/{action.id}/flow-messages"), 200)
        for message_id in channels.values():
            check(openapi, api.get(f"/api/flow-messages/{message_id}?include=flow-action"), 200)
        removed = account.removed_messages[0]
        check(openapi, api.get(f"/api/flow-messages/{removed.id}"), 404)
    assert {"email:main", "email:variation", "sms:main", "push-notification:main", "whatsapp:main"} <= set(
        channels
    )
    assert {"webhook:main", "internal-alert:main"} <= set(channels)


def test_campaigns_of_every_status_conform(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """Every page of campaigns (every status), and the messages of a not-sent one of each status."""
    account = sim.account
    with client_for(sim) as api:
        url: str | None = (
            "/api/campaigns?filter=equals(messages.channel,'email')&include=campaign-messages,tags"
        )
        while url:
            url = check(openapi, api.get(url), 200)["links"]["next"]
        firsts = {c.status: c for c in reversed(account.campaigns) if c.channel == "email"}
        for campaign in firsts.values():
            check(openapi, api.get(f"/api/campaigns/{campaign.id}/campaign-messages?include=campaign"), 200)
    assert len(firsts) == 18


def test_profiles_with_missing_objects_and_odd_names_conform(openapi: OpenAPI, sim: SimulatorServer) -> None:
    """Every profile (every quirk is among 300), sorted by a non-default key, with both additional fields."""
    with client_for(sim) as api:
        url: str | None = (
            "/api/profiles?sort=-updated&page[size]=100&additional-fields[profile]=subscriptions,predictive_analytics"
        )
        while url:
            url = check(openapi, api.get(url), 200)["links"]["next"]
