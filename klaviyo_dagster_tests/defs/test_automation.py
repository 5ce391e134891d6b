"""The schedule and the catch-up sensor with built contexts at fixed instants: what they ask for.

Five accounts, one per zone that makes the point (UTC; Los Angeles, west; Auckland, east of UTC
with the southern summer; Kolkata, a half-hour offset without DST; St John's, a half-hour offset
with DST), with the default settling delay of 3 h 05 min.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, JobFailureData, RunFailureReason
from dagster._core.execution.plan.objects import StepFailureData
from dagster._utils.error import SerializableErrorInfo

from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource, ReadinessResource
from klaviyo_dagster.defs.run_history import MAX_EVENT_READS, RETRY_GRACE_SECONDS, WILL_RETRY_TAG, is_dry_run
from klaviyo_dagster.defs.schedules import (
    ACCOUNT_TAG,
    TICK,
    completed_at_tick,
    klaviyo_complete_days_schedule,
)
from klaviyo_dagster.defs.sensors import (
    CATCH_UP_GRACE,
    CATCH_UP_MAX_RUNS_PER_TICK,
    CATCH_UP_TRY_TAG,
    klaviyo_catch_up_sensor,
)
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.readiness import AccountZone, Readiness

UTC_STORE = "00000000-0000-4000-8000-000000000001"
LOS_ANGELES = "00000000-0000-4000-8000-000000000002"
AUCKLAND = "00000000-0000-4000-8000-000000000003"
KOLKATA = "00000000-0000-4000-8000-000000000004"
ST_JOHNS = "00000000-0000-4000-8000-000000000005"
ZONES = {
    UTC_STORE: "UTC",
    LOS_ANGELES: "America/Los_Angeles",
    AUCKLAND: "Pacific/Auckland",
    KOLKATA: "Asia/Kolkata",
    ST_JOHNS: "America/St_Johns",
}
INGEST = "klaviyo_ingest"


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


DEFAULT_READINESS = ReadinessResource()  # 3 h 05 min


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:  # a real (temporary) instance: schedules need its ref
        yield instance


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IngestStoreResource:
    return IngestStoreResource(data_dir=str(tmp_path / "data"))


def register(instance: dg.DagsterInstance, store: IngestStoreResource, zones: dict[str, str | None]) -> None:
    """The accounts' partitions, and each one's recorded timezone (None: not recorded yet)."""
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, list(zones))
    tables = store.get_store().tables
    for account, zone in zones.items():
        if zone is not None:
            tables.record_account_timezone(account, zone, None, "discovery")


# --- the schedule ------------------------------------------------------------------------------------


def evaluate(
    instance, store, tick: datetime, readiness: ReadinessResource = DEFAULT_READINESS
) -> list[dg.RunRequest] | dg.SkipReason:
    # Entered, so the instance the context opens from the ref is closed again (Dagster's context var).
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=tick,
        resources={"ingest_store": store, "readiness": readiness},
    ) as context:
        return klaviyo_complete_days_schedule(context)


def requested_at(
    instance, store, *ticks: datetime, readiness: ReadinessResource = DEFAULT_READINESS
) -> dict[str, list[str]]:
    """The run keys each tick asks for (``"MM-DD HH:MM"`` → keys), each from a built context."""
    requested = {}
    for tick in ticks:
        result = evaluate(instance, store, tick, readiness)
        keys = []
        if not isinstance(result, dg.SkipReason):
            for request in result:
                account, day = request.run_key.split(":")
                assert request.partition_key == partition_key(account, date.fromisoformat(day))
                assert request.tags == {ACCOUNT_TAG: account}
                keys.append(request.run_key)
        requested[tick.strftime("%m-%d %H:%M")] = keys
    return requested


def and_the_tick_before(*ticks: datetime) -> list[datetime]:
    return sorted({t for tick in ticks for t in (tick - TICK, tick)})


def test_each_account_is_asked_for_once_its_day_is_over_winter_and_summer(instance, store) -> None:
    register(instance, store, ZONES)

    winter = requested_at(
        instance,
        store,
        *and_the_tick_before(
            utc(1, 15, 14, 5), utc(1, 15, 21, 35), utc(1, 16, 3, 5), utc(1, 16, 6, 35), utc(1, 16, 11, 5)
        ),
    )
    summer = requested_at(
        instance,
        store,
        *and_the_tick_before(
            utc(7, 15, 15, 5), utc(7, 15, 21, 35), utc(7, 16, 3, 5), utc(7, 16, 5, 35), utc(7, 16, 10, 5)
        ),
    )

    assert winter == {  # 2026-01-15: northern winter, Auckland's summer
        "01-15 13:50": [],
        "01-15 14:05": [f"{AUCKLAND}:2026-01-15"],  # NZDT, UTC+13: D ends at 11:00 UTC on D
        "01-15 21:20": [],
        "01-15 21:35": [f"{KOLKATA}:2026-01-15"],  # UTC+5:30: D ends at 18:30 UTC on D
        "01-16 02:50": [],
        "01-16 03:05": [f"{UTC_STORE}:2026-01-15"],
        "01-16 06:20": [],
        "01-16 06:35": [f"{ST_JOHNS}:2026-01-15"],  # NST, UTC-3:30
        "01-16 10:50": [],
        "01-16 11:05": [f"{LOS_ANGELES}:2026-01-15"],  # PST, UTC-8
    }
    assert summer == {  # 2026-07-15: northern summer, Auckland's winter
        "07-15 14:50": [],
        "07-15 15:05": [f"{AUCKLAND}:2026-07-15"],  # NZST, UTC+12
        "07-15 21:20": [],
        "07-15 21:35": [f"{KOLKATA}:2026-07-15"],
        "07-16 02:50": [],
        "07-16 03:05": [f"{UTC_STORE}:2026-07-15"],
        "07-16 05:20": [],
        "07-16 05:35": [f"{ST_JOHNS}:2026-07-15"],  # NDT, UTC-2:30
        "07-16 09:50": [],
        "07-16 10:05": [f"{LOS_ANGELES}:2026-07-15"],  # PDT, UTC-7
    }


def test_across_dst_changes_the_day_is_asked_for_when_it_is_over(instance, store) -> None:
    register(instance, store, ZONES)

    # North America springs forward on Sunday 2026-03-08: that day has 23 hours there.
    march = requested_at(
        instance,
        store,
        *and_the_tick_before(utc(3, 8, 6, 35), utc(3, 8, 11, 5), utc(3, 9, 5, 35), utc(3, 9, 10, 5)),
    )
    # Auckland falls back on Sunday 2026-04-05: that day has 25 hours there.
    april = requested_at(instance, store, *and_the_tick_before(utc(4, 4, 14, 5), utc(4, 5, 15, 5)))
    # North America falls back on Sunday 2026-11-01: that day has 25 hours there.
    november = requested_at(
        instance,
        store,
        *and_the_tick_before(utc(11, 1, 5, 35), utc(11, 1, 10, 5), utc(11, 2, 6, 35), utc(11, 2, 11, 5)),
    )

    assert march == {
        "03-08 06:20": [],
        "03-08 06:35": [f"{ST_JOHNS}:2026-03-07"],
        "03-08 10:50": [],
        "03-08 11:05": [f"{LOS_ANGELES}:2026-03-07"],
        "03-09 05:20": [],
        "03-09 05:35": [f"{ST_JOHNS}:2026-03-08"],  # an hour earlier: the day was an hour shorter
        "03-09 09:50": [],
        "03-09 10:05": [f"{LOS_ANGELES}:2026-03-08"],
    }
    assert april == {
        "04-04 13:50": [],
        "04-04 14:05": [f"{AUCKLAND}:2026-04-04"],
        "04-05 14:50": [],
        "04-05 15:05": [f"{AUCKLAND}:2026-04-05"],  # an hour later: the day was an hour longer
    }
    assert november == {
        "11-01 05:20": [],
        "11-01 05:35": [f"{ST_JOHNS}:2026-10-31"],
        "11-01 09:50": [],
        "11-01 10:05": [f"{LOS_ANGELES}:2026-10-31"],
        "11-02 06:20": [],
        "11-02 06:35": [f"{ST_JOHNS}:2026-11-01"],
        "11-02 10:50": [],
        "11-02 11:05": [f"{LOS_ANGELES}:2026-11-01"],
    }


def test_every_date_of_a_year_is_asked_for_once_at_the_first_tick_it_is_complete() -> None:
    """Every tick of 2026 (the schedule's own rule, without Dagster): each date once, never early."""
    readiness = Readiness()
    zones = {account: AccountZone(zone) for account, zone in ZONES.items()}
    asked: dict[tuple[str, date], datetime] = {}
    tick = utc(1, 1, 0, 5)
    while tick.year == 2026:
        for account, day in completed_at_tick(tick, zones, readiness):
            assert (account, day) not in asked, (account, day, tick)
            asked[(account, day)] = tick
        tick += TICK

    for account, zone in ZONES.items():
        days = sorted(day for (asked_account, day), _ in asked.items() if asked_account == account)
        assert days == [days[0] + timedelta(days=n) for n in range(len(days))]  # no date skipped
        for day in days:  # 3 h 05 min after local midnight is always a tick: exactly then
            assert asked[(account, day)] == readiness.ready_at(day, zone), (account, day)


def test_an_account_without_a_recorded_zone_waits_for_the_last_zone_to_end(instance, store) -> None:
    register(instance, store, {UTC_STORE: "UTC", LOS_ANGELES: None})

    requested = requested_at(instance, store, utc(3, 10, 3, 5), utc(3, 10, 10, 5), utc(3, 10, 15, 5))

    assert requested == {
        "03-10 03:05": [f"{UTC_STORE}:2026-03-09"],
        "03-10 10:05": [],  # when Los Angeles' day would be complete (PDT)
        "03-10 15:05": [f"{LOS_ANGELES}:2026-03-09"],  # UTC-12 assumed: never early, here 5 h late
    }


def test_the_settling_delay_is_a_setting(instance, store) -> None:
    register(instance, store, {UTC_STORE: "UTC", KOLKATA: "Asia/Kolkata"})
    six_hours = ReadinessResource(settling_delay_minutes=360)

    requested = requested_at(
        instance, store, *and_the_tick_before(utc(3, 10, 0, 35), utc(3, 10, 6, 5)), readiness=six_hours
    )

    assert requested == {
        "03-10 00:20": [],
        "03-10 00:35": [f"{KOLKATA}:2026-03-09"],  # 18:30 UTC + 6 h is between ticks: the next one
        "03-10 05:50": [],
        "03-10 06:05": [f"{UTC_STORE}:2026-03-09"],
    }


def test_a_tick_without_accounts_skips(instance, store) -> None:
    assert isinstance(evaluate(instance, store, utc(3, 10, 3, 5)), dg.SkipReason)


# --- the catch-up sensor ----------------------------------------------------------------------------


def materialize_snapshot(instance: dg.DagsterInstance, account: str, day: date) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(SNAPSHOT, partition=str(partition_key(account, day)))
    )


