"""The schedule and the catch-up sensor with built contexts at fixed instants: what they ask for.

Five accounts, one per zone that makes the point (UTC; Los Angeles, west; Auckland, east of UTC
with the southern summer; Kolkata, a half-hour offset without DST; St John's, a half-hour offset
with DST), with the default settling delay of 3 h 05 min.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent
from dagster._core.execution.plan.objects import StepFailureData

from klaviyo_dagster.defs.partitions import ACCOUNTS_PARTITIONS_NAME, partition_key
from klaviyo_dagster.defs.resources import IngestStoreResource
from klaviyo_dagster.defs.run_history import WILL_RETRY_TAG
from klaviyo_dagster.defs.schedules import (
    ACCOUNT_TAG,
    TICK,
    completed_at_tick,
    klaviyo_complete_days_schedule,
)
from klaviyo_dagster.defs.sensors import (
    CATCH_UP_MAX_RUNS_PER_TICK,
    CATCH_UP_TRY_TAG,
    klaviyo_catch_up_sensor,
)
from klaviyo_dagster.defs.snapshot import SNAPSHOT
from klaviyo_dagster.readiness import SETTLING_DELAY_ENV_VAR, AccountZone, Readiness

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


@pytest.fixture
def instance() -> dg.DagsterInstance:
    with dg.instance_for_test() as instance:  # a real (temporary) instance: schedules need its ref
        yield instance


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> IngestStoreResource:
    monkeypatch.delenv(SETTLING_DELAY_ENV_VAR, raising=False)
    return IngestStoreResource(data_dir=str(tmp_path / "data"))


def register(instance: dg.DagsterInstance, store: IngestStoreResource, zones: dict[str, str | None]) -> None:
    """The accounts' partitions, and each one's recorded timezone (None: not recorded yet)."""
    instance.add_dynamic_partitions(ACCOUNTS_PARTITIONS_NAME, list(zones))
    tables = store.get_store().tables
    for account, zone in zones.items():
        if zone is not None:
            tables.record_account_timezone(account, zone, None, "discovery")


# --- the schedule ------------------------------------------------------------------------------------


def evaluate(instance, store, tick: datetime) -> list[dg.RunRequest] | dg.SkipReason:
    # Entered, so the instance the context opens from the ref is closed again (Dagster's context var).
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, resources={"ingest_store": store}
    ) as context:
        return klaviyo_complete_days_schedule(context)


def requested_at(instance, store, *ticks: datetime) -> dict[str, list[str]]:
    """The run keys each tick asks for (``"MM-DD HH:MM"`` → keys), each from a built context."""
    requested = {}
    for tick in ticks:
        result = evaluate(instance, store, tick)
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


def test_the_settling_delay_is_a_setting(instance, store, monkeypatch) -> None:
    register(instance, store, {UTC_STORE: "UTC", KOLKATA: "Asia/Kolkata"})
    monkeypatch.setenv(SETTLING_DELAY_ENV_VAR, "360")  # 6 h

    requested = requested_at(instance, store, *and_the_tick_before(utc(3, 10, 0, 35), utc(3, 10, 6, 5)))

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
) -> str:
    """A run of the partition as Dagster records it: queued, maybe started, maybe a step failure, then ``end``."""
    run_tags = {
        "dagster/partition/account": account,
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
        failure = StepFailureData(error=None, user_failure_data=None)
        event = DagsterEvent(
            dg.DagsterEventType.STEP_FAILURE.value, job, event_specific_data=failure, step_key="flows_csv"
        )
        instance.report_dagster_event(event, run.run_id)
    if end == dg.DagsterRunStatus.FAILURE:
        instance.report_run_failed(run, "user code server request timed out" if not started else None)
    elif end == dg.DagsterRunStatus.SUCCESS:
        instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.RUN_SUCCESS.value, job), run.run_id)
    elif end == dg.DagsterRunStatus.CANCELED:
        instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.RUN_CANCELED.value, job), run.run_id)
    return run.run_id


def catch_up(instance, store, monkeypatch, now: datetime) -> list[dg.RunRequest] | dg.SkipReason:
    monkeypatch.setattr("klaviyo_dagster.defs.sensors.utc_now", lambda: now)
    with dg.build_sensor_context(instance=instance, resources={"ingest_store": store}) as context:
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
    # At 16:00 UTC on 03-10, Auckland's 03-10 is complete (since 14:05), Los Angeles' is not.
    snapshot_all_but(instance, AUCKLAND, date(2026, 3, 1), date(2026, 3, 10), {date(2026, 3, 10)})
    snapshot_all_but(
        instance, LOS_ANGELES, date(2026, 3, 1), date(2026, 3, 10), {date(2026, 3, 2), date(2026, 3, 5)}
    )
    add_run(instance, LOS_ANGELES, date(2026, 3, 5), job="klaviyo_dry_run", end=dg.DagsterRunStatus.SUCCESS)

    requested = keys(catch_up(instance, store, monkeypatch, utc(3, 10, 16, 0)))

    assert requested == [
        # 03-02 is outside Los Angeles' 7 complete dates (03-03..03-09); a dry run made no snapshot.
        f"catch-up:{LOS_ANGELES}:2026-03-05",
        f"catch-up:{AUCKLAND}:2026-03-10",
    ]


def test_catch_up_leaves_a_dates_first_hour_to_the_schedule(instance, store, monkeypatch) -> None:
    register(instance, store, {AUCKLAND: "Pacific/Auckland"})
    snapshot_all_but(instance, AUCKLAND, date(2026, 3, 1), date(2026, 3, 10), {date(2026, 3, 10)})

    assert isinstance(catch_up(instance, store, monkeypatch, utc(3, 10, 15, 4)), dg.SkipReason)
    assert keys(catch_up(instance, store, monkeypatch, utc(3, 10, 15, 5))) == [
        f"catch-up:{AUCKLAND}:2026-03-10"
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

    requested = keys(catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0)))

    assert len(requested) == CATCH_UP_MAX_RUNS_PER_TICK  # 3 accounts x 7 days missing, capped
    assert requested[:4] == [
        f"catch-up:{UTC_STORE}:2026-03-03",
        f"catch-up:{LOS_ANGELES}:2026-03-03",
        f"catch-up:{KOLKATA}:2026-03-03",
        f"catch-up:{UTC_STORE}:2026-03-04",
    ]


def test_catch_up_with_nothing_missing_skips(instance, store, monkeypatch) -> None:
    assert isinstance(catch_up(instance, store, monkeypatch, utc(3, 10, 12, 0)), dg.SkipReason)
