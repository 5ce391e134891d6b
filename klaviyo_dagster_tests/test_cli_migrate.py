"""``python -m klaviyo_dagster migrate`` on a fresh PostgreSQL database and on the local store."""

from __future__ import annotations

import sqlite3

import psycopg

from klaviyo_dagster.__main__ import main

TABLES = {"accounts", "uploads", "snapshots", "snapshot_totals", "snapshot_series", "account_integrations"}


def test_migrate_creates_the_contract_tables_in_postgres_and_is_harmless_twice(
    clean_postgres, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://project.supabase.test")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "sb-test-key")
    monkeypatch.setenv("SUPABASE_DB_URL", clean_postgres)
    with psycopg.connect(clean_postgres) as connection:
        connection.execute("drop table snapshot_series")  # as if this migration had never run

    assert main(["migrate"]) == 0
    assert main(["migrate"]) == 0

    assert "migrated postgres: 20261128000000_ingest_tables.sql" in capsys.readouterr().out
    with psycopg.connect(clean_postgres) as connection:
        found = {
            row[0]
            for row in connection.execute("select tablename from pg_tables where schemaname = 'public'")
        }
    assert found >= TABLES


def test_migrate_creates_the_local_sqlite_schema(tmp_path, monkeypatch, capsys) -> None:
    for name in ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_DB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KLAVIYO_DAGSTER_DATA_DIR", str(tmp_path))

    assert main(["migrate"]) == 0

    assert "migrated sqlite" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "ingest.sqlite3") as connection:
        found = {row[0] for row in connection.execute("select name from sqlite_master where type = 'table'")}
    assert found >= TABLES
