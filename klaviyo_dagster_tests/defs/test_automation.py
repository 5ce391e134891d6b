"""Schedules and sensors with built contexts: the partitions and run keys they ask for."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import dagster as dg
import pytest

from klaviyo_dagster.accounts import encrypt_api_key
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.defs.schedules import ACCOUNT_TAG, klaviyo_nightly_schedule
from klaviyo_dagster.defs.sensors import (
    CATCH_UP_MAX_RUNS_PER_TICK,
    klaviyo_accounts_sensor,
    klaviyo_catch_up_sensor,
)
from klaviyo_dagster.defs.snapshot import SNAPSHOT

A, B = "aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"
TICK = datetime(2026, 3, 10, 3, 5, tzinfo=UTC)


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:  # a real (temporary) instance: schedules need its ref
        yield instance


def test_the_nightly_tick_asks_one_run_per_account_for_yesterday(instance) -> None:
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [B, A])
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK)

    requests = klaviyo_nightly_schedule(context)

    assert [(r.partition_key, r.run_key, r.tags[ACCOUNT_TAG]) for r in requests] == [
        (partition_key(A, date(2026, 3, 9)), f"nightly:{A}:2026-03-09", A),
        (partition_key(B, date(2026, 3, 9)), f"nightly:{B}:2026-03-09", B),
    ]


def test_the_nightly_tick_without_accounts_skips(instance) -> None:
    result = klaviyo_nightly_schedule(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK)
    )
    assert isinstance(result, dg.SkipReason)


def materialize_snapshot(instance: dg.DagsterInstance, account: str, day: date) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(SNAPSHOT, partition=str(partition_key(account, day)))
    )


def record_run(instance: dg.DagsterInstance, account: str, day: date) -> None:
    """A run that was launched for the partition (whatever became of it)."""
    tags = {"dagster/partition/account": account, "dagster/partition/date": day.isoformat()}
    instance.add_run(dg.DagsterRun(job_name="klaviyo_ingest", run_id=str(uuid.uuid4()), tags=tags))


def catch_up(instance, monkeypatch, today: date = date(2026, 3, 10)) -> list[dg.RunRequest] | dg.SkipReason:
    monkeypatch.setattr(
        "klaviyo_dagster.defs.sensors.newest_partition_date", lambda: date.fromordinal(today.toordinal() - 1)
    )
    result = klaviyo_catch_up_sensor(dg.build_sensor_context(instance=instance))
    return result if isinstance(result, dg.SkipReason) else list(result)


def test_catch_up_requests_exactly_the_missing_never_run_partitions(instance, monkeypatch) -> None:
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [A])
    for day in range(3, 10):  # the lookback: 03-03 .. 03-09
        if day not in (5, 8):
            materialize_snapshot(instance, A, date(2026, 3, day))
    record_run(instance, A, date(2026, 3, 8))  # ran and failed: left for a person to relaunch

    requests = catch_up(instance, monkeypatch)

    assert [(r.partition_key, r.run_key) for r in requests] == [
        (partition_key(A, date(2026, 3, 5)), f"catch-up:{A}:2026-03-05")
    ]
    assert requests[0].tags[ACCOUNT_TAG] == A


def test_catch_up_respects_its_cap_oldest_first(instance, monkeypatch) -> None:
    accounts = [str(uuid.UUID(int=n, version=4)) for n in range(1, 4)]
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, accounts)

    requests = catch_up(instance, monkeypatch)

    assert len(requests) == CATCH_UP_MAX_RUNS_PER_TICK  # 3 accounts x 7 days missing, capped
    days = [r.partition_key.keys_by_dimension["date"] for r in requests]
    assert days == sorted(days) and days[0] == "2026-03-03"


def test_catch_up_with_nothing_missing_skips(instance, monkeypatch) -> None:
    assert isinstance(catch_up(instance, monkeypatch), dg.SkipReason)


def test_the_accounts_sensor_adds_new_and_removes_gone_accounts(
    instance, clean_postgres, monkeypatch
) -> None:
    store = IngestStoreResource(supabase_url="https://x.test", service_role_key="k", db_url=clean_postgres)
    tables = store.get_store().tables
    monkeypatch.setenv("INTEGRATIONS_ENC_KEY", "enc")
    monkeypatch.delenv("KLAVIYO_ACCOUNT_ID", raising=False)
    for account, enabled in ((A, True), (B, False)):
        tables.ensure_account(account, "store")
        with tables._transaction() as tx:
            tx.execute(
                "insert into account_integrations (account_id, provider, encrypted_api_key, enabled) values (?, 'klaviyo', ?, ?)",
                (account, encrypt_api_key("pk_x", "enc"), enabled),
            )
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [B])  # was synced before being disabled

    result = klaviyo_accounts_sensor(dg.build_sensor_context(instance=instance), ingest_store=store)

    added, removed = result.dynamic_partitions_requests
    assert (type(added), list(added.partition_keys)) == (dg.AddDynamicPartitionsRequest, [A])
    assert (type(removed), list(removed.partition_keys)) == (dg.DeleteDynamicPartitionsRequest, [B])
