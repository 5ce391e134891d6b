"""The schedule that runs each account's day once that day is over where the account is.

``klaviyo_complete_days_schedule`` ticks every 15 minutes (:05, :20, :35 and :50 UTC). At each tick,
every account whose newest complete partition date changed since the previous tick gets one
``klaviyo_ingest`` run for it. A date D is complete once it has ended in the account's timezone plus
the settling delay (``readiness.py``; contracts/csv.md, "Partition window"). With the default delay
of 3 h 05 min, D becomes complete 3 h 05 min after local midnight (03:05 local time on D+1, or an
hour off on the nights the clocks change), which for every real zone (their offsets are whole quarter
hours) falls exactly on a tick: 03:05 UTC for an account in UTC, 11:05 UTC (10:05 in summer) for one
in Los Angeles.

Timezones come from the ingest database (``account_zones.py``), all accounts in one query per tick;
the schedule never calls Klaviyo. Run keys name the account and date. Dagster checks a schedule's
run keys within one tick only, so the schedule asks for a date at the one tick it becomes complete;
after an outage Dagster replays the last few missed ticks (5 by default), and the catch-up sensor
covers the rest. Before asking, the tick looks up the runs of the dates it is about to ask for (one
query, whatever the job): a date that already has a run is not asked for again (a longer settling
delay, or an account that moved west, makes a date "become complete" a second time), unless that run
never started or crashed (``run_history.py``). Every run carries ``klaviyo/account`` so
the instance can allow one run per account at a time. The cleanup schedule is in ``cleanup.py``.
"""

import logging
from collections.abc import Mapping
from datetime import date, datetime, timedelta

import dagster as dg

from klaviyo_dagster.account_zones import zones_of
from klaviyo_dagster.defs.automation import launching_schedule_status
from klaviyo_dagster.defs.jobs import klaviyo_ingest_job
from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, date_partitions, partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource, ReadinessResource
from klaviyo_dagster.defs.run_history import RunHistory
from klaviyo_dagster.readiness import LATEST_ZONE, AccountZone, Readiness, describe_delay, utc_now
from klaviyo_dagster.run_names import ACCOUNT_TAG

COMPLETE_DAYS_SCHEDULE_NAME = "klaviyo_complete_days_schedule"
TICK_MINUTES = 15
TICK_OFFSET_MINUTES = 5  # with the default delay, every zone's days become complete on a tick
COMPLETE_DAYS_CRON = ",".join(str(m) for m in range(TICK_OFFSET_MINUTES, 60, TICK_MINUTES)) + " * * * *"
TICK = timedelta(minutes=TICK_MINUTES)
# Dagster replays at most this many missed ticks after an outage (the scheduler's max_catchup_runs).
REPLAYED_TICKS = 5
# Run retries before any step the schedule allows itself, as the catch-up sensor does.
SCHEDULE_MAX_RETRIES = 3


def complete_day_run_key(account: str, day: date) -> str:
    """``<account uuid>:<YYYY-MM-DD>``: one request per account and date."""
    return f"{account}:{day.isoformat()}"


def ingest_request(
    account: str, day: date, run_key: str, tags: Mapping[str, str] | None = None
) -> dg.RunRequest:
    """A ``klaviyo_ingest`` run of one (account, date) partition, tagged with its account."""
    return dg.RunRequest(
        run_key=run_key,
        partition_key=partition_key(account, day),
        tags={ACCOUNT_TAG: account, **(tags or {})},
    )


def completed_at_tick(
    tick: datetime, zones: dict[str, AccountZone], readiness: Readiness
) -> list[tuple[str, date]]:
    """(account, date) of each account whose newest complete date changed in ``(tick - TICK, tick]``."""
    first = date_partitions.start.date()
    due = []
    for account, zone in sorted(zones.items()):
        day = readiness.completed_between(tick - TICK, tick, zone.name)
        if day is not None and day >= first:
            due.append((account, day))
    return due


@dg.schedule(
    name=COMPLETE_DAYS_SCHEDULE_NAME,
    cron_schedule=COMPLETE_DAYS_CRON,
    execution_timezone="UTC",
    job=klaviyo_ingest_job,
    default_status=launching_schedule_status(),
    description=(
        "At :05, :20, :35 and :50: one klaviyo_ingest run for each account whose date has ended in its "
        "own timezone, plus the settling delay (KLAVIYO_SETTLING_DELAY_MINUTES, default 185)."
    ),
)
def klaviyo_complete_days_schedule(
    context: dg.ScheduleEvaluationContext, ingest_store: IngestStoreResource, readiness: ReadinessResource
) -> list[dg.RunRequest] | dg.SkipReason:
    """One run per account whose day became complete since the previous tick."""
    tick = context.scheduled_execution_time or utc_now()
    accounts = context.instance.get_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME)
    if not accounts:
        return dg.SkipReason("no account partitions yet: the klaviyo_accounts_sensor adds them")
    zones = zones_of(ingest_store.get_store().tables, accounts)
    warn_assumed(context.log, zones)
    ready = readiness.get_readiness()
    due = completed_at_tick(tick, zones, ready)
    if not due:
        return dg.SkipReason(
            f"no account's day became complete since {(tick - TICK).isoformat()} "
            f"({len(zones)} account(s); settling delay {describe_delay(ready.delay)})"
        )
    history = RunHistory.load(context.instance, due)  # one query for the dates about to be asked for
    verdicts = {pair: history.verdict(*pair, SCHEDULE_MAX_RETRIES) for pair in due}
    already = [(pair, verdict) for pair, verdict in verdicts.items() if not verdict.request]
    if already:
        context.log.info(
            "not asked for again: "
            + ", ".join(
                f"{account} {day.isoformat()} ({verdict.reason})" for (account, day), verdict in already
            )
        )
    due = [pair for pair in due if verdicts[pair].request]
    if not due:
        return dg.SkipReason(f"every date that became complete has a run already ({len(already)})")
    context.log.info(
        "complete: "
        + ", ".join(f"{account} {day.isoformat()} ({zones[account].name})" for account, day in due)
    )
    return [ingest_request(account, day, complete_day_run_key(account, day)) for account, day in due]


def warn_assumed(log: logging.Logger | dg.DagsterLogManager, zones: Mapping[str, AccountZone]) -> None:
    """A warning naming the accounts whose zone is assumed: not recorded yet, or recorded wrong."""
    invalid = sorted(account for account, zone in zones.items() if zone.invalid is not None)
    unknown = sorted(account for account, zone in zones.items() if zone.assumed and zone.invalid is None)
    if unknown:
        log.warning(
            f"timezone not recorded yet for {', '.join(unknown)}: assuming {LATEST_ZONE}, "
            "where a day ends last (the klaviyo_accounts_sensor or the account's next run records it)"
        )
    if invalid:
        log.warning(
            "recorded timezone is not a valid timezone for "
            + ", ".join(f"{account} ({zones[account].invalid!r})" for account in invalid)
            + f": assuming {LATEST_ZONE}, where a day ends last (the klaviyo_accounts_sensor looks it up "
            "again; fix the row in account_timezones if it persists)"
        )
