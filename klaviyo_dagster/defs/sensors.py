"""Sensors: keep the account partitions in step, catch up missed nights, and tell the dashboard.

- ``klaviyo_accounts_sensor``: one ``klaviyo_accounts`` partition per account to sync (enabled
  Klaviyo integrations that are not deleted, else ``KLAVIYO_ACCOUNT_ID``); adds and removes.
- ``klaviyo_catch_up_sensor``: Dagster's scheduler does not run missed partition ticks, so this
  requests the partitions of the last ``CATCH_UP_LOOKBACK_DAYS`` that have no snapshot and were never
  run. A partition that ran and failed is left alone until someone relaunches it (UI or backfill).
- ``klaviyo_run_succeeded`` / ``klaviyo_run_failed``: stamp ``last_run_at`` / ``last_error`` on the
  account's integration row after each ingest run.
"""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg

from klaviyo_dagster.accounts import AccountDirectory
from klaviyo_dagster.defs.jobs import klaviyo_ingest_job
from klaviyo_dagster.defs.partitions import (
    ACCOUNT_DIMENSION,
    ACCOUNTS_PARTITIONS_NAME,
    DATE_DIMENSION,
    partition_key,
)
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.defs.schedules import ACCOUNT_TAG, newest_partition_date
from klaviyo_dagster.defs.snapshot import SNAPSHOT

ACCOUNTS_SENSOR_NAME = "klaviyo_accounts_sensor"
CATCH_UP_SENSOR_NAME = "klaviyo_catch_up_sensor"
CATCH_UP_LOOKBACK_DAYS = 7
CATCH_UP_MAX_RUNS_PER_TICK = 10
LAST_ERROR_MAX_CHARS = 500


@dg.sensor(
    name=ACCOUNTS_SENSOR_NAME, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING
)
def klaviyo_accounts_sensor(
    context: dg.SensorEvaluationContext, ingest_store: IngestStoreResource
) -> dg.SensorResult | dg.SkipReason:
    """Adds a partition per new account and removes those of disabled or deleted accounts."""
    known = set(context.instance.get_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME))
    wanted = set(AccountDirectory(ingest_store.get_store().tables).account_ids())
    added, removed = sorted(wanted - known), sorted(known - wanted)
    if not added and not removed:
        return dg.SkipReason(f"{len(known)} account partition(s), all current")
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if added:
        context.log.info(f"adding account partition(s): {', '.join(added)}")
        requests.append(dg.AddDynamicPartitionsRequest(ACCOUNTS_PARTITIONS_NAME, added))
    if removed:
        context.log.info(f"removing account partition(s) no longer synced: {', '.join(removed)}")
        requests.append(dg.DeleteDynamicPartitionsRequest(ACCOUNTS_PARTITIONS_NAME, removed))
    return dg.SensorResult(dynamic_partitions_requests=requests)


@dg.sensor(
    name=CATCH_UP_SENSOR_NAME,
    job=klaviyo_ingest_job,
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def klaviyo_catch_up_sensor(context: dg.SensorEvaluationContext) -> Iterator[dg.RunRequest] | dg.SkipReason:
    """Requests missed partitions of the last week (at most ``CATCH_UP_MAX_RUNS_PER_TICK`` per tick)."""
    missing = list(_missing_partitions(context.instance, newest_partition_date()))
    if not missing:
        return dg.SkipReason(f"no missing partitions in the last {CATCH_UP_LOOKBACK_DAYS} days")
    context.log.info(f"{len(missing)} missing partition(s); requesting up to {CATCH_UP_MAX_RUNS_PER_TICK}")
    return (
        dg.RunRequest(
            run_key=f"catch-up:{account}:{day.isoformat()}",
            partition_key=partition_key(account, day),
            tags={ACCOUNT_TAG: account},
        )
        for account, day in missing[:CATCH_UP_MAX_RUNS_PER_TICK]
    )


def _missing_partitions(instance: dg.DagsterInstance, newest: date) -> Iterator[tuple[str, date]]:
    """(account, date) pairs, oldest first, with no snapshot and no run ever launched for them."""
    accounts = instance.get_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME)
    materialized = instance.get_materialized_partitions(SNAPSHOT)
    for offset in range(CATCH_UP_LOOKBACK_DAYS - 1, -1, -1):
        day = newest - timedelta(days=offset)
        for account in sorted(accounts):
            if str(partition_key(account, day)) in materialized or _has_run(instance, account, day):
                continue
            yield account, day


def _has_run(instance: dg.DagsterInstance, account: str, day: date) -> bool:
    tags = {
        f"dagster/partition/{ACCOUNT_DIMENSION}": account,
        f"dagster/partition/{DATE_DIMENSION}": day.isoformat(),
    }
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags=tags), limit=1))


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[klaviyo_ingest_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    name="klaviyo_run_succeeded",
)
def klaviyo_run_succeeded(context: dg.RunStatusSensorContext, ingest_store: IngestStoreResource) -> None:
    """A good run clears the account's ``last_error`` in the dashboard."""
    account = _run_account(context.dagster_run)
    if account:
        AccountDirectory(ingest_store.get_store().tables).record_run(account, error=None)


@dg.run_failure_sensor(
    monitored_jobs=[klaviyo_ingest_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    name="klaviyo_run_failed",
)
def klaviyo_run_failed(context: dg.RunFailureSensorContext, ingest_store: IngestStoreResource) -> None:
    """A failed run leaves a short, key-free reason in the account's ``last_error``."""
    account = _run_account(context.dagster_run)
    if account:
        AccountDirectory(ingest_store.get_store().tables).record_run(account, error=_failure_reason(context))


def _run_account(run: dg.DagsterRun) -> str | None:
    return run.tags.get(ACCOUNT_TAG) or run.tags.get(f"dagster/partition/{ACCOUNT_DIMENSION}")


def _failure_reason(context: dg.RunFailureSensorContext) -> str:
    """The first failed step's own message (our errors never contain keys), shortened."""
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data
        error = data.error
        while error is not None and error.cause is not None:  # Dagster wraps the user error
            error = error.cause
        message = (user.description if user and user.description else None) or (
            error.message if error else ""
        )
        if message:
            return f"{event.step_key}: {message.strip().splitlines()[0]}"[:LAST_ERROR_MAX_CHARS]
    return (context.failure_event.message or "run failed")[:LAST_ERROR_MAX_CHARS]
