"""Sensors: keep the account partitions in step, catch up missed days, and tell the dashboard.

- ``klaviyo_accounts_sensor``: one ``klaviyo_accounts`` partition per account to sync (enabled
  Klaviyo integrations that are not deleted, else ``KLAVIYO_ACCOUNT_ID``); adds and removes, and
  records the timezone of each account that has none recorded yet (one Klaviyo call per account, a
  few per evaluation, taken in turn: the cursor keeps the last account tried).
- ``klaviyo_catch_up_sensor``: Dagster's scheduler does not run missed ticks forever, so this
  requests, within the last ``CATCH_UP_LOOKBACK_DAYS`` complete dates of each account, the partitions
  with no snapshot that were never run (by any job but the dry run), and again those whose last run
  never started or crashed (``run_history.py``; at most ``CATCH_UP_MAX_RETRIES`` such failures in a
  row). A partition that failed in a step is left for a person to relaunch (UI or backfill). It leaves
  each date's first ``CATCH_UP_GRACE`` to the schedule: longer than the ticks Dagster replays after an
  outage, so a replayed tick and the sensor never ask for the same date (and each sees the other's run).
  Cost per evaluation: one query for the snapshots of the lookback partitions, one for their runs,
  and step-failure reads only for failed runs whose failure reason does not tell (at most
  ``run_history.MAX_EVENT_READS``); it stops at ``CATCH_UP_MAX_RUNS_PER_TICK`` requests.
- ``klaviyo_run_succeeded`` / ``klaviyo_run_failed``: stamp ``last_run_at`` / ``last_error`` on the
  account's integration row after each ingest run.
"""

from collections.abc import Iterator
from datetime import date, datetime, timedelta

import dagster as dg

from klaviyo_dagster.account_zones import discover_timezones, zones_of
from klaviyo_dagster.accounts import AccountDirectory, validate_account_id
from klaviyo_dagster.defs.automation import launching_sensor_status
from klaviyo_dagster.defs.jobs import klaviyo_ingest_job
from klaviyo_dagster.defs.partitions import (
    ACCOUNTS_PARTITIONS_NAME,
    date_partitions,
    partition_key,
)
from klaviyo_dagster.defs.resources import IngestStoreResource, KlaviyoResource, ReadinessResource
from klaviyo_dagster.defs.run_history import NOT_EXAMINED, RunHistory, Verdict, is_dry_run
from klaviyo_dagster.defs.schedules import REPLAYED_TICKS, TICK, ingest_request, warn_assumed
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.readiness import AccountZone, Readiness, utc_now
from klaviyo_dagster.run_names import ACCOUNT_PARTITION_TAG, ACCOUNT_TAG

ACCOUNTS_SENSOR_NAME = "klaviyo_accounts_sensor"
CATCH_UP_SENSOR_NAME = "klaviyo_catch_up_sensor"
CATCH_UP_LOOKBACK_DAYS = 7
CATCH_UP_MAX_RUNS_PER_TICK = 10
CATCH_UP_MAX_RETRIES = 3
# A date is the schedule's for its first 2 hours: longer than the window of the ticks Dagster replays
# after an outage (the last REPLAYED_TICKS ticks: 75 min), plus a margin for a late daemon.
CATCH_UP_GRACE = timedelta(hours=2)
assert REPLAYED_TICKS * TICK + timedelta(minutes=30) <= CATCH_UP_GRACE
CATCH_UP_TRY_TAG = "klaviyo/catch-up-try"
LAST_ERROR_MAX_CHARS = 500


@dg.sensor(
    name=ACCOUNTS_SENSOR_NAME,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every 5 minutes: adds an account partition for each connected Klaviyo account, removes those "
        "of disabled or deleted accounts, and records new accounts' timezones. Launches no runs."
    ),
)
def klaviyo_accounts_sensor(
    context: dg.SensorEvaluationContext, ingest_store: IngestStoreResource, klaviyo: KlaviyoResource
) -> dg.SensorResult | dg.SkipReason:
    """Adds a partition per new account, removes those of disabled or deleted accounts, and records
    the timezone of accounts that have none recorded yet."""
    tables = ingest_store.get_store().tables
    directory = klaviyo.account_directory(tables)
    known = set(context.instance.get_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME))
    wanted = set(directory.account_ids())
    discovered = discover_timezones(
        sorted(wanted), directory, tables, klaviyo.get_lookup_client, after=context.cursor or None
    )
    for found in discovered:
        log = context.log.info if found.timezone is not None else context.log.warning
        log(f"account timezone {found.describe()}")
    if discovered:  # the next evaluation starts after the last account tried
        context.update_cursor(discovered[-1].account_id)
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


def catch_up_run_key(account: str, day: date, verdict: Verdict) -> str:
    """``catch-up:<account>:<date>``, or ``…:retry-of:<run id>`` for a run that never started or crashed.

    Stable for a given history (a sensor launches one run per key), new after each failed run.
    """
    key = f"catch-up:{account}:{day.isoformat()}"
    return f"{key}:retry-of:{verdict.retry_of}" if verdict.retry_of else key


