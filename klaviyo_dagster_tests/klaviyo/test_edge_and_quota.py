"""Pages from Klaviyo's edge (CDN) and 429s whose wait is only in the body, over real HTTP.

The rules are those of ``../shared/contracts/klaviyo-api.md`` ("Errors", "Rate limits"): a 403 or 5xx
that is not a JSON:API error document comes from the CDN and is retried like a 5xx; the API's own
JSON 403 is a missing scope and is not; a 429 without Retry-After is waited out as its body says.
No test here measures wall-clock time: waits are read from the client's stats.
"""

from __future__ import annotations

from http import HTTPStatus

import httpx
import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient, RetryPolicy, parse_throttled_wait
from klaviyo_dagster.klaviyo.errors import (
    KlaviyoAuthError,
    KlaviyoRequestError,
    KlaviyoThrottledError,
    KlaviyoUnavailableError,
)
from klaviyo_dagster.sim import DEFAULT_API_KEY, FaultSpec, SimulatorServer
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY, RecordingTransport

SCALE = 0.01  # client seconds per Klaviyo second: a body's "2 seconds" becomes 20 ms


def client_for(sim: SimulatorServer, **kwargs: object) -> KlaviyoClient:
    options: dict = {"retry": FAST_RETRY, **kwargs}
    return KlaviyoClient(DEFAULT_API_KEY, base_url=sim.base_url, **options)


# --- the edge (CDN) --------------------------------------------------------------------------------


def test_one_html_403_from_the_edge_is_retried_then_succeeds(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(html_403_first_n=1)})
    with client_for(sim) as client:
        assert client.get("/api/flows").data

    assert [r.status for r in sim.requests] == [403, 200]
    stats = client.stats.snapshot()["get_flows"]
    assert (stats.calls, stats.retries, stats.throttled) == (2, 1, 0)
    assert stats.backoff_seconds > 0


def test_a_persistent_html_403_fails_as_an_edge_outage_not_a_missing_scope(
    simulator_factory, klaviyo_env
) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(html_403_rate=1.0)})
    with (
        client_for(sim) as client,
        pytest.raises(KlaviyoUnavailableError) as failure,
    ):
        client.get("/api/flows")

    message = str(failure.value)
    assert "GET /api/flows failed after 4 attempts" in message
    assert "Klaviyo's edge (CDN) kept answering with a non-JSON 403 page" in message
    assert '"403 Forbidden"' in message  # the page's <title>
    assert "text/html" in message
    assert "scope" not in message
    assert failure.value.status == 403
    assert failure.value.errors == ()
    assert len(sim.requests) == FAST_RETRY.max_retries + 1
    assert client.stats.snapshot()["get_flows"].retries == FAST_RETRY.max_retries


def test_an_html_502_gateway_page_is_retried(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(html_5xx_first_n=2)})
    with client_for(sim) as client:
        assert client.get("/api/flows").data

    assert [r.status for r in sim.requests] == [502, 502, 200]
    assert client.stats.snapshot()["get_flows"].retries == 2


def test_persistent_html_gateway_pages_name_the_edge_and_the_page(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(html_5xx_rate=1.0)})
    with (
        client_for(sim) as client,
        pytest.raises(KlaviyoUnavailableError) as failure,
    ):
        client.get("/api/flows")

    status = failure.value.status
    assert status in (502, 503, 504)
    assert f"kept answering with a non-JSON {status} page" in str(failure.value)
    assert f'"{status} {HTTPStatus(status).phrase}"' in str(failure.value)
    assert len(sim.requests) == FAST_RETRY.max_retries + 1


def test_a_json_403_from_the_api_is_a_scope_error_at_once(simulator_factory, klaviyo_env) -> None:
    sim = simulator_factory(profiles=10, faults={"get_flows": FaultSpec(status=403)})
    with (
        client_for(sim) as client,
        pytest.raises(KlaviyoAuthError, match="the key lacks a scope") as failure,
    ):
        client.get("/api/flows")

    assert failure.value.status == 403
    assert failure.value.errors[0].code == "permission_denied"
    assert len(sim.requests) == 1
    assert client.stats.snapshot()["get_flows"].retries == 0


@pytest.mark.parametrize(("status", "error"), [(404, KlaviyoRequestError), (401, KlaviyoAuthError)])
def test_other_html_4xx_and_401_are_not_retried(status: int, error: type[Exception]) -> None:
    """Scripted wire: only a 403 or a 5xx can be an edge page; an HTML 404 or 401 stays one call."""
    calls: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, html=f"<html><title>{status}</title></html>")

    with (
        KlaviyoClient(
            f"pk_edge_{status}",
            base_url="https://a.klaviyo.test",
            enabled=True,
            retry=FAST_RETRY,
            transport=httpx.MockTransport(answer),
        ) as client,
        pytest.raises(error),
    ):
        client.get("/api/flows")
    assert len(calls) == 1


