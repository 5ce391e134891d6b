"""The report call ledger: Klaviyo's report quotas counted per account across runs and processes.

``../shared/contracts/klaviyo-api.md``, "Rate limits": the report endpoints (flow series, flow values,
campaign values) have one rate-limit group each, per account, of 1 call/s (burst), 2/min (steady)
and 225/day (daily), and "everything that calls Klaviyo for an account at the same time shares these
budgets". The in-process pacer (``pacing.py``) sees only its own process, but a backfill runs many
Dagster runs of one account one after another, each in a process of its own: a new run's first
report call could land in the previous run's steady window (429s), and after ~112 partitions (two
report calls each) every run would fail with "daily quota exhausted".

So every report call is recorded in the ingest database (``storage/call_ledger.py``: one row per call
sent, ``sent_at``, ``released_at`` once its response came back), and a call is admitted by the same
slot rule as ``GroupPacer``, applied to the rows of every process:

- a call holds a slot of each window from its send until one window length after its release, so
  any ``limit + 1`` calls arriving in one of Klaviyo's fixed windows would all have held a slot at
  one instant, which the slot count forbids;
- a call still in flight holds its slot until it is released; a row left in flight for longer than
  ``stale_after_seconds`` (a worker that died mid-call) counts as released ``stale_after_seconds``
  after it was sent, so it cannot block the account for ever;
- a slot is held ``clock_margin_seconds`` longer, for clocks of different hosts that disagree a little.

Admission happens in one short transaction serialized per (account, group) in the database, which
either records the call as sent or answers how long to wait. Times are wall-clock UTC (the processes
share no clock but the system's), windows are multiplied by ``time_scale`` like the pacer's (the
simulator compresses time). Short waits (burst, steady) are slept; a wait for the daily window that is
longer than the caller's ``max_wait_seconds`` does not fail: the caller's ``on_long_wait`` hook is told
(so a person can see why the run waits) and the ledger sleeps until the slot frees, re-checking every
``recheck_seconds`` at most, since another process may take the slot first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from klaviyo_dagster.klaviyo.spec import RateLimit, Window, load_operations

DAILY = "daily"
_WINDOW_SECONDS = {"burst": 1, "steady": 60, DAILY: 86_400}

# on_long_wait(group, wait_seconds, used, limit): the daily window is full; ``used`` of ``limit`` calls
# hold a slot of it, the next frees in ``wait_seconds`` (real seconds).
LongWaitHook = Callable[[str, float, int, int], None]
# on_resume(group): the long wait announced by on_long_wait is over (the call goes out, or failed).
ResumeHook = Callable[[str], None]


# Groups without a daily window that several processes of one run call at the same moment.
ACROSS_PROCESSES = frozenset({"get_accounts"})


class CallLedgerError(Exception):
    """The ledger's store failed; the message says what to do and holds no secret."""


@dataclass(frozen=True)
class RecordedCall:
    """One row of the ledger: a call sent at ``sent_at``, released at ``released_at`` (epoch seconds
    UTC), or still in flight (``released_at`` None)."""

    sent_at: float
    released_at: float | None


@dataclass(frozen=True)
class Admission:
    """The answer for one call: sent now (``wait_seconds`` 0) or not before ``wait_seconds`` from now.

    ``window`` is the window holding the call back (the one with the longest wait), ``used`` how many
    calls hold one of its slots and ``limit`` its limit.
    """

    wait_seconds: float
    window: Window | None = None
    used: int = 0
    limit: int = 0

    @property
    def admitted(self) -> bool:
        return self.wait_seconds <= 0.0


