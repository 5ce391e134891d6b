"""The report call ledger's rule and wait loop, on an in-memory store and a fake clock.

contracts/klaviyo-api.md, "Rate limits": report groups allow 1/s, 2/min and 225/day per account. The
slot rule is the pacer's (``pacing.py``) applied to the calls of every process; the database backends
are tested in ``klaviyo_dagster_tests/storage/test_call_ledger.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from klaviyo_dagster.klaviyo.ledger import (
    Admission,
    RecordedCall,
    ReportCallLedger,
    SlotRule,
    describe_group,
)
from klaviyo_dagster.klaviyo.spec import RateLimit, Window, load_operations
from klaviyo_dagster_tests.storage.test_call_ledger import START, FakeClock, near

REPORTS = load_operations()["query_flow_series"].rate_limit
GROUP = "query_flow_series"
STEADY = RateLimit((Window("steady", 2, 60),))


class MemoryStore:
    """A ``CallLedgerStore`` in a list; ``before_admit`` lets a test act as another process."""

    def __init__(self) -> None:
        self.calls: list[list[Any]] = []  # [account, group, sent_at, released_at]
        self.before_admit: Callable[[float], None] | None = None

    def admit(
        self,
        account_id: str,
        group: str,
        *,
        run_id: str | None,
        clock: Callable[[], float],
        horizon_seconds: float,
        keep_seconds: float,
        decide: Callable[[Sequence[RecordedCall], float], Admission],
    ) -> tuple[Admission, Any]:
        now = clock()
        if self.before_admit is not None:
            self.before_admit(now)
        rows = [RecordedCall(c[2], c[3]) for c in self.calls if c[:2] == [account_id, group]]
        admission = decide(rows, now)
        if not admission.admitted:
            return admission, None
        self.calls.append([account_id, group, now, None])
        return admission, len(self.calls) - 1

    def release(self, call_id: Any, released_at: float) -> None:
        self.calls[call_id][3] = released_at


def test_a_call_holds_its_slot_from_send_until_a_window_and_the_margin_after_release() -> None:
    rule = SlotRule((Window("steady", 1, 60),), clock_margin_seconds=1.0)
    released = [RecordedCall(START, START + 5)]

    assert rule.admission(released, START + 5 + 60.5).wait_seconds == near(0.5)
    assert rule.admission(released, START + 5 + 61).admitted
    blocked = rule.admission(released, START + 10)
    assert (blocked.window.name, blocked.used, blocked.limit) == ("steady", 1, 1)


def test_a_call_in_flight_holds_its_slot_and_the_wait_is_a_lower_bound() -> None:
    rule = SlotRule((Window("steady", 1, 60),), stale_after_seconds=180, clock_margin_seconds=0)
    in_flight = [RecordedCall(START, None)]

    # It may be released any moment: no new call before one window from now, at the earliest.
    assert rule.admission(in_flight, START + 10).wait_seconds == near(60)
    assert rule.admission(in_flight, START + 100).wait_seconds == near(60)
    # Past the stale limit it counts as released at START + 180.
    assert rule.admission(in_flight, START + 200).wait_seconds == near(40)
    assert rule.admission(in_flight, START + 240).admitted


def test_the_longest_wait_of_all_windows_is_the_answer() -> None:
    rule = SlotRule((*REPORTS.windows[:2], Window("daily", 2, 86_400)), clock_margin_seconds=0)
    calls = [RecordedCall(START, START), RecordedCall(START + 61, START + 61)]

    answer = rule.admission(calls, START + 122)

    assert answer.window.name == "daily"
    assert answer.wait_seconds == near(86_400 - 122)


def test_overrides_change_limits_and_may_add_a_window() -> None:
    ledger = ReportCallLedger(
        MemoryStore(), "a", limit_overrides={"get_flows": {"daily": 3}, GROUP: {"daily": 4}}
    )

    assert ledger.windows(GROUP, REPORTS)[-1] == Window("daily", 4, 86_400)
    assert ledger.covers("get_flows", STEADY)
    assert not ledger.covers("get_metrics", STEADY)


def test_short_waits_are_slept_without_announcing_them() -> None:
    clock = FakeClock()
    ledger = ReportCallLedger(MemoryStore(), "a", clock=clock, sleep=clock.sleep)
    told: list[tuple] = []

    for _ in range(3):
        ledger.release(
            ledger.acquire(GROUP, REPORTS, max_wait_seconds=600, on_long_wait=lambda *a: told.append(a))
        )

    assert told == []
    assert clock.now == near(START + 61)  # the third waits for the first call's steady slot (60 s + 1 s)


def test_the_long_wait_is_announced_again_when_another_run_takes_the_freed_slot() -> None:
    clock = FakeClock()
    store = MemoryStore()
    mine = ReportCallLedger(store, "a", clock=clock, sleep=clock.sleep, limit_overrides={GROUP: {"daily": 1}})
    other = ReportCallLedger(
        store, "a", clock=clock, sleep=lambda s: None, limit_overrides={GROUP: {"daily": 1}}
    )
    other.release(other.acquire(GROUP, REPORTS, max_wait_seconds=600))
    freed = START + 86_401
    overtaken: list[bool] = []

    def another_run_is_faster(now: float) -> None:
        if now >= freed and not overtaken:  # the other run takes the slot the moment it frees
            overtaken.append(True)
            other.release(other.try_acquire(GROUP, REPORTS)[1])

    store.before_admit = another_run_is_faster
    events: list[tuple] = []
    slot = mine.acquire(
        GROUP,
        REPORTS,
        max_wait_seconds=600,
        on_long_wait=lambda *a: events.append(("wait", *a)),
        on_resume=lambda g: events.append(("resume", g)),
    )

    assert slot.waited_seconds == near(2 * 86_401)
    assert events == [
        ("wait", GROUP, near(86_401), 1, 1),
        ("wait", GROUP, near(86_401), 1, 1),
        ("resume", GROUP),
    ]


def test_groups_are_described_by_their_endpoint() -> None:
    assert describe_group("query_flow_series") == "POST /api/flow-series-reports"
    assert describe_group("query_campaign_values") == "POST /api/campaign-values-reports"
    assert describe_group("get_profiles[predictive_analytics]") == "get_profiles[predictive_analytics]"
