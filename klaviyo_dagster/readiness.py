"""When a partition date is complete for an account: its day is over where the account is.

A partition date D is a UTC calendar date, and each file's window is D *in the account's timezone*
(contracts/csv.md, "Partition window"). So D may only be requested once D has ended in that zone,
plus a settling delay for Klaviyo's reporting to catch up (design.md, "Automation"). Before that, a
run would read an unfinished day and nothing would ever read it again as D.

This module is plain Python (no Dagster): the schedule, the catch-up sensor, the trigger and the
command line all ask it the same questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

# Unless KLAVIYO_SETTLING_DELAY_MINUTES says otherwise (environment.py), 3 h 05 min after local
# midnight: an account in UTC is requested at 03:05 UTC, the nightly time of
# the old orchestrator (and of this project before per-account readiness), and every account gets the
# same three hours for late events (deliveries, opens, attributed orders) to reach Klaviyo's reports.
DEFAULT_SETTLING_DELAY = timedelta(hours=3, minutes=5)
MAX_SETTLING_DELAY = timedelta(hours=24)
# Where a day ends last: UTC-12 (the tz database writes it with the sign inverted). Assumed for an
# account whose timezone is not recorded yet, so no date is requested before it has ended wherever
# the account is; it only ever makes a run later than needed, never too early.
LATEST_ZONE = "Etc/GMT+12"
# The partitions' first date unless KLAVIYO_PARTITIONS_START_DATE says otherwise (environment.py).
DEFAULT_PARTITIONS_START = date(2024, 1, 1)


def utc_now() -> datetime:
    return datetime.now(UTC)


@lru_cache(maxsize=1024)
def is_zone(name: object) -> bool:
    """Whether ``name`` is a timezone of the tz database exactly as written (no blanks, right case)."""
    if not isinstance(name, str) or not name or name != name.strip() or "\x00" in name:
        return False
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def describe_delay(delay: timedelta) -> str:
    """``3 h 05 min``."""
    hours, minutes = divmod(int(delay.total_seconds() // 60), 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class AccountZone:
    """The zone an account's days are read in, as far as this deployment knows."""

    name: str
    assumed: bool = False  # True: not recorded yet (or not valid); LATEST_ZONE stands in
    invalid: str | None = None  # the recorded value, when it is not a timezone

    def describe(self) -> str:
        if self.invalid is not None:
            return f"{self.name} (assumed: the recorded timezone {self.invalid!r} is not a valid timezone)"
        if self.assumed:
            return f"{self.name} (assumed: the account's timezone is not recorded yet)"
        return self.name


UNKNOWN_ZONE = AccountZone(LATEST_ZONE, assumed=True)


class DateNotComplete(Exception):
    """An explicit partition date whose day is not over (plus the settling delay) for the account."""

    def __init__(self, message: str, ready_at: datetime | None, newest_complete: date) -> None:
        super().__init__(message)
        self.ready_at = ready_at
        self.newest_complete = newest_complete


@dataclass(frozen=True)
class Readiness:
    """D is complete in a zone from local midnight at the end of D plus ``delay`` (elapsed time)."""

    delay: timedelta = DEFAULT_SETTLING_DELAY

    def day_end(self, day: date, zone: str) -> datetime:
        """The UTC instant D ends in ``zone``: the first instant of D+1 there.

        ``datetime.combine`` with fold 0 maps a midnight skipped by a DST change to the instant
        the clocks jumped, which is where the next day starts.
        """
        return datetime.combine(day + timedelta(days=1), time(), ZoneInfo(zone)).astimezone(UTC)

    def ready_at(self, day: date, zone: str) -> datetime:
        """The first UTC instant at which D may be requested for an account in ``zone``."""
        return self.day_end(day, zone) + self.delay

    def newest_complete(self, now: datetime, zone: str) -> date:
        """The newest D complete at ``now``: the local date of ``now - delay``, minus one day."""
        return (now.astimezone(UTC) - self.delay).astimezone(ZoneInfo(zone)).date() - timedelta(days=1)

    def completed_between(self, since: datetime, until: datetime, zone: str) -> date | None:
        """The date that became complete in ``(since, until]``, if one did (the newest, if several)."""
        newest = self.newest_complete(until, zone)
        return newest if newest != self.newest_complete(since, zone) else None

    def is_complete(self, day: date, now: datetime, zone: str) -> bool:
        return day <= self.newest_complete(now, zone)

    def check(self, day: date, now: datetime, zone: AccountZone, subject: str) -> None:
        """DateNotComplete, saying when D will be complete, unless D is complete for ``zone`` at ``now``."""
        if self.is_complete(day, now, zone.name):
            return
        newest = self.newest_complete(now, zone.name)
        try:
            ready = self.ready_at(day, zone.name)
        except OverflowError:  # the day ends after 9999-12-31: it never will
            raise DateNotComplete(
                f"{day.isoformat()} is never complete for {subject}: it ends after the last date that "
                f"can be represented; the newest complete date is {newest.isoformat()}",
                ready_at=None,
                newest_complete=newest,
            ) from None
        raise DateNotComplete(
            f"{day.isoformat()} is not complete yet for {subject}: the day ends at "
            f"{self.day_end(day, zone.name).isoformat()} in {zone.describe()}, and is complete "
            f"{describe_delay(self.delay)} later, from {ready.isoformat()}; the newest complete date "
            f"is {newest.isoformat()}",
            ready_at=ready,
            newest_complete=newest,
        )

    def complete_everywhere(self, day: date, now: datetime) -> bool:
        """Whether D is complete in every zone (so no zone need be known to allow it)."""
        return self.is_complete(day, now, LATEST_ZONE)