@dataclass(frozen=True)
class SlotRule:
    """The slot rule's parameters, all in real seconds except where said."""

    windows: tuple[Window, ...]  # Klaviyo's windows (limit per ``seconds`` Klaviyo seconds)
    time_scale: float = 1.0  # real seconds per Klaviyo second
    stale_after_seconds: float = 180.0
    clock_margin_seconds: float = 1.0  # Klaviyo seconds, scaled like the windows

    def held_for(self, window: Window) -> float:
        """Real seconds a slot stays held after its call's release."""
        return (window.seconds + self.clock_margin_seconds) * self.time_scale

    @property
    def horizon_seconds(self) -> float:
        """No row sent longer ago than this can hold a slot: older rows need not be read."""
        longest = max((self.held_for(w) for w in self.windows), default=0.0)
        return longest + self.stale_after_seconds

    @property
    def keep_seconds(self) -> float:
        """Rows older than this are pruned: two of the longest window, and never one still counted."""
        longest = max((w.seconds * self.time_scale for w in self.windows), default=0.0)
        return max(2 * longest, self.horizon_seconds)

    def admission(self, calls: Sequence[RecordedCall], now: float) -> Admission:
        """Whether a call sent at ``now`` keeps every window within its limit, given ``calls``.

        The wait is a lower bound: a call in flight is assumed to be released right now, so its slot
        frees one window later at the earliest. Calls already released give exact answers.
        """
        worst = Admission(0.0)
        for window in self.windows:
            held = self.held_for(window)
            ends = sorted(end for call in calls if (end := self._slot_end(call, now, held)) > now)
            free = window.limit - len(ends)
            if free > 0:
                continue
            wait = ends[-free] - now  # the (1 - free)-th slot to free up, oldest first
            if worst.window is None or wait > worst.wait_seconds:
                worst = Admission(wait, window, len(ends), window.limit)
        return worst

    def _slot_end(self, call: RecordedCall, now: float, held: float) -> float:
        if call.released_at is not None:
            return call.released_at + held
        stale_at = call.sent_at + self.stale_after_seconds
        if stale_at <= now:
            return stale_at + held
        return now + held


class CallLedgerStore(Protocol):
    """Where the ledger's rows live (``storage/call_ledger.py``: the ingest database)."""

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
        """In one transaction serialized per (account, group): ``now = clock()``; the rows of the
        key sent within ``horizon_seconds`` of ``now`` go to ``decide(rows, now)``; when admitted, a row
        sent at ``now`` is inserted. Rows older than ``keep_seconds`` are deleted. Returns the
        admission and the new row's id (None when not admitted). Raises ``CallLedgerError`` when the
        database fails."""
        ...

    def release(self, call_id: Any, released_at: float) -> None:
        """The call's response came back (or it failed) at ``released_at``."""
        ...


@dataclass(frozen=True)
class LedgerBinding:
    """Who calls: the ledger's store, the account, the run and its hooks. ``KlaviyoResource.get_client``
    turns it into a ``ReportCallLedger`` with the resource's time scale and timeouts."""

    store: CallLedgerStore
    account_id: str
    run_id: str | None = None
    on_long_wait: LongWaitHook | None = None
    on_resume: ResumeHook | None = None


@dataclass(frozen=True)
class LedgerSlot:
    """A call admitted by the ledger; give it back to ``ReportCallLedger.release``."""

    group: str
    call_id: Any
    waited_seconds: float


