"""Fixtures for testing the Klaviyo client: a client on the simulator and a transport that records."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient, RetryPolicy

FAST_RETRY = RetryPolicy(max_retries=3, backoff_base_seconds=0.01, backoff_cap_seconds=0.05)


@dataclass(frozen=True)
class Exchange:
    sent_at: float
    url: str
    status: int | None  # None when the transport raised
    retry_after: str | None


class RecordingTransport(httpx.HTTPTransport):
    """A real HTTP transport that also remembers every exchange, as the client saw it."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent_at = time.monotonic()
        try:
            response = super().handle_request(request)
        except httpx.TransportError:
            self._record(Exchange(sent_at, str(request.url), None, None))
            raise
        self._record(
            Exchange(sent_at, str(request.url), response.status_code, response.headers.get("retry-after"))
        )
        return response

    def _record(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)


@pytest.fixture
def transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def client(simulator, transport: RecordingTransport, klaviyo_env: None) -> Iterator[KlaviyoClient]:
    from klaviyo_dagster.sim import DEFAULT_API_KEY

    with KlaviyoClient(
        DEFAULT_API_KEY, base_url=simulator.base_url, retry=FAST_RETRY, transport=transport
    ) as client:
        yield client
