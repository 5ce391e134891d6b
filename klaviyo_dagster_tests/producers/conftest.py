"""Fixtures for the producers: the tiny hand-made store behind the simulator, and a client on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from klaviyo_dagster.klaviyo.client import KlaviyoClient
from klaviyo_dagster.producers.account import account_timezone, conversion_metric_id
from klaviyo_dagster.producers.options import SyncOptions
from klaviyo_dagster.producers.window import Window
from klaviyo_dagster.sim import DEFAULT_API_KEY, SimulatorServer
from klaviyo_dagster_tests.klaviyo.conftest import FAST_RETRY
from klaviyo_dagster_tests.producers.tiny_store import DAYS, PARTITION_DATE, TinyStore


@pytest.fixture
def tiny_sim(simulator_factory, monkeypatch: pytest.MonkeyPatch) -> SimulatorServer:
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    monkeypatch.delenv("SHOPIFY_PLACED_ORDER_METRIC_ID", raising=False)
    return simulator_factory(account_factory=TinyStore)


@pytest.fixture
def tiny_client(tiny_sim: SimulatorServer) -> Iterator[KlaviyoClient]:
    with KlaviyoClient(DEFAULT_API_KEY, base_url=tiny_sim.base_url, retry=FAST_RETRY) as client:
        yield client


@pytest.fixture
def tiny_window(tiny_sim: SimulatorServer, tiny_client: KlaviyoClient) -> Window:
    window = Window.ending_on(PARTITION_DATE, DAYS, account_timezone(tiny_client).name)
    tiny_sim.reset()  # tests count the calls their producer makes, not the fixtures'
    return window


@pytest.fixture
def tiny_metric_id(tiny_sim: SimulatorServer, tiny_client: KlaviyoClient) -> str:
    metric_id = conversion_metric_id(tiny_client)
    tiny_sim.reset()
    return metric_id


@pytest.fixture
def tiny_options() -> SyncOptions:
    return SyncOptions(days=DAYS)