@dataclass
class ReportCallLedger:
    """The ledger of one account's report calls, on a ``CallLedgerStore``.

    - ``run_id`` is stored with each call, for people reading the table.
    - ``time_scale``: real seconds per Klaviyo second, the client's (windows and the clock margin
      are multiplied by it; ``stale_after_seconds`` and ``recheck_seconds`` are real seconds).
    - ``stale_after_seconds``: a call in flight for longer is taken for one whose worker died.
    - ``limit_overrides`` replaces window limits per group, as the simulator's
      ``rate_limit_overrides`` does (``{"query_flow_series": {"daily": 4}}``), so a test can give
      both the same lower limit; an override may add a window the spec does not have.
    - ``clock`` (epoch seconds, UTC wall clock: the only clock separate processes share) and
      ``sleep`` are injectable for tests.
    """

    store: CallLedgerStore
    account_id: str
    run_id: str | None = None
    time_scale: float = 1.0
    stale_after_seconds: float = 180.0
    clock_margin_seconds: float = 1.0
    recheck_seconds: float = 300.0
    limit_overrides: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.time_scale <= 0 or self.stale_after_seconds <= 0 or self.recheck_seconds <= 0:
            raise ValueError("time_scale, stale_after_seconds and recheck_seconds must be > 0")

    def windows(self, group: str, rate_limit: RateLimit) -> tuple[Window, ...]:
        """The group's windows, overrides applied."""
        overrides = self.limit_overrides.get(group, {})
        windows = [Window(w.name, overrides.get(w.name, w.limit), w.seconds) for w in rate_limit.windows]
        for name, limit in overrides.items():
            if all(w.name != name for w in windows):
                windows.append(Window(name, limit, _WINDOW_SECONDS[name]))
        return tuple(windows)

    def covers(self, group: str, rate_limit: RateLimit) -> bool:
        """Whether calls of ``group`` go through the ledger: the groups with a daily window (reports),
        and the account lookup, which every file step of a run makes at once from its own process
        (its 1/s burst would refuse two of the three)."""
        return group in ACROSS_PROCESSES or any(w.name == DAILY for w in self.windows(group, rate_limit))

    def rule(self, group: str, rate_limit: RateLimit) -> SlotRule:
        return SlotRule(
            self.windows(group, rate_limit),
            time_scale=self.time_scale,
            stale_after_seconds=self.stale_after_seconds,
            clock_margin_seconds=self.clock_margin_seconds,
        )

    def try_acquire(self, group: str, rate_limit: RateLimit) -> tuple[Admission, LedgerSlot | None]:
        """One admission transaction: the slot when admitted, else None and how long to wait."""
        rule = self.rule(group, rate_limit)
        admission, call_id = self.store.admit(
            self.account_id,
            group,
            run_id=self.run_id,
            clock=self.clock,
            horizon_seconds=rule.horizon_seconds,
            keep_seconds=rule.keep_seconds,
            decide=rule.admission,
        )
        if not admission.admitted:
            return admission, None
        return admission, LedgerSlot(group, call_id, 0.0)

    def acquire(
        self,
        group: str,
        rate_limit: RateLimit,
        *,
        max_wait_seconds: float,
        on_long_wait: LongWaitHook | None = None,
        on_resume: ResumeHook | None = None,
    ) -> LedgerSlot:
        """Blocks until a call of ``group`` may be sent, and records it as sent.

        Never fails for a full daily window: a daily wait over ``max_wait_seconds`` calls
        ``on_long_wait(group, wait_seconds, used, limit)`` (again if the expected end moves later by
        more than ``recheck_seconds``, i.e. another process took the slot first), then sleeps, and
        ``on_resume(group)`` once it is over.
        """
        started = self.clock()
        announced_until: float | None = None
        try:
            while True:
                admission, slot = self.try_acquire(group, rate_limit)
                if slot is not None:
                    return LedgerSlot(group, slot.call_id, self.clock() - started)
                now = self.clock()
                window = admission.window
                long_wait = (
                    window is not None and window.name == DAILY and admission.wait_seconds > max_wait_seconds
                )
                if long_wait and on_long_wait is not None:
                    until = now + admission.wait_seconds
                    if announced_until is None or until > announced_until + self.recheck_seconds:
                        on_long_wait(group, admission.wait_seconds, admission.used, admission.limit)
                        announced_until = until
                self.sleep(min(admission.wait_seconds, self.recheck_seconds))
        finally:
            if announced_until is not None and on_resume is not None:
                on_resume(group)

    def release(self, slot: LedgerSlot) -> None:
        """The slot's call has its response (or failed)."""
        self.store.release(slot.call_id, self.clock())


def describe_group(group: str) -> str:
    """``query_flow_series`` → ``POST /api/flow-series-reports``; other names as they are."""
    operation = load_operations().get(group)
    return f"{operation.method} {operation.path}" if operation else group
