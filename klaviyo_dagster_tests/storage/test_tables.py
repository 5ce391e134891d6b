"""The dashboard tables in real PostgreSQL (a fresh database per session) and in SQLite, same tests."""

from __future__ import annotations

import threading
from contextlib import closing
from datetime import date
from pathlib import Path

import psycopg
import pytest

from klaviyo_dagster.derived_rows import SeriesPoint, SnapshotMetrics
from klaviyo_dagster.storage.ids import nightly_upload_id
from klaviyo_dagster.storage.tables import IngestTables, MissingTable, SqliteDialect, UnknownAccount

ACCOUNT = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"
OTHER_ACCOUNT = "6c1d8b4f-3a5e-4d2b-8f9c-2e3d4c5b6a71"
D1, D2 = date(2026, 3, 8), date(2026, 3, 9)


@pytest.fixture(params=["postgres", "sqlite"])
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> IngestTables:
    if request.param == "postgres":
        made = IngestTables.postgres(request.getfixturevalue("clean_postgres"))
    else:
        made = IngestTables.sqlite(tmp_path / "ingest.sqlite3")
        made.migrate()
    made.ensure_account(ACCOUNT, "Acme")
    made.ensure_account(OTHER_ACCOUNT, "Other")
    return made


def metrics_for(day: date, revenue: float) -> SnapshotMetrics:
    series = [SeriesPoint("totalRevenue", day, revenue), SeriesPoint("emailsSent", day, 10.0)]
    return SnapshotMetrics(
        series=series, totals={"totalRevenue": revenue, "emailsSent": 10.0}, last_email_date=day
    )


def write(tables: IngestTables, day: date, revenue: float = 1.0, account: str = ACCOUNT) -> str:
    return tables.write_snapshot(
        upload_id=nightly_upload_id(account, day),
        account_id=account,
        metadata={"partition_date": day.isoformat(), "rows": {"flows": 3}},
        metrics=metrics_for(day, revenue),
    )


def test_migrations_are_harmless_on_an_existing_database(tables: IngestTables) -> None:
    write(tables, D1)
    assert tables.migrate()  # again, on tables that exist and hold rows
    assert tables.count_snapshots(nightly_upload_id(ACCOUNT, D1)) == 1


def test_a_snapshot_binds_its_upload_and_carries_the_contract_fields(tables: IngestTables) -> None:
    snapshot_id = write(tables, D1, revenue=12.5)

    upload_id = nightly_upload_id(ACCOUNT, D1)
    assert tables.upload(upload_id) == {"id": upload_id, "account_id": ACCOUNT, "status": "bound"}
    row = tables.snapshot_for_upload(upload_id)
    assert (row.id, row.label, row.status, row.last_email_date) == (
        snapshot_id,
        "Orchestrated Update",
        "ready",
        D1,
    )
    assert row.metadata == {"partition_date": "2026-03-08", "rows": {"flows": 3}}
    assert tables.totals(snapshot_id) == {"totalRevenue": 12.5, "emailsSent": 10.0}
    assert tables.series(snapshot_id) == [
        SeriesPoint("emailsSent", D1, 10.0),
        SeriesPoint("totalRevenue", D1, 12.5),
    ]


def test_a_rerun_updates_the_one_snapshot_and_replaces_its_derived_rows(tables: IngestTables) -> None:
    first = write(tables, D1, revenue=1.0)
    second = write(tables, D1, revenue=2.0)

    assert second == first
    assert tables.count_snapshots(nightly_upload_id(ACCOUNT, D1)) == 1
    assert tables.totals(first)["totalRevenue"] == 2.0
    assert len(tables.series(first)) == 2


def test_the_previous_snapshot_is_the_latest_earlier_partition_not_the_newest_row(
    tables: IngestTables,
) -> None:
    later = write(tables, D2)  # run first, as a nightly run would be before a backfill of D1
    earlier = write(tables, D1)

    assert tables.previous_snapshot(ACCOUNT, before=date(2026, 3, 10)).id == later
    assert tables.previous_snapshot(ACCOUNT, before=D2).id == earlier
    assert tables.previous_snapshot(ACCOUNT, before=D1) is None
    assert tables.previous_snapshot(OTHER_ACCOUNT, before=date(2026, 3, 10)) is None


