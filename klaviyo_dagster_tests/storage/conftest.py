"""Object-store fixtures: a Supabase Storage double with a store on it, and a local folder store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from klaviyo_dagster.storage.objects import LocalObjectStore
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster_tests.storage.supabase_double import SupabaseStorageDouble

# Obviously fake, and distinctive enough to search every message and log line for.
SERVICE_KEY = "sb-test-service-role-" + "5ecre7" * 6
BUCKET = "preauth-uploads"
# The double's limit is far below the store's (50 MB), so a server-side 413 is cheap to provoke.
DOUBLE_MAX_OBJECT_BYTES = 64 * 1024
CLIENT_TIMEOUT_SECONDS = 0.3  # the double's "timeout" fault hangs much longer than this


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
