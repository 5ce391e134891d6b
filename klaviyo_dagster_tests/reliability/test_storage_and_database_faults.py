"""Storage and database faults during a whole partition run, on the production store (Supabase
Storage through the real client against the double, tables in a real PostgreSQL) and the local one.

The dashboard must never see a snapshot whose files are incomplete, and rerunning the partition
repairs it. Already covered: every Storage upload attempt failing with 503 mid-run
(``defs/test_supabase_store.py``), retries/timeouts/gateway pages of single Storage calls
(``storage/test_objects.py``), a processor error (``defs/test_snapshot.py``).
"""

from __future__ import annotations

import psycopg
import pytest

from klaviyo_dagster.defs.assets import INGEST_ASSET_KEYS
from klaviyo_dagster.defs.io_managers import IngestStoreIOManager
from klaviyo_dagster.defs.resources import INGEST_STORE_RESOURCE_KEY
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.publishing import publish as publish_module
from klaviyo_dagster.storage.objects import LocalObjectStore, StorageError
from klaviyo_dagster.storage.supabase_objects import SupabaseObjectStore
from klaviyo_dagster.storage.tables import IngestTables, Timeouts
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, BUCKET, SERVICE_KEY
from klaviyo_dagster_tests.defs.conftest import TINY_UPLOAD_ID
from klaviyo_dagster_tests.producers import test_flows
from klaviyo_dagster_tests.reliability.conftest import (
    FILE_NAMES,
    assert_every_materialization_matches_its_file,
    closed_port_dsn,
    data_rows,
    local_object,
    materialized,
    run_config,
    run_partition,
    step_events,
    supabase_resources,
)

OBJECTS = {f"{TINY_UPLOAD_ID}/{name}" for name in FILE_NAMES.values()}


@pytest.fixture
def production(resources, supabase_double, clean_postgres) -> dict:
    IngestTables.postgres(clean_postgres).ensure_account(ACCOUNT_ID, "Acme")
    return supabase_resources(resources, supabase_double.url, clean_postgres)


def stored(double, name: str) -> bytes:
    return double.bucket_objects(BUCKET)[f"{TINY_UPLOAD_ID}/{name}"][0]


def assert_repaired(result, double, tables: IngestTables) -> None:
    assert result.success
    assert set(double.bucket_objects(BUCKET)) == OBJECTS  # staging of this run and of dead runs gone
    assert stored(double, "flows.csv") == test_flows.EXPECTED.encode()
    assert_every_materialization_matches_its_file(result, lambda name: stored(double, name))
    assert tables.count_snapshots(TINY_UPLOAD_ID) == 1
    assert tables.upload(TINY_UPLOAD_ID)["status"] == "bound"
    assert all(check.passed for check in result.get_asset_check_evaluations())


def test_storage_timeouts_and_gateway_pages_during_uploads_are_retried(
    tiny_store_env, instance, production, supabase_double, clean_postgres
) -> None:
    supabase_double.fail_next(2, "timeout")
    supabase_double.fail_next(1, "gateway_html")

    result = run_partition(instance, production)

    assert_repaired(result, supabase_double, IngestTables.postgres(clean_postgres))
    faults = [r.fault for r in supabase_double.requests if r.fault]
    assert faults == ["timeout", "timeout", "gateway_html"]


def test_storage_timing_out_for_good_fails_that_file_leaves_no_snapshot_and_a_rerun_repairs(
    tiny_store_env, instance, production, supabase_double, clean_postgres
) -> None:
    supabase_double.fail_next(4, "timeout")  # every attempt of the first upload

    failed = run_partition(instance, production)

    tables = IngestTables.postgres(clean_postgres)
    assert not failed.success
    [node] = step_events(failed, "STEP_FAILURE")
    error = str(failed.failure_data_for_node(node).error)
    assert FILE_NAMES[node] in error and "timed out" in error.lower()
    assert node not in materialized(failed)
    assert f"{TINY_UPLOAD_ID}/{FILE_NAMES[node]}" not in supabase_double.bucket_objects(BUCKET)
    assert "snapshot" not in step_events(failed, "STEP_START")
    assert tables.upload(TINY_UPLOAD_ID) is None and tables.snapshot_for_upload(TINY_UPLOAD_ID) is None
    assert SERVICE_KEY not in error

    assert_repaired(run_partition(instance, production), supabase_double, tables)


def test_the_database_unreachable_at_the_snapshot_fails_it_without_a_partial_snapshot(
    tiny_store_env, instance, production, resources, supabase_double, clean_postgres
) -> None:
    files = run_partition(instance, production, selection=list(INGEST_ASSET_KEYS))
    assert files.success
    down = supabase_resources(resources, supabase_double.url, closed_port_dsn("pw-sentinel-5eb1"))

    failed = run_partition(instance, down, config={}, selection=[SNAPSHOT])

    tables = IngestTables.postgres(clean_postgres)
    assert not failed.success
    assert step_events(failed, "STEP_FAILURE") == ["snapshot"]
    error = str(failed.failure_data_for_node("snapshot").error)
    assert "Connection refused" in error or "connection failed" in error.lower(), error
    assert "pw-sentinel-5eb1" not in error
    assert "snapshot" not in materialized(failed)
    assert failed.get_asset_check_evaluations() == []
    assert tables.upload(TINY_UPLOAD_ID) is None and tables.snapshot_for_upload(TINY_UPLOAD_ID) is None

    assert_repaired(run_partition(instance, production), supabase_double, tables)


