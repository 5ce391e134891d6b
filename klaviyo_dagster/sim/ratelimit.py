"""Fixed-window rate limiting per (account, rate-limit group), as Klaviyo enforces it.

Each window (burst 1 s, steady 60 s, daily 86400 s — scaled by ``time_scale``) opens with the
first counted call and closes ``seconds * time_scale`` later. A call is admitted only when every
window has room; a refused call counts against nothing. ``Retry-After`` is reported in nominal
(unscaled) Klaviyo seconds so a client sees what it would see against the real API.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from klaviyo_dagster.klaviyo.spec import RateLimit, Window


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: int = 0  # nominal seconds, when refused
    limit: int = 0  # steady window, when allowed
    remaining: int = 0
    reset: int = 0  # nominal seconds until the steady window resets


@dataclass
class _Counter:
    started: float
    count: int


class RateLimiter:
    def __init__(
        self,
        time_scale: float = 1.0,
        overrides: Mapping[str, Mapping[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.time_scale = time_scale
        self.overrides = {group: dict(limits) for group, limits in (overrides or {}).items()}
        self.clock = clock
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, str, str], _Counter] = {}

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()

    def windows(self, group: str, rate_limit: RateLimit) -> list[Window]:
        """The group's windows with any test override applied (an override may add a window)."""
        overrides = self.overrides.get(group, {})
        windows = [Window(w.name, overrides.get(w.name, w.limit), w.seconds) for w in rate_limit.windows]
        seconds = {"burst": 1, "steady": 60, "daily": 86_400}
        for name, limit in overrides.items():
            if all(w.name != name for w in windows):
                windows.append(Window(name, limit, seconds[name]))
        return windows

    def acquire(self, account: str, group: str, rate_limit: RateLimit) -> Decision:
        """Count one call, or refuse it with the nominal seconds until the fullest window reopens."""
        now = self.clock()
        windows = self.windows(group, rate_limit)
        with self._lock:
            counters = [self._current(account, group, w, now) for w in windows]
            blocked = [
                (counter.started + w.seconds * self.time_scale - now) / self.time_scale
                for w, counter in zip(windows, counters, strict=True)
                if counter.count >= w.limit
            ]
            if blocked:
                return Decision(False, retry_after=max(1, math.ceil(max(blocked))))
            for counter in counters:
                counter.count += 1
            steady = next(
                ((w, c) for w, c in zip(windows, counters, strict=True) if w.name == "steady"),
                (windows[0], counters[0]),
            )
            window, counter = steady
            reset = (counter.started + window.seconds * self.time_scale - now) / self.time_scale
            return Decision(
                True,
                limit=window.limit,
                remaining=max(0, window.limit - counter.count),
                reset=max(0, math.ceil(reset)),
            )

    def _current(self, account: str, group: str, window: Window, now: float) -> _Counter:
        key = (account, group, window.name)
        counter = self._counters.get(key)
        if counter is None or now >= counter.started + window.seconds * self.time_scale:
            counter = self._counters[key] = _Counter(now, 0)
        return counter