def add_run(
    instance: dg.DagsterInstance,
    account: str,
    day: date,
    *,
    job: str = INGEST,
    started: bool = False,
    step_failed: bool = False,
    end: dg.DagsterRunStatus | None = dg.DagsterRunStatus.FAILURE,
    tags: dict[str, str] | None = None,
    reason: str | None = "",
    interrupted: bool = False,
) -> str:
    """A run of the partition as Dagster records it: queued, maybe started, maybe a step failure, then ``end``.

    ``reason``: the run's failure reason (tag ``dagster/failure_reason``); by default Dagster's own,
    ``STEP_FAILURE`` after a step failure, none else; None: no reason. ``interrupted``: the step failed
    because its worker was stopped (SIGTERM), as Dagster then records it."""
    if reason == "":
        reason = "STEP_FAILURE" if step_failed and not interrupted else None
    run_tags = {
        "dagster/partition/klaviyo_account": account,
        "dagster/partition/date": day.isoformat(),
        **(tags or {}),
    }
    run = instance.add_run(
        dg.DagsterRun(
            job_name=job, run_id=str(uuid.uuid4()), tags=run_tags, status=dg.DagsterRunStatus.NOT_STARTED
        )
    )
    if started:
        instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.RUN_START.value, job), run.run_id)
    if step_failed:
        error = (
            SerializableErrorInfo("interrupted", [], "DagsterExecutionInterruptedError")
            if interrupted
            else None
        )
        failure = StepFailureData(error=error, user_failure_data=None)
        event = DagsterEvent(
            dg.DagsterEventType.STEP_FAILURE.value, job, event_specific_data=failure, step_key="flows_csv"
        )
        instance.report_dagster_event(event, run.run_id)
    if end == dg.DagsterRunStatus.FAILURE:
        data = JobFailureData(error=None, failure_reason=RunFailureReason(reason)) if reason else None
        instance.report_run_failed(run, "user code server request timed out" if not started else None, data)
    elif end == dg.DagsterRunStatus.SUCCESS:
        instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.RUN_SUCCESS.value, job), run.run_id)
    elif end == dg.DagsterRunStatus.CANCELED:
        instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.RUN_CANCELED.value, job), run.run_id)
    return run.run_id