def test_the_connection_lost_inside_the_snapshot_transaction_leaves_nothing_half_written(
    tiny_store_env, instance, production, supabase_double, clean_postgres, monkeypatch
) -> None:
    def connection_lost(self, tx, snapshot_id, metrics) -> None:
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    with monkeypatch.context() as patch:
        # The files are in place by now; the transaction that makes the snapshot ready is open.
        patch.setattr(IngestTables, "_replace_derived", connection_lost)
        failed = run_partition(instance, production)

    tables = IngestTables.postgres(clean_postgres)
    assert step_events(failed, "STEP_FAILURE") == ["snapshot"]
    assert "server closed the connection" in str(failed.failure_data_for_node("snapshot").error)
    row = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row.status == "error"  # rolled back: never ready, so the dashboard does not show it
    assert row.metadata["publishing"]["dagster_run_id"] == failed.run_id
    with psycopg.connect(clean_postgres) as connection:
        assert connection.execute("select count(*) from snapshot_totals").fetchone() == (0,)

    assert_repaired(run_partition(instance, production), supabase_double, tables)


def ready_snapshot_matches_its_files(tables: IngestTables, read) -> None:
    """The contract's invariant for the partition: a ready snapshot's row counts are its files'."""
    row = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    if row is None or row.status != "ready":
        return
    for name in FILE_NAMES.values():
        assert row.metadata["rows"][name.removesuffix(".csv")] == data_rows(read(name)), name


@pytest.fixture
def storage_dies_after_flows(monkeypatch: pytest.MonkeyPatch):
    """Storage stops answering right after flows.csv was moved into place (both stores)."""

    def install(store_class) -> None:
        real = store_class.upload

        def upload(self, key, source, content_type="text/csv"):
            if key in (f"{TINY_UPLOAD_ID}/campaigns.csv", f"{TINY_UPLOAD_ID}/subscribers.csv"):
                raise StorageError("Storage unavailable (simulated outage)", status=503)
            return real(self, key, source, content_type)

        monkeypatch.setattr(store_class, "upload", upload)

    return install


def test_storage_dying_mid_publish_never_shows_a_ready_snapshot_over_mixed_files_and_a_rerun_repairs(
    tiny_store_env,
    instance,
    production,
    supabase_double,
    clean_postgres,
    storage_dies_after_flows,
    monkeypatch,
) -> None:
    assert run_partition(instance, production).success  # 3 days, ready
    tables = IngestTables.postgres(clean_postgres)
    with monkeypatch.context() as patch:
        patch.setattr(SupabaseObjectStore, "upload", SupabaseObjectStore.upload)  # restored afterwards
        storage_dies_after_flows(SupabaseObjectStore)
        failed = run_partition(instance, production, run_config(days=2))

    assert step_events(failed, "STEP_FAILURE") == ["snapshot"]
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID).status == "error"  # the dashboard falls back
    ready_snapshot_matches_its_files(tables, lambda name: stored(supabase_double, name))

    assert_repaired(run_partition(instance, production), supabase_double, tables)


def test_a_rerun_killed_after_flows_moved_into_place_on_the_local_store_leaves_no_ready_mix(
    tiny_store_env, instance, resources, data_dir, storage_dies_after_flows, monkeypatch
) -> None:
    assert run_partition(instance, resources).success
    tables = resources[INGEST_STORE_RESOURCE_KEY].get_store().tables
    with monkeypatch.context() as patch:
        patch.setattr(LocalObjectStore, "upload", LocalObjectStore.upload)
        storage_dies_after_flows(LocalObjectStore)
        failed = run_partition(instance, resources, run_config(days=2))

    assert step_events(failed, "STEP_FAILURE") == ["snapshot"]
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID).status == "error"
    ready_snapshot_matches_its_files(tables, lambda name: local_object(data_dir, name).read_bytes())

    repaired = run_partition(instance, resources)
    assert repaired.success and tables.count_snapshots(TINY_UPLOAD_ID) == 1
    ready_snapshot_matches_its_files(tables, lambda name: local_object(data_dir, name).read_bytes())
    assert sorted(p.name for p in local_object(data_dir, "x").parent.iterdir()) == sorted(FILE_NAMES.values())