def test_a_failed_write_leaves_nothing_behind(tables: IngestTables) -> None:
    broken = SnapshotMetrics(
        series=[SeriesPoint("totalRevenue", D1, float("nan"))] * 2, totals={}, last_email_date=D1
    )
    with pytest.raises(Exception):  # noqa: B017 - the duplicate series row violates the unique key
        tables.write_snapshot(
            upload_id=nightly_upload_id(ACCOUNT, D1), account_id=ACCOUNT, metadata={}, metrics=broken
        )

    assert tables.upload(nightly_upload_id(ACCOUNT, D1)) is None
    assert tables.snapshot_for_upload(nightly_upload_id(ACCOUNT, D1)) is None


def test_an_unknown_account_is_refused_by_the_foreign_key(tables: IngestTables) -> None:
    with pytest.raises(UnknownAccount, match="not in the dashboard's accounts table"):
        write(tables, D1, account="7d2e9c5a-4b6f-4e3c-9a0d-3f4e5d6c7b82")


def test_concurrent_runs_of_one_partition_make_one_snapshot(tables: IngestTables) -> None:
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(write(tables, D1))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(results)) == 1
    assert tables.count_snapshots(nightly_upload_id(ACCOUNT, D1)) == 1


def test_account_timezones_are_recorded_replaced_and_read_in_one_query(tables: IngestTables) -> None:
    assert tables.account_timezones() == {}
    tables.record_account_timezone(ACCOUNT, "UTC", "the key lacks the accounts:read scope (403)", "discovery")
    tables.record_account_timezone(OTHER_ACCOUNT, "Pacific/Auckland", None, "discovery")
    tables.record_account_timezone(ACCOUNT, "America/St_Johns", None, "run")  # a run read it again

    recorded = tables.account_timezones()

    assert {
        account: (row.timezone, row.fallback_reason, row.source) for account, row in recorded.items()
    } == {
        ACCOUNT: ("America/St_Johns", None, "run"),
        OTHER_ACCOUNT: ("Pacific/Auckland", None, "discovery"),
    }
    assert all(row.account_id == account and row.updated_at for account, row in recorded.items())


def test_this_projects_own_tables_stay_off_the_dashboards_public_schema(clean_postgres) -> None:
    tables = IngestTables.postgres(clean_postgres)
    with psycopg.connect(clean_postgres) as connection:
        public = {
            r[0] for r in connection.execute("select tablename from pg_tables where schemaname = 'public'")
        }
        own = {
            r[0]
            for r in connection.execute(
                "select tablename from pg_tables where schemaname = 'klaviyo_dagster'"
            )
        }
    assert own == {"account_timezones", "trigger_idempotency", "klaviyo_report_calls", "klaviyo_fetch_cache"}
    assert not own & public
    assert tables.account_timezones() == {}


def test_an_unmigrated_database_names_the_fix(clean_postgres) -> None:
    tables = IngestTables.postgres(clean_postgres)
    with psycopg.connect(clean_postgres) as connection:
        connection.execute("drop table klaviyo_dagster.account_timezones")
    try:
        with pytest.raises(MissingTable, match="python -m klaviyo_dagster migrate"):
            tables.account_timezones()
        with pytest.raises(MissingTable, match="python -m klaviyo_dagster migrate"):
            tables.record_account_timezone(ACCOUNT, "UTC", None, "run")
    finally:
        tables.migrate()
    assert tables.account_timezones() == {}


def test_two_processes_opening_a_new_local_database_at_once_both_succeed(tmp_path) -> None:
    """Switching a new SQLite file to WAL from two connections at once answers "database is locked"
    without waiting (6 times in 200 before the retry): two trigger processes met it on first use."""
    failures: list[BaseException] = []

    def open_and_write(path: Path, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            with closing(SqliteDialect(path).connect()) as connection:
                connection.execute("create table if not exists t (k text primary key)")
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    for trial in range(200):
        barrier = threading.Barrier(2)
        path = tmp_path / f"ingest-{trial}.sqlite"
        threads = [threading.Thread(target=open_and_write, args=(path, barrier)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert failures == []
