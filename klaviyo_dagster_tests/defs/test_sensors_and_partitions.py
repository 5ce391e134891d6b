"""The accounts sensor and the partitions, with built contexts (no daemon needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pytest

from klaviyo_dagster import account_zones
from klaviyo_dagster.account_zones import Discovery, discover_timezones
from klaviyo_dagster.accounts import KeyDecryptionError, encrypt_api_key
from klaviyo_dagster.defs.partitions import (
    ACCOUNTS_PARTITIONS_NAME,
    date_partitions,
    klaviyo_partitions,
    partition_key,
    split_partition_key,
)
from klaviyo_dagster.defs.resources import IngestStoreResource, klaviyo_resource_from_env
from klaviyo_dagster.defs.sensors import klaviyo_accounts_sensor
from klaviyo_dagster.environment import first_partition_date
from klaviyo_dagster.producers.account import AccountTimezone
from klaviyo_dagster.run_names import partition_key_text
from klaviyo_dagster.storage.tables import IngestTables
from klaviyo_dagster_tests.conftest import ACCOUNT_ID, TINY_TIME_SCALE, add_klaviyo_integration

ACCOUNT = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"
OTHER = "bbbbbbbb-0000-4000-8000-000000000002"
# A store with no account_integrations rows: the env account is the one to sync.
EMPTY_STORE = IngestStoreResource(data_dir="/nonexistent/klaviyo-dagster-test")


def accounts_sensor(
    instance: dg.DagsterInstance, store: IngestStoreResource
) -> dg.SensorResult | dg.SkipReason:
    resources = {"ingest_store": store, "klaviyo": klaviyo_resource_from_env(time_scale=TINY_TIME_SCALE)}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return klaviyo_accounts_sensor(context)


@pytest.fixture
def klaviyo_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Klaviyo source switched off: a timezone lookup fails before any call."""
    monkeypatch.setenv("KLAVIYO_ENABLE", "false")


def test_the_sensor_registers_the_env_account_once(monkeypatch, klaviyo_off) -> None:
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", ACCOUNT)
    with dg.DagsterInstance.ephemeral() as instance:
        result = accounts_sensor(instance, EMPTY_STORE)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.dynamic_partitions_requests
        assert (request.partitions_def_name, list(request.partition_keys)) == (
            ACCOUNTS_PARTITIONS_NAME,
            [ACCOUNT],
        )

        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT])
        again = accounts_sensor(instance, EMPTY_STORE)
        assert isinstance(again, dg.SkipReason)


def test_without_an_account_the_sensor_skips(monkeypatch, klaviyo_off) -> None:
    monkeypatch.delenv("KLAVIYO_ACCOUNT_ID", raising=False)
    with dg.DagsterInstance.ephemeral() as instance:
        assert isinstance(accounts_sensor(instance, EMPTY_STORE), dg.SkipReason)


def test_a_malformed_account_id_is_refused(monkeypatch, klaviyo_off) -> None:
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", "../../etc")
    with dg.DagsterInstance.ephemeral() as instance, pytest.raises(Exception, match="account uuid"):
        accounts_sensor(instance, EMPTY_STORE)


def test_the_accounts_sensor_adds_new_and_removes_gone_accounts(
    clean_postgres, monkeypatch, klaviyo_off
) -> None:
    store = IngestStoreResource(supabase_url="https://x.test", service_role_key="k", db_url=clean_postgres)
    tables = store.get_store().tables
    monkeypatch.setenv("INTEGRATIONS_ENC_KEY", "enc")
    monkeypatch.delenv("KLAVIYO_ACCOUNT_ID", raising=False)
    for account, enabled in ((ACCOUNT, True), (OTHER, False)):
        tables.ensure_account(account, "store")
        add_klaviyo_integration(tables, account, encrypt_api_key("pk_x", "enc"), enabled=enabled)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [OTHER])  # was synced before being disabled

        result = accounts_sensor(instance, store)

    added, removed = result.dynamic_partitions_requests
    assert (type(added), list(added.partition_keys)) == (dg.AddDynamicPartitionsRequest, [ACCOUNT])
    assert (type(removed), list(removed.partition_keys)) == (dg.DeleteDynamicPartitionsRequest, [OTHER])
    assert tables.account_timezones() == {}  # Klaviyo is off: looked up again on the next evaluation


def test_a_new_accounts_timezone_is_read_once_from_klaviyo_and_recorded(tiny_store_env, tmp_path) -> None:
    store = IngestStoreResource(data_dir=str(tmp_path / "data"))
    with dg.DagsterInstance.ephemeral() as instance:
        first = accounts_sensor(instance, store)
        calls = [r.operation_id for r in tiny_store_env.requests]
        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT_ID])
        again = accounts_sensor(instance, store)

    assert list(first.dynamic_partitions_requests[0].partition_keys) == [ACCOUNT_ID]
    assert isinstance(again, dg.SkipReason)
    assert calls == ["get_accounts"]  # one call when the account was found, none after
    assert [r.operation_id for r in tiny_store_env.requests] == calls
    recorded = store.get_store().tables.account_timezones()[ACCOUNT_ID]
    assert (recorded.timezone, recorded.fallback_reason, recorded.source) == (
        "America/New_York",
        None,
        "discovery",
    )


