"""The fetch cache's table on both databases: one account and UTC day per cache, earlier days removed."""

from __future__ import annotations

from datetime import date, timedelta

import psycopg
import pytest

from klaviyo_dagster.storage.fetch_cache import FetchCache, FetchCacheNotMigrated, open_fetch_cache
from klaviyo_dagster.storage.store import IngestStore
from klaviyo_dagster.storage.tables import IngestTables, PostgresDialect

DAY = date(2026, 11, 30)


def test_documents_are_kept_by_account_day_and_key(store: IngestStore) -> None:
    dialect = store.tables.dialect
    cache = FetchCache(dialect, "account-a", DAY)
    cache.put("report:abc:2026-01-01:2026-02-01:UTC", {"results": [{"n": 1.5}], "date_times": ["x"]})
    cache.put("report:abc:2026-02-02:2026-03-01:UTC", {"results": []})
    cache.put("report:abd:2026-02-02:2026-03-01:UTC", {"results": []})
    cache.put("get:1", {"data": "first"})
    cache.put("get:1", {"data": "replaced"})
    FetchCache(dialect, "account-b", DAY).put("get:1", {"data": "other account"})
    FetchCache(dialect, "account-a", DAY + timedelta(days=1)).put("get:2", {"data": "next day"})

    assert cache.get("get:1") == {"data": "replaced"}
    assert cache.get("get:2") is None
    assert cache.keys("report:abc") == [
        "report:abc:2026-01-01:2026-02-01:UTC",
        "report:abc:2026-02-02:2026-03-01:UTC",
    ]
    assert cache.get("report:abc:2026-01-01:2026-02-01:UTC") == {"results": [{"n": 1.5}], "date_times": ["x"]}
    with pytest.raises(ValueError, match="letters, digits"):
        cache.keys("report:%")  # would match every key


def test_a_new_day_removes_only_that_accounts_earlier_days(store: IngestStore) -> None:
    dialect = store.tables.dialect
    FetchCache(dialect, "account-a", DAY - timedelta(days=1)).put("get:1", {"n": 1})
    FetchCache(dialect, "account-b", DAY - timedelta(days=1)).put("get:1", {"n": 2})

    today = open_fetch_cache(dialect, "account-a", today=DAY)

    assert today.get("get:1") is None
    assert FetchCache(dialect, "account-a", DAY - timedelta(days=1)).get("get:1") is None
    assert FetchCache(dialect, "account-b", DAY - timedelta(days=1)).get("get:1") == {"n": 2}


def test_an_unmigrated_database_names_the_fix(clean_postgres: str) -> None:
    with psycopg.connect(clean_postgres, autocommit=True) as connection:
        connection.execute("drop table klaviyo_dagster.klaviyo_fetch_cache")
    try:
        with pytest.raises(FetchCacheNotMigrated, match="python -m klaviyo_dagster migrate"):
            FetchCache(PostgresDialect(clean_postgres), "account-a", DAY).get("get:1")
    finally:
        IngestTables.postgres(clean_postgres).migrate()


def test_once_open_a_failing_cache_is_a_miss_and_never_fails_the_files(
    clean_postgres: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = open_fetch_cache(PostgresDialect(clean_postgres), "account-c", today=DAY)
    cache.put("get:1", {"n": 1})
    with psycopg.connect(clean_postgres, autocommit=True) as connection:
        connection.execute("drop table klaviyo_dagster.klaviyo_fetch_cache")
    try:
        assert cache.get("get:1") is None
        assert cache.keys("report:") == []
        cache.put("get:2", {"n": 2})
    finally:
        IngestTables.postgres(clean_postgres).migrate()
    assert "the fetch cache failed (FetchCacheNotMigrated)" in caplog.text
    assert clean_postgres not in caplog.text


def test_a_run_that_does_not_reuse_still_leaves_what_it_read(store: IngestStore) -> None:
    afresh = open_fetch_cache(store.tables.dialect, "account-d", today=DAY, reuse=False)
    afresh.put("get:1", {"n": 1})

    assert afresh.get("get:1") is None
    assert open_fetch_cache(store.tables.dialect, "account-d", today=DAY).get("get:1") == {"n": 1}