def test_a_session_holding_the_upload_row_times_the_snapshot_out_with_the_old_files_still_shown(
    tiny_store_env, instance, production, supabase_double, clean_postgres, monkeypatch
) -> None:
    first = run_partition(instance, production)
    assert first.success
    before = {name: stored(supabase_double, name) for name in FILE_NAMES.values()}
    monkeypatch.setattr(
        publish_module, "DEFAULT_TIMEOUTS", Timeouts(lock_seconds=0.2, publish_lock_seconds=1)
    )

    with psycopg.connect(clean_postgres) as other:
        other.execute("select id from uploads where id = %s for update", (TINY_UPLOAD_ID,))
        failed = run_partition(instance, production, run_config(days=2))

    tables = IngestTables.postgres(clean_postgres)
    assert step_events(failed, "STEP_FAILURE") == ["snapshot"]
    assert "PublishTimedOut" in failed.failure_data_for_node("snapshot").user_failure_data.description
    row = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row.status == "ready" and row.metadata["dagster_run_id"] == first.run_id
    assert {name: stored(supabase_double, name) for name in FILE_NAMES.values()} == before


def test_report_values_that_do_not_parse_fail_the_snapshot_before_any_file_moves(
    tiny_store_env, instance, resources, data_dir
) -> None:
    first = run_partition(instance, resources)
    assert first.success
    before = local_object(data_dir, "campaigns.csv").read_bytes()
    files = run_partition(instance, resources, selection=list(INGEST_ASSET_KEYS))
    staged = local_object(data_dir, f".staging/{files.run_id}/campaigns.csv")
    header, *records = staged.read_text(encoding="utf-8").splitlines()
    staged.write_text(
        "\n".join([header, *(r.replace(",", ",NaN,", 1) for r in records)]) + "\n", encoding="utf-8"
    )

    failed = run_partition(instance, resources, config={}, selection=[SNAPSHOT])

    tables = resources[INGEST_STORE_RESOURCE_KEY].get_store().tables
    assert "StagedFileInvalid" in failed.failure_data_for_node("snapshot").user_failure_data.description
    row = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row.status == "ready" and row.metadata["dagster_run_id"] == first.run_id
    assert local_object(data_dir, "campaigns.csv").read_bytes() == before


def test_the_snapshot_of_a_run_publishes_that_runs_files_not_another_runs(
    tiny_store_env, instance, resources, data_dir
) -> None:
    other = run_partition(instance, resources, run_config(days=2), selection=list(INGEST_ASSET_KEYS))
    mine = run_partition(instance, resources)  # 3 days, while the other run's files are staged

    assert mine.success
    row = resources[INGEST_STORE_RESOURCE_KEY].get_store().tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert row.metadata["dagster_run_id"] == mine.run_id != other.run_id
    assert row.metadata["window"]["first_day"] == "2026-03-07"
    assert row.metadata["rows"]["flows"] == data_rows(local_object(data_dir, "flows.csv").read_bytes())


class KillSwitch:
    """While armed, the worker dies after flows.csv and campaigns.csv are stored, before subscribers.csv."""

    armed = False


@pytest.fixture
def kill_switch(monkeypatch: pytest.MonkeyPatch) -> KillSwitch:
    switch = KillSwitch()
    real = IngestStoreIOManager.handle_output

    def handle_output(self, context, obj) -> None:
        if switch.armed and context.asset_key.path[-1] == "subscribers_csv":
            raise RuntimeError("worker process killed (simulated)")
        real(self, context, obj)

    monkeypatch.setattr(IngestStoreIOManager, "handle_output", handle_output)
    return switch


def test_a_run_killed_between_files_makes_no_snapshot_and_a_rerun_repairs(
    tiny_store_env, instance, resources, data_dir, kill_switch
) -> None:
    kill_switch.armed = True
    failed = run_partition(instance, resources)

    tables = resources[INGEST_STORE_RESOURCE_KEY].get_store().tables
    assert step_events(failed, "STEP_FAILURE") == ["subscribers_csv"]
    assert "snapshot" not in step_events(failed, "STEP_START")
    assert set(materialized(failed)) == {"flows_csv", "campaigns_csv"}
    assert not local_object(data_dir, "subscribers.csv").exists()
    assert tables.snapshot_for_upload(TINY_UPLOAD_ID) is None

    kill_switch.armed = False  # the worker is healthy again
    repaired = run_partition(instance, resources)

    assert repaired.success
    assert tables.count_snapshots(TINY_UPLOAD_ID) == 1
    assert all(check.passed for check in repaired.get_asset_check_evaluations())


def test_a_rerun_killed_between_files_leaves_the_existing_snapshot_consistent_with_its_files(
    tiny_store_env, instance, resources, data_dir, kill_switch
) -> None:
    assert run_partition(instance, resources).success  # a 3-day window, snapshot ready
    tables = resources[INGEST_STORE_RESOURCE_KEY].get_store().tables
    kill_switch.armed = True

    failed = run_partition(instance, resources, run_config(days=2))  # rerun with another window, killed
    assert not failed.success

    visible = tables.snapshot_for_upload(TINY_UPLOAD_ID)
    assert visible is not None and visible.status == "ready"  # the dashboard still shows it
    flows_rows = data_rows(local_object(data_dir, "flows.csv").read_bytes())
    assert visible.metadata["rows"]["flows"] == flows_rows, "snapshot rows/window no longer match flows.csv"
