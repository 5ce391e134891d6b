"""Fixtures for talking to the simulator the way a Klaviyo client would."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from klaviyo_dagster.producers.flows import FLOW_STATISTICS
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimulatorServer

HEADERS = {
    "Authorization": f"Klaviyo-API-Key {DEFAULT_API_KEY}",
    "revision": "2026-07-15",
    "accept": "application/vnd.api+json",
}


# Only a guard against a hung server, never a speed check: a big report on a busy 2-core machine
# took longer than 10 s and failed a landing. pytest-timeout (300 s) bounds the test itself.
CLIENT_TIMEOUT_SECONDS = 120


def client_for(sim: SimulatorServer) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, headers=HEADERS, timeout=CLIENT_TIMEOUT_SECONDS)


@pytest.fixture
def api(simulator: SimulatorServer) -> Iterator[httpx.Client]:
    """An authenticated httpx client bound to the ``simulator`` fixture."""
    with client_for(simulator) as client:
        yield client


def report_body(kind: str, metric_id: str, start: str, end: str, **extra: object) -> dict[str, object]:
    """A report request body with the statistics the producers ask for."""
    attributes: dict[str, object] = {
        "statistics": [*FLOW_STATISTICS, "bounced", "opens", "clicks"],
        "timeframe": {"start": start, "end": end},
        "conversion_metric_id": metric_id,
        **extra,
    }
    return {"data": {"type": kind, "attributes": attributes}}