def catch_up(instance, store, monkeypatch, now: datetime) -> list[dg.RunRequest] | dg.SkipReason:
    monkeypatch.setattr("klaviyo_dagster.defs.sensors.utc_now", lambda: now)
    with dg.build_sensor_context(
        instance=instance, resources={"ingest_store": store, "readiness": DEFAULT_READINESS}
    ) as context:
        return klaviyo_catch_up_sensor(context)


def keys(result: list[dg.RunRequest] | dg.SkipReason) -> list[str]:
    assert not isinstance(result, dg.SkipReason), result
    for request in result:
        account, day = request.run_key.split(":")[1:3]
        assert request.partition_key == partition_key(account, date.fromisoformat(day))
        assert request.tags[ACCOUNT_TAG] == account
    return [request.run_key for request in result]


def snapshot_all_but(instance, account: str, first: date, last: date, missing: set[date]) -> None:
    day = first
    while day <= last:
        if day not in missing:
            materialize_snapshot(instance, account, day)
        day += timedelta(days=1)


def test_catch_up_asks_for_each_accounts_complete_dates_without_snapshot_or_run(
    instance, store, monkeypatch
) -> None:
    register(instance, store, {LOS_ANGELES: "America/Los_Angeles", AUCKLAND: "Pacific/Auckland"})
    # At 16:05 UTC on 03-10, Auckland's 03-10 is complete (since 14:05, past the 2 h grace), Los Angeles' is not.
    snapshot_all_but(instance, AUCKLAND, date(2026, 3, 1), date(2026, 3, 10), {date(2026, 3, 10)})
    snapshot_all_but(
        instance, LOS_ANGELES, date(2026, 3, 1), date(2026, 3, 10), {date(2026, 3, 2), date(2026, 3, 5)}
    )
    add_run(instance, LOS_ANGELES, date(2026, 3, 5), job="klaviyo_dry_run", end=dg.DagsterRunStatus.SUCCESS)

    requested = keys(catch_up(instance, store, monkeypatch, utc(3, 10, 16, 5)))

    assert requested == [
        # 03-02 is outside Los Angeles' 7 complete dates (03-03..03-09); a dry run made no snapshot.
        f"catch-up:{LOS_ANGELES}:2026-03-05",
        f"catch-up:{AUCKLAND}:2026-03-10",
    ]


