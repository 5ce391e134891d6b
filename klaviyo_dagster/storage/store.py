"""The ingest store: where a partition's files and rows go (``environment.ingest_store`` chooses).

Supabase when its settings are present (Storage for the files, a direct Postgres connection for the
tables), else the local store under a data directory (a folder for the files, SQLite for the
tables), so the whole pipeline runs on one machine with no credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klaviyo_dagster.storage.objects import LocalObjectStore, ObjectStore
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster.storage.tables import IngestTables


@dataclass(frozen=True)
class IngestStore:
    objects: ObjectStore
    tables: IngestTables
    # The local store owns its accounts table; in Supabase the dashboard does.
    owns_accounts: bool

    def describe(self) -> str:
        return f"objects {self.objects.describe()}, tables {self.tables.describe()}"

    def close(self) -> None:
        """Closes what the store opened (Supabase Storage's HTTP client); the tables open a
        connection per operation and hold none."""
        close = getattr(self.objects, "close", None)
        if close is not None:
            close()


def local_store(data_dir: Path, bucket: str) -> IngestStore:
    """The embedded default; it owns its SQLite file and creates the schema on first write."""
    return IngestStore(
        objects=LocalObjectStore(data_dir / "objects", bucket),
        tables=IngestTables.sqlite(data_dir / "ingest.sqlite3"),
        owns_accounts=True,
    )


def supabase_store(
    url: str, service_role_key: str, db_url: str, bucket: str, **storage_settings: Any
) -> IngestStore:
    """Supabase Storage and the dashboard's Postgres; ``storage_settings`` go to
    ``SupabaseObjectStore`` (``timeout``, ``max_attempts``, ``backoff_base``, ``backoff_max``)."""
    return IngestStore(
        objects=SupabaseObjectStore(url, service_role_key, bucket, **storage_settings),
        tables=IngestTables.postgres(db_url),
        owns_accounts=False,
    )
