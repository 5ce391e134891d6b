"""The Klaviyo client against the simulator over real HTTP: paging, pacing, retries and errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

import klaviyo_dagster.klaviyo.client as client_module
from klaviyo_dagster.klaviyo.client import KlaviyoClient, RetryPolicy
from klaviyo_dagster.klaviyo.errors import (
    KlaviyoAuthError,
    KlaviyoDataError,
    KlaviyoRequestError,
    KlaviyoThrottledError,
    KlaviyoUnavailableError,
)
from klaviyo_dagster.sim import DEFAULT_API_KEY, FaultSpec
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY, RecordingTransport

EMAIL_CAMPAIGNS = {"filter": "equals(messages.channel,'email')"}


def placed_order_metric_id(client: KlaviyoClient) -> str:
    metrics = client.iter_resources("/api/metrics", {"fields[metric]": "name,integration"})
    return next(m["id"] for m in metrics if m["attributes"]["name"] == "Placed Order")


def flow_series_body(metric_id: str) -> dict:
    return {
        "data": {
            "type": "flow-series-report",
            "attributes": {
                "statistics": ["delivered", "opens_unique"],
                "timeframe": {"start": "2026-11-01T00:00:00", "end": "2026-11-07T23:59:59"},
                "interval": "daily",
                "conversion_metric_id": metric_id,
                "group_by": ["flow_id", "flow_message_id", "send_channel"],
            },
        }
    }


# --- pagination ------------------------------------------------------------------------------------


def test_profiles_are_read_exactly_once_across_pages(client: KlaviyoClient, simulator) -> None:
    ids = [p["id"] for p in client.iter_resources("/api/profiles", {"page[size]": "40"})]

    assert len(ids) == simulator.config.profiles
    assert len(set(ids)) == len(ids)


def test_next_links_are_followed_verbatim_without_readding_the_filter(
    client: KlaviyoClient, transport: RecordingTransport
) -> None:
    params = {"page[size]": "20", "filter": "greater-than(created,2000-01-01T00:00:00Z)"}
    pages = list(client.iter_pages("/api/profiles", params))

    assert len(pages) > 2
    requested = [e.url for e in transport.exchanges]
    assert requested[1:] == [page.next_url for page in pages[:-1]]
    for url in requested:
        assert [k for k, _ in parse_qsl(urlsplit(url).query)].count("filter") == 1
    assert pages[-1].next_url is None


def test_campaigns_with_includes_resolve_their_messages(client: KlaviyoClient) -> None:
    params = {**EMAIL_CAMPAIGNS, "include": "campaign-messages"}
    page = next(client.iter_pages("/api/campaigns", params))

    campaign = page.data[0]
    messages = list(page.related(campaign, "campaign-messages"))
    assert messages
    assert {m["type"] for m in messages} == {"campaign-message"}


# --- pacing and rate limits ----------------------------------------------------------------------

SCALE = 0.02  # Klaviyo's 1 s / 60 s windows become 20 ms / 1.2 s


def burst_of_flow_calls(client: KlaviyoClient, calls: int) -> int:
    """Fires ``calls`` concurrent calls; returns how many gave up on being throttled."""

    def one(_: int) -> int:
        try:
            client.get("/api/flows", {"page[size]": "1"})
        except KlaviyoThrottledError:
            return 1
        return 0

    with ThreadPoolExecutor(max_workers=6) as pool:
        return sum(pool.map(one, range(calls)))


def test_pacing_keeps_a_burst_on_an_s_tier_endpoint_free_of_429s(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, time_scale=SCALE)
    with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, time_scale=SCALE, retry=FAST_RETRY) as client:
        gave_up = burst_of_flow_calls(client, calls=130)  # over two steady windows of 60 calls

    stats = client.stats.snapshot()["get_flows"]
    assert gave_up == 0
    assert [r.status for r in sim.requests].count(429) == 0
    assert stats.calls == 130
    assert stats.throttled == 0
    assert stats.paced_seconds > 0  # the steady limit was reached and pacing held the calls back


def test_without_pacing_the_same_burst_is_throttled(simulator_factory, klaviyo_env) -> None:
    """The control for the test above: a client that believes windows are tiny meets 429s."""
    sim = simulator_factory(profiles=10, time_scale=SCALE)
    with KlaviyoClient(
        DEFAULT_API_KEY, base_url=sim.base_url, time_scale=SCALE / 1000, retry=FAST_RETRY
    ) as client:
        burst_of_flow_calls(client, calls=80)

    assert client.stats.snapshot()["get_flows"].throttled > 0
    assert [r.status for r in sim.requests].count(429) > 0


def test_retry_after_is_honoured(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(
        profiles=10, time_scale=SCALE, faults={"get_flows": FaultSpec(retry_after_storm=2)}
    )
    transport = RecordingTransport()
    with KlaviyoClient(
        DEFAULT_API_KEY, base_url=sim.base_url, time_scale=SCALE, retry=FAST_RETRY, transport=transport
    ) as client:
        document = client.get("/api/flows")

    assert document.data
    first, second, third = transport.exchanges
    assert (first.status, second.status, third.status) == (429, 429, 200)
    for throttled, following in ((first, second), (second, third)):
        assert following.sent_at - throttled.sent_at >= float(throttled.retry_after) * SCALE
    stats = client.stats.snapshot()["get_flows"]
    assert (stats.throttled, stats.retries) == (2, 2)
    assert stats.retry_after_seconds >= 2 * float(first.retry_after) * SCALE


def test_a_full_daily_quota_fails_at_once_instead_of_sleeping(
    simulator_factory, klaviyo_env, monkeypatch
) -> None:
    sim = simulator_factory(profiles=10, rate_limit_overrides={"query_flow_series": {"daily": 1}})
    with KlaviyoClient(
        DEFAULT_API_KEY, base_url=sim.base_url, retry=RetryPolicy(max_wait_seconds=60)
    ) as client:
        body = flow_series_body(placed_order_metric_id(client))
        client.post("/api/flow-series-reports", body)

        slept: list[float] = []
        monkeypatch.setattr(client_module.time, "sleep", slept.append)
        with pytest.raises(
            KlaviyoThrottledError, match="daily quota exhausted for POST /api/flow-series-reports"
        ):
            client.post("/api/flow-series-reports", body)  # Klaviyo's Retry-After says hours

    assert slept == []  # failed without sleeping
    assert [r.status for r in sim.requests if r.operation_id == "query_flow_series"] == [200, 429]
    assert client.stats.snapshot()["query_flow_series"].throttled == 1


# --- retries ---------------------------------------------------------------------------------------


def test_5xx_is_retried_until_it_succeeds(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(fail_first_n=2)})
    with KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY) as client:
        assert client.get("/api/flows").data

    assert [r.status for r in sim.requests] == [503, 503, 200]
    assert client.stats.snapshot()["get_flows"].retries == 2


def test_persistent_5xx_fails_after_a_bounded_number_of_retries(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(error_rate=1.0)})
    with (
        KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY) as client,
        pytest.raises(KlaviyoUnavailableError, match="GET /api/flows failed after 4 attempts") as failure,
    ):
        client.get("/api/flows")

    assert len(sim.requests) == FAST_RETRY.max_retries + 1
    assert failure.value.status in (500, 502, 503, 504)


def test_501_is_not_retried(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(status=501)})
    with (
        KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY) as client,
        pytest.raises(KlaviyoRequestError),
    ):
        client.get("/api/flows")
    assert len(sim.requests) == 1


def test_timeouts_are_retried_then_reported(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(timeout_rate=1.0)})
    retry = RetryPolicy(max_retries=1, backoff_base_seconds=0.01)
    with (
        KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=retry, timeout_seconds=0.3) as client,
        pytest.raises(KlaviyoUnavailableError, match="timed out"),
    ):
        client.get("/api/flows")
    assert client.stats.snapshot()["get_flows"].calls == 2


def test_malformed_json_is_retried_then_reported(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(malformed_json_rate=1.0)})
    with (
        KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, retry=FAST_RETRY) as client,
        pytest.raises(KlaviyoUnavailableError, match="unreadable body"),
    ):
        client.get("/api/flows")
    assert len(sim.requests) == FAST_RETRY.max_retries + 1


# --- errors that are not retried -------------------------------------------------------------------


def test_a_bad_request_is_not_retried_and_carries_klaviyos_details(client: KlaviyoClient, simulator) -> None:
    with pytest.raises(KlaviyoRequestError) as failure:
        client.get("/api/flows", {"filter": "equals(colour,'blue')"})

    error = failure.value
    assert len(simulator.requests) == 1
    assert error.status == 400
    assert error.endpoint == "GET /api/flows"
    assert error.errors and error.errors[0].code == "invalid"
    assert "Invalid filter" in (error.errors[0].detail or "")
    assert "GET /api/flows returned 400" in str(error)
    assert error.errors[0].detail in str(error)


def test_the_campaigns_channel_filter_is_required(client: KlaviyoClient) -> None:
    with pytest.raises(KlaviyoRequestError, match="400"):
        client.get("/api/campaigns")


def test_an_invalid_key_is_an_auth_error_with_a_hint(simulator, klaviyo_env) -> None:
    with (
        KlaviyoClient("pk_not_a_real_key", base_url=simulator.base_url, retry=FAST_RETRY) as client,
        pytest.raises(KlaviyoAuthError, match="KLAVIYO_API_KEY_PRIVATE") as failure,
    ):
        client.get("/api/accounts")
    assert failure.value.status == 401
    assert failure.value.errors[0].code == "not_authenticated"
    assert len(simulator.requests) == 1


def test_a_retired_revision_says_how_to_fix_it(simulator, klaviyo_env) -> None:
    with (
        KlaviyoClient(DEFAULT_API_KEY, base_url=simulator.base_url, revision="2024-02-15") as client,
        pytest.raises(KlaviyoRequestError, match="KLAVIYO_API_REVISION"),
    ):
        client.get("/api/flows")


def test_reports_validate_against_the_account(client: KlaviyoClient) -> None:
    body = flow_series_body(placed_order_metric_id(client))
    body["data"]["attributes"]["interval"] = "hourly"  # hourly allows at most 7 days: still fine
    assert client.post("/api/flow-series-reports", body).raw["data"]["attributes"]["date_times"]

    body["data"]["attributes"]["timeframe"] = {"start": "2026-01-01T00:00:00", "end": "2026-11-07T23:59:59"}
    with pytest.raises(KlaviyoRequestError) as failure:
        client.post("/api/flow-series-reports", body)
    assert failure.value.status == 400


def test_clients_of_one_account_pace_together(simulator_factory, klaviyo_env) -> None:
    """Klaviyo counts per account: two assets' clients in one process share the account's budget."""
    sim = simulator_factory(profiles=1, time_scale=SCALE)
    first, second = (
        KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, time_scale=SCALE, retry=FAST_RETRY)
        for _ in range(2)
    )
    with first, second:
        for _ in range(4):
            first.get("/api/accounts")  # 1 call/s burst: each client alone would send back to back
            second.get("/api/accounts")

    assert [r.status for r in sim.requests] == [200] * 8


def _repeating(kind: str) -> httpx.MockTransport:
    """Every page's next link (or report cursor) points back at a page already read."""

    def answer(request: httpx.Request) -> httpx.Response:
        if kind == "report":
            next_link = "https://a.klaviyo.com/api/flow-series-reports?page_cursor=SAME"
            return httpx.Response(200, json={"data": {"attributes": {}}, "links": {"next": next_link}})
        next_link = "https://a.klaviyo.com/api/profiles?page%5Bcursor%5D=SAME"
        return httpx.Response(200, json={"data": [], "links": {"next": next_link}})

    return httpx.MockTransport(answer)


def test_a_next_link_that_repeats_fails_rather_than_loops(klaviyo_env) -> None:
    with KlaviyoClient("pk_test", base_url="https://a.klaviyo.com", transport=_repeating("get")) as client:
        with pytest.raises(KlaviyoDataError, match="repeats a page already read"):
            list(client.iter_pages("/api/profiles"))
        assert client.stats.totals().calls == 2  # the first page, the link once: then it stops


def test_a_report_cursor_that_repeats_fails_before_spending_the_quota(klaviyo_env) -> None:
    with KlaviyoClient("pk_test", base_url="https://a.klaviyo.com", transport=_repeating("report")) as client:
        with pytest.raises(KlaviyoDataError, match="POST /api/flow-series-reports"):
            list(client.iter_report_pages("/api/flow-series-reports", {"data": {}}))
        assert client.stats.totals().calls == 2
