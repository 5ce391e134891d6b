"""The ingest store: where a partition's files and rows go, chosen from the environment.

Supabase when its settings are present (Storage for the files, a direct Postgres connection for the
tables), else the local store under a data directory (a folder for the files, SQLite for the
tables), so the whole pipeline runs on one machine with no credentials.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klaviyo_dagster.storage.objects import LocalObjectStore, ObjectStore, bucket_from_env
from klaviyo_dagster.storage.supabase_objects import StorageConfigError, SupabaseObjectStore
from klaviyo_dagster.storage.tables import IngestTables

SUPABASE_URL_VARS = ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL")
SUPABASE_KEY_VAR = "SUPABASE_SERVICE_ROLE_KEY"
SUPABASE_DB_URL_VAR = "SUPABASE_DB_URL"
DATA_DIR_ENV_VAR = "KLAVIYO_DAGSTER_DATA_DIR"


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


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(DATA_DIR_ENV_VAR) or Path.cwd() / ".data")


def supabase_settings(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The Supabase url, service key and database URL, None when none is set; an error when only some are."""
    env = os.environ if env is None else env
    url = next((env[name] for name in SUPABASE_URL_VARS if env.get(name)), None)
    values = {
        "url": url,
        "service_role_key": env.get(SUPABASE_KEY_VAR),
        "db_url": env.get(SUPABASE_DB_URL_VAR),
    }
    if not any(values.values()):
        return None
    missing = [
        name
        for name, value in (
            ("SUPABASE_URL (or NEXT_PUBLIC_SUPABASE_URL)", values["url"]),
            (SUPABASE_KEY_VAR, values["service_role_key"]),
            (SUPABASE_DB_URL_VAR, values["db_url"]),
        )
        if not value
    ]
    if missing:
        raise StorageConfigError(
            f"Supabase is partly configured: set {', '.join(missing)} too, or unset all Supabase "
            "variables to use the local store."
        )
    return values  # type: ignore[return-value]


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


def ingest_store_from_env(env: Mapping[str, str] | None = None) -> IngestStore:
    env = os.environ if env is None else env
    settings = supabase_settings(env)
    bucket = bucket_from_env(env)
    if settings is None:
        return local_store(default_data_dir(env), bucket)
    return supabase_store(settings["url"], settings["service_role_key"], settings["db_url"], bucket)