def test_catch_up_leaves_a_dates_first_two_hours_to_the_schedule(instance, store, monkeypatch) -> None:
    register(instance, store, {AUCKLAND: "Pacific/Auckland"})
    snapshot_all_but(instance, AUCKLAND, date(2026, 3, 1), date(2026, 3, 10), {date(2026, 3, 10)})

    # Auckland's 03-10 is complete from 14:05 UTC
    assert isinstance(catch_up(instance, store, monkeypatch, utc(3, 10, 16, 4)), dg.SkipReason)
    assert keys(catch_up(instance, store, monkeypatch, utc(3, 10, 16, 5))) == [
        f"catch-up:{AUCKLAND}:2026-03-10"
    ]


def test_a_crashed_run_dagster_said_it_would_retry_but_did_not_is_asked_for_again(
    instance, store, monkeypatch
) -> None:
    """A command-line backfill is complete at once: Dagster tags its crashed run ``will_retry`` and
    then declines to retry it. After the grace period the catch-up sensor asks for the date itself."""
    register(instance, store, {UTC_STORE: "UTC"})
    day = date(2026, 3, 9)
    snapshot_all_but(instance, UTC_STORE, date(2026, 3, 1), day, {day})
    crashed = add_run(instance, UTC_STORE, day, started=True, tags={WILL_RETRY_TAG: "true"})

    assert isinstance(catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0)), dg.SkipReason)
    later = time.time() + RETRY_GRACE_SECONDS + 1
    monkeypatch.setattr("klaviyo_dagster.defs.run_history._now", lambda: later)
    assert keys(catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0))) == [
        f"catch-up:{UTC_STORE}:2026-03-09:retry-of:{crashed}"
    ]


