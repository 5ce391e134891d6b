"""When a partition date is complete for an account (contracts/csv.md, "Partition window")."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from klaviyo_dagster.readiness import (
    LATEST_ZONE,
    UNKNOWN_ZONE,
    AccountZone,
    DateNotComplete,
    Readiness,
    is_zone,
)

READY = Readiness()  # the default settling delay, 3 h 05 min
ZONES = ("UTC", "America/Los_Angeles", "Pacific/Auckland", "Asia/Kolkata", "America/St_Johns")


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "day", "ready"),
    [
        ("UTC", date(2026, 1, 15), utc(1, 16, 3, 5)),
        ("America/Los_Angeles", date(2026, 1, 15), utc(1, 16, 11, 5)),  # PST, UTC-8
        ("America/Los_Angeles", date(2026, 7, 15), utc(7, 16, 10, 5)),  # PDT, UTC-7
        ("America/Los_Angeles", date(2026, 3, 7), utc(3, 8, 11, 5)),  # clocks go forward on 03-08
        ("America/Los_Angeles", date(2026, 3, 8), utc(3, 9, 10, 5)),  # a 23-hour day
        ("America/Los_Angeles", date(2026, 11, 1), utc(11, 2, 11, 5)),  # a 25-hour day
        ("Pacific/Auckland", date(2026, 1, 15), utc(1, 15, 14, 5)),  # NZDT, UTC+13: on D itself
        ("Pacific/Auckland", date(2026, 4, 5), utc(4, 5, 15, 5)),  # NZST from 04-05
        ("Asia/Kolkata", date(2026, 7, 15), utc(7, 15, 21, 35)),  # UTC+5:30, no DST
        ("America/St_Johns", date(2026, 1, 15), utc(1, 16, 6, 35)),  # NST, UTC-3:30
        ("America/St_Johns", date(2026, 7, 15), utc(7, 16, 5, 35)),  # NDT, UTC-2:30
        ("America/Santiago", date(2026, 9, 5), utc(9, 6, 7, 5)),  # midnight skipped: day starts 01:00 -03
    ],
)
def test_a_day_is_ready_its_settling_delay_after_it_ends_in_the_zone(zone, day, ready) -> None:
    assert READY.ready_at(day, zone) == ready
    assert READY.newest_complete(ready, zone) == day
    assert READY.newest_complete(ready - timedelta(seconds=1), zone) == day - timedelta(days=1)
    assert READY.completed_between(ready - timedelta(minutes=15), ready, zone) == day
    assert READY.completed_between(ready, ready + timedelta(minutes=15), zone) is None


def test_a_day_complete_in_the_latest_zone_is_complete_everywhere() -> None:
    now = utc(3, 10, 15, 5)  # 2026-03-09 has just ended at UTC-12, plus 3 h 05 min
    assert READY.complete_everywhere(date(2026, 3, 9), now)
    assert not READY.complete_everywhere(date(2026, 3, 9), now - timedelta(seconds=1))
    assert all(READY.is_complete(date(2026, 3, 9), now, zone) for zone in ZONES)
    assert AccountZone(LATEST_ZONE, assumed=True) == UNKNOWN_ZONE


def test_an_incomplete_date_is_refused_saying_when_it_will_be_complete() -> None:
    now = utc(3, 10, 9, 0)
    READY.check(date(2026, 3, 9), now, AccountZone("UTC"), "account A")  # complete at 03:05 UTC

    with pytest.raises(DateNotComplete) as refused:
        READY.check(date(2026, 3, 9), now, AccountZone("America/Los_Angeles"), "account A")

    assert str(refused.value) == (
        "2026-03-09 is not complete yet for account A: the day ends at 2026-03-10T07:00:00+00:00 in "
        "America/Los_Angeles, and is complete 3 h 05 min later, from 2026-03-10T10:05:00+00:00; the "
        "newest complete date is 2026-03-08"
    )
    assert (refused.value.ready_at, refused.value.newest_complete) == (utc(3, 10, 10, 5), date(2026, 3, 8))


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("UTC", True),
        ("America/Los_Angeles", True),
        ("Etc/GMT+12", True),
        ("Mars/Olympus", False),
        ("", False),
        ("utc", False),
        ("America/Los_Angeles ", False),
        ("../../etc/passwd", False),
        ("Etc/GMT+12\x00", False),
        (None, False),
    ],
)
def test_only_tz_database_names_are_zones(name, valid) -> None:
    assert is_zone(name) is valid


def test_a_date_at_the_end_of_the_calendar_is_never_complete_and_does_not_overflow() -> None:
    for zone in ("UTC", LATEST_ZONE, "Pacific/Kiritimati"):
        with pytest.raises(DateNotComplete, match="is never complete for account x") as caught:
            READY.check(date.max, utc(3, 10, 12), AccountZone(zone), "account x")
        assert caught.value.ready_at is None
        assert caught.value.newest_complete <= date(2026, 3, 10)
