"""Client-side pacing: never send a call that Klaviyo's fixed windows would refuse.

Klaviyo counts calls per account and operation in fixed windows (1 s burst, 1 min steady, 1 day
daily) that we cannot see. A call counts when it *arrives*, somewhere between our send and the
response. So a slot is held from the moment a call is sent until one window length after its response
has come back: then any ``limit + 1`` calls arriving in one window would all have held a slot at the
same instant, which the slot count forbids. That makes 429s impossible for a client that is alone on
its account, at the cost of one latency per window (~0.25 % of the steady rate at 150 ms).

"Alone on its account" means this process: ``../shared/contracts/klaviyo-api.md``, "Rate limits", has
every caller of an account share its budgets, and runs one after another are separate processes. For
the report groups (225 calls a day) the same rule is applied across processes by the report call
ledger in the ingest database (``ledger.py``), which the client uses instead of this pacer when given.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from klaviyo_dagster.klaviyo.spec import RateLimit, Window


class PacingWaitTooLong(Exception):
    """The next free slot is further away than the caller is willing to wait."""

    def __init__(self, window: Window, wait_seconds: float) -> None:
        super().__init__(f"{window.name} limit of {window.limit} per {window.seconds} s reached")
        self.window = window
        self.wait_seconds = wait_seconds


@dataclass
class _WindowSlots:
    window: Window
    seconds: float  # the window's length in real seconds (after time scaling)
    releases: list[float]  # sorted times at which held slots of finished calls free up

    def wait_needed(self, now: float, in_flight: int) -> float | None:
        """Seconds until a new call fits, or None when only a running call's end can free a slot."""
        del self.releases[: bisect.bisect_right(self.releases, now)]
        free = self.window.limit - in_flight - len(self.releases)
        if free > 0:
            return 0.0
        # Slots still to free up, oldest first; when running calls alone fill the window, wait for one.
        needed = 1 - free
        if needed > len(self.releases):
            return None
        return self.releases[needed - 1] - now


class GroupPacer:
    """Hands out send slots for one rate-limit group; thread-safe."""

    def __init__(
        self,
        rate_limit: RateLimit,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._slots = [_WindowSlots(w, w.seconds * time_scale, []) for w in rate_limit.windows]
        self._in_flight = 0
        self._clock = clock
        self._changed = threading.Condition()

    def acquire(self, max_wait_seconds: float) -> float:
        """Block until a call may be sent; returns the seconds waited.

        Raises PacingWaitTooLong at once when the wait would exceed ``max_wait_seconds`` (the daily
        window being full), instead of sleeping for hours.
        """
        started = self._clock()
        waited = False
        with self._changed:
            while True:
                now = self._clock()
                waits = [(s.wait_needed(now, self._in_flight), s.window) for s in self._slots]
                if all(wait == 0.0 for wait, _ in waits):
                    self._in_flight += 1
                    return now - started if waited else 0.0
                longest, window = max(waits, key=lambda item: float("inf") if item[0] is None else item[0])
                if longest is not None and (now - started) + longest > max_wait_seconds:
                    raise PacingWaitTooLong(window, longest)
                waited = True
                self._changed.wait(timeout=longest)

    def release(self) -> None:
        """The call sent under the last acquired slot has its response (or failed)."""
        with self._changed:
            now = self._clock()
            self._in_flight -= 1
            for slots in self._slots:
                bisect.insort(slots.releases, now + slots.seconds)
            self._changed.notify_all()