@dg.sensor(
    name=CATCH_UP_SENSOR_NAME,
    job=klaviyo_ingest_job,
    minimum_interval_seconds=900,
    default_status=launching_sensor_status(),
    description=(
        f"Every 15 minutes: requests each account's complete dates of the last {CATCH_UP_LOOKBACK_DAYS} "
        "days that have no snapshot: never run, or whose last run never started or crashed (at most "
        f"{CATCH_UP_MAX_RETRIES} such failures in a row; {CATCH_UP_MAX_RUNS_PER_TICK} runs a tick). "
        "A date that failed in a step is left for a person to relaunch."
    ),
)
def klaviyo_catch_up_sensor(
    context: dg.SensorEvaluationContext, ingest_store: IngestStoreResource, readiness: ReadinessResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """Requests missed and never-started partitions, oldest first, at most ``CATCH_UP_MAX_RUNS_PER_TICK``."""
    now = utc_now()
    accounts = context.instance.get_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME)
    zones = zones_of(ingest_store.get_store().tables, accounts)
    warn_assumed(context.log, zones)
    missing = missing_partitions(context.instance, zones, readiness.get_readiness(), now)
    history = RunHistory.load(context.instance, missing)  # one query, whatever the job
    requests: list[dg.RunRequest] = []
    left: dict[str, int] = {}
    examined = 0
    for account, day in missing:
        if len(requests) == CATCH_UP_MAX_RUNS_PER_TICK:
            break
        examined += 1
        verdict = history.verdict(account, day, CATCH_UP_MAX_RETRIES)
        if not verdict.request:
            left[verdict.reason] = left.get(verdict.reason, 0) + 1
            continue
        tags = {CATCH_UP_TRY_TAG: str(verdict.tries)} if verdict.retry_of else {}
        requests.append(ingest_request(account, day, catch_up_run_key(account, day, verdict), tags))
        context.log.info(f"requesting {account} {day.isoformat()}: {verdict.reason}")
    summary = (
        f"{len(missing)} complete partition(s) of the last {CATCH_UP_LOOKBACK_DAYS} days without a snapshot"
    )
    if left:
        summary += "; left alone: " + ", ".join(f"{count} {reason}" for reason, count in sorted(left.items()))
    if examined < len(missing):
        summary += f"; {len(missing) - examined} not examined (at most {CATCH_UP_MAX_RUNS_PER_TICK} requests)"
    if left.get(NOT_EXAMINED):
        context.log.warning(f"{left[NOT_EXAMINED]} partition(s) {NOT_EXAMINED}: the next evaluation goes on")
    if not requests:
        return dg.SkipReason(summary)
    context.log.info(summary)
    return requests


def missing_partitions(
    instance: dg.DagsterInstance, zones: dict[str, AccountZone], readiness: Readiness, now: datetime
) -> list[tuple[str, date]]:
    """(account, date) pairs with no snapshot, oldest first, among each account's last
    ``CATCH_UP_LOOKBACK_DAYS`` dates complete for at least ``CATCH_UP_GRACE``.

    One query, limited to those partitions (not every snapshot partition ever made)."""
    candidates = [
        (day, account)
        for account, zone in zones.items()
        for day in _lookback(readiness.newest_complete(now - CATCH_UP_GRACE, zone.name))
    ]
    keys = {str(partition_key(account, day)) for day, account in candidates}
    materialized = (
        instance.get_latest_storage_id_by_partition(
            SNAPSHOT, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=keys
        )
        if keys
        else {}
    )
    missing = [
        (day, account) for day, account in candidates if str(partition_key(account, day)) not in materialized
    ]
    return [(account, day) for day, account in sorted(missing)]


def _lookback(newest: date) -> Iterator[date]:
    first = date_partitions.start.date()
    for offset in range(CATCH_UP_LOOKBACK_DAYS - 1, -1, -1):
        day = newest - timedelta(days=offset)
        if day >= first:
            yield day


# Both watch every job of this code location (no ``monitored_jobs``): runs that backfills and the
# asset pages launch belong to Dagster's implicit asset job, not to klaviyo_ingest. ``_ingest_account``
# keeps the runs that ingest an account.
@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    name="klaviyo_run_succeeded",
    description=(
        "After each successful ingest run of an account (klaviyo_ingest, a backfill, the asset pages): "
        "clears the account's last_error and sets last_run_at in the dashboard."
    ),
)
def klaviyo_run_succeeded(context: dg.RunStatusSensorContext, ingest_store: IngestStoreResource) -> None:
    """A good run clears the account's ``last_error`` in the dashboard."""
    account = _ingest_account(context.dagster_run)
    if account:
        AccountDirectory(ingest_store.get_store().tables).record_run(account, error=None)


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    name="klaviyo_run_failed",
    description=(
        "After each failed ingest run of an account (klaviyo_ingest, a backfill, the asset pages): writes "
        "a short, key-free reason to the account's last_error and sets last_run_at."
    ),
)
def klaviyo_run_failed(context: dg.RunFailureSensorContext, ingest_store: IngestStoreResource) -> None:
    """A failed run leaves a short, key-free reason in the account's ``last_error``."""
    account = _ingest_account(context.dagster_run)
    if account:
        AccountDirectory(ingest_store.get_store().tables).record_run(account, error=_failure_reason(context))


def _ingest_account(run: dg.DagsterRun) -> str | None:
    """The account a run ingested; None for the dry run (it writes nothing) and for runs of no
    account (the cleanup)."""
    if is_dry_run(run):
        return None
    account = run.tags.get(ACCOUNT_TAG) or run.tags.get(ACCOUNT_PARTITION_TAG)
    try:
        return validate_account_id(account) if account else None
    except ValueError:  # a tag someone set by hand: nothing of the dashboard to update
        return None


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
