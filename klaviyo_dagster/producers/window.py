"""Which days a partition reads: fixed calendar dates, never "the last N days from now".

A partition is one UTC calendar date D. Its window is the ``days`` dates ending on D, read as
dates in the account's timezone (Klaviyo evaluates custom report timeframes there). A rerun or a
backfill months later asks for exactly the same timeframe, so it gets exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Window:
    first_day: date
    last_day: date
    timezone: str

    @classmethod
    def ending_on(cls, day: date, days: int, timezone: str) -> Window:
        return cls(day - timedelta(days=days - 1), day, timezone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def days(self) -> list[date]:
        return calendar_days(self.first_day, self.last_day)

    def timeframe(self) -> dict[str, str]:
        """Klaviyo's custom timeframe: 00:00:00 of the first day to 23:59:59 of the last, local time.

        Klaviyo reads both ends inclusive and rounds ``end`` up to :59:59 of its hour, so any other
        end would count part of the next day twice. The offset is ignored by Klaviyo; we send the
        local one so the request reads correctly in logs.
        """
        return {
            "start": self.start_local.isoformat(),
            "end": datetime.combine(self.last_day, time(23, 59, 59), self.tz).isoformat(),
        }

    @property
    def start_local(self) -> datetime:
        return datetime.combine(self.first_day, time(), self.tz)

    @property
    def start_utc(self) -> datetime:
        return self.start_local.astimezone(UTC)

    def contains(self, moment: datetime) -> bool:
        """Whether an aware moment falls on one of the window's days in the account timezone."""
        return self.first_day <= moment.astimezone(self.tz).date() <= self.last_day

    def describe(self) -> str:
        return f"{self.first_day.isoformat()}..{self.last_day.isoformat()} ({self.timezone})"


def calendar_days(first: date, last: date) -> list[date]:
    """Every calendar day from ``first`` to ``last``, both included (none when ``first`` is later)."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