def test_the_newest_date_partition_is_today_utc() -> None:
    # East of UTC a day is complete before it ends in UTC, so today's key must exist (readiness.py).
    keys = date_partitions.get_partition_keys(current_time=datetime(2026, 3, 10, 0, 30, tzinfo=UTC))
    assert (keys[0], keys[-1]) == ("2024-01-01", "2026-03-10")


def test_partition_keys_round_trip_and_name_both_dimensions() -> None:
    key = partition_key(ACCOUNT, date(2026, 3, 9))
    assert split_partition_key(key) == (ACCOUNT, date(2026, 3, 9))
    assert split_partition_key(str(key)) == (ACCOUNT, date(2026, 3, 9))
    assert klaviyo_partitions.partition_dimension_names == ["date", "klaviyo_account"]


# --- timezone discovery takes the accounts in turn ----------------------------------------------------


class _BrokenKeys:
    """The first five accounts' keys do not decrypt; the others' do."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken

    def api_key_for(self, account: str) -> str:
        if account in self.broken:
            raise KeyDecryptionError(f"Account {account}: the stored Klaviyo key does not decrypt")
        return "pk_x"


class _Client:
    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_accounts_with_broken_keys_do_not_keep_the_others_from_discovery(tmp_path, monkeypatch) -> None:
    tables = IngestTables.sqlite(tmp_path / "t.sqlite3")
    tables.migrate()
    accounts = [f"00000000-0000-4000-8000-{n:012d}" for n in range(1, 8)]
    directory = _BrokenKeys(set(accounts[:5]))
    monkeypatch.setattr(account_zones, "account_timezone", lambda client: AccountTimezone("Asia/Tokyo"))

    cursor, tried = None, []
    for _ in range(2):  # as the sensor does: each evaluation starts after the last account tried
        found = discover_timezones(accounts, directory, tables, lambda key: _Client(), after=cursor)
        tried.append([f.account_id[-1] for f in found])
        cursor = found[-1].account_id

    assert tried == [["1", "2", "3", "4", "5"], ["6", "7", "1", "2", "3"]]
    assert sorted(tables.account_timezones()) == accounts[5:]


def test_a_recorded_zone_that_is_not_a_timezone_is_looked_up_again(tmp_path, monkeypatch) -> None:
    tables = IngestTables.sqlite(tmp_path / "t.sqlite3")
    tables.migrate()
    tables.record_account_timezone(ACCOUNT, "Mars/Olympus", None, "discovery")
    monkeypatch.setattr(account_zones, "account_timezone", lambda client: AccountTimezone("Asia/Tokyo"))

    (found,) = discover_timezones([ACCOUNT], _BrokenKeys(set()), tables, lambda key: _Client())

    assert found.timezone is not None
    assert tables.account_timezones()[ACCOUNT].timezone == "Asia/Tokyo"


def test_the_accounts_sensor_keeps_the_last_account_tried_in_its_cursor(monkeypatch, klaviyo_off) -> None:
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", ACCOUNT)
    seen = []

    def discover(account_ids, directory, tables, client_for, *, after=None):
        seen.append(after)
        return [Discovery(ACCOUNT, None, "KlaviyoDisabledError: off", disabled=True)]

    monkeypatch.setattr("klaviyo_dagster.defs.sensors.discover_timezones", discover)
    resources = {
        "ingest_store": EMPTY_STORE,
        "klaviyo": klaviyo_resource_from_env(time_scale=TINY_TIME_SCALE),
    }
    with (
        dg.DagsterInstance.ephemeral() as instance,
        dg.build_sensor_context(instance=instance, cursor=OTHER, resources=resources) as context,
    ):
        cursor = klaviyo_accounts_sensor.evaluate_tick(context).cursor  # as the daemon evaluates it

    assert (seen, cursor) == ([OTHER], ACCOUNT)


def test_the_readiness_module_knows_the_partitions_first_date() -> None:
    # readiness.py (no Dagster) reads KLAVIYO_PARTITIONS_START_DATE as defs/partitions.py does
    assert first_partition_date() == date_partitions.start.date()


def test_the_triggers_partition_key_text_is_dagsters_own() -> None:
    """The trigger writes partition tags without importing the definitions (``run_names.py``)."""
    day = date(2026, 3, 9)

    assert partition_key_text(ACCOUNT_ID, day) == str(partition_key(ACCOUNT_ID, day))
    assert split_partition_key(partition_key_text(ACCOUNT_ID, day)) == (ACCOUNT_ID, day)
