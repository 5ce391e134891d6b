"""Shared fixtures: a Klaviyo simulator per test, and a factory for custom configurations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from klaviyo_dagster.sim import SimConfig, SimulatorServer


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
