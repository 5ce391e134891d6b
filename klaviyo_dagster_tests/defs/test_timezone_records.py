"""Each live run keeps the schedule's copy of the account's timezone current; a dry run writes none."""

from __future__ import annotations

import logging

from klaviyo_dagster_tests.conftest import ACCOUNT_ID
from klaviyo_dagster_tests.defs.test_assets import materialize, with_mode


def test_a_live_run_records_the_zone_it_read_and_a_dry_run_does_not(
    tiny_store_env, instance, resources, store_resource
) -> None:
    tables = store_resource.get_store().tables

    assert materialize(instance, resources, run_config=with_mode("dry-run")).success
    assert tables.account_timezones() == {}

    tables.record_account_timezone(
        ACCOUNT_ID, "UTC", "the key lacks the accounts:read scope (403)", "discovery"
    )
    assert materialize(instance, resources).success

    recorded = tables.account_timezones()[ACCOUNT_ID]
    assert (recorded.timezone, recorded.fallback_reason, recorded.source) == ("America/New_York", None, "run")


def test_a_zone_that_cannot_be_recorded_does_not_fail_the_file(
    tiny_store_env, instance, resources, store_resource, monkeypatch
) -> None:
    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("klaviyo_dagster.storage.tables.IngestTables.record_account_timezone", broken)

    result = materialize(instance, resources)

    assert result.success
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level == logging.WARNING and "could not record the account's timezone" in entry.user_message
    ]
    assert len(warnings) == 2  # flows.csv and campaigns.csv read the zone; subscribers.csv does not
    assert all("(OSError)" in message and "disk full" not in message for message in warnings)
