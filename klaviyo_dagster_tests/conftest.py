"""Shared fixtures: a Klaviyo simulator per test, and a factory for custom configurations."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from klaviyo_dagster.sim import DEFAULT_API_KEY, SimConfig, SimulatorServer
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.producers.tiny_store import TinyStore
from klaviyo_dagster_tests.storage.supabase_double import SupabaseStorageDouble

# The dashboard account that owns the tiny store in tests of the Dagster layer and the command line.
ACCOUNT_ID = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"
# The tiny store's rate-limit windows are 100x shorter, so tests that rerun partitions (three report
# calls) do not wait out Klaviyo's real 2-per-minute report limit; give clients the same time_scale.
TINY_TIME_SCALE = 0.01


def add_klaviyo_integration(
    tables: IngestTables,
    account_id: str,
    encrypted_api_key: str,
    *,
    enabled: bool = True,
    integration_id: str | None = None,
) -> None:
    """A Klaviyo row of the dashboard's ``account_integrations``, as the web app writes one
    (contracts/supabase.md); the account row must exist (``tables.ensure_account``)."""
    with tables._transaction() as tx:
        tx.execute(
            "insert into account_integrations (id, account_id, provider, encrypted_api_key, enabled) "
            "values (?, ?, 'klaviyo', ?, ?)",
            (integration_id or str(uuid.uuid4()), account_id, encrypted_api_key, enabled),
        )


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


ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def new_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its DSN), dropped at the end."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A database of its own for this test session, migrated for real, dropped at the end."""
    with new_database("klaviyo_test") as dsn:
        IngestTables.postgres(dsn).migrate()
        yield dsn


@pytest.fixture
def clean_postgres(postgres_dsn: str) -> str:
    """The session's database with every ingest table emptied."""
    with psycopg.connect(postgres_dsn) as connection:
        connection.execute(
            "truncate accounts, uploads, snapshots, snapshot_totals, snapshot_series, "
            "klaviyo_dagster.account_timezones, klaviyo_dagster.klaviyo_fetch_cache, "
            "klaviyo_dagster.klaviyo_report_calls cascade"
        )
    return postgres_dsn


# Obviously fake, and distinctive enough to search every message and log line for.
SERVICE_KEY = "sb-test-service-role-" + "5ecre7" * 6
BUCKET = "preauth-uploads"
# The double's limit is far below the store's (50 MB), so a server-side 413 is cheap to provoke.
DOUBLE_MAX_OBJECT_BYTES = 64 * 1024


@pytest.fixture(scope="session")
def supabase_double_server() -> Iterator[SupabaseStorageDouble]:
    """One Storage double per session: starting takes ~10 ms but uvicorn's shutdown ~200 ms."""
    with SupabaseStorageDouble(
        service_key=SERVICE_KEY, buckets=(BUCKET,), max_object_bytes=DOUBLE_MAX_OBJECT_BYTES
    ) as double:
        yield double


@pytest.fixture
def supabase_double(supabase_double_server: SupabaseStorageDouble) -> Iterator[SupabaseStorageDouble]:
    """The session's Storage double, emptied: no objects, requests or pending faults."""
    supabase_double_server.reset()
    yield supabase_double_server
    supabase_double_server.reset()
