"""Shared fixtures: a Klaviyo simulator per test, and a factory for custom configurations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer
from klaviyo_dagster_tests.producers.tiny_store import TinyStore

# The dashboard account that owns the tiny store in tests of the Dagster layer and the command line.
ACCOUNT_ID = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"
# The tiny store's rate-limit windows are 100x shorter, so tests that rerun partitions (three report
# calls) do not wait out Klaviyo's real 2-per-minute report limit; give clients the same time_scale.
TINY_TIME_SCALE = 0.01


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    """A fresh simulator (250 profiles, seed 1); starting one takes ~50 ms, so no sharing is needed."""
    with SimulatorServer(SimConfig(profiles=250, seed=1)) as sim:
        yield sim


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., SimulatorServer]]:
    """``simulator_factory(profiles=10, time_scale=0.01, ...)`` → a started server, stopped at teardown."""
    started: list[SimulatorServer] = []

    def make(**kwargs: Any) -> SimulatorServer:
        server = SimulatorServer(SimConfig(**kwargs)).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def tiny_store_env(simulator_factory, monkeypatch: pytest.MonkeyPatch) -> SimulatorServer:
    """The tiny store behind the simulator, and the environment of a deployment syncing it."""
    sim = simulator_factory(account_factory=TinyStore, time_scale=TINY_TIME_SCALE)
    for name in ("KLAVIYO_API_KEY_PRIVATE", "SHOPIFY_PLACED_ORDER_METRIC_ID", "KLAVIYO_API_REVISION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
    monkeypatch.setenv("KLAVIYO_BASE_URL", sim.base_url)
    monkeypatch.setenv("KLAVIYO_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", ACCOUNT_ID)
    return sim


@pytest.fixture
def klaviyo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Klaviyo enabled, and no key, base URL or revision leaking in from the machine."""
    for name in ("KLAVIYO_API_KEY_PRIVATE", "KLAVIYO_API_KEY", "KLAVIYO_BASE_URL", "KLAVIYO_API_REVISION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KLAVIYO_ENABLE", "true")
