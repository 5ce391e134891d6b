"""The pacer's promise: no fixed window of Klaviyo's ever sees more calls than its limit."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from klaviyo_dagster.klaviyo.pacing import GroupPacer, PacingWaitTooLong
from klaviyo_dagster.klaviyo.spec import RateLimit, Window

SCALE = 0.01  # 1 s → 10 ms, 60 s → 600 ms


def max_calls_in_any_fixed_window(arrivals: list[float], seconds: float) -> int:
    """The most arrivals in one window [k*seconds, (k+1)*seconds) — for every alignment we try."""
    worst = 0
    for offset in (i * seconds / 20 for i in range(20)):
        windows: dict[int, int] = {}
        for t in arrivals:
            key = int((t + offset) // seconds)
            windows[key] = windows.get(key, 0) + 1
        worst = max(worst, *windows.values())
    return worst


def test_concurrent_calls_with_random_latency_never_overfill_a_window() -> None:
    limit = RateLimit((Window("burst", 3, 1), Window("steady", 12, 60)))
    pacer = GroupPacer(limit, time_scale=SCALE)
    arrivals: list[float] = []
    lock = threading.Lock()
    rng = random.Random(3)

    def call(_: int) -> None:
        pacer.acquire(max_wait_seconds=60)
        send = time.monotonic()
        latency = rng.uniform(0, 0.02)
        time.sleep(latency)
        with lock:  # the server counts the call somewhere between send and response
            arrivals.append(send + rng.uniform(0, latency))
        pacer.release()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(call, range(40)))

    assert len(arrivals) == 40
    assert max_calls_in_any_fixed_window(arrivals, 1 * SCALE) <= 3
    assert max_calls_in_any_fixed_window(arrivals, 60 * SCALE) <= 12


def test_a_free_slot_costs_no_wait() -> None:
    pacer = GroupPacer(RateLimit((Window("burst", 2, 1),)), time_scale=SCALE)
    assert pacer.acquire(max_wait_seconds=1) == 0.0


def test_a_wait_beyond_the_cap_raises_at_once_naming_the_window(monkeypatch) -> None:
    pacer = GroupPacer(RateLimit((Window("daily", 1, 86_400),)))
    pacer.acquire(max_wait_seconds=1)
    pacer.release()
    waits: list[float | None] = []
    wait = pacer._changed.wait
    monkeypatch.setattr(pacer._changed, "wait", lambda timeout=None: waits.append(timeout) or wait(0))
    with pytest.raises(PacingWaitTooLong) as refused:
        pacer.acquire(max_wait_seconds=5)
    assert refused.value.window.name == "daily"
    assert refused.value.wait_seconds > 86_000
    assert waits == []  # refused before waiting at all, not after the 5 s cap
