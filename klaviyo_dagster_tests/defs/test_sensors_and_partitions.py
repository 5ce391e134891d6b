"""The accounts sensor and the partitions, with built contexts (no daemon needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest

from klaviyo_dagster.defs.partitions import (
    ACCOUNTS_PARTITIONS_NAME,
    date_partitions,
    klaviyo_partitions,
    partition_key,
    split_partition_key,
)
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.defs.sensors import klaviyo_accounts_sensor

ACCOUNT = "5b0c7a3e-2f4d-4c1a-9e8b-1d2c3b4a5f60"
# A store with no account_integrations rows: the env account is the one to sync.
EMPTY_STORE = IngestStoreResource(data_dir="/nonexistent/klaviyo-dagster-test")


def test_the_sensor_registers_the_env_account_once(monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", ACCOUNT)
    with dg.DagsterInstance.ephemeral() as instance:
        result = klaviyo_accounts_sensor(dg.build_sensor_context(instance=instance), ingest_store=EMPTY_STORE)
        assert isinstance(result, dg.SensorResult)
        (request,) = result.dynamic_partitions_requests
        assert (request.partitions_def_name, list(request.partition_keys)) == (
            ACCOUNTS_PARTITIONS_NAME,
            [ACCOUNT],
        )

        instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, [ACCOUNT])
        again = klaviyo_accounts_sensor(dg.build_sensor_context(instance=instance), ingest_store=EMPTY_STORE)
        assert isinstance(again, dg.SkipReason)


def test_without_an_account_the_sensor_skips(monkeypatch) -> None:
    monkeypatch.delenv("KLAVIYO_ACCOUNT_ID", raising=False)
    with dg.DagsterInstance.ephemeral() as instance:
        assert isinstance(
            klaviyo_accounts_sensor(dg.build_sensor_context(instance=instance), ingest_store=EMPTY_STORE),
            dg.SkipReason,
        )


def test_a_malformed_account_id_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("KLAVIYO_ACCOUNT_ID", "../../etc")
    with dg.DagsterInstance.ephemeral() as instance, pytest.raises(Exception, match="account uuid"):
        klaviyo_accounts_sensor(dg.build_sensor_context(instance=instance), ingest_store=EMPTY_STORE)


def test_the_newest_date_partition_is_yesterday_utc() -> None:
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    assert date_partitions.get_last_partition_key() == yesterday.isoformat()
    assert date_partitions.get_first_partition_key() == "2024-01-01"


def test_partition_keys_round_trip_and_name_both_dimensions() -> None:
    key = partition_key(ACCOUNT, date(2026, 3, 9))
    assert split_partition_key(key) == (ACCOUNT, date(2026, 3, 9))
    assert split_partition_key(str(key)) == (ACCOUNT, date(2026, 3, 9))
    assert klaviyo_partitions.partition_dimension_names == ["account", "date"]
