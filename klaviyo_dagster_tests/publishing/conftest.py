"""The publish tests run on the storage tests' whole ingest store, on each backend."""

from __future__ import annotations

from klaviyo_dagster_tests.storage import conftest as storage_fixtures

# A whole ingest store with the publishing tests' account: the Storage double with PostgreSQL, and a
# local folder with SQLite.
store = storage_fixtures.store
