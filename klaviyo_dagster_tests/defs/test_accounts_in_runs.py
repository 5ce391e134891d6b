"""Accounts from the dashboard's table in real runs: each run uses its account's own key, a broken
key fails that account alone, and the run status sensors write last_run_at / last_error."""

from __future__ import annotations

import dagster as dg
import pytest

from klaviyo_dagster.accounts import encrypt_api_key
from klaviyo_dagster.defs.assets import INGEST_ASSETS
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.sensors import _ingest_account, klaviyo_run_failed, klaviyo_run_succeeded
from klaviyo_dagster.sim import DEFAULT_API_KEY
from klaviyo_dagster_tests.conftest import add_klaviyo_integration
from klaviyo_dagster_tests.producers.tiny_store import PARTITION_DATE

GOOD, BROKEN = "aaaaaaaa-0000-4000-8000-00000000000a", "bbbbbbbb-0000-4000-8000-00000000000b"
ENCRYPTION_KEY = "integrations-test-key"
FLOWS_ONLY = {"ops": {"flows_csv": {"config": {"days": 3}}}}


@pytest.fixture
def two_accounts(tiny_store_env, store_resource, monkeypatch):
    """The dashboard knows two stores; the second's key blob is corrupt. No env account."""
    monkeypatch.delenv("KLAVIYO_ACCOUNT_ID")
    monkeypatch.delenv("KLAVIYO_API_KEY")
    monkeypatch.setenv("INTEGRATIONS_ENC_KEY", ENCRYPTION_KEY)
    tables = store_resource.get_store().tables
    blobs = {
        GOOD: encrypt_api_key(DEFAULT_API_KEY, ENCRYPTION_KEY),
        BROKEN: '{"v":1,"iv":"AAAA","ct":"","tag":""}',
    }
    for account, blob in blobs.items():
        tables.ensure_account(account, "store")
        add_klaviyo_integration(tables, account, blob, integration_id=account.replace("-4", "-5", 1))
    return tables


def run_flows(account: str, instance, resources) -> dg.ExecuteInProcessResult:
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [account])
    return dg.materialize(
        [INGEST_ASSETS[0]],
        partition_key=partition_key(account, PARTITION_DATE),
        instance=instance,
        resources=resources,
        run_config=FLOWS_ONLY,
        raise_on_error=False,
    )


def sensor_context(instance, result: dg.ExecuteInProcessResult, event_type: dg.DagsterEventType, store):
    """Open it (``with``): the store resource opens and closes its clients with the context."""
    record = instance.get_records_for_run(result.run_id, of_type=event_type).records[0]
    return dg.build_run_status_sensor_context(
        sensor_name="test",
        dagster_event=record.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"ingest_store": store},
    )


def test_a_broken_key_fails_its_account_alone(two_accounts, tiny_store_env, instance, resources) -> None:
    good = run_flows(GOOD, instance, resources)
    broken = run_flows(BROKEN, instance, resources)

    assert good.success  # ran on the simulator with its decrypted key
    assert not broken.success
    message = broken.failure_data_for_node("flows_csv").user_failure_data.description
    assert message.startswith(f"Account {BROKEN}: the stored Klaviyo key is not a valid encrypted blob")
    assert ENCRYPTION_KEY not in message


def test_run_sensors_write_last_run_at_and_last_error(
    two_accounts, instance, resources, store_resource
) -> None:
    store = resources["ingest_store"]
    broken = run_flows(BROKEN, instance, resources)
    good = run_flows(GOOD, instance, resources)

    with sensor_context(instance, broken, dg.DagsterEventType.RUN_FAILURE, store) as failed:
        klaviyo_run_failed(failed.for_run_failure())
    with sensor_context(instance, good, dg.DagsterEventType.RUN_SUCCESS, store) as succeeded:
        klaviyo_run_succeeded(succeeded)

    tables = store_resource.get_store().tables
    ran_at, error = tables.integration_status(BROKEN)
    assert ran_at is not None
    assert error == f"flows_csv: Account {BROKEN}: the stored Klaviyo key is not a valid encrypted blob"
    good_ran_at, good_error = tables.integration_status(GOOD)
    assert good_ran_at is not None and good_error is None


def test_a_run_of_the_asset_job_updates_the_account_as_the_daemon_evaluates_the_sensors(
    two_accounts, instance, resources, store_resource
) -> None:
    """Backfills and the asset pages launch runs of Dagster's implicit asset job, not of
    klaviyo_ingest: the sensors must see them too (evaluated tick by tick, as the daemon does)."""
    store = resources["ingest_store"]
    ticks = {sensor: None for sensor in (klaviyo_run_failed, klaviyo_run_succeeded)}

    def tick() -> None:
        for sensor, cursor in ticks.items():
            resources = {"ingest_store": store}
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                ticks[sensor] = sensor.evaluate_tick(context).cursor

    tick()  # the first tick starts after what already happened
    runs = [run_flows(account, instance, resources) for account in (GOOD, BROKEN)]
    assert {instance.get_run_by_id(run.run_id).job_name for run in runs} != {"klaviyo_ingest"}
    tick()

    tables = store_resource.get_store().tables
    good_ran_at, good_error = tables.integration_status(GOOD)
    broken_ran_at, broken_error = tables.integration_status(BROKEN)
    assert good_ran_at is not None and good_error is None
    assert broken_ran_at is not None and broken_error.startswith("flows_csv: Account ")


@pytest.mark.parametrize("tag", ["../etc", "not-a-uuid", ""])
def test_a_run_whose_account_tag_is_not_an_account_updates_nothing(tag: str) -> None:
    run = dg.DagsterRun(job_name="klaviyo_ingest", run_id="r", tags={"klaviyo/account": tag})

    assert _ingest_account(run) is None


def test_an_ingest_runs_account_is_its_canonical_uuid() -> None:
    run = dg.DagsterRun(
        job_name="__ASSET_JOB", run_id="r", tags={"dagster/partition/klaviyo_account": GOOD.upper()}
    )

    assert _ingest_account(run) == GOOD