def test_catch_up_asks_again_for_runs_that_never_started_or_crashed_not_for_failed_steps(
    instance, store, monkeypatch
) -> None:
    register(instance, store, {UTC_STORE: "UTC"})
    days = {n: date(2026, 3, n) for n in range(3, 10)}
    snapshot_all_but(instance, UTC_STORE, date(2026, 3, 1), date(2026, 3, 9), set(days.values()))
    never_started = add_run(instance, UTC_STORE, days[3])  # e.g. "user code server request timed out"
    crashed = add_run(instance, UTC_STORE, days[4], started=True)  # the worker died: no step failed
    add_run(instance, UTC_STORE, days[5], started=True, step_failed=True)  # Klaviyo 401, bad config, ...
    add_run(instance, UTC_STORE, days[6], started=True, tags={WILL_RETRY_TAG: "true"})  # Dagster retries it
    add_run(instance, UTC_STORE, days[7], end=None)  # still queued
    add_run(instance, UTC_STORE, days[8], started=True, end=dg.DagsterRunStatus.CANCELED)  # a person's choice
    add_run(instance, UTC_STORE, days[9], started=True, step_failed=True)  # failed in a step, then
    relaunched = add_run(instance, UTC_STORE, days[9])  # relaunched by a person, and did not start

    result = catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0))

    assert keys(result) == [
        f"catch-up:{UTC_STORE}:2026-03-03:retry-of:{never_started}",
        f"catch-up:{UTC_STORE}:2026-03-04:retry-of:{crashed}",
        f"catch-up:{UTC_STORE}:2026-03-09:retry-of:{relaunched}",
    ]
    assert [request.tags[CATCH_UP_TRY_TAG] for request in result] == ["1", "1", "1"]


