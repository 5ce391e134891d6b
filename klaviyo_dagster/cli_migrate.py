"""``python -m klaviyo_dagster migrate``: create the dashboard's tables where they are missing.

Against Supabase (``SUPABASE_DB_URL`` set) it applies ``supabase/migrations/*.sql``, which only
create what does not exist yet; locally it creates the SQLite schema under the data directory.
"""

from __future__ import annotations

import sys
from typing import TextIO

from klaviyo_dagster.storage.store import ingest_store_from_env


def run(out: TextIO | None = None) -> int:
    out = out or sys.stdout
    store = ingest_store_from_env()
    applied = store.tables.migrate()
    print(f"migrated {store.tables.describe()}: {', '.join(applied)}", file=out)
    return 0