# --- 429 whose wait is only in the body ------------------------------------------------------------


@pytest.mark.parametrize("seconds", [1, 2, 2.5])
def test_a_429_without_retry_after_waits_what_its_body_says(simulator_factory, klaviyo_env, seconds) -> None:
    sim = simulator_factory(
        profiles=10,
        faults={"get_flows": FaultSpec(throttle_body_only_first_n=1, throttle_body_seconds=seconds)},
    )
    transport = RecordingTransport()
    with client_for(sim, time_scale=SCALE, transport=transport) as client:
        assert client.get("/api/flows").data

    assert [(e.status, e.retry_after) for e in transport.exchanges] == [(429, None), (200, None)]
    stats = client.stats.snapshot()["get_flows"]
    assert (stats.throttled, stats.retries, stats.backoff_seconds) == (1, 1, 0)
    expected = seconds * SCALE  # backoff alone would be at most FAST_RETRY's 10 ms
    assert expected <= stats.retry_after_seconds <= expected * 1.1 + 0.05 * SCALE


def test_a_429_whose_body_says_a_day_fails_at_once_as_the_daily_quota(simulator_factory, klaviyo_env) -> None:
    """86400 Klaviyo seconds at this scale are 0.86 s, over a 0.5 s cap: a client that slept it
    (or backed off instead) would have retried, succeeded and recorded the wait in its stats."""
    scale = 0.00001
    sim = simulator_factory(
        profiles=10,
        faults={"get_flows": FaultSpec(throttle_body_only_first_n=1, throttle_body_seconds=86400)},
    )
    retry = RetryPolicy(
        max_retries=3, backoff_base_seconds=0.01, backoff_cap_seconds=0.05, max_wait_seconds=0.5
    )
    with (
        client_for(sim, time_scale=scale, retry=retry) as client,
        pytest.raises(KlaviyoThrottledError, match="daily quota exhausted for GET /api/flows") as failure,
    ):
        client.get("/api/flows")

    assert "retry after 86400 s (throttled body)" in str(failure.value)
    assert failure.value.status == 429
    assert failure.value.errors[0].code == "throttled"
    assert "Expected available in 86400 seconds" in (failure.value.errors[0].detail or "")
    assert [r.status for r in sim.requests] == [429]
    stats = client.stats.snapshot()["get_flows"]
    assert (stats.calls, stats.throttled, stats.retries) == (1, 1, 0)
    assert stats.retry_after_seconds == stats.backoff_seconds == 0


def test_retry_after_wins_over_the_body() -> None:
    """Scripted wire: the header says 3 s, the body a day; the header is the wait."""
    answers = iter(
        [
            httpx.Response(
                429,
                headers={"Retry-After": "3"},
                json={
                    "errors": [
                        {"status": 429, "code": "throttled", "detail": "Expected available in 86400 seconds."}
                    ]
                },
            ),
            httpx.Response(200, json={"data": []}),
        ]
    )
    with KlaviyoClient(
        "pk_edge_header_wins",
        base_url="https://a.klaviyo.test",
        enabled=True,
        retry=FAST_RETRY,
        time_scale=SCALE,
        transport=httpx.MockTransport(lambda request: next(answers)),
    ) as client:
        assert client.get("/api/flows").data == []

    waited = client.stats.snapshot()["get_flows"].retry_after_seconds
    assert 3 * SCALE <= waited <= 3 * SCALE * 1.1 + 0.05 * SCALE


@pytest.mark.parametrize(
    ("detail", "seconds"),
    [
        ("Request was throttled. Expected available in 37 seconds.", 37.0),
        ("Request was throttled. Expected available in 1 second.", 1.0),
        ("Request was throttled. Expected available in 2.5 seconds.", 2.5),
        ("Daily limit reached; try again in 86400 seconds", 86400.0),
        ("Expected available in 12s", 12.0),
        ("expected AVAILABLE IN 7 Secs", 7.0),
        ("Request was throttled. Expected available in 1 minute.", 60.0),
        ("Expected available in 1,200 seconds.", 1200.0),
        ("Quota used up. Expected available in 2 hours", 7200.0),
        ("Request was throttled.", None),
        ("Expected available in a moment.", None),
        ("", None),
        (None, None),
    ],
)
def test_the_throttled_body_wait_is_read_from_several_wordings(
    detail: str | None, seconds: float | None
) -> None:
    assert parse_throttled_wait(detail) == seconds
