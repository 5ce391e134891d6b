"""Object-store fixtures: a Supabase Storage double with a store on it, and a local folder store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from klaviyo_dagster.storage.objects import LocalObjectStore
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster_tests.conftest import BUCKET, SERVICE_KEY
from klaviyo_dagster_tests.storage.stores import ACCOUNT, postgres_store, sqlite_store
from klaviyo_dagster_tests.storage.supabase_double import SupabaseStorageDouble

CLIENT_TIMEOUT_SECONDS = 0.3  # the double's "timeout" fault hangs much longer than this


@pytest.fixture
def supabase_store_factory(
    supabase_double: SupabaseStorageDouble,
) -> Iterator[Callable[..., SupabaseObjectStore]]:
    """``make(**overrides)`` → a SupabaseObjectStore on the double: 3 attempts, ~ms backoff, 0.3 s timeout."""
    made: list[SupabaseObjectStore] = []

    def make(**overrides: Any) -> SupabaseObjectStore:
        settings: dict[str, Any] = {
            "url": supabase_double.url,
            "service_role_key": SERVICE_KEY,
            "bucket": BUCKET,
            "timeout": CLIENT_TIMEOUT_SECONDS,
            "max_attempts": 3,
            "backoff_base": 0.001,
            "backoff_max": 0.01,
            **overrides,
        }
        store = SupabaseObjectStore(**settings)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def supabase_store(supabase_store_factory: Callable[..., SupabaseObjectStore]) -> SupabaseObjectStore:
    return supabase_store_factory()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects", BUCKET)


@pytest.fixture(params=["postgres", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IngestStore]:
    """A whole ingest store (files and tables) with the publishing tests' account, on each backend:
    the Storage double with PostgreSQL, and a local folder with SQLite."""
    if request.param == "sqlite":
        built = sqlite_store(tmp_path / "data")
    else:
        double = request.getfixturevalue("supabase_double")
        built = postgres_store(double.url, SERVICE_KEY, request.getfixturevalue("clean_postgres"))
    built.tables.ensure_account(ACCOUNT, "Acme")
    yield built
