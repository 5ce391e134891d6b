"""Counters of what talking to Klaviyo cost, per rate-limit group, for asset metadata and benchmarks."""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass
class GroupStats:
    calls: int = 0  # HTTP requests sent, retries included
    throttled: int = 0  # 429 responses met
    retries: int = 0  # requests re-sent after a 429, 5xx, timeout or connection error
    paced_seconds: float = 0.0  # waited before sending, to stay inside the documented limits
    retry_after_seconds: float = 0.0  # waited because Klaviyo said Retry-After
    backoff_seconds: float = 0.0  # waited between retries of failed calls


class ClientStats:
    """Thread-safe ``{group: GroupStats}``."""

    def __init__(self) -> None:
        self._groups: dict[str, GroupStats] = {}
        self._lock = threading.Lock()

    def add(self, group: str, **increments: float) -> None:
        with self._lock:
            stats = self._groups.setdefault(group, GroupStats())
            for name, amount in increments.items():
                setattr(stats, name, getattr(stats, name) + amount)

    def snapshot(self) -> dict[str, GroupStats]:
        with self._lock:
            return {group: GroupStats(**asdict(stats)) for group, stats in sorted(self._groups.items())}

    def totals(self) -> GroupStats:
        total = GroupStats()
        for stats in self.snapshot().values():
            for name, value in asdict(stats).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{group: {counter: value}}`` with only what happened: zero counters and groups left out."""
        found = {
            group: {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(stats).items() if v}
            for group, stats in self.snapshot().items()
        }
        return {group: counters for group, counters in found.items() if counters}