def test_catch_up_gives_up_after_three_retries_in_a_row(instance, store, monkeypatch) -> None:
    register(instance, store, {UTC_STORE: "UTC"})
    day = date(2026, 3, 9)
    snapshot_all_but(instance, UTC_STORE, date(2026, 3, 1), day, {day})
    now = utc(3, 10, 12, 0)
    runs = [add_run(instance, UTC_STORE, day)]

    for attempt in range(1, 4):
        (request,) = catch_up(instance, store, monkeypatch, now)
        assert request.run_key == f"catch-up:{UTC_STORE}:2026-03-09:retry-of:{runs[-1]}"
        assert request.tags[CATCH_UP_TRY_TAG] == str(attempt)
        runs.append(add_run(instance, UTC_STORE, day))  # the new request did not start either

    gave_up = catch_up(instance, store, monkeypatch, now)
    assert isinstance(gave_up, dg.SkipReason)
    assert "failed 4 times in a row before any step: needs a person" in gave_up.skip_message


def test_catch_up_respects_its_cap_oldest_first(instance, store, monkeypatch) -> None:
    register(instance, store, {UTC_STORE: "UTC", LOS_ANGELES: "America/Los_Angeles", KOLKATA: "Asia/Kolkata"})

    # Los Angeles' 03-09: complete from 10:05 UTC, past the grace from 12:05
    requested = keys(catch_up(instance, store, monkeypatch, utc(3, 10, 12, 5)))

    assert len(requested) == CATCH_UP_MAX_RUNS_PER_TICK  # 3 accounts x 7 days missing, capped
    assert requested[:4] == [
        f"catch-up:{UTC_STORE}:2026-03-03",
        f"catch-up:{LOS_ANGELES}:2026-03-03",
        f"catch-up:{KOLKATA}:2026-03-03",
        f"catch-up:{UTC_STORE}:2026-03-04",
    ]


def test_catch_up_with_nothing_missing_skips(instance, store, monkeypatch) -> None:
    assert isinstance(catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0)), dg.SkipReason)


# --- the reviewer's findings: runs of any job, bad zones, stopped workers, cost, outages, re-requests --


def test_catch_up_sees_runs_launched_from_the_asset_pages(instance, store, monkeypatch) -> None:
    register(instance, store, {UTC_STORE: "UTC"})
    days = [date(2026, 3, n) for n in (6, 7, 8, 9)]
    snapshot_all_but(instance, UTC_STORE, date(2026, 3, 1), date(2026, 3, 9), set(days))
    asset_job = "__ASSET_JOB"  # the UI's Materialize and asset backfills
    add_run(instance, UTC_STORE, days[0], job=asset_job, end=None)  # queued
    add_run(instance, UTC_STORE, days[1], job=asset_job, started=True, end=None)  # in progress
    add_run(instance, UTC_STORE, days[2], job=asset_job, started=True, step_failed=True)  # e.g. Klaviyo 401
    add_run(
        instance, UTC_STORE, days[3], job="klaviyo_dry_run", end=dg.DagsterRunStatus.SUCCESS
    )  # no snapshot

    result = catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0))

    assert keys(result) == [f"catch-up:{UTC_STORE}:2026-03-09"]  # only the dry-run date


BAD_ZONES = ["Mars/Olympus", "", "utc", "America/Los_Angeles ", "../../etc/passwd", "Etc/GMT+12\x00"]


@pytest.mark.parametrize("bad", BAD_ZONES)
def test_a_bad_recorded_zone_is_taken_as_unknown_and_stops_no_other_account(
    instance, store, monkeypatch, caplog, bad
) -> None:
    register(instance, store, {UTC_STORE: "UTC", KOLKATA: "Asia/Kolkata", LOS_ANGELES: bad})

    with caplog.at_level("WARNING"):
        at_0305 = requested_at(instance, store, utc(3, 10, 3, 5))
        at_1505 = requested_at(instance, store, utc(3, 10, 15, 5))  # 03-09 ends in UTC-12 at 12:00 UTC
        caught_up = keys(catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0)))

    assert at_0305 == {"03-10 03:05": [f"{UTC_STORE}:2026-03-09"]}
    assert at_1505 == {"03-10 15:05": [f"{LOS_ANGELES}:2026-03-09"]}  # as an account with no zone yet
    assert f"catch-up:{UTC_STORE}:2026-03-03" in caught_up and f"catch-up:{KOLKATA}:2026-03-03" in caught_up
    assert any(
        LOS_ANGELES in r.getMessage() and "not a valid timezone" in r.getMessage() for r in caplog.records
    )


