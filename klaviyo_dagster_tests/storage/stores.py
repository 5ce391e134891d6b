"""The two whole ingest stores the storage and publishing tests run on: the Storage double with
PostgreSQL, and a local folder with SQLite; and the account their tests publish for."""

from __future__ import annotations

from pathlib import Path

from klaviyo_dagster.storage.objects import LocalObjectStore
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster.storage.tables import IngestTables

ACCOUNT = "7d1e0c52-8f3b-4b7a-9a51-2a6f3c0d4e11"


def sqlite_store(root: Path) -> IngestStore:
    return IngestStore(
        objects=LocalObjectStore(root / "objects"),
        tables=IngestTables.sqlite(root / "ingest.sqlite3"),
        owns_accounts=True,
    )


def postgres_store(double_url: str, service_key: str, dsn: str) -> IngestStore:
    objects = SupabaseObjectStore(
        double_url, service_key, max_attempts=2, backoff_base=0.001, backoff_max=0.01
    )
    return IngestStore(objects=objects, tables=IngestTables.postgres(dsn), owns_accounts=False)
