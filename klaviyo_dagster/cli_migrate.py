"""``python -m klaviyo_dagster migrate``: create the dashboard's tables where they are missing.

Against Supabase (``SUPABASE_DB_URL`` set) it applies the package's ``storage/migrations/*.sql``
(also at ``supabase/migrations/`` in a checkout), which only create what does not exist yet; locally
it creates the SQLite schema under the data directory. A configuration or database error prints
one line saying what to fix (never the connection string's secrets) and exits 2.
"""

from __future__ import annotations

import sys
from typing import TextIO

import psycopg

from klaviyo_dagster import environment
from klaviyo_dagster.redaction import DatabaseConnectionError, redact_dsn_message
from klaviyo_dagster.storage.supabase_objects import StorageConfigError


def run(out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Migrates the configured store; returns the exit status (0, or 2 with the reason on ``err``)."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        store = environment.ingest_store()
        applied = store.tables.migrate()
    except (StorageConfigError, DatabaseConnectionError, FileNotFoundError) as exc:
        print(f"migrate: {exc}", file=err)
        return 2
    except OSError as exc:  # the local store's folder: a file in the way, no permission, ...
        print(
            f"migrate: cannot write the local store under {environment.data_dir()} "
            f"(KLAVIYO_DAGSTER_DATA_DIR): {exc.strerror or type(exc).__name__}",
            file=err,
        )
        return 2
    except psycopg.Error as exc:  # connected, then refused: permissions, a conflicting object, ...
        detail = redact_dsn_message(str(exc), _db_url())
        print(f"migrate: the database refused a migration ({type(exc).__name__}: {detail})", file=err)
        return 2
    print(f"migrated {store.tables.describe()}: {', '.join(applied)}", file=out)
    return 0


def _db_url() -> str:
    """The configured database URL, whose password a message must not quote."""
    try:
        settings = environment.supabase_settings()
    except StorageConfigError:
        return ""
    return settings.db_url if settings else ""