def test_catch_up_retries_a_run_whose_worker_was_stopped(instance, store, monkeypatch) -> None:
    """SIGTERM: the step fails with DagsterExecutionInterruptedError, the run with UNEXPECTED_TERMINATION."""
    register(instance, store, {UTC_STORE: "UTC"})
    days = [date(2026, 3, n) for n in (7, 8, 9)]
    snapshot_all_but(instance, UTC_STORE, date(2026, 3, 1), date(2026, 3, 9), set(days))
    stopped = add_run(
        instance,
        UTC_STORE,
        days[0],
        started=True,
        step_failed=True,
        interrupted=True,
        reason="UNEXPECTED_TERMINATION",
    )
    untagged = add_run(
        instance, UTC_STORE, days[1], started=True, step_failed=True, interrupted=True, reason=None
    )
    add_run(instance, UTC_STORE, days[2], started=True, step_failed=True, reason=None)  # a real step failure

    result = catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0))

    assert keys(result) == [
        f"catch-up:{UTC_STORE}:2026-03-07:retry-of:{stopped}",
        f"catch-up:{UTC_STORE}:2026-03-08:retry-of:{untagged}",  # its only step failure is the interruption
    ]


def count_calls(instance: dg.DagsterInstance, monkeypatch, *names: str) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(instance, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(instance, name, counted)
    return counts


def test_catch_up_costs_a_bounded_number_of_instance_calls(instance, store, monkeypatch) -> None:
    accounts = {f"00000000-0000-4000-8000-{n:012d}": "UTC" for n in range(100, 105)}
    register(instance, store, accounts)
    for n, account in enumerate(accounts):
        for day in range(3, 10):  # every lookback date failed: in a step (tagged), or untagged
            add_run(
                instance,
                account,
                date(2026, 3, day),
                started=True,
                step_failed=True,
                reason=None if n < 4 else "",
            )
    calls = count_calls(
        instance, monkeypatch, "get_run_records", "get_records_for_run", "get_materialized_partitions"
    )

    result = catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0))

    assert isinstance(result, dg.SkipReason)
    assert calls == {
        "get_run_records": 1,
        "get_records_for_run": MAX_EVENT_READS,
        "get_materialized_partitions": 0,
    }
    assert "35 complete partition(s)" in result.skip_message  # 28 of them untagged: 20 read
    assert "failed in a step: needs a person" in result.skip_message


def test_after_an_outage_a_replayed_tick_and_the_catch_up_never_both_ask(
    instance, store, monkeypatch
) -> None:
    """The daemon was down 03:00..04:10; the UTC store's 03-09 became complete at 03:05."""
    register(instance, store, {UTC_STORE: "UTC"})
    snapshot_all_but(instance, UTC_STORE, date(2026, 3, 1), date(2026, 3, 9), {date(2026, 3, 9)})
    replayed = [utc(3, 10, 4, 5) - TICK * n for n in range(5)]  # Dagster replays the last 5 missed ticks
    assert replayed[0] - replayed[-1] + TICK < CATCH_UP_GRACE

    sensor_first = catch_up(instance, store, monkeypatch, utc(3, 10, 4, 10))
    schedule = requested_at(instance, store, *replayed)

    assert isinstance(sensor_first, dg.SkipReason)
    assert [key for asked in schedule.values() for key in asked] == [f"{UTC_STORE}:2026-03-09"]
    # once the replayed tick's run exists, the catch-up leaves it, whenever it looks
    add_run(instance, UTC_STORE, date(2026, 3, 9), end=None)
    assert isinstance(catch_up(instance, store, monkeypatch, utc(3, 10, 5, 10)), dg.SkipReason)


