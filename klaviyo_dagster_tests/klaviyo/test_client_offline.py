"""Client behaviour that needs exact control of the wire: scripted responses through httpx.MockTransport."""

from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Callable

import certifi
import httpx
import pytest

from klaviyo_dagster.klaviyo import client as client_module
from klaviyo_dagster.klaviyo.client import KlaviyoClient, RetryPolicy
from klaviyo_dagster.klaviyo.errors import KlaviyoConfigError, KlaviyoRequestError, KlaviyoUnavailableError

BASE = "https://a.klaviyo.test"
FAST = RetryPolicy(max_retries=2, backoff_base_seconds=0.001, backoff_cap_seconds=0.002)


def scripted(
    *steps: Callable[[httpx.Request], httpx.Response],
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering the n-th request with the n-th step; also returns the requests seen."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return steps[min(len(seen), len(steps)) - 1](request)

    return httpx.MockTransport(handler), seen


def ok(body: dict) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(200, json=body)


def raises(exc: type[httpx.TransportError]) -> Callable[[httpx.Request], httpx.Response]:
    def step(request: httpx.Request) -> httpx.Response:
        raise exc("simulated", request=request)

    return step


def make_client(transport: httpx.MockTransport, key: str | None = None) -> KlaviyoClient:
    # Pacing is shared per account across the process: a fresh key per test keeps tests independent.
    key = key or f"pk_offline_{uuid.uuid4().hex}"
    return KlaviyoClient(key, base_url=BASE, enabled=True, retry=FAST, transport=transport)


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.ConnectError, httpx.RemoteProtocolError])
def test_transport_failures_are_retried(failure: type[httpx.TransportError]) -> None:
    transport, seen = scripted(raises(failure), ok({"data": []}))
    with make_client(transport) as client:
        assert client.get("/api/flows").data == []
    assert len(seen) == 2
    assert client.stats.snapshot()["get_flows"].retries == 1


def test_every_request_carries_auth_revision_and_json_api_headers() -> None:
    transport, seen = scripted(ok({"data": []}))
    with make_client(transport, key="pk_offline_headers") as client:
        client.post("/api/flow-values-reports", {"data": {}})
    headers = seen[0].headers
    assert headers["authorization"] == "Klaviyo-API-Key pk_offline_headers"
    assert headers["revision"] == "2026-07-15"
    assert headers["accept"] == "application/vnd.api+json"
    assert headers["content-type"] == "application/vnd.api+json"


def test_report_pages_are_read_with_the_page_cursor_of_the_next_link() -> None:
    pages = [
        {
            "data": {"attributes": {"results": [1]}},
            "links": {"next": f"{BASE}/api/flow-values-reports?page_cursor=c2"},
        },
        {"data": {"attributes": {"results": [2]}}, "links": {"next": None}},
    ]
    transport, seen = scripted(ok(pages[0]), ok(pages[1]))
    body = {"data": {"type": "flow-values-report", "attributes": {}}}
    with make_client(transport) as client:
        results = [
            p.raw["data"]["attributes"]["results"]
            for p in client.iter_report_pages("/api/flow-values-reports", body)
        ]

    assert results == [[1], [2]]
    assert [r.url.params.get("page_cursor") for r in seen] == [None, "c2"]
    assert all(json.loads(r.content) == body for r in seen)


def test_a_next_link_to_another_host_is_refused_without_sending_the_key() -> None:
    transport, seen = scripted(
        ok({"data": [], "links": {"next": "https://evil.test/api/flows?page[cursor]=x"}})
    )
    with make_client(transport) as client, pytest.raises(KlaviyoRequestError, match="refusing to send"):
        list(client.iter_pages("/api/flows"))
    assert [r.url.host for r in seen] == ["a.klaviyo.test"]


def test_a_success_that_is_not_a_json_object_is_unavailable() -> None:
    transport, seen = scripted(lambda r: httpx.Response(200, json=[1, 2]))
    with make_client(transport) as client, pytest.raises(KlaviyoUnavailableError, match="not a JSON object"):
        client.get("/api/flows")
    assert len(seen) == FAST.max_retries + 1


def test_retry_after_given_as_an_http_date_is_understood() -> None:
    throttled = httpx.Response(
        429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, json={"errors": []}
    )
    transport, _ = scripted(lambda r: throttled, ok({"data": []}))
    with make_client(transport) as client:
        client.get("/api/flows")  # a date in the past means "now": no wait, one retry
    assert client.stats.snapshot()["get_flows"].throttled == 1


def test_a_base_url_that_is_not_http_is_a_config_error() -> None:
    with pytest.raises(KlaviyoConfigError, match="KLAVIYO_BASE_URL"):
        KlaviyoClient("pk_offline", base_url="a.klaviyo.com", enabled=True)


def test_clients_share_one_tls_context_that_checks_certificates_and_host_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run opens a client per file step: each used to load the certificate store again (~30 ms)."""
    built: list[dict] = []
    create = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: built.append(k) or create(*a, **k))
    for name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(name, raising=False)
    client_module._verified_tls.cache_clear()

    for _ in range(3):
        KlaviyoClient("pk_test", base_url=BASE).close()

    assert [call.get("cafile") for call in built] == [certifi.where()]  # as httpx's verify=True
    context = client_module._verified_tls()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    client_module._verified_tls.cache_clear()


def test_a_client_given_its_own_transport_builds_no_tls_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/bundle.pem")
    client_module._verified_tls.cache_clear()
    transport, _ = scripted(ok({"data": []}))

    KlaviyoClient("pk_test", base_url=BASE, transport=transport).close()  # no FileNotFoundError
    client_module._verified_tls.cache_clear()
