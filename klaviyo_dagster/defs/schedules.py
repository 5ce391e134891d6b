"""Schedules: every account, every night, and the storage cleanup before it.

- ``klaviyo_nightly_schedule`` at 03:05 UTC: one ``klaviyo_ingest`` run per account for the newest
  date partition (yesterday, UTC). Run keys name the account and date, so a tick evaluated twice
  launches nothing twice.
- ``klaviyo_cleanup_schedule`` at 02:00 UTC: the ``klaviyo_cleanup`` job (retention policy).
Every run carries ``klaviyo/account`` so the instance can allow one run per account at a time.
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

from klaviyo_dagster.defs.jobs import klaviyo_ingest_job
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key

ACCOUNT_TAG = "klaviyo/account"
NIGHTLY_SCHEDULE_NAME = "klaviyo_nightly_schedule"


def newest_partition_date(now: datetime | None = None) -> date:
    """Yesterday in UTC: the last complete day."""
    return ((now or datetime.now(UTC)).astimezone(UTC) - timedelta(days=1)).date()


@dg.schedule(
    name=NIGHTLY_SCHEDULE_NAME,
    cron_schedule="5 3 * * *",
    execution_timezone="UTC",
    job=klaviyo_ingest_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def klaviyo_nightly_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
    """One run per account for yesterday's partition."""
    day = newest_partition_date(context.scheduled_execution_time)
    accounts = sorted(context.instance.get_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME))
    if not accounts:
        return dg.SkipReason("no account partitions yet: the klaviyo_accounts_sensor adds them")
    return [
        dg.RunRequest(
            run_key=f"nightly:{account}:{day.isoformat()}",
            partition_key=partition_key(account, day),
            tags={ACCOUNT_TAG: account},
        )
        for account in accounts
    ]