def launch_each(
    instance, store, *ticks: datetime, readiness: ReadinessResource = DEFAULT_READINESS
) -> list[tuple[str, str]]:
    """Every tick evaluated, each request recorded as a queued run (as the daemon would launch it)."""
    asked = []
    for tick in ticks:
        result = evaluate(instance, store, tick, readiness)
        if isinstance(result, dg.SkipReason):
            continue
        for request in result:
            account, day = request.run_key.split(":")
            add_run(instance, account, date.fromisoformat(day), end=None)
            asked.append((tick.strftime("%m-%d %H:%M"), day))
    return asked


def test_a_longer_settling_delay_does_not_ask_for_a_date_again(instance, store) -> None:
    register(instance, store, {UTC_STORE: "UTC"})
    none, a_day = ReadinessResource(settling_delay_minutes=0), ReadinessResource(settling_delay_minutes=1440)
    before = launch_each(instance, store, utc(3, 1, 0, 5), utc(3, 2, 0, 5), readiness=none)
    after = launch_each(instance, store, utc(3, 3, 0, 5), utc(3, 4, 0, 5), readiness=a_day)

    assert before == [("03-01 00:05", "2026-02-28"), ("03-02 00:05", "2026-03-01")]
    assert after == [("03-04 00:05", "2026-03-02")]  # 03-01 "became complete" again at 03-03 00:05


def test_an_account_moving_west_does_not_ask_for_a_date_again(instance, store) -> None:
    register(instance, store, {UTC_STORE: "Pacific/Kiritimati"})  # UTC+14: D complete at 13:05 UTC on D
    before = launch_each(instance, store, utc(3, 1, 13, 5), utc(3, 2, 13, 5))
    store.get_store().tables.record_account_timezone(UTC_STORE, "Pacific/Pago_Pago", None, "run")  # UTC-11
    after = launch_each(instance, store, utc(3, 3, 14, 5), utc(3, 4, 14, 5))  # 14:05 UTC on D+1

    assert [day for _, day in before] == ["2026-03-01", "2026-03-02"]
    assert after == [("03-04 14:05", "2026-03-03")]  # not 03-02 again at 03-03 14:05


def test_the_schedule_asks_again_for_a_date_whose_run_never_started(instance, store) -> None:
    register(instance, store, {UTC_STORE: "UTC"})
    add_run(instance, UTC_STORE, date(2026, 3, 9))  # "user code server request timed out"

    assert requested_at(instance, store, utc(3, 10, 3, 5)) == {"03-10 03:05": [f"{UTC_STORE}:2026-03-09"]}


@pytest.mark.parametrize(
    ("job_name", "run_config", "expected"),
    [
        ("klaviyo_dry_run", {}, True),
        ("klaviyo_ingest", {"ops": {"flows_csv": {"config": {"mode": "dry-run"}}}}, True),
        ("__ASSET_JOB", {"ops": {"subscribers_csv": {"config": {"mode": "dry-run", "days": 3}}}}, True),
        ("klaviyo_ingest", {"ops": {"flows_csv": {"config": {"mode": "live"}}}}, False),
        ("__ASSET_JOB", {}, False),
    ],
)
def test_a_dry_run_is_known_by_its_job_or_its_run_config(job_name, run_config, expected) -> None:
    """A dry run writes nothing: it must not count as a date's sync (catch-up) nor the account's."""
    run = dg.DagsterRun(job_name=job_name, run_id=str(uuid.uuid4()), run_config=run_config)

    assert is_dry_run(run) is expected
